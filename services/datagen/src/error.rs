//! What can stop a generation or a reconciliation. Messages name files, variables
//! and tables, never a secret or a generated value.

use std::path::PathBuf;

use medlake_common::{Classify, ErrorKind};

/// The generator or the lake reader failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The options do not make sense together.
    #[error("invalid options: {reason}")]
    Options {
        /// What is wrong.
        reason: String,
    },
    /// The facility registry given could not be loaded.
    #[error(transparent)]
    Registry(#[from] medlake_common::facilities::RegistryError),
    /// A facility's zip password could not be read (an unset variable, a missing file).
    #[error("facility {facility_id}: zip password unavailable: {reason}")]
    Password {
        /// The facility.
        facility_id: String,
        /// Which secret is missing (never its value).
        reason: String,
    },
    /// The registry holds no facility to generate for.
    #[error("facility registry {path} lists no facility")]
    NoFacilities {
        /// The registry file.
        path: PathBuf,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading an input file failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is not what `medlake gen` writes.
    #[error("manifest {path} is invalid: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
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

impl Classify for GenError {
    /// Retryable only for lake reads (a table being created or committed to); the rest
    /// are bad input or fatal for the command.
    fn kind(&self) -> ErrorKind {
        match self {
            GenError::Table { .. } | GenError::Ledger { .. } => ErrorKind::Retryable,
            GenError::Options { .. } | GenError::Manifest { .. } => ErrorKind::BadInput,
            _ => ErrorKind::Fatal,
        }
    }
}

impl GenError {
    pub(crate) fn write(path: &std::path::Path, source: std::io::Error) -> Self {
        GenError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}
