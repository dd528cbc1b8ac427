//! TLS of the push API, served by the api-connector itself (rustls with the
//! aws-lc-rs provider reqwest already builds), so API keys and files never
//! cross a network in cleartext, not even the one between a load balancer
//! and the pod.
//!
//! The certificate chain and key are PEM files (`api_connector.tls`), read
//! again every `reload_interval_ms`: a pair that changed and loads (the key
//! matches the certificate, the certificate has not expired) is served to
//! every new connection from then on, without a restart, which is what
//! cert-manager and Kubernetes Secret volumes need. A pair that does not
//! load is logged once and the previous certificate stays in service. Each
//! certificate served is logged with its SHA-256 fingerprint and expiry,
//! and its expiry is exported
//! (`medlake_api_connector_tls_certificate_expiry_timestamp_seconds`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use medlake_common::Shutdown;
use medlake_common::raw_file::sha256_hex;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;
use crate::metrics;

/// The certificate files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no PEM {what} in it: {source}", path.display())]
    Pem {
        path: PathBuf,
        what: &'static str,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("the key in {} does not fit the certificate in {}: {source}", key.display(), cert.display())]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: the certificate expired at {not_after}", path.display())]
    Expired {
        path: PathBuf,
        not_after: DateTime<Utc>,
    },
    #[error("cannot set up TLS: {source}")]
    Config { source: rustls::Error },
}

/// The certificate being served, and the files it comes from.
#[derive(Debug)]
pub struct CertificateStore {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// Digests of the file contents last read (or the read error), so a
    /// pair is loaded, or its failure logged, once per change.
    seen: Mutex<String>,
}

/// What a look at the files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files are as last read.
    Unchanged,
    /// A new certificate is served (its SHA-256 fingerprint).
    Loaded { fingerprint: String },
    /// The files changed but do not load; the previous certificate stays.
    Refused,
}

impl CertificateStore {
    /// Loads the certificate at start; a pair that does not load stops the
    /// start.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = read_pair(&files)?;
        let loaded = certified_key(&cert, &key, &files, &provider)?;
        served(&loaded);
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(loaded.key)),
            seen: Mutex::new(digest(&cert, &key)),
            files,
            provider,
        }))
    }

    /// A TLS acceptor serving whatever certificate is current, HTTP/1.1
    /// only (ALPN), TLS 1.2 and 1.3 with rustls' safe defaults.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Config { source })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the files; serves their certificate when they changed and load.
    pub fn reload(&self) -> Reload {
        let read = read_pair(&self.files);
        let state = match &read {
            Ok((cert, key)) => digest(cert, key),
            Err(error) => format!("error: {error}"),
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == state {
                return Reload::Unchanged;
            }
            *seen = state;
        }
        let loaded =
            read.and_then(|(cert, key)| certified_key(&cert, &key, &self.files, &self.provider));
        match loaded {
            Ok(loaded) => {
                let fingerprint = loaded.fingerprint.clone();
                served(&loaded);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded.key);
                metrics::TLS_RELOADS.with_label_values(&["loaded"]).inc();
                Reload::Loaded { fingerprint }
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "The changed TLS certificate files do not load; the previous certificate is still served."
                );
                metrics::TLS_RELOADS.with_label_values(&["refused"]).inc();
                Reload::Refused
            }
        }
    }

    /// Looks at the files every `reload_interval_ms` until `stop`.
    pub async fn watch(self: Arc<Self>, stop: Shutdown) {
        let every = Duration::from_millis(self.files.reload_interval_ms.max(100));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            let store = self.clone();
            // Two small files, read off the async runtime.
            let _ = tokio::task::spawn_blocking(move || store.reload()).await;
        }
    }
}

impl ResolvesServerCert for CertificateStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A certificate and key ready to serve, and what identifies them.
struct Loaded {
    key: CertifiedKey,
    fingerprint: String,
    not_after: Option<DateTime<Utc>>,
}

/// Logs and exports the certificate now served.
fn served(loaded: &Loaded) {
    metrics::TLS_CERT_LOADED.set(Utc::now().timestamp());
    if let Some(not_after) = loaded.not_after {
        metrics::TLS_CERT_EXPIRY.set(not_after.timestamp());
    }
    tracing::info!(
        fingerprint_sha256 = loaded.fingerprint,
        not_after = loaded.not_after.map(|t| t.to_rfc3339()),
        "Push API TLS certificate loaded."
    );
}

fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    Ok((read(&files.cert_file)?, read(&files.key_file)?))
}

fn digest(cert: &[u8], key: &[u8]) -> String {
    format!("{}:{}", sha256_hex(cert), sha256_hex(key))
}

/// Parses the PEM chain and key and checks that they belong together and
/// that the certificate has not expired.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: files.cert_file.clone(),
            what: "certificate",
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: files.cert_file.clone(),
        });
    };
    let fingerprint = sha256_hex(leaf);
    let not_after = not_after(leaf);
    if let Some(not_after) = not_after.filter(|t| *t < Utc::now()) {
        return Err(TlsError::Expired {
            path: files.cert_file.clone(),
            not_after,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        path: files.key_file.clone(),
        what: "private key",
        source,
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        source,
    })?;
    Ok(Loaded {
        key,
        fingerprint,
        not_after,
    })
}

/// One DER element: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `notAfter` of an X.509 certificate (RFC 5280: Certificate →
/// tbsCertificate → [version], serialNumber, signature, issuer, validity).
fn not_after(cert: &[u8]) -> Option<DateTime<Utc>> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let (tag, _, mut rest) = der_element(tbs)?;
    // Skip the version (when present), serial number, signature and issuer.
    let skip = if tag == VERSION { 3 } else { 2 };
    for _ in 0..skip {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = der_element(rest)? else {
        return None;
    };
    let (_, _, after) = der_element(validity)?;
    let (tag, time, _) = der_element(after)?;
    let time = std::str::from_utf8(time).ok()?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950 to 2049.
        0x17 => {
            let century = if time.get(..2)? < "50" { "20" } else { "19" };
            format!("{century}{time}")
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 => time.to_string(),
        _ => return None,
    };
    NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// A self-signed certificate for `127.0.0.1` valid until `not_after`
    /// (year, month, day), written to `dir` as `name.crt` / `name.key`.
    fn write_cert(dir: &Path, name: &str, not_after: (i32, u8, u8)) -> TlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
            reload_interval_ms: 100,
        };
        std::fs::write(&files.cert_file, cert.pem()).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        files
    }

    fn fingerprint_of(files: &TlsFiles) -> String {
        let pem = std::fs::read(&files.cert_file).unwrap();
        sha256_hex(&CertificateDer::from_pem_slice(&pem).unwrap())
    }

    #[test]
    fn reads_not_after_from_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        for (year, expected) in [(2040, 2040), (2051, 2051)] {
            let files = write_cert(dir.path(), "a", (year, 6, 30));
            let pem = std::fs::read(&files.cert_file).unwrap();
            let der = CertificateDer::from_pem_slice(&pem).unwrap();
            let at = not_after(&der).unwrap();
            assert_eq!(
                at.date_naive(),
                Utc.with_ymd_and_hms(expected, 6, 30, 0, 0, 0)
                    .unwrap()
                    .date_naive()
            );
        }
        assert_eq!(not_after(b"\x30\x03\x02\x01\x01"), None);
        assert_eq!(not_after(b""), None);
    }

    #[test]
    fn a_changed_pair_is_served_and_a_bad_one_keeps_the_previous() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_cert(dir.path(), "served", (2040, 1, 1));
        let store = CertificateStore::load(first.clone()).unwrap();
        let served = || sha256_hex(&store.resolve_current().cert[0]);
        assert_eq!(served(), fingerprint_of(&first));
        assert_eq!(store.reload(), Reload::Unchanged);

        // A new pair in the same files: served from the next look on.
        let second = write_cert(dir.path(), "next", (2041, 1, 1));
        std::fs::copy(&second.cert_file, &first.cert_file).unwrap();
        std::fs::copy(&second.key_file, &first.key_file).unwrap();
        assert_eq!(
            store.reload(),
            Reload::Loaded {
                fingerprint: fingerprint_of(&second)
            }
        );
        assert_eq!(served(), fingerprint_of(&second));

        // Half a rotation (a new certificate, the old key): refused once,
        // the previous pair stays; completing it loads.
        let third = write_cert(dir.path(), "third", (2042, 1, 1));
        std::fs::copy(&third.cert_file, &first.cert_file).unwrap();
        assert_eq!(store.reload(), Reload::Refused);
        assert_eq!(store.reload(), Reload::Unchanged);
        assert_eq!(served(), fingerprint_of(&second));
        std::fs::copy(&third.key_file, &first.key_file).unwrap();
        assert!(matches!(store.reload(), Reload::Loaded { .. }));
        assert_eq!(served(), fingerprint_of(&third));

        // Garbage, a missing file, an expired certificate: all refused.
        std::fs::write(&first.cert_file, "not a certificate").unwrap();
        assert_eq!(store.reload(), Reload::Refused);
        std::fs::remove_file(&first.cert_file).unwrap();
        assert_eq!(store.reload(), Reload::Refused);
        let expired = write_cert(dir.path(), "expired", (2001, 1, 1));
        std::fs::copy(&expired.cert_file, &first.cert_file).unwrap();
        std::fs::copy(&expired.key_file, &first.key_file).unwrap();
        assert_eq!(store.reload(), Reload::Refused);
        assert_eq!(served(), fingerprint_of(&third));
    }

    #[test]
    fn a_bad_pair_stops_the_start_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", (2040, 1, 1));
        let b = write_cert(dir.path(), "b", (2040, 1, 1));
        let mismatched = TlsFiles {
            key_file: b.key_file.clone(),
            ..a.clone()
        };
        let err = CertificateStore::load(mismatched).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        assert!(err.to_string().contains("does not fit"), "{err}");

        let missing = TlsFiles {
            cert_file: dir.path().join("nope.crt"),
            ..a.clone()
        };
        let err = CertificateStore::load(missing).unwrap_err();
        assert!(err.to_string().contains("nope.crt"), "{err}");

        let swapped = TlsFiles {
            cert_file: a.key_file.clone(),
            key_file: a.cert_file.clone(),
            ..a
        };
        let err = CertificateStore::load(swapped).unwrap_err();
        assert!(
            matches!(err, TlsError::NoCertificate { .. } | TlsError::Pem { .. }),
            "{err}"
        );
        // The key is never part of the message.
        let key_pem = std::fs::read_to_string(&b.key_file).unwrap();
        let body = key_pem.lines().nth(1).unwrap();
        assert!(!err.to_string().contains(body));
    }

    impl CertificateStore {
        fn resolve_current(&self) -> Arc<CertifiedKey> {
            self.current.read().unwrap().clone()
        }
    }
}
