//! FTP endpoints the ftp-connector polls: one folder of the company's
//! landing server per facility (the facility pushes there, source `ftp`), or
//! a customer's own server (source `ftp_pull`).
//!
//! ```yaml
//! facilities:
//!   - id: F1001
//!     ftp:
//!       - id: f1001-landing
//!         host: landing.internal
//!         user: f1001
//!         password: { env: F1001_FTP_PASSWORD }
//!         directory: /incoming
//!         glob: "*.zip"
//!         ftps: true
//! ```

use serde::Deserialize;

use crate::raw_file::Source;
use crate::secret::{SecretError, SecretRef};

/// One FTP folder to poll for new files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FtpEndpoint {
    /// Endpoint id, unique across the registry: the `endpoint` metric label
    /// and the name in logs. Letters, digits, `-` and `_`.
    pub id: String,
    /// Server host name or IP address.
    pub host: String,
    /// Control connection port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Where the login password is kept (never in this file).
    pub password: SecretRef,
    /// Folder holding the files, absolute or relative to the login folder.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// File-name glob (`*.zip`, `extract_??.csv.gz`); only matching plain
    /// files are taken.
    #[serde(default = "default_glob")]
    pub glob: String,
    /// Time between two listings of the folder, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How a file still being uploaded is told apart from a finished one.
    #[serde(default)]
    pub stability: Stability,
    /// Explicit FTPS (`AUTH TLS` on the control port, protected data channel).
    #[serde(default)]
    pub ftps: bool,
    /// PEM file of certificate authorities trusted for FTPS besides the
    /// system's (a private CA or a self-signed server certificate).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// What to do with a remote file once it is ingested.
    #[serde(default)]
    pub after: After,
    /// Folder ingested files are moved to (`after: move`), relative to
    /// `directory` unless absolute. Created if missing.
    #[serde(default = "default_processed_dir")]
    pub processed_dir: String,
    /// Folder files over `max_file_bytes` are moved to, relative to
    /// `directory` unless absolute. Created if missing.
    #[serde(default = "default_rejected_dir")]
    pub rejected_dir: String,
    /// Largest file taken, in bytes; a larger one is moved to `rejected_dir`.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// `ftp` for the company's landing server (facilities push there),
    /// `ftp_pull` for a customer's own server.
    #[serde(default = "default_source")]
    pub source: Source,
    /// Give up on a control or data connection that is silent this long, in
    /// milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// When a listed file counts as completely uploaded. Both rules apply when
/// both are set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Stability {
    /// Take a file only once its size was the same in two listings in a row.
    #[serde(default = "default_true")]
    pub unchanged_size: bool,
    /// Take a file only once its modification time (MDTM) is at least this
    /// old, in milliseconds; 0 turns the rule off.
    #[serde(default)]
    pub min_age_ms: u64,
}

impl Default for Stability {
    fn default() -> Self {
        Self {
            unchanged_size: true,
            min_age_ms: 0,
        }
    }
}

/// The fate of a remote file after ingestion.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum After {
    /// Rename it into `processed_dir`.
    #[default]
    Move,
    /// Delete it.
    Delete,
}

fn default_port() -> u16 {
    21
}
fn default_directory() -> String {
    ".".to_string()
}
fn default_glob() -> String {
    "*".to_string()
}
fn default_poll_interval_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_processed_dir() -> String {
    "processed".to_string()
}
fn default_rejected_dir() -> String {
    "rejected".to_string()
}
fn default_max_file_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_source() -> Source {
    Source::Ftp
}
fn default_timeout_ms() -> u64 {
    30_000
}

/// What is wrong with an FTP endpoint definition.
#[derive(Debug, thiserror::Error)]
pub enum FtpEndpointError {
    #[error("ftp endpoint id {id:?} must be letters, digits, '-' or '_'")]
    BadId { id: String },
    #[error("ftp endpoint {id}: {field} must not be empty")]
    Empty { id: String, field: &'static str },
    #[error("ftp endpoint {id}: {field} must be positive")]
    Zero { id: String, field: &'static str },
    #[error("ftp endpoint {id}: source must be ftp or ftp_pull")]
    BadSource { id: String },
    #[error("ftp endpoint {id}: glob {glob:?} is invalid: {reason}")]
    BadGlob {
        id: String,
        glob: String,
        reason: String,
    },
    #[error("ftp endpoint {id}: password: {source}")]
    Secret { id: String, source: SecretError },
}

impl FtpEndpoint {
    /// Checks the definition's shape (the password is read when used).
    pub fn validate(&self) -> Result<(), FtpEndpointError> {
        let id = || self.id.clone();
        if !super::is_valid_id(&self.id) {
            return Err(FtpEndpointError::BadId { id: id() });
        }
        for (field, value) in [
            ("host", &self.host),
            ("user", &self.user),
            ("directory", &self.directory),
            ("processed_dir", &self.processed_dir),
            ("rejected_dir", &self.rejected_dir),
        ] {
            if value.is_empty() {
                return Err(FtpEndpointError::Empty { id: id(), field });
            }
        }
        for (field, value) in [
            ("poll_interval_ms", self.poll_interval_ms),
            ("max_file_bytes", self.max_file_bytes),
            ("timeout_ms", self.timeout_ms),
            ("port", u64::from(self.port)),
        ] {
            if value == 0 {
                return Err(FtpEndpointError::Zero { id: id(), field });
            }
        }
        if !matches!(self.source, Source::Ftp | Source::FtpPull) {
            return Err(FtpEndpointError::BadSource { id: id() });
        }
        globset::Glob::new(&self.glob).map_err(|e| FtpEndpointError::BadGlob {
            id: id(),
            glob: self.glob.clone(),
            reason: e.kind().to_string(),
        })?;
        self.password
            .validate()
            .map_err(|source| FtpEndpointError::Secret { id: id(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<FtpEndpoint, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    const MINIMAL: &str = "id: e1\nhost: h\nuser: u\npassword: { env: P }\n";

    #[test]
    fn defaults() {
        let e = parse(MINIMAL).unwrap();
        assert_eq!(e.port, 21);
        assert_eq!(e.directory, ".");
        assert_eq!(e.glob, "*");
        assert_eq!(e.stability, Stability::default());
        assert!(e.stability.unchanged_size);
        assert!(!e.ftps);
        assert_eq!(e.after, After::Move);
        assert_eq!(e.processed_dir, "processed");
        assert_eq!(e.source, Source::Ftp);
        e.validate().unwrap();
    }

    #[test]
    fn full_definition() {
        let e = parse(
            "id: cust-1\nhost: ftp.example.com\nport: 2121\nuser: u\npassword: { file: /run/p }\n\
             ca_file: /etc/ca.pem\n\
             directory: /out\nglob: '*.zip'\npoll_interval_ms: 500\n\
             stability: { unchanged_size: false, min_age_ms: 60000 }\nftps: true\n\
             after: delete\nmax_file_bytes: 1000\nsource: ftp_pull\n",
        )
        .unwrap();
        assert_eq!(e.after, After::Delete);
        assert_eq!(e.source, Source::FtpPull);
        assert_eq!(e.stability.min_age_ms, 60_000);
        assert!(e.ftps);
        e.validate().unwrap();
    }

    #[test]
    fn rejects_bad_definitions() {
        let err = |extra: &str| parse(&format!("{MINIMAL}{extra}")).unwrap().validate();
        assert!(matches!(
            parse("id: a/b\nhost: h\nuser: u\npassword: { env: P }\n")
                .unwrap()
                .validate(),
            Err(FtpEndpointError::BadId { .. })
        ));
        assert!(matches!(
            err("poll_interval_ms: 0\n"),
            Err(FtpEndpointError::Zero { .. })
        ));
        assert!(matches!(
            err("source: http\n"),
            Err(FtpEndpointError::BadSource { .. })
        ));
        assert!(matches!(
            err("glob: '[a'\n"),
            Err(FtpEndpointError::BadGlob { .. })
        ));
        assert!(matches!(
            err("processed_dir: ''\n"),
            Err(FtpEndpointError::Empty { .. })
        ));
        let both = "id: a\nhost: h\nuser: u\npassword: { env: P, file: /p }\n";
        assert!(matches!(
            parse(both).unwrap().validate(),
            Err(FtpEndpointError::Secret { .. })
        ));
        let unknown = parse(&format!("{MINIMAL}passwd: x\n")).unwrap_err();
        assert!(unknown.to_string().contains("passwd"), "{unknown}");
    }
}
