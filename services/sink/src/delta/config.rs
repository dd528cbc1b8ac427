//! Settings of the Delta writer.

use serde::{Deserialize, Serialize};

/// How tables are created and committed to. Part of the sink's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaConfig {
    /// Write a checkpoint every this many commits (table property
    /// `delta.checkpointInterval`, applied on create and kept in sync on open).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Attempts for one batch when concurrent writers win the commit race.
    /// Each attempt re-reads the committed Kafka offsets first.
    #[serde(default = "default_max_commit_attempts")]
    pub max_commit_attempts: u32,
    /// First back-off between commit attempts; doubles per attempt.
    #[serde(default = "default_commit_backoff_initial_ms")]
    pub commit_backoff_initial_ms: u64,
    /// Upper bound of the back-off between commit attempts.
    #[serde(default = "default_commit_backoff_max_ms")]
    pub commit_backoff_max_ms: u64,
    /// Target size of the Parquet files the writer produces, and of the
    /// files its compaction bins small files into.
    #[serde(default = "default_target_file_size_bytes")]
    pub target_file_size_bytes: u64,
    /// Compact the table (OPTIMIZE, bin-packing small files of each
    /// partition) after this many of the writer's commits; 0: never (leave
    /// it to `medlake maintain`).
    #[serde(default = "default_compact_every_commits")]
    pub compact_every_commits: u64,
}

fn default_checkpoint_interval() -> u64 {
    10
}

fn default_max_commit_attempts() -> u32 {
    8
}

fn default_commit_backoff_initial_ms() -> u64 {
    100
}

fn default_commit_backoff_max_ms() -> u64 {
    5_000
}

fn default_target_file_size_bytes() -> u64 {
    128 * 1024 * 1024
}

fn default_compact_every_commits() -> u64 {
    50
}

impl Default for DeltaConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval: default_checkpoint_interval(),
            max_commit_attempts: default_max_commit_attempts(),
            commit_backoff_initial_ms: default_commit_backoff_initial_ms(),
            commit_backoff_max_ms: default_commit_backoff_max_ms(),
            target_file_size_bytes: default_target_file_size_bytes(),
            compact_every_commits: default_compact_every_commits(),
        }
    }
}

impl DeltaConfig {
    /// Back-off after failed attempt number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> std::time::Duration {
        medlake_common::backoff::Backoff::from_ms(
            self.commit_backoff_initial_ms,
            self.commit_backoff_max_ms,
        )
        .ceiling(attempt.saturating_sub(1))
    }
}

/// Everything a [`TableWriter`](super::TableWriter) needs besides the table
/// definition.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Kafka consumer group; the first part of every `txn` app id.
    pub consumer_group: String,
    /// Commit and table settings.
    pub config: DeltaConfig,
}

impl WriterOptions {
    /// Options with default settings for `consumer_group`.
    pub fn new(consumer_group: impl Into<String>) -> Self {
        Self {
            consumer_group: consumer_group.into(),
            config: DeltaConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_defaults() {
        let config: DeltaConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, DeltaConfig::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<DeltaConfig>(r#"{"checkpoint_every": 3}"#).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = DeltaConfig::default();
        assert_eq!(config.backoff(1).as_millis(), 100);
        assert_eq!(config.backoff(2).as_millis(), 200);
        assert_eq!(config.backoff(3).as_millis(), 400);
        assert_eq!(config.backoff(30).as_millis(), 5_000);
    }
}
