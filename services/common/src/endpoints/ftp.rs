//! FTP endpoints the ftp-connector polls: a customer's own server (source
//! `ftp_pull`), or a single folder a facility pushes to (source `ftp`).
//!
//! ```yaml
//! facilities:
//!   - id: F1001
//!     ftp:
//!       - id: f1001-export
//!         host: ftp.f1001.example
//!         user: medlake
//!         password: { env: F1001_FTP_PASSWORD }
//!         directory: /outgoing
//!         glob: "*.zip"
//!         source: ftp_pull
//!         ftps: true
//! ```
//!
//! The company's landing server is one [`LandingServer`]: a folder per
//! facility (`directory` holds `{facility}`), walked by a bounded pool of
//! sessions instead of one endpoint and one session per facility.
//!
//! ```yaml
//! landing:
//!   - sessions: 4
//!     server:
//!       id: landing
//!       host: landing.internal
//!       user: medlake
//!       password: { env: LANDING_FTP_PASSWORD }
//!       directory: "/{facility}/incoming"
//!       ftps: true
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
    /// Explicit FTPS (`AUTH TLS` on the control port, protected data
    /// channel). On unless the registry says `ftps: false`: plain FTP sends
    /// the password and every file (PHI) in clear, so it is an explicit
    /// choice for servers on a trusted network only.
    #[serde(default = "default_ftps")]
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
fn default_ftps() -> bool {
    true
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

/// The placeholder of a landing server's `directory` that stands for a
/// facility id.
pub const FACILITY_PLACEHOLDER: &str = "{facility}";

/// The company's landing FTP server: facilities push into their own folder,
/// found by putting the facility id into `server.directory`
/// (`/{facility}/incoming`). A bounded pool of `sessions` walks every
/// registered facility's folder; folders of unknown facilities are ignored.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LandingServer {
    /// FTP sessions held at once (real servers cap sessions per client).
    #[serde(default = "default_landing_sessions")]
    pub sessions: usize,
    /// The server, and what every facility folder shares: glob, stability,
    /// poll interval, after, processed and rejected folders, size limit.
    /// Its `id` is the `endpoint` metric label of every folder; its
    /// `directory` holds one path segment `{facility}`.
    pub server: FtpEndpoint,
}

fn default_landing_sessions() -> usize {
    4
}

impl LandingServer {
    /// Checks the definition: the server as an endpoint, at least one
    /// session, source `ftp`, and `{facility}` as one whole path segment.
    pub fn validate(&self) -> Result<(), FtpEndpointError> {
        self.server.validate()?;
        let id = || self.server.id.clone();
        if self.sessions == 0 {
            return Err(FtpEndpointError::Zero {
                id: id(),
                field: "sessions",
            });
        }
        if self.server.source != Source::Ftp {
            return Err(FtpEndpointError::BadSource { id: id() });
        }
        let segments = self.server.directory.split('/');
        let placeholders = segments
            .clone()
            .filter(|s| s.contains(FACILITY_PLACEHOLDER))
            .count();
        if placeholders != 1 || !segments.clone().any(|s| s == FACILITY_PLACEHOLDER) {
            return Err(FtpEndpointError::BadLandingDirectory {
                id: id(),
                directory: self.server.directory.clone(),
            });
        }
        Ok(())
    }

    /// The folder that holds the facility folders (`/` for
    /// `/{facility}/incoming`, `.` for `{facility}`).
    pub fn parent_dir(&self) -> String {
        let directory = &self.server.directory;
        let at = directory.find(FACILITY_PLACEHOLDER).unwrap_or(0);
        match directory[..at].trim_end_matches('/') {
            "" if directory.starts_with('/') => "/".to_string(),
            "" => ".".to_string(),
            parent => parent.to_string(),
        }
    }

    /// One facility's folder as an endpoint of its own: the server's
    /// settings with `{facility}` replaced by the facility id.
    pub fn folder_of(&self, facility_id: &str) -> FtpEndpoint {
        FtpEndpoint {
            directory: self
                .server
                .directory
                .replace(FACILITY_PLACEHOLDER, facility_id),
            ..self.server.clone()
        }
    }
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
    #[error(
        "landing server {id}: directory {directory:?} must hold {{facility}} as one whole path segment, e.g. /{{facility}}/incoming"
    )]
    BadLandingDirectory { id: String, directory: String },
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
        assert!(e.ftps, "plain FTP only when asked for");
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

    fn landing(yaml: &str) -> Result<LandingServer, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    #[test]
    fn a_landing_server_puts_the_facility_into_its_folder() {
        let l = landing(&format!(
            "server: {{ {}, directory: '/in/{{facility}}/incoming' }}",
            "id: landing, host: h, user: u, password: { env: P }"
        ))
        .unwrap();
        l.validate().unwrap();
        assert_eq!(l.sessions, 4);
        assert_eq!(l.parent_dir(), "/in");
        let folder = l.folder_of("F1");
        assert_eq!(folder.directory, "/in/F1/incoming");
        assert_eq!(
            (folder.id.as_str(), folder.source),
            ("landing", Source::Ftp)
        );
        for (directory, parent) in [("/{facility}", "/"), ("{facility}/x", ".")] {
            let mut l = l.clone();
            l.server.directory = directory.into();
            l.validate().unwrap();
            assert_eq!(l.parent_dir(), parent, "{directory}");
        }
    }

    #[test]
    fn a_landing_server_needs_one_facility_segment_and_a_session() {
        let base = "server: { id: landing, host: h, user: u, password: { env: P }";
        for directory in ["/incoming", "/f-{facility}/in", "/{facility}/{facility}"] {
            let l = landing(&format!("{base}, directory: '{directory}' }}")).unwrap();
            assert!(
                matches!(
                    l.validate(),
                    Err(FtpEndpointError::BadLandingDirectory { .. })
                ),
                "{directory}"
            );
        }
        let l = landing(&format!(
            "sessions: 0\n{base}, directory: '/{{facility}}' }}"
        ))
        .unwrap();
        assert!(matches!(l.validate(), Err(FtpEndpointError::Zero { .. })));
        let l = landing(&format!(
            "{base}, directory: '/{{facility}}', source: ftp_pull }}"
        ))
        .unwrap();
        assert!(matches!(
            l.validate(),
            Err(FtpEndpointError::BadSource { .. })
        ));
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
