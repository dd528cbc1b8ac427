//! The file ledger on `medlake.files`: one JSON entry per input file, keyed by
//! file id, on a compacted topic. It reconciles every file: how many records
//! went to each data set and how many were rejected, by error code. The
//! parser writes it in the same transaction as the records, reads it back to
//! recognise a file delivered twice, and the sink lands it in `<lake>/_files`.
//!
//! Statuses:
//! - `processed`: every entry parsed, every record written, nothing rejected;
//! - `partial`: records were written and some entries or records rejected;
//! - `rejected`: nothing was written (a bad archive, every entry rejected);
//! - `duplicate`: the file id had already been `processed` or `partial`, so
//!   this delivery wrote nothing.
//!
//! Only `processed` and `partial` make a later delivery a duplicate
//! ([`FileStatus::is_settled`]): a rejected file whose cause is fixed (a
//! password added) is processed when replayed.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::dead_letter::ErrorCode;

/// What became of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Processed,
    Rejected,
    Duplicate,
    Partial,
}

impl FileStatus {
    /// The JSON and metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Processed => "processed",
            FileStatus::Rejected => "rejected",
            FileStatus::Duplicate => "duplicate",
            FileStatus::Partial => "partial",
        }
    }

    /// Whether a file with this status has had its records written, so a
    /// later delivery of the same file id is a duplicate.
    pub fn is_settled(self) -> bool {
        matches!(self, FileStatus::Processed | FileStatus::Partial)
    }

    /// The status of a file that wrote `records` records with `rejects`
    /// rejections (entries and records).
    pub fn from_counts(records: u64, rejects: u64) -> Self {
        match (records, rejects) {
            (_, 0) => FileStatus::Processed,
            (0, _) => FileStatus::Rejected,
            _ => FileStatus::Partial,
        }
    }
}

/// One file's ledger entry (the value on `medlake.files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Hex SHA-256 of the file's bytes (also the message key).
    pub file_id: String,
    pub facility_id: String,
    /// Name the file was received under.
    pub file_name: String,
    /// How it arrived: `ftp`, `ftp_pull`, `http`, `http_pull`.
    pub source: String,
    /// When the connector received it (RFC 3339 UTC, from the raw-file header).
    pub received_at: String,
    /// When the parser finished it (RFC 3339 UTC, microseconds).
    pub processed_at: String,
    pub status: FileStatus,
    /// Size of the file as received.
    #[serde(default)]
    pub bytes: u64,
    /// Entries read from the archive (1 for a plain file).
    #[serde(default)]
    pub entries: u64,
    /// Records written, by data set.
    #[serde(default)]
    pub records: BTreeMap<String, u64>,
    /// Entries and records rejected, by error code.
    #[serde(default)]
    pub rejects: BTreeMap<ErrorCode, u64>,
}

impl LedgerEntry {
    /// Total records written.
    pub fn records_total(&self) -> u64 {
        self.records.values().sum()
    }

    /// Total rejections.
    pub fn rejects_total(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// Sets `status` from the counts (never `duplicate`).
    pub fn settle_status(&mut self) {
        self.status = FileStatus::from_counts(self.records_total(), self.rejects_total());
    }

    /// The JSON value.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ledger entry always serializes")
    }

    /// Parses a JSON value read from the ledger topic.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A timestamp as medlake writes it: RFC 3339, UTC `Z`, microseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            file_id: "ab".repeat(32),
            facility_id: "F1001".into(),
            file_name: "adt_2024.zip".into(),
            source: "ftp".into(),
            received_at: "2024-05-01T10:00:00Z".into(),
            processed_at: timestamp(DateTime::from_timestamp(1_714_557_600, 5_000).unwrap()),
            status: FileStatus::Processed,
            bytes: 1234,
            entries: 2,
            records: BTreeMap::from([("adt_events".into(), 10)]),
            rejects: BTreeMap::new(),
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let mut e = entry();
        e.rejects.insert(ErrorCode::BadDate, 2);
        e.settle_status();
        let json: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(json["status"], "partial");
        assert_eq!(json["processed_at"], "2024-05-01T10:00:00.000005Z");
        assert_eq!(json["records"]["adt_events"], 10);
        assert_eq!(json["rejects"]["bad_date"], 2);
        assert_eq!(LedgerEntry::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn status_follows_counts() {
        assert_eq!(FileStatus::from_counts(5, 0), FileStatus::Processed);
        assert_eq!(FileStatus::from_counts(0, 0), FileStatus::Processed);
        assert_eq!(FileStatus::from_counts(0, 3), FileStatus::Rejected);
        assert_eq!(FileStatus::from_counts(4, 1), FileStatus::Partial);
        assert!(FileStatus::Partial.is_settled());
        assert!(!FileStatus::Rejected.is_settled());
        assert!(!FileStatus::Duplicate.is_settled());
    }

    #[test]
    fn unknown_fields_from_newer_writers_are_ignored() {
        let mut json: serde_json::Value = serde_json::from_slice(&entry().to_json()).unwrap();
        json["future"] = serde_json::json!(1);
        let back = LedgerEntry::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(back, entry());
    }
}
