//! One control connection to an endpoint's server, logged in and in the
//! endpoint's directory. Every server round trip has the endpoint's
//! timeout, so a hung server fails the poll instead of stalling the task.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use medlake_common::budget;
use medlake_common::endpoints::ftp::FtpEndpoint;
use medlake_common::metrics;
use suppaftp::tokio::{AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpResult};
use tokio::io::AsyncReadExt;

use crate::error::PollError;
use crate::stability::{RemoteFile, parse_dir_line, parse_list_line};

/// A logged-in session (plain FTP or explicit FTPS: the stream type is the
/// same, TLS is switched on by `AUTH TLS`).
pub struct Session {
    ftp: AsyncRustlsFtpStream,
    timeout: Duration,
    made_dirs: bool,
    /// The login folder, which relative folders are taken from.
    home: String,
    /// Counts this session in `medlake_connector_ftp_sessions` while it lives.
    _held: Held,
}

/// One open session in the sessions gauge, from login to drop.
struct Held(prometheus::IntGauge);

impl Held {
    fn new(endpoint: &str) -> Self {
        let gauge = metrics::CONNECTOR_FTP_SESSIONS.with_label_values(&[endpoint]);
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs `op` with the endpoint's timeout.
async fn timed<T>(
    timeout: Duration,
    operation: &'static str,
    op: impl Future<Output = Result<T, PollError>>,
) -> Result<T, PollError> {
    tokio::time::timeout(timeout, op)
        .await
        .map_err(|_| PollError::Timeout {
            operation,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })?
}

fn command(operation: &'static str) -> impl FnOnce(FtpError) -> PollError {
    move |source| PollError::Command { operation, source }
}

/// A TLS client trusting the system's CAs and the endpoint's `ca_file`.
fn tls_connector(endpoint: &FtpEndpoint) -> Result<AsyncRustlsConnector, PollError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let tls_error = |reason: String| PollError::Tls { reason };
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &endpoint.ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| tls_error(format!("cannot read {}: {e}", path.display())))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| tls_error(format!("bad PEM in {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("bad certificate in {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(AsyncRustlsConnector::from(TlsConnector::from(Arc::new(
        config,
    ))))
}

impl Session {
    /// Connects, switches to TLS when the endpoint asks for it, logs in,
    /// selects binary transfers and enters the endpoint's directory.
    pub async fn open(endpoint: &FtpEndpoint) -> Result<Self, PollError> {
        let timeout = Duration::from_millis(endpoint.timeout_ms);
        // Read the secret first: a missing one needs no server round trip.
        let password = endpoint
            .password
            .resolve()
            .map_err(|source| PollError::Password { source })?;
        let host = endpoint.host.clone();
        let port = endpoint.port;
        let mut ftp = timed(timeout, "connect", async {
            AsyncRustlsFtpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| PollError::Connect {
                    host: host.clone(),
                    port,
                    source,
                })
        })
        .await?;
        if endpoint.ftps {
            let connector = tls_connector(endpoint)?;
            ftp = timed(timeout, "tls", async {
                ftp.into_secure(connector, &endpoint.host)
                    .await
                    .map_err(|e| PollError::Tls {
                        reason: e.to_string(),
                    })
            })
            .await?;
        }
        // Data connections go to the control connection's peer even when
        // the server announces a private address (NAT).
        ftp.set_passive_nat_workaround(true);
        timed(timeout, "login", async {
            ftp.login(endpoint.user.as_str(), password.expose())
                .await
                .map_err(|source| PollError::Login {
                    user: endpoint.user.clone(),
                    source,
                })
        })
        .await?;
        timed(timeout, "type", async {
            ftp.transfer_type(FileType::Binary)
                .await
                .map_err(command("type"))
        })
        .await?;
        let home = timed(timeout, "pwd", async {
            ftp.pwd().await.map_err(command("pwd"))
        })
        .await?;
        let mut session = Self {
            ftp,
            timeout,
            made_dirs: false,
            home,
            _held: Held::new(&endpoint.id),
        };
        if endpoint.directory != "." {
            session.enter(&endpoint.directory).await?;
        }
        Ok(session)
    }

    /// Makes `directory` (absolute, or relative to the login folder) the
    /// current folder.
    pub async fn enter(&mut self, directory: &str) -> Result<(), PollError> {
        let target = if directory.starts_with('/') {
            directory.to_string()
        } else {
            join(&self.home, directory)
        };
        let timeout = self.timeout;
        timed(timeout, "cwd", async {
            self.ftp.cwd(&target).await.map_err(command("cwd"))
        })
        .await?;
        self.made_dirs = false;
        Ok(())
    }

    /// Whether the server still answers (an idle session may have been
    /// closed by the server).
    pub async fn alive(&mut self) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.ftp.noop()).await,
            Ok(Ok(()))
        )
    }

    /// The plain files of the current directory.
    pub async fn list(&mut self) -> Result<Vec<RemoteFile>, PollError> {
        let timeout = self.timeout;
        let lines = timed(timeout, "list", async {
            self.ftp.list(None).await.map_err(command("list"))
        })
        .await?;
        Ok(lines.iter().filter_map(|l| parse_list_line(l)).collect())
    }

    /// The names of the folders in `directory`.
    pub async fn folders(&mut self, directory: &str) -> Result<Vec<String>, PollError> {
        let timeout = self.timeout;
        let lines = timed(timeout, "list", async {
            self.ftp
                .list(Some(directory))
                .await
                .map_err(command("list"))
        })
        .await?;
        Ok(lines.iter().filter_map(|l| parse_dir_line(l)).collect())
    }

    /// The modification time of `name` (UTC).
    pub async fn modified(&mut self, name: &str) -> Result<chrono::NaiveDateTime, PollError> {
        let timeout = self.timeout;
        timed(timeout, "mdtm", async {
            self.ftp.mdtm(name).await.map_err(command("mdtm"))
        })
        .await
    }

    /// Downloads `name` into memory, failing once more than `max_bytes`
    /// arrived, or more than `held` and the budget has no room for the rest.
    /// Each read has the endpoint's timeout, so a slow but steady transfer of
    /// a large file is fine.
    pub async fn download(
        &mut self,
        name: &str,
        expected_bytes: u64,
        max_bytes: u64,
        held: &mut budget::Held,
    ) -> Result<Bytes, PollError> {
        let download_error = |source| PollError::Download {
            file_name: name.to_string(),
            source,
        };
        let timeout = self.timeout;
        let mut stream = timed(timeout, "download", async {
            self.ftp.retr_as_stream(name).await.map_err(download_error)
        })
        .await?;
        // Room past the listed size, so that the read which finds the end
        // of the file does not double the buffer first.
        let capacity =
            usize::try_from(expected_bytes.min(max_bytes) + DOWNLOAD_SLACK_BYTES).unwrap_or(0);
        let mut buf = BytesMut::with_capacity(capacity);
        loop {
            let read = timed(timeout, "download", async {
                stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| download_error(FtpError::ConnectionError(e)))
            })
            .await?;
            if read == 0 {
                break;
            }
            if buf.len() as u64 > max_bytes {
                // The session is left mid-transfer; the caller drops it.
                return Err(PollError::TooLarge {
                    file_name: name.to_string(),
                    max_file_bytes: max_bytes,
                });
            }
            if !held.grow_to(buf.capacity() as u64) {
                return Err(PollError::Grew {
                    file_name: name.to_string(),
                    read_bytes: buf.len() as u64,
                });
            }
        }
        timed(timeout, "download", async {
            stream.finish().await.map_err(download_error)
        })
        .await?;
        Ok(buf.freeze())
    }

    /// Creates the endpoint's `processed` and `rejected` folders once per
    /// session (an error means they exist, or the move will say why not).
    async fn make_dirs(&mut self, endpoint: &FtpEndpoint) {
        if self.made_dirs {
            return;
        }
        for dir in [&endpoint.processed_dir, &endpoint.rejected_dir] {
            let _ = tokio::time::timeout(self.timeout, self.ftp.mkdir(dir)).await;
        }
        self.made_dirs = true;
    }

    /// Moves `name` into `dir`; when a file of that name is already there
    /// (a re-sent file), the new one gets `.<suffix>` appended.
    pub async fn move_to(
        &mut self,
        endpoint: &FtpEndpoint,
        name: &str,
        dir: &str,
        suffix: &str,
    ) -> Result<(), PollError> {
        self.make_dirs(endpoint).await;
        let target = join(dir, name);
        if self.rename(name, &target).await.is_ok() {
            return Ok(());
        }
        let fallback = format!("{target}.{suffix}");
        self.rename(name, &fallback)
            .await
            .map_err(|source| PollError::Finish {
                action: "move",
                file_name: name.to_string(),
                source,
            })
    }

    async fn rename(&mut self, from: &str, to: &str) -> FtpResult<()> {
        match tokio::time::timeout(self.timeout, self.ftp.rename(from, to)).await {
            Ok(result) => result,
            Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "rename timed out",
            ))),
        }
    }

    /// Deletes `name`.
    pub async fn delete(&mut self, name: &str) -> Result<(), PollError> {
        let timeout = self.timeout;
        timed(timeout, "finish", async {
            self.ftp.rm(name).await.map_err(|source| PollError::Finish {
                action: "delete",
                file_name: name.to_string(),
                source,
            })
        })
        .await
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.ftp.quit()).await;
    }
}

/// Bytes a download buffer has beyond the file's listed size (and holds of
/// the download budget).
pub const DOWNLOAD_SLACK_BYTES: u64 = 64 * 1024;

/// `dir/name`, without doubling a trailing `/`.
pub fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_paths() {
        assert_eq!(join("processed", "a.zip"), "processed/a.zip");
        assert_eq!(join("/done/", "a.zip"), "/done/a.zip");
    }
}
