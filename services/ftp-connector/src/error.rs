//! The connector's errors: [`FtpConnectorError`] stops the service,
//! [`PollError`] fails one poll of one endpoint, which backs off and retries.
//! Neither ever carries a password: the FTP library's errors quote the
//! server's reply, never the command sent.

use medlake_common::facilities::RegistryError;
use medlake_common::ingest::IngestError;
use medlake_common::logging::file_name_ref;
use medlake_common::secret::SecretError;
use medlake_common::{Classify, ErrorKind};
use suppaftp::FtpError;

/// The service cannot run.
#[derive(Debug, thiserror::Error)]
pub enum FtpConnectorError {
    #[error("invalid ftp_connector configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot start ingestion: {0}")]
    Ingest(#[from] IngestError),
    #[error("endpoint {endpoint}: {source}")]
    Poll {
        endpoint: String,
        source: Box<PollError>,
    },
    #[error("an endpoint task crashed: {reason}")]
    Crashed { reason: String },
}

impl Classify for FtpConnectorError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Fatal
    }
}

/// One poll of one endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("cannot read the password: {source}")]
    Password { source: SecretError },
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: FtpError,
    },
    #[error("TLS set-up failed: {reason}")]
    Tls { reason: String },
    #[error("login as {user:?} refused: {source}")]
    Login { user: String, source: FtpError },
    #[error("{operation} failed: {source}")]
    Command {
        operation: &'static str,
        source: FtpError,
    },
    #[error("{operation} timed out after {timeout_ms} ms")]
    Timeout {
        operation: &'static str,
        timeout_ms: u64,
    },
    #[error("download of {} failed: {source}", file_name_ref(file_name))]
    Download { file_name: String, source: FtpError },
    #[error(
        "{} is larger than max_file_bytes ({max_file_bytes})",
        file_name_ref(file_name)
    )]
    TooLarge {
        file_name: String,
        max_file_bytes: u64,
    },
    #[error(
        "{} grew past its listed size while it was read ({read_bytes} bytes) \
         and the download budget has no room for more now",
        file_name_ref(file_name)
    )]
    Grew { file_name: String, read_bytes: u64 },
    #[error("ingesting {} failed: {source}", file_name_ref(file_name))]
    Ingest {
        file_name: String,
        source: IngestError,
    },
    #[error(
        "cannot {action} {} after ingesting it: {source}",
        file_name_ref(file_name)
    )]
    Finish {
        action: &'static str,
        file_name: String,
        source: FtpError,
    },
}

impl PollError {
    /// Whether the server said a folder does not exist (550 to `CWD`): a
    /// facility that has not pushed by FTP yet, not a failure.
    pub fn is_missing_folder(&self) -> bool {
        matches!(self, PollError::Command { operation: "cwd", source: FtpError::UnexpectedResponse(reply) }
            if reply.status == suppaftp::Status::FileUnavailable)
    }

    /// The bounded `stage` label of the poll error metric.
    pub fn stage(&self) -> &'static str {
        match self {
            PollError::Password { .. } => "password",
            PollError::Connect { .. } => "connect",
            PollError::Tls { .. } => "tls",
            PollError::Login { .. } => "login",
            PollError::Command { operation, .. } | PollError::Timeout { operation, .. } => {
                operation
            }
            PollError::Download { .. } | PollError::TooLarge { .. } | PollError::Grew { .. } => {
                "download"
            }
            PollError::Ingest { .. } => "ingest",
            PollError::Finish { .. } => "finish",
        }
    }
}

impl Classify for PollError {
    fn kind(&self) -> ErrorKind {
        match self {
            PollError::Ingest { source, .. } => source.kind(),
            PollError::TooLarge { .. } => ErrorKind::BadInput,
            // A wrong password or an unreachable server is the endpoint's
            // problem, not the service's: retry with backoff.
            _ => ErrorKind::Retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_bounded_and_kinds_decide_the_loop() {
        let login = PollError::Login {
            user: "u".into(),
            source: FtpError::BadResponse,
        };
        assert_eq!(login.stage(), "login");
        assert_eq!(login.kind(), ErrorKind::Retryable);
        let timeout = PollError::Timeout {
            operation: "list",
            timeout_ms: 5,
        };
        assert_eq!(timeout.stage(), "list");
        let fatal = PollError::Ingest {
            file_name: "a".into(),
            source: IngestError::Open {
                uri: "x".into(),
                reason: "y".into(),
            },
        };
        assert_eq!(fatal.kind(), ErrorKind::Fatal);
        let big = PollError::TooLarge {
            file_name: "a".into(),
            max_file_bytes: 1,
        };
        assert_eq!(big.kind(), ErrorKind::BadInput);
    }
}
