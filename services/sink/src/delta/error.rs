//! Errors of the Delta layer. Messages name tables, columns, partitions and
//! offsets, never a record's field values.

use deltalake::DeltaTableError;
use deltalake::kernel::transaction::TransactionError;
use medlake_common::error::{Classify, ErrorKind};

/// Everything that can go wrong while creating, writing or maintaining a table.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The table definition itself is unusable.
    #[error("table {table}: column '{column}': {reason}")]
    InvalidSpec {
        /// Table (data set) name.
        table: String,
        /// Offending column (empty when the problem is not about one column).
        column: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// The definition changed in a way the existing table cannot follow.
    #[error("table {table}: incompatible schema change on column '{column}': {change}")]
    IncompatibleSchema {
        /// Table (data set) name.
        table: String,
        /// Column whose change is refused.
        column: String,
        /// What changed, e.g. `type Int64 -> Utf8`.
        change: String,
    },

    /// The batch handed to the writer is inconsistent (a caller bug).
    #[error("table {table}: invalid batch: {reason}")]
    InvalidBatch {
        /// Table (data set) name.
        table: String,
        /// What is wrong.
        reason: String,
    },

    /// The lake location cannot be turned into a table URL.
    #[error("invalid lake location {uri}: {reason}")]
    InvalidLocation {
        /// The location as configured.
        uri: String,
        /// Why it is refused.
        reason: String,
    },

    /// Another writer won the commit and retrying did not help.
    #[error("table {table}: commit conflict not resolved after {attempts} attempts: {source}")]
    Conflict {
        /// Table (data set) name.
        table: String,
        /// Attempts made.
        attempts: u32,
        /// Last conflict.
        #[source]
        source: Box<DeltaTableError>,
    },

    /// The table's rewrite lock could not be read or written.
    #[error("table {table}: rewrite lock: {source}")]
    Lock {
        /// Table (data set) name.
        table: String,
        /// Underlying storage error.
        #[source]
        source: Box<object_store::Error>,
    },

    /// Another writer held the table's rewrite lock for longer than we waited.
    #[error(
        "table {table}: another writer has been rewriting the table for {waited_s} s (rewrite lock under _medlake/rewrite)"
    )]
    LockBusy {
        /// Table (data set) name.
        table: String,
        /// Seconds waited.
        waited_s: u64,
    },

    /// An Arrow computation on the batch failed.
    #[error("table {table}: {operation}: {source}")]
    Arrow {
        /// Table (data set) name.
        table: String,
        /// What was being done.
        operation: &'static str,
        /// Underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },

    /// The Delta library failed (storage, log, execution).
    #[error("table {table}: {operation}: {source}")]
    Delta {
        /// Table (data set) name.
        table: String,
        /// What was being done.
        operation: &'static str,
        /// Underlying error (boxed: the library's error is large).
        #[source]
        source: Box<DeltaTableError>,
    },
}

impl DeltaError {
    /// Wraps a Delta library error.
    pub(crate) fn delta(table: &str, operation: &'static str, source: DeltaTableError) -> Self {
        DeltaError::Delta {
            table: table.to_string(),
            operation,
            source: Box::new(source),
        }
    }

    /// Wraps an Arrow error.
    pub(crate) fn arrow(
        table: &str,
        operation: &'static str,
        source: arrow::error::ArrowError,
    ) -> Self {
        DeltaError::Arrow {
            table: table.to_string(),
            operation,
            source,
        }
    }

    /// Whether this error is a lost commit race that a fresh attempt may win.
    pub fn is_commit_conflict(&self) -> bool {
        match self {
            DeltaError::Delta { source, .. } => is_conflict(source),
            DeltaError::Conflict { .. } => true,
            _ => false,
        }
    }
}

impl Classify for DeltaError {
    fn kind(&self) -> ErrorKind {
        match self {
            DeltaError::InvalidSpec { .. }
            | DeltaError::IncompatibleSchema { .. }
            | DeltaError::InvalidLocation { .. }
            | DeltaError::InvalidBatch { .. } => ErrorKind::Fatal,
            DeltaError::Conflict { .. } | DeltaError::Lock { .. } | DeltaError::LockBusy { .. } => {
                ErrorKind::Retryable
            }
            DeltaError::Arrow { .. } => ErrorKind::BadInput,
            DeltaError::Delta { source, .. } => match source.as_ref() {
                DeltaTableError::Arrow { .. } | DeltaTableError::SchemaMismatch { .. } => {
                    ErrorKind::BadInput
                }
                DeltaTableError::InvalidTableLocation(_)
                | DeltaTableError::NotATable(_)
                | DeltaTableError::MissingFeature { .. } => ErrorKind::Fatal,
                _ => ErrorKind::Retryable,
            },
        }
    }
}

/// Whether a library error is a commit conflict with a concurrent writer.
pub(crate) fn is_conflict(err: &DeltaTableError) -> bool {
    matches!(
        err,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_retryable() {
        let err = DeltaError::delta(
            "t",
            "append",
            DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(3),
            },
        );
        assert!(err.is_commit_conflict());
        assert_eq!(err.kind(), ErrorKind::Retryable);
    }

    #[test]
    fn schema_changes_are_fatal_and_name_the_column() {
        let err = DeltaError::IncompatibleSchema {
            table: "labs".into(),
            column: "value".into(),
            change: "type Int64 -> Utf8".into(),
        };
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.to_string().contains("'value'"));
    }
}
