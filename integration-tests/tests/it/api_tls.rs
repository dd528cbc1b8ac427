//! The push API over HTTPS, served by the `medlake api-connector` process
//! itself: a file pushed over TLS lands, a renewed certificate is served
//! to new connections without a restart, plain HTTP and silent clients are
//! closed at the TLS port, and a start without a TLS choice or with a key
//! that does not fit its certificate fails.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use medlake_common::raw_file::sha256_hex;
use medlake_integration_tests::{eventually, metric_sample, short_id};

use crate::api::{PushFixture, api_connector_command, exchange, failed_start, json_of, lifetime};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1_500);

/// A self-signed certificate for `127.0.0.1` and its key, in PEM.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    /// SHA-256 of the certificate's DER: what the connector logs.
    fingerprint: String,
    der: Vec<u8>,
}

impl TestCert {
    fn new() -> Self {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: signing_key.serialize_pem(),
            fingerprint: sha256_hex(cert.der()),
            der: cert.der().to_vec(),
        }
    }

    /// Writes `tls.crt` and `tls.key` into `dir`, each replaced in one
    /// rename (as a Kubernetes Secret volume does).
    fn install(&self, dir: &Path) {
        for (name, pem) in [("tls.key", &self.key_pem), ("tls.crt", &self.cert_pem)] {
            let staged = dir.join(format!(".{name}.{}", short_id()));
            std::fs::write(&staged, pem).unwrap();
            std::fs::rename(&staged, dir.join(name)).unwrap();
        }
    }
}

/// A client that trusts `certs` only and reports the server's certificate.
fn https_client(certs: &[&TestCert]) -> reqwest::Client {
    let roots = certs
        .iter()
        .map(|c| reqwest::Certificate::from_pem(c.cert_pem.as_bytes()).unwrap());
    reqwest::Client::builder()
        .tls_certs_only(roots)
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate (DER) the server presented for `response`.
fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info of the connection")
        .to_vec()
}

#[tokio::test]
async fn push_over_https_lands_and_a_renewed_certificate_is_served_without_a_restart() {
    let fx = PushFixture::new().await;
    let tls_dir = fx.dir.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let (first, second) = (TestCert::new(), TestCert::new());
    first.install(&tls_dir);
    let connector = fx
        .start_with(
            &[("MEDLAKE_API_CONNECTOR__HEADER_READ_TIMEOUT_MS", "1500")],
            Some(&tls_dir),
        )
        .await;
    assert!(connector.base.starts_with("https://"), "{}", connector.base);

    // A file pushed over HTTPS lands in the raw zone; the first
    // certificate is the one presented.
    let client = https_client(&[&first, &second]);
    let bytes = format!("PK over TLS {}", short_id()).into_bytes();
    let response = client
        .put(format!("{}/v1/files/tls.zip", connector.base))
        .bearer_auth(&fx.key_a)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(peer_certificate(&response), first.der);
    let (status, receipt) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let raw_path = receipt["raw_path"].as_str().unwrap();
    assert_eq!(std::fs::read(fx.lake().join(raw_path)).unwrap(), bytes);

    // Plain HTTP at the TLS port: no HTTP answer, the connection is closed.
    let started = Instant::now();
    let (status, answer) = exchange(
        connector.address(),
        b"GET /v1/files HTTP/1.1\r\nHost: medlake\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(status, 0, "plain HTTP was answered: {answer:?}");
    assert!(
        started.elapsed() < HEADER_TIMEOUT,
        "{:?}",
        started.elapsed()
    );

    // A connection that never sends its ClientHello is closed after the
    // header read timeout.
    let silent = tokio::net::TcpStream::connect(connector.address())
        .await
        .unwrap();
    let life = lifetime(silent, b"", Duration::from_secs(20)).await;
    assert!(
        life >= HEADER_TIMEOUT - Duration::from_millis(300) && life < HEADER_TIMEOUT * 3,
        "a silent connection lived {life:?} (timeout {HEADER_TIMEOUT:?})"
    );

    // The certificate is renewed in place: new connections get the new one.
    second.install(&tls_dir);
    let renewed = eventually(
        Duration::from_secs(15),
        "the renewed certificate to be served",
        || {
            // A new client: a new connection and handshake.
            let request = https_client(&[&first, &second])
                .put(format!("{}/v1/files/renewed.zip", connector.base))
                .bearer_auth(&fx.key_b)
                .body(format!("PK renewed {}", short_id()))
                .send();
            let wanted = second.der.clone();
            async move {
                let response = request.await.ok()?;
                (peer_certificate(&response) == wanted).then_some(response)
            }
        },
    )
    .await;
    assert_eq!(renewed.status().as_u16(), 202);

    let metrics = connector.metrics().await;
    for (sample, at_least) in [
        (
            "medlake_api_connector_tls_reloads_total{outcome=\"loaded\"}",
            1.0,
        ),
        (
            "medlake_api_connector_tls_handshakes_failed_total{reason=\"error\"}",
            1.0,
        ),
        (
            "medlake_api_connector_tls_handshakes_failed_total{reason=\"timeout\"}",
            1.0,
        ),
    ] {
        let value = metric_sample(&metrics, sample).unwrap_or(0.0);
        assert!(value >= at_least, "{sample} = {value}\n{metrics}");
    }
    let expiry = metric_sample(
        &metrics,
        "medlake_api_connector_tls_certificate_expiry_timestamp_seconds",
    )
    .unwrap();
    assert!(expiry > chrono::Utc::now().timestamp() as f64, "{expiry}");
    // The log says which certificate is served, before and after.
    let logs = connector.logs();
    let loaded: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Push API TLS certificate loaded"))
        .collect();
    assert!(
        loaded
            .first()
            .is_some_and(|l| l.contains(&first.fingerprint)),
        "{loaded:?}"
    );
    assert!(
        loaded
            .last()
            .is_some_and(|l| l.contains(&second.fingerprint)),
        "{loaded:?}"
    );
    assert!(!logs.contains(second.key_pem.lines().nth(1).unwrap()));
}

/// No TLS choice at all, or a key that does not fit the certificate: the
/// connector does not start, and says why.
#[tokio::test]
async fn a_start_without_a_tls_choice_or_with_a_mismatched_key_fails() {
    let fx = PushFixture::new().await;
    let facilities = fx.dir.path().join("facilities.yaml");
    let log = fx.dir.path().join("start.log");

    let mut command = api_connector_command(&fx.topics, fx.dir.path(), &facilities);
    command.env_remove("MEDLAKE_API_CONNECTOR__TLS");
    let printed = failed_start(command, &log, &[]).await;
    assert!(
        printed.contains("api_connector.tls is not set"),
        "{printed}"
    );
    assert!(printed.contains("tls: none"), "{printed}");

    let (cert, other) = (TestCert::new(), TestCert::new());
    let dir = fx.dir.path();
    std::fs::write(dir.join("a.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("b.key"), &other.key_pem).unwrap();
    let mut command = api_connector_command(&fx.topics, dir, &facilities);
    command.env_remove("MEDLAKE_API_CONNECTOR__TLS");
    let (cert_file, key_file) = (dir.join("a.crt"), dir.join("b.key"));
    let printed = failed_start(
        command,
        &log,
        &[
            (
                "MEDLAKE_API_CONNECTOR__TLS__CERT_FILE",
                cert_file.to_str().unwrap(),
            ),
            (
                "MEDLAKE_API_CONNECTOR__TLS__KEY_FILE",
                key_file.to_str().unwrap(),
            ),
        ],
    )
    .await;
    assert!(
        printed.contains("does not fit the certificate"),
        "{printed}"
    );
    assert!(!printed.contains(other.key_pem.lines().nth(1).unwrap()));
}
