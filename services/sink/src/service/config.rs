//! The `sink` section of the configuration.

use std::time::Duration;

use medlake_common::backoff::Backoff;

use serde::{Deserialize, Serialize};

use super::start::UntrackedStart;
use crate::delta::DeltaConfig;

/// How the sink service consumes, batches and writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Tables this instance writes, by name: data sets of `schemas_dir`
    /// (their `<prefix>.records.<name>` topic) and the built-in
    /// `_dead_letters` (the dead-letter topic) and `_files` (the file
    /// ledger). Empty means every data set plus both built-in tables. A
    /// deployment per topic lists one name, so each topic scales on its own.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Kafka consumer group. It is also part of every `txn` app id in the
    /// tables (`<group>-<topic>-<partition>`): the tables remember where the
    /// group stopped, so renaming it makes the sink start the topics over.
    #[serde(default = "default_consumer_group")]
    pub consumer_group: String,
    /// A data set's batch is written once it holds this many messages.
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: usize,
    /// A data set's batch is written once its messages add up to this many
    /// bytes (JSON as received).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: u64,
    /// A batch is written at the latest this long after its first message
    /// arrived, however small it is.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Dead-letter values up to this size are copied into
    /// `_dead_letters.payload`; larger ones keep only their size.
    #[serde(default = "default_max_dead_letter_payload_bytes")]
    pub max_dead_letter_payload_bytes: usize,
    /// First pause after a retryable failure (storage or broker
    /// unavailable); doubles per failure of the same batch.
    #[serde(default = "default_retry_backoff_initial_ms")]
    pub retry_backoff_initial_ms: u64,
    /// Longest pause between retries of a batch.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Where a partition starts when its table holds no offset for it (a
    /// new table, or one lost, restored or recreated): `earliest` (every
    /// row Kafka still retains), `latest` (only new messages) or `group`
    /// (the consumer group's committed position). Anything but `earliest`
    /// may leave rows out of the table: it is logged at start and recorded
    /// in the commit metadata of the table.
    #[serde(default)]
    pub untracked_partition_start: UntrackedStart,
    /// A partition whose table needs offsets that Kafka no longer retains
    /// is refused (nothing written for it) unless this is true; then it
    /// resumes at the earliest retained offset and the gap is recorded in
    /// the commit metadata. Set it once the gap was refilled (`medlake
    /// replay --raw`) or accepted.
    #[serde(default)]
    pub resume_past_offset_gaps: bool,
    /// How tables are created and committed to.
    #[serde(default)]
    pub delta: DeltaConfig,
}

fn default_consumer_group() -> String {
    "medlake-sink".to_string()
}

fn default_max_batch_rows() -> usize {
    50_000
}

fn default_max_batch_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_flush_interval_ms() -> u64 {
    10_000
}

fn default_max_dead_letter_payload_bytes() -> usize {
    1024 * 1024
}

fn default_retry_backoff_initial_ms() -> u64 {
    500
}

fn default_retry_backoff_max_ms() -> u64 {
    30_000
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            datasets: Vec::new(),
            consumer_group: default_consumer_group(),
            max_batch_rows: default_max_batch_rows(),
            max_batch_bytes: default_max_batch_bytes(),
            flush_interval_ms: default_flush_interval_ms(),
            max_dead_letter_payload_bytes: default_max_dead_letter_payload_bytes(),
            retry_backoff_initial_ms: default_retry_backoff_initial_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            untracked_partition_start: UntrackedStart::default(),
            resume_past_offset_gaps: false,
            delta: DeltaConfig::default(),
        }
    }
}

impl SinkConfig {
    /// The time limit of a batch.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }

    /// Pause after the `failures`-th consecutive retryable failure (1-based).
    pub fn retry_backoff(&self, failures: u32) -> Duration {
        Backoff::from_ms(self.retry_backoff_initial_ms, self.retry_backoff_max_ms)
            .ceiling(failures.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_takes_defaults() {
        let config: SinkConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, SinkConfig::default());
        assert!(config.datasets.is_empty());
        assert_eq!(config.consumer_group, "medlake-sink");
        assert_eq!(config.untracked_partition_start, UntrackedStart::Earliest);
        assert!(!config.resume_past_offset_gaps);
    }

    #[test]
    fn start_policies_parse_by_name() {
        let config: SinkConfig =
            serde_json::from_str(r#"{"untracked_partition_start": "latest"}"#).unwrap();
        assert_eq!(config.untracked_partition_start, UntrackedStart::Latest);
        let err = serde_json::from_str::<SinkConfig>(r#"{"untracked_partition_start": "never"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("earliest"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<SinkConfig>(r#"{"flush_interval": 3}"#).unwrap_err();
        assert!(err.to_string().contains("flush_interval"), "{err}");
    }

    #[test]
    fn nested_delta_settings_parse() {
        let config: SinkConfig = serde_json::from_str(
            r#"{"datasets": ["lab_results"], "delta": {"checkpoint_interval": 5}}"#,
        )
        .unwrap();
        assert_eq!(config.datasets, vec!["lab_results"]);
        assert_eq!(config.delta.checkpoint_interval, 5);
    }

    #[test]
    fn retry_backoff_doubles_up_to_the_cap() {
        let config = SinkConfig::default();
        assert_eq!(config.retry_backoff(1).as_millis(), 500);
        assert_eq!(config.retry_backoff(2).as_millis(), 1_000);
        assert_eq!(config.retry_backoff(40).as_millis(), 30_000);
    }
}
