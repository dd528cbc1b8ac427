//! The file ids already settled in the ledger: how the parser recognises a
//! file delivered twice.
//!
//! At startup the parser reads the compacted ledger topic from the beginning
//! to its end (every partition reports end-of-partition) before it takes any
//! input, then keeps tailing it in the background; what it commits itself is
//! added right after the commit. Only `processed` and `partial` entries count
//! (a rejected file is processed again when replayed), and only those settled
//! within `dedupe_window_days`.
//!
//! Memory: a file id is 32 bytes; in a hash set about 60 bytes with overhead.
//! At 77,000 files a day a 30-day window holds 2.3 million ids, about 140 MB.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use medlake_common::config::KafkaConfig;
use medlake_common::ledger::LedgerEntry;
use medlake_common::raw_file::{sha256, sha256_from_hex};
use medlake_common::topic_reader::TopicReader;
use medlake_common::{Shutdown, metrics};
use rdkafka::Message;

use super::error::ParserError;

/// A set of file ids, shared between the ledger reader and the worker.
#[derive(Debug, Clone)]
pub struct KnownFiles {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    ids: HashSet<[u8; 32]>,
    window: chrono::Duration,
}

/// The 32 bytes of a hex SHA-256 file id; anything else is hashed, so a
/// malformed id still has a stable key.
fn id_key(file_id: &str) -> [u8; 32] {
    sha256_from_hex(file_id).unwrap_or_else(|| sha256(file_id.as_bytes()))
}

impl KnownFiles {
    /// An empty set remembering files settled within `window_days`.
    pub fn new(window_days: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                ids: HashSet::new(),
                window: chrono::Duration::days(i64::from(window_days)),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `file_id` was settled before.
    pub fn contains(&self, file_id: &str) -> bool {
        self.lock().ids.contains(&id_key(file_id))
    }

    /// Adds a file id the parser has just committed as settled.
    pub fn insert(&self, file_id: &str) {
        let mut inner = self.lock();
        inner.ids.insert(id_key(file_id));
        metrics::PARSER_KNOWN_FILES.set(inner.ids.len() as i64);
    }

    /// Takes a ledger entry read from the topic into account.
    pub fn observe(&self, entry: &LedgerEntry, now: DateTime<Utc>) {
        if !entry.status.is_settled() {
            return;
        }
        let settled_at = DateTime::parse_from_rfc3339(&entry.processed_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(now);
        let mut inner = self.lock();
        if now - settled_at <= inner.window {
            inner.ids.insert(id_key(&entry.file_id));
            metrics::PARSER_KNOWN_FILES.set(inner.ids.len() as i64);
        }
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.lock().ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the ledger topic into `known`: returns once every partition was
/// read to its end, leaving a task that keeps tailing it until `shutdown`.
pub async fn load_ledger(
    kafka_config: &KafkaConfig,
    group_id: &str,
    topic: &str,
    known: KnownFiles,
    timeout: Duration,
    shutdown: Shutdown,
) -> Result<(), ParserError> {
    let reader = TopicReader::open(kafka_config, &format!("{group_id}-ledger"), topic)?;
    let started = std::time::Instant::now();
    tokio::select! {
        loaded = reader.read_to_end(timeout, |m| observe(&known, m.payload())) => loaded?,
        () = shutdown.cancelled() => return Ok(()),
    }
    tracing::info!(
        topic,
        files = known.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Ledger loaded."
    );

    tokio::spawn(async move {
        reader
            .follow(&shutdown, |m| observe(&known, m.payload()))
            .await;
    });
    Ok(())
}

fn observe(known: &KnownFiles, payload: Option<&[u8]>) {
    // Tombstones (no payload) and entries of other writers we cannot read
    // are skipped: they never make a file a duplicate.
    if let Some(entry) = payload.and_then(|p| LedgerEntry::from_json(p).ok()) {
        known.observe(&entry, Utc::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medlake_common::ledger::{FileStatus, timestamp};

    fn entry(status: FileStatus, age_days: i64) -> LedgerEntry {
        LedgerEntry {
            file_id: "0f".repeat(32),
            facility_id: "F1".into(),
            file_name: "a.zip".into(),
            source: "ftp".into(),
            received_at: timestamp(Utc::now()),
            processed_at: timestamp(Utc::now() - chrono::Duration::days(age_days)),
            status,
            bytes: 1,
            entries: 1,
            records: Default::default(),
            rejects: Default::default(),
        }
    }

    #[test]
    fn only_settled_entries_within_the_window_count() {
        let known = KnownFiles::new(30);
        known.observe(&entry(FileStatus::Rejected, 0), Utc::now());
        known.observe(&entry(FileStatus::Duplicate, 0), Utc::now());
        known.observe(&entry(FileStatus::Processed, 31), Utc::now());
        assert!(known.is_empty());
        known.observe(&entry(FileStatus::Partial, 1), Utc::now());
        assert!(known.contains(&"0f".repeat(32)));
        assert!(known.contains(&"0F".repeat(32)), "hex case does not matter");
        assert!(!known.contains(&"1f".repeat(32)));
    }

    #[test]
    fn odd_ids_are_keyed_too() {
        let known = KnownFiles::new(1);
        known.insert("not-a-sha");
        assert!(known.contains("not-a-sha"));
        assert!(!known.contains("not-a-shb"));
        assert_eq!(known.len(), 1);
    }
}
