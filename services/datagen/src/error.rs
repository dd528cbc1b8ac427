//! What can stop a generation or the loading of its manifest. Messages name files
//! and variables, never a secret or a generated value.

use std::path::PathBuf;

use medlake_common::{Classify, ErrorKind};

/// The generator failed, or its manifest could not be read.
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
}

impl Classify for GenError {
    /// Bad input for invalid options or manifests; the rest are fatal for the command.
    fn kind(&self) -> ErrorKind {
        match self {
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
