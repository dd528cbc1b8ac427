//! What can go wrong with a file, an entry or a record: a small fixed set of codes,
//! each belonging to one stage. Messages name entries, rows and fields, never values.

use std::fmt;

pub use medlake_common::dead_letter::{ErrorCode, Stage};
use medlake_common::{Classify, ErrorKind};

/// A rejected entry or record: what the dead letter says. Never holds a field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// What went wrong.
    pub code: ErrorCode,
    /// The data set the entry was routed to, when known.
    pub dataset: Option<String>,
    /// The entry's path inside the archive (the file name for a plain file).
    pub entry: String,
    /// 1-based record number within the entry (data row, XML record element, JSON
    /// element); `None` when the whole entry is rejected.
    pub index: Option<u64>,
    /// The field concerned, if any.
    pub field: Option<String>,
    /// Human explanation without values.
    pub message: String,
}

impl Reject {
    /// The stage of the code.
    pub fn stage(&self) -> Stage {
        self.code.stage()
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} entry {}", self.stage(), self.code, self.entry)?;
        if let Some(i) = self.index {
            write!(f, " record {i}")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The whole file is rejected (one dead letter, no records): it cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// An encrypted entry and no password configured for the facility.
    #[error("entry {entry} is encrypted and facility {facility_id} has no zip password")]
    PasswordRequired {
        /// The encrypted entry.
        entry: String,
        /// The sending facility.
        facility_id: String,
    },
    /// None of the facility's passwords opens the entry.
    #[error("none of the {tried} configured password(s) opens entry {entry}")]
    WrongPassword {
        /// The encrypted entry.
        entry: String,
        /// How many passwords were tried.
        tried: usize,
    },
    /// The facility's passwords could not be read (an unset variable, a missing file).
    #[error("passwords of facility {facility_id} are unavailable: {reason}")]
    PasswordUnavailable {
        /// The sending facility.
        facility_id: String,
        /// Which secret is missing (never its value).
        reason: String,
    },
    /// The archive structure or an entry's data is broken.
    #[error("corrupt archive{}: {reason}", at(entry))]
    CorruptArchive {
        /// The entry being read, if any.
        entry: Option<String>,
        /// What the decoder said.
        reason: String,
    },
    /// A compression method or archive feature that is not supported.
    #[error("unsupported archive{}: {reason}", at(entry))]
    UnsupportedArchive {
        /// The entry being read, if any.
        entry: Option<String>,
        /// What is not supported.
        reason: String,
    },
    /// More entries than `max_entries`.
    #[error("archive has {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// Entries counted.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry unpacked to more than `max_entry_bytes`.
    #[error("entry {entry} unpacks to more than {limit_bytes} bytes")]
    EntryTooLarge {
        /// The entry.
        entry: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// All entries together unpacked to more than `max_total_bytes`.
    #[error("archive unpacks to more than {limit_bytes} bytes (at entry {entry})")]
    ArchiveTooLarge {
        /// The entry being read when the limit was passed.
        entry: String,
        /// The limit.
        limit_bytes: u64,
    },
    /// An entry unpacked to more than `max_compression_ratio` times its packed size.
    #[error("entry {entry} expands more than {limit}x (zip bomb?)")]
    CompressionRatio {
        /// The entry.
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// An archive inside an archive inside an archive (deeper than `max_nesting`).
    #[error("entry {entry} nests archives deeper than {limit} level(s)")]
    NestingTooDeep {
        /// The nested archive entry.
        entry: String,
        /// The limit.
        limit: u8,
    },
    /// The archive holds no file at all (only folders, or nothing): the facility's
    /// export produced nothing, which its feed status must show.
    #[error("archive holds no file")]
    EmptyArchive,
}

fn at(entry: &Option<String>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" at entry {e}"))
        .unwrap_or_default()
}

impl FileError {
    /// The error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            FileError::PasswordRequired { .. } => ErrorCode::PasswordRequired,
            FileError::WrongPassword { .. } => ErrorCode::WrongPassword,
            FileError::PasswordUnavailable { .. } => ErrorCode::PasswordUnavailable,
            FileError::CorruptArchive { .. } => ErrorCode::CorruptArchive,
            FileError::UnsupportedArchive { .. } => ErrorCode::UnsupportedArchive,
            FileError::TooManyEntries { .. } => ErrorCode::TooManyEntries,
            FileError::EntryTooLarge { .. } => ErrorCode::EntryTooLarge,
            FileError::ArchiveTooLarge { .. } => ErrorCode::ArchiveTooLarge,
            FileError::CompressionRatio { .. } => ErrorCode::CompressionRatio,
            FileError::NestingTooDeep { .. } => ErrorCode::NestingTooDeep,
            FileError::EmptyArchive => ErrorCode::EmptyArchive,
        }
    }

    /// Always `unzip`: everything that rejects a whole file happens while opening it.
    pub fn stage(&self) -> Stage {
        self.code().stage()
    }
}

impl Classify for FileError {
    /// Every file error is bad input: dead-letter the file and go on. A missing password
    /// secret too: the file can be replayed once the secret is deployed.
    fn kind(&self) -> ErrorKind {
        ErrorKind::BadInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_display_has_no_value() {
        let r = Reject {
            code: ErrorCode::BadInt,
            dataset: Some("adt_events".into()),
            entry: "a/b.csv".into(),
            index: Some(3),
            field: Some("event_seq".into()),
            message: "not an integer".into(),
        };
        assert_eq!(
            r.to_string(),
            "validate bad_int entry a/b.csv record 3 field event_seq: not an integer"
        );
    }
}
