//! What can stop reading a lake back. Messages name tables and topics, never a
//! record's values.

use medlake_common::{Classify, ErrorKind};

/// The ledger topic or a table of the lake could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file ledger topic could not be read.
    #[error("ledger topic {topic}: {reason}")]
    Ledger {
        /// The topic.
        topic: String,
        /// What failed.
        reason: String,
    },
    /// A table of the lake could not be read.
    #[error("table {table}: {reason}")]
    Table {
        /// The table.
        table: String,
        /// What failed.
        reason: String,
    },
}

impl Classify for InspectError {
    /// Always retryable: a table is being created or committed to, the broker is
    /// catching up; the caller decides how long to keep trying.
    fn kind(&self) -> ErrorKind {
        ErrorKind::Retryable
    }
}

impl InspectError {
    pub(crate) fn table(table: &str, e: impl std::fmt::Display) -> Self {
        InspectError::Table {
            table: table.to_string(),
            reason: e.to_string(),
        }
    }
}
