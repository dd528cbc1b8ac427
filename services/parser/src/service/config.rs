//! The `parser` section of the configuration.

use medlake_common::secret::SecretRef;
use serde::{Deserialize, Serialize};

use crate::archive::Limits;

/// Configuration of `medlake parser`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParserConfig {
    /// Consumer group of the parser on the raw files topic. Every replica of
    /// one deployment uses the same group; partitions are shared among them.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Kafka `transactional.id` of this process. Must be unique per running
    /// replica and should be stable across its restarts (a restarted
    /// instance then aborts its predecessor's open transaction at once
    /// instead of after the transaction timeout). Default:
    /// `<group_id>-<hostname>`, stable for StatefulSet pods and plain hosts.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// How long a Kafka transaction call (send offsets, commit, abort) may
    /// take, in milliseconds.
    #[serde(default = "default_transaction_call_timeout_ms")]
    pub transaction_call_timeout_ms: u64,
    /// First wait before retrying a file after a retryable failure, in
    /// milliseconds; doubles on each further failure.
    #[serde(default = "default_retry_backoff_initial_ms")]
    pub retry_backoff_initial_ms: u64,
    /// Longest wait between retries, in milliseconds.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// File ids settled (`processed` / `partial`) within this many days are
    /// remembered to recognise duplicates; older ledger entries are not
    /// loaded. Memory: about 60 bytes per file id.
    #[serde(default = "default_dedupe_window_days")]
    pub dedupe_window_days: u32,
    /// How long reading the ledger topic to its end may take at startup, in
    /// milliseconds, before the parser gives up.
    #[serde(default = "default_ledger_load_timeout_ms")]
    pub ledger_load_timeout_ms: u64,
    /// A rejected file larger than this is dead-lettered with an empty
    /// payload and a `medlake.payload_ref` to its raw zone copy instead of
    /// its bytes.
    #[serde(default = "default_dead_letter_inline_max_bytes")]
    pub dead_letter_inline_max_bytes: usize,
    /// A record whose JSON is larger than this is dead-lettered
    /// (`message_too_large`) instead of sent: keep it at or below the records
    /// topics' `max.message.bytes` (broker default 1,000,000), so one huge
    /// record cannot fail a transaction over and over.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Most bytes of produced messages waiting in the producer's queue (the
    /// producer blocks the parse when it is full, so memory stays bounded).
    #[serde(default = "default_producer_queue_max_bytes")]
    pub producer_queue_max_bytes: u64,
    /// Raw files committed in one Kafka transaction at most: the ones
    /// already waiting in the consumer when a transaction starts (never
    /// waited for). A transaction costs ~10 ms of broker round trips, so one
    /// per file caps a parser near 90 files/s; 1 restores one per file.
    #[serde(default = "default_max_files_per_transaction")]
    pub max_files_per_transaction: usize,
    /// Input bytes (raw files) in one transaction at most; the file that
    /// passes it is the last one of its transaction.
    #[serde(default = "default_max_transaction_bytes")]
    pub max_transaction_bytes: u64,
    /// A raw message the parser process died on this many times (out of
    /// memory, an abort) is dead-lettered whole as `poison_file` instead of
    /// being parsed again. At least 2: the first death may have come from
    /// any file of its transaction, so the files of that transaction are
    /// then parsed one per transaction and only a file that kills the
    /// parser alone counts further. See `service::attempts`.
    #[serde(default = "default_max_parse_attempts")]
    pub max_parse_attempts: u32,
    /// Key of `pii: hash` fields for data sets without their own `pii_key`
    /// (keyed HMAC-SHA256). Names a secret, never holds it.
    #[serde(default)]
    pub pii_key: Option<SecretRef>,
    /// Unpacking limits (zip bombs, oversized input).
    #[serde(default)]
    pub limits: Limits,
}

fn default_group_id() -> String {
    "medlake-parser".to_string()
}
fn default_transaction_call_timeout_ms() -> u64 {
    60_000
}
fn default_retry_backoff_initial_ms() -> u64 {
    500
}
fn default_retry_backoff_max_ms() -> u64 {
    30_000
}
fn default_dedupe_window_days() -> u32 {
    30
}
fn default_ledger_load_timeout_ms() -> u64 {
    300_000
}
fn default_dead_letter_inline_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_record_bytes() -> usize {
    1_000_000
}
fn default_max_files_per_transaction() -> usize {
    32
}
fn default_max_transaction_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_max_parse_attempts() -> u32 {
    3
}
fn default_producer_queue_max_bytes() -> u64 {
    128 * 1024 * 1024
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            transactional_id: None,
            transaction_call_timeout_ms: default_transaction_call_timeout_ms(),
            retry_backoff_initial_ms: default_retry_backoff_initial_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            dedupe_window_days: default_dedupe_window_days(),
            ledger_load_timeout_ms: default_ledger_load_timeout_ms(),
            dead_letter_inline_max_bytes: default_dead_letter_inline_max_bytes(),
            max_record_bytes: default_max_record_bytes(),
            producer_queue_max_bytes: default_producer_queue_max_bytes(),
            max_files_per_transaction: default_max_files_per_transaction(),
            max_transaction_bytes: default_max_transaction_bytes(),
            max_parse_attempts: default_max_parse_attempts(),
            pii_key: None,
            limits: Limits::default(),
        }
    }
}

impl ParserConfig {
    /// The configured `transactional.id`, or `<group_id>-<hostname>`.
    pub fn transactional_id(&self) -> String {
        self.transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.group_id, hostname()))
    }
}

/// The host name: `HOSTNAME`, else the kernel's, else `localhost`.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: ParserConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.group_id, "medlake-parser");
        assert_eq!(c.dedupe_window_days, 30);
        assert!(c.transactional_id().starts_with("medlake-parser-"));
        let c: ParserConfig =
            serde_yaml::from_str("transactional_id: p-0\nlimits: {max_entries: 5}").unwrap();
        assert_eq!(c.transactional_id(), "p-0");
        assert_eq!(c.limits.max_entries, 5);
        assert!(serde_yaml::from_str::<ParserConfig>("group: x").is_err());
    }
}
