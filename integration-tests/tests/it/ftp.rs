//! `medlake ftp-connector` as a real child process, against the real broker
//! and a real FTP server (`scripts/ftp_server.py`, pyftpdlib) started per
//! test on a free port with a temporary root. Files are uploaded with a
//! real FTP client (suppaftp).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use medlake_common::config::TopicsConfig;
use medlake_common::raw_file::{RawHeaders, Source, sha256_hex};
use medlake_common::topics;
use medlake_integration_tests::{
    ChildGuard, assert_no_more, eventually, free_port, kafka_config, medlake, read_topic, short_id,
    topics_config,
};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use suppaftp::tokio::{AsyncFtpStream, AsyncRustlsConnector, AsyncRustlsFtpStream};
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::types::FileType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(60);
const USER: &str = "medlake";

/// A running FTP server (the harness's) and its root directory on disk.
struct FtpServer {
    _server: medlake_integration_tests::FtpServer,
    port: u16,
    root: PathBuf,
    password: String,
}

impl FtpServer {
    /// Starts `scripts/ftp_server.py` and waits for its ready line.
    fn start(root: &Path) -> Self {
        Self::start_with(root, &[])
    }

    /// Like [`FtpServer::start`], with extra arguments for the script.
    fn start_with(root: &Path, extra_args: &[&std::ffi::OsStr]) -> Self {
        let server = medlake_integration_tests::FtpServer::start_with(root, USER, extra_args);
        Self {
            port: server.port,
            password: server.password.clone(),
            root: root.to_path_buf(),
            _server: server,
        }
    }

    async fn client(&self) -> AsyncFtpStream {
        let mut ftp = AsyncFtpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        ftp.login(USER, &self.password).await.unwrap();
        ftp.transfer_type(FileType::Binary).await.unwrap();
        ftp
    }

    /// Uploads `bytes` as `name` with an FTP client.
    async fn upload(&self, name: &str, bytes: &[u8]) {
        let mut ftp = self.client().await;
        ftp.put_file(name, &mut &bytes[..]).await.unwrap();
        ftp.quit().await.unwrap();
    }

    /// Appends `bytes` to `name` with an FTP client (APPE).
    async fn append(&self, name: &str, bytes: &[u8]) {
        let mut ftp = self.client().await;
        ftp.append_file(name, &mut &bytes[..]).await.unwrap();
        ftp.quit().await.unwrap();
    }
}

/// A running `medlake ftp-connector` writing JSON logs to a file.
struct Connector {
    child: ChildGuard,
    admin_port: u16,
    log: PathBuf,
}

impl Connector {
    fn start(topics: &TopicsConfig, dir: &Path, env: &[(&str, &str)]) -> Self {
        let admin_port = free_port();
        let log = dir.join("connector.log");
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = medlake(topics);
        command
            .arg("ftp-connector")
            .env("MEDLAKE_LAKE_URI", dir.join("lake"))
            .env("MEDLAKE_FACILITIES_FILE", dir.join("facilities.yaml"))
            .env("MEDLAKE_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("MEDLAKE_LOG__FORMAT", "json")
            .env("MEDLAKE_FTP_CONNECTOR__RETRY_BACKOFF_INITIAL_MS", "200")
            .env("MEDLAKE_FTP_CONNECTOR__RETRY_BACKOFF_MAX_MS", "1000")
            .env("RUST_LOG", "info,medlake_ftp_connector=debug")
            .env("NO_COLOR", "1")
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        Self {
            child: ChildGuard::spawn(command),
            admin_port,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines.
    fn events(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// The admin server's `/metrics` text (empty while it is not up).
    async fn metrics(&self) -> String {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port)).await
        else {
            return String::new();
        };
        let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        response
    }

    /// The value of one sample of `/metrics` (`name{labels}`), if present.
    async fn metric(&self, sample: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|line| {
            let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
    }
}

/// Writes the facility registry: `(facility, endpoint id, password env,
/// extra endpoint YAML)` per endpoint, all on the test's server.
fn write_facilities(dir: &Path, port: u16, endpoints: &[(&str, &str, &str, &str)]) {
    let mut yaml = String::from("facilities:\n");
    for (facility, id, password_env, extra) in endpoints {
        // The test server speaks plain FTP unless the endpoint says otherwise.
        let plain = if extra.contains("ftps:") {
            ""
        } else {
            "        ftps: false\n"
        };
        yaml.push_str(&format!(
            "  - id: {facility}\n    ftp:\n      - id: {id}\n        host: 127.0.0.1\n        \
             port: {port}\n        user: {USER}\n        password: {{ env: {password_env} }}\n        \
             poll_interval_ms: 300\n        timeout_ms: 5000\n{plain}{extra}"
        ));
    }
    std::fs::write(dir.join("facilities.yaml"), yaml).unwrap();
}

async fn ensure_topics(config: &TopicsConfig) {
    let admin = medlake_common::kafka::admin(&kafka_config()).unwrap();
    topics::ensure(&admin, &topics::specs(config, []))
        .await
        .expect("create the test topics (is the broker up? `make kafka-up`)");
}

/// What most tests start from: a temporary directory, the FTP server under
/// it, fresh topics, and a registry with one endpoint `id` of facility `F1`
/// (`extra`: more endpoint YAML) whose password comes from `env.0`.
struct Landing {
    dir: tempfile::TempDir,
    server: FtpServer,
    topics: TopicsConfig,
    env: (String, String),
}

impl Landing {
    async fn new(id: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = FtpServer::start(&dir.path().join("ftp"));
        Self::with_server(dir, server, id, extra).await
    }

    async fn with_server(dir: tempfile::TempDir, server: FtpServer, id: &str, extra: &str) -> Self {
        let topics = topics_config();
        ensure_topics(&topics).await;
        let env_name = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
        write_facilities(dir.path(), server.port, &[("F1", id, &env_name, extra)]);
        let env = (env_name, server.password.clone());
        Self {
            dir,
            server,
            topics,
            env,
        }
    }

    fn start_connector(&self) -> Connector {
        Connector::start(&self.topics, self.dir.path(), &[(&self.env.0, &self.env.1)])
    }
}

/// Checks a raw-file message against the bytes it should carry.
fn assert_raw_message(message: &OwnedMessage, facility: &str, name: &str, bytes: &[u8]) {
    let headers = RawHeaders::from_message(message).expect("raw-file headers");
    assert_eq!(headers.file_id, sha256_hex(bytes));
    assert_eq!(headers.facility_id, facility);
    assert_eq!(headers.source, Source::Ftp);
    assert_eq!(headers.file_name, name);
    let age = chrono::Utc::now() - headers.received_at;
    assert!(
        age < chrono::Duration::minutes(5),
        "received_at {age:?} ago"
    );
    assert_eq!(message.key(), Some(facility.as_bytes()));
    assert_eq!(message.payload().unwrap_or_default(), bytes);
    assert!(headers.payload_ref.is_none());
}

/// The raw zone copy of a file.
fn raw_copy(dir: &Path, facility: &str, bytes: &[u8]) -> Vec<u8> {
    let id = sha256_hex(bytes);
    let base = dir.join("lake/_raw").join(facility);
    let mut found = Vec::new();
    let mut stack = vec![base];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == id.as_str()) {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "raw zone copies of {id}: {found:?}");
    std::fs::read(&found[0]).unwrap()
}

#[tokio::test]
async fn uploaded_files_are_published_once_kept_raw_and_moved_to_processed() {
    let landing = Landing::new("f1-landing", "        glob: '*.zip'\n").await;
    let (dir, server, topics) = (&landing.dir, &landing.server, &landing.topics);
    let mut connector = landing.start_connector();

    let files: [(&str, Vec<u8>); 2] = [
        (
            "a.zip",
            b"first file \r\n with CRLF and \x00 bytes".to_vec(),
        ),
        (
            "b b.zip",
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        ),
    ];
    for (name, bytes) in &files {
        server.upload(name, bytes).await;
    }
    server.upload("notes.txt", b"not matching the glob").await;

    let raw_topic = topics.raw_files();
    let mut messages = read_topic(&raw_topic, 2, TIMEOUT).await;
    assert_eq!(messages.len(), 2, "{}", connector.logs());
    messages.sort_by_key(|m| RawHeaders::from_message(m).unwrap().file_name);
    for ((name, bytes), message) in files.iter().zip(&messages) {
        assert_raw_message(message, "F1", name, bytes);
        assert_eq!(&raw_copy(dir.path(), "F1", bytes), bytes);
    }
    eventually(TIMEOUT, "files moved to processed/", || async {
        let moved = files
            .iter()
            .all(|(name, _)| server.root.join("processed").join(name).exists());
        let gone = files
            .iter()
            .all(|(name, _)| !server.root.join(name).exists());
        (moved && gone).then_some(())
    })
    .await;
    for (name, bytes) in &files {
        assert_eq!(
            &std::fs::read(server.root.join("processed").join(name)).unwrap(),
            bytes
        );
    }
    assert!(
        server.root.join("notes.txt").exists(),
        "a file outside the glob stays"
    );
    assert_no_more(&raw_topic, 2, Duration::from_secs(3)).await;
    // Logs name a file by a digest of its name, never by the name.
    let logs = connector.logs();
    assert!(!logs.contains("b b.zip"), "a file name in the logs");
    assert!(logs.contains(&medlake_common::logging::file_name_ref("b b.zip")));
    let received = connector
        .metric("medlake_connector_files_received_total{source=\"ftp\"}")
        .await;
    assert_eq!(received, Some(2.0));
    assert!(connector.alive());
}

#[tokio::test]
async fn a_growing_file_is_taken_only_once_it_stopped_growing() {
    let landing = Landing::new("f1-landing", "").await;
    let (server, topics) = (&landing.server, &landing.topics);
    let connector = landing.start_connector();
    // Let the connector reach its polling loop first.
    eventually(TIMEOUT, "connector polling", || async {
        connector
            .logs()
            .contains("Polling FTP endpoint.")
            .then_some(())
    })
    .await;

    let mut expected = b"header line\n".to_vec();
    server.upload("growing.csv", &expected).await;
    let raw_topic = topics.raw_files();
    // Append every 100 ms for about 3 s while the connector lists every 300 ms.
    let grow_until = Instant::now() + Duration::from_secs(3);
    let mut chunk = 0;
    let reader = tokio::spawn({
        let topic = raw_topic.clone();
        async move { read_topic(&topic, 1, Duration::from_millis(2800)).await }
    });
    while Instant::now() < grow_until {
        let line = format!("row {chunk}\n");
        server.append("growing.csv", line.as_bytes()).await;
        expected.extend_from_slice(line.as_bytes());
        chunk += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let while_growing = reader.await.unwrap();
    assert!(
        while_growing.is_empty(),
        "a file was published while it was still growing"
    );
    assert!(
        server.root.join("growing.csv").exists(),
        "not moved while growing"
    );

    let messages = read_topic(&raw_topic, 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1, "{}", connector.logs());
    assert_raw_message(&messages[0], "F1", "growing.csv", &expected);
    assert_no_more(&raw_topic, 1, Duration::from_secs(3)).await;
    eventually(TIMEOUT, "growing.csv moved", || async {
        server
            .root
            .join("processed/growing.csv")
            .exists()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn killing_the_connector_mid_download_loses_nothing() {
    let landing = Landing::new("f1-landing", "").await;
    let (dir, server, topics) = (&landing.dir, &landing.server, &landing.topics);
    // 48 MiB: above the inline limit, so it also travels by reference.
    let big: Vec<u8> = (0..48 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // Put it in place atomically, as a finished upload.
    let staging = dir.path().join("big.bin.tmp");
    std::fs::write(&staging, &big).unwrap();
    std::fs::rename(&staging, server.root.join("big.bin")).unwrap();

    let mut first = landing.start_connector();
    eventually(TIMEOUT, "download started", || async {
        first.logs().contains("Downloading.").then_some(())
    })
    .await;
    first.child.kill();
    let moved_before_restart = server.root.join("processed/big.bin").exists();

    let second = landing.start_connector();
    eventually(TIMEOUT, "big.bin moved to processed/", || async {
        server.root.join("processed/big.bin").exists().then_some(())
    })
    .await;
    assert!(!server.root.join("big.bin").exists());
    let raw_topic = topics.raw_files();
    let messages = read_topic(&raw_topic, 2, Duration::from_secs(10)).await;
    assert!(
        !messages.is_empty() && messages.len() <= 2,
        "{} messages (moved before restart: {moved_before_restart}); logs:\n{}",
        messages.len(),
        second.logs()
    );
    for message in &messages {
        let headers = RawHeaders::from_message(message).unwrap();
        assert_eq!(headers.file_id, sha256_hex(&big));
        assert_eq!(message.payload().unwrap_or_default().len(), 0);
        let reference = headers.payload_ref.expect("large file by reference");
        let stored = std::fs::read(dir.path().join("lake").join(&reference)).unwrap();
        assert!(stored == big, "raw zone copy differs");
    }
}

#[tokio::test]
async fn a_wrong_password_is_an_error_and_a_metric_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::start(&dir.path().join("ftp"));
    std::fs::create_dir_all(server.root.join("good")).unwrap();
    let topics = topics_config();
    ensure_topics(&topics).await;
    let good_env = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
    let bad_env = format!("MEDLAKE_IT_FTP_BAD_{}", short_id());
    let wrong_password = format!("wrong-{}", short_id());
    write_facilities(
        dir.path(),
        server.port,
        &[
            (
                "F1",
                "good-endpoint",
                &good_env,
                "        directory: good\n",
            ),
            ("F2", "bad-endpoint", &bad_env, ""),
        ],
    );
    let mut connector = Connector::start(
        &topics,
        dir.path(),
        &[(&good_env, &server.password), (&bad_env, &wrong_password)],
    );
    server
        .upload("good/ok.zip", b"the good endpoint still works")
        .await;

    let messages = read_topic(&topics.raw_files(), 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1, "{}", connector.logs());
    assert_raw_message(
        &messages[0],
        "F1",
        "ok.zip",
        b"the good endpoint still works",
    );

    let sample = "medlake_connector_poll_errors_total{endpoint=\"bad-endpoint\",stage=\"login\"}";
    eventually(TIMEOUT, "two login errors counted", || async {
        connector.metric(sample).await.filter(|&n| n >= 2.0)
    })
    .await;
    let login_error = connector
        .events()
        .into_iter()
        .find(|e| e["level"] == "WARN" && e["endpoint"] == "bad-endpoint" && e["stage"] == "login");
    let login_error =
        login_error.unwrap_or_else(|| panic!("no login error logged:\n{}", connector.logs()));
    assert!(
        login_error["error"].as_str().unwrap().contains("login"),
        "{login_error}"
    );
    assert!(
        connector.alive(),
        "the connector must survive a wrong password"
    );
    assert!(!connector.logs().contains(&wrong_password));
}

#[tokio::test]
async fn ftp_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::start(&dir.path().join("ftp"));
    let topics = topics_config();
    ensure_topics(&topics).await;
    let good_env = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
    let bad_env = format!("MEDLAKE_IT_FTP_BAD_{}", short_id());
    let wrong_password = format!("wrong-{}", short_id());
    write_facilities(
        dir.path(),
        server.port,
        &[("F1", "good", &good_env, ""), ("F2", "bad", &bad_env, "")],
    );
    let mut connector = Connector::start(
        &topics,
        dir.path(),
        &[
            (&good_env, &server.password),
            (&bad_env, &wrong_password),
            // Trace: the FTP library traces the commands it sends.
            ("RUST_LOG", "trace"),
        ],
    );
    server.upload("x.zip", b"bytes").await;
    assert_eq!(read_topic(&topics.raw_files(), 1, TIMEOUT).await.len(), 1);
    eventually(TIMEOUT, "a login error logged", || async {
        connector
            .logs()
            .contains("Poll failed; trying again.")
            .then_some(())
    })
    .await;
    assert!(
        connector.child.terminate(Duration::from_secs(20)),
        "SIGTERM must stop the connector cleanly:\n{}",
        connector.logs()
    );
    let logs = connector.logs();
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("Stopped polling FTP endpoint."));
    for secret in [&server.password, &wrong_password] {
        assert!(
            !logs.contains(secret.as_str()),
            "a password reached the logs"
        );
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made with
/// the `openssl` command: `(ca.pem, server.pem, server.key)`.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=medlake-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test]
async fn ftps_endpoints_are_polled_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(dir.path());
    // The server refuses logins and transfers without TLS.
    let server = FtpServer::start_with(
        &dir.path().join("ftp"),
        &[
            "--certfile".as_ref(),
            cert.as_os_str(),
            "--keyfile".as_ref(),
            key.as_os_str(),
            "--tls-required".as_ref(),
        ],
    );
    let extra = format!("        ftps: true\n        ca_file: {}\n", ca.display());
    let landing = Landing::with_server(dir, server, "f1-tls", &extra).await;
    let (dir, server, topics) = (&landing.dir, &landing.server, &landing.topics);
    let bytes = b"sent over FTPS".to_vec();
    let staging = dir.path().join("tls.zip.tmp");
    std::fs::write(&staging, &bytes).unwrap();
    std::fs::rename(&staging, server.root.join("tls.zip")).unwrap();
    let connector = landing.start_connector();

    let messages = read_topic(&topics.raw_files(), 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1, "{}", connector.logs());
    assert_raw_message(&messages[0], "F1", "tls.zip", &bytes);
    eventually(TIMEOUT, "tls.zip moved", || async {
        server.root.join("processed/tls.zip").exists().then_some(())
    })
    .await;
}

/// The landing server as one endpoint: 300 registered facilities (250 with
/// a folder), 3 folders of nobody, a server that refuses a fourth session
/// from one client, a pool of 3 sessions. Files dropped into 20 facility
/// folders are published with the facility of their folder and moved to
/// its `processed/`; the unknown folders are counted, logged once each and
/// left alone; the connector never holds more than 3 sessions.
#[tokio::test]
async fn the_landing_server_is_walked_by_a_bounded_pool_of_sessions() {
    const SESSIONS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ftp");
    let facilities: Vec<String> = (0..300).map(|i| format!("F{i:03}")).collect();
    for facility in &facilities[..250] {
        std::fs::create_dir_all(root.join(facility).join("incoming")).unwrap();
    }
    let unknown = ["X01", "X02", "stray"];
    for folder in unknown {
        std::fs::create_dir_all(root.join(folder).join("incoming")).unwrap();
        std::fs::write(root.join(folder).join("incoming/left.zip"), b"nobody's").unwrap();
    }
    let limit = SESSIONS.to_string();
    let server = FtpServer::start_with(
        &root,
        &["--max-cons-per-ip".as_ref(), limit.as_str().as_ref()],
    );
    let topics = topics_config();
    ensure_topics(&topics).await;
    let connector = start_landing(&topics, dir.path(), &server, SESSIONS, 500, &facilities);

    // Dropped as a finished upload looks: written under another name, renamed.
    let chosen: Vec<&String> = (0..20).map(|i| &facilities[(i * 37 + 11) % 250]).collect();
    let mut expected = std::collections::BTreeMap::new();
    for (i, facility) in chosen.iter().enumerate() {
        let folder = root.join(facility.as_str()).join("incoming");
        let name = format!("extract_{i:02}.zip");
        let bytes = format!("file {i} of {facility}").into_bytes();
        std::fs::write(folder.join(format!("{name}.part")), &bytes).unwrap();
        std::fs::rename(folder.join(format!("{name}.part")), folder.join(&name)).unwrap();
        expected.insert(name, (facility.to_string(), bytes));
    }

    // The sessions gauge is sampled while the files come in.
    let sessions = "medlake_connector_ftp_sessions{endpoint=\"landing\"}";
    let (topic, count) = (topics.raw_files(), expected.len());
    let reader = tokio::spawn(async move { read_topic(&topic, count, TIMEOUT).await });
    let mut most_sessions = 0.0_f64;
    while !reader.is_finished() {
        most_sessions = most_sessions.max(connector.metric(sessions).await.unwrap_or(0.0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = reader.await.unwrap();
    assert_eq!(messages.len(), expected.len(), "{}", connector.logs());
    for message in &messages {
        let headers = RawHeaders::from_message(message).unwrap();
        let (facility, bytes) = &expected[&headers.file_name];
        assert_raw_message(message, facility, &headers.file_name, bytes);
    }
    for (name, (facility, _)) in &expected {
        let incoming = root.join(facility).join("incoming");
        eventually(TIMEOUT, "moved to processed/", || async {
            incoming.join("processed").join(name).exists().then_some(())
        })
        .await;
        assert!(!incoming.join(name).exists());
    }
    assert_no_more(&topics.raw_files(), expected.len(), Duration::from_secs(2)).await;

    eventually(TIMEOUT, "the unknown folders counted", || async {
        let n = connector
            .metric("medlake_connector_unknown_folders{endpoint=\"landing\"}")
            .await;
        (n == Some(unknown.len() as f64)).then_some(())
    })
    .await;
    let walks_before = connector.logs().matches("Walked.").count();
    eventually(TIMEOUT, "two more walks", || async {
        (connector.logs().matches("Walked.").count() >= walks_before + 2).then_some(())
    })
    .await;
    let logged: Vec<_> = connector
        .events()
        .into_iter()
        .filter(|e| e["level"] == "WARN" && e["endpoint"] == "landing" && e.get("folder").is_some())
        .map(|e| e["folder"].as_str().unwrap().to_string())
        .collect();
    let mut logged = logged;
    logged.sort();
    assert_eq!(logged, ["X01", "X02", "stray"], "each logged once");
    for folder in unknown {
        assert!(
            root.join(folder).join("incoming/left.zip").exists(),
            "{folder} left alone"
        );
    }

    most_sessions = most_sessions.max(connector.metric(sessions).await.unwrap_or(0.0));
    assert!(
        most_sessions >= 1.0 && most_sessions <= SESSIONS as f64,
        "sessions held: {most_sessions}"
    );
    // The server refuses a session over the limit: none was refused.
    let errors = connector.metrics().await;
    assert!(
        !errors.contains("medlake_connector_poll_errors_total{endpoint=\"landing\""),
        "{errors}\n{}",
        connector.logs()
    );
    // Labels name the server, never a facility: bounded at 8,000 facilities.
    for facility in &chosen {
        assert!(
            !errors.contains(&format!("\"{facility}\"")),
            "{facility} is a label value:\n{errors}"
        );
    }
}

/// A connector walking `server` as the landing server of `facilities`
/// (registry written into `dir`).
fn start_landing(
    topics: &TopicsConfig,
    dir: &Path,
    server: &FtpServer,
    sessions: usize,
    poll_interval_ms: u64,
    facilities: &[String],
) -> Connector {
    let password_env = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
    let mut yaml = format!(
        "landing:\n  - sessions: {sessions}\n    server:\n      id: landing\n      \
         host: 127.0.0.1\n      port: {}\n      user: {USER}\n      \
         password: {{ env: {password_env} }}\n      directory: /{{facility}}/incoming\n      \
         glob: '*.zip'\n      poll_interval_ms: {poll_interval_ms}\n      timeout_ms: 5000\n      \
         ftps: false\n\
         facilities:\n",
        server.port
    );
    for facility in facilities {
        yaml.push_str(&format!("  - id: {facility}\n"));
    }
    std::fs::write(dir.join("facilities.yaml"), yaml).unwrap();
    Connector::start(topics, dir, &[(&password_env, &server.password)])
}

/// A walk that saw a file before it settled lists that folder again a
/// second later instead of a whole walk later: with a two-minute poll
/// interval the file still arrives after the first walk, and no second walk
/// happened.
#[tokio::test]
async fn a_file_a_walk_saw_is_taken_by_a_settle_pass_not_a_walk_later() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ftp");
    let facilities: Vec<String> = (0..50).map(|i| format!("F{i:03}")).collect();
    for facility in &facilities {
        std::fs::create_dir_all(root.join(facility).join("incoming")).unwrap();
    }
    let bytes = b"an extract".to_vec();
    std::fs::write(root.join("F017/incoming/extract.zip"), &bytes).unwrap();
    let server = FtpServer::start(&root);
    let topics = topics_config();
    ensure_topics(&topics).await;
    let connector = start_landing(&topics, dir.path(), &server, 2, 120_000, &facilities);

    let messages = read_topic(&topics.raw_files(), 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1, "{}", connector.logs());
    assert_raw_message(&messages[0], "F017", "extract.zip", &bytes);
    assert_eq!(
        connector.logs().matches("Walked.").count(),
        1,
        "taken between walks: {}",
        connector.logs()
    );
}

/// Twelve facilities' endpoints, each with a 24 MiB file waiting, polled at
/// once: the download budget bounds the bytes held in memory together, so
/// the connector's peak RSS stays near the budget, not near 12 × 24 MiB.
#[tokio::test]
async fn downloads_of_many_endpoints_share_one_byte_budget() {
    const ENDPOINTS: usize = 12;
    const FILE_MIB: usize = 24;
    const BUDGET_MIB: u64 = 48;
    let dir = tempfile::tempdir().unwrap();
    let server = FtpServer::start(&dir.path().join("ftp"));
    let topics = topics_config();
    ensure_topics(&topics).await;
    let env_name = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
    let endpoints: Vec<(String, String, String)> = (0..ENDPOINTS)
        .map(|i| {
            let folder = format!("d{i:02}");
            let extra = format!("        directory: /{folder}\n");
            (format!("F{i:02}"), folder, extra)
        })
        .collect();
    let mut expected = std::collections::BTreeMap::new();
    for (i, (facility, folder, _)) in endpoints.iter().enumerate() {
        let path = server.root.join(folder);
        std::fs::create_dir_all(&path).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
        let bytes: Vec<u8> = (0..FILE_MIB * 1024 * 1024 / 8)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        std::fs::write(path.join("big.zip"), &bytes).unwrap();
        expected.insert(facility.clone(), sha256_hex(&bytes));
    }
    let rows: Vec<(&str, &str, &str, &str)> = endpoints
        .iter()
        .map(|(facility, folder, extra)| {
            (
                facility.as_str(),
                folder.as_str(),
                env_name.as_str(),
                extra.as_str(),
            )
        })
        .collect();
    write_facilities(dir.path(), server.port, &rows);
    let budget = (BUDGET_MIB * 1024 * 1024).to_string();
    let started = Instant::now();
    let mut connector = Connector::start(
        &topics,
        dir.path(),
        &[
            (&env_name, &server.password),
            ("MEDLAKE_FTP_CONNECTOR__DOWNLOAD_BUDGET_BYTES", &budget),
        ],
    );

    let messages = read_topic(&topics.raw_files(), ENDPOINTS, Duration::from_secs(180)).await;
    assert_eq!(messages.len(), ENDPOINTS, "{}", connector.logs());
    for message in &messages {
        let headers = RawHeaders::from_message(message).unwrap();
        assert_eq!(headers.file_id, expected[&headers.facility_id]);
    }
    let hwm_mib = crate::parser::vm_hwm_kb(connector.child.0.id()) / 1024;
    eprintln!(
        "{ENDPOINTS} endpoints x {FILE_MIB} MiB with a {BUDGET_MIB} MiB budget: \
         peak RSS {hwm_mib} MiB, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Measured: 144 MiB with the 48 MiB budget, 360 MiB with a budget of
    // 1 GiB (every file at once). The bound leaves the budget, the raw zone
    // write of the file in hand and the process itself.
    assert!(
        hwm_mib < BUDGET_MIB + 120,
        "peak RSS {hwm_mib} MiB with a {BUDGET_MIB} MiB download budget"
    );
    assert!(connector.alive());
}

/// An FTPS client trusting `ca` (a facility's upload client).
async fn ftps_client(port: u16, ca: &Path, user: &str, password: &str) -> AsyncRustlsFtpStream {
    use suppaftp::tokio_rustls::rustls::pki_types::CertificateDer;
    use suppaftp::tokio_rustls::rustls::pki_types::pem::PemObject;
    use suppaftp::tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = AsyncRustlsConnector::from(TlsConnector::from(Arc::new(config)));
    let ftp = AsyncRustlsFtpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut ftp = ftp.into_secure(connector, "127.0.0.1").await.unwrap();
    ftp.login(user, password).await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp
}

/// The landing server as docker-compose runs it: FTPS only, one account per
/// facility confined to its folder, the connector's own account over all.
/// A facility uploads over TLS and its file lands under its id; without TLS
/// it cannot log in; it sees nothing of another facility and cannot write
/// into its folder.
#[tokio::test]
async fn each_facility_has_its_own_ftps_account_confined_to_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ftp");
    let tls = dir.path().join("tls");
    let passwords = [
        ("F1", format!("f1-{}", short_id())),
        ("F2", format!("f2-{}", short_id())),
    ];
    for (facility, _) in &passwords {
        std::fs::create_dir_all(root.join(facility).join("incoming")).unwrap();
    }
    let server = medlake_integration_tests::FtpServer::start_with_env(
        &root,
        USER,
        &[
            "--account".as_ref(),
            "f1user:F1:IT_FTP_F1_PASSWORD".as_ref(),
            "--account".as_ref(),
            "f2user:F2:IT_FTP_F2_PASSWORD".as_ref(),
            "--self-signed".as_ref(),
            tls.as_os_str(),
            "--tls-hostname".as_ref(),
            "127.0.0.1".as_ref(),
            "--tls-required".as_ref(),
        ],
        &[
            ("IT_FTP_F1_PASSWORD", &passwords[0].1),
            ("IT_FTP_F2_PASSWORD", &passwords[1].1),
        ],
    );
    let ca = tls.join("ftp-ca.pem");

    // Without TLS the server refuses the login.
    let mut plain = AsyncFtpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    assert!(plain.login("f1user", &passwords[0].1).await.is_err());

    // F1 sees its own folder only and cannot climb out of it.
    let mut f1 = ftps_client(server.port, &ca, "f1user", &passwords[0].1).await;
    assert_eq!(f1.nlst(Some("/")).await.unwrap(), ["incoming"]);
    assert!(f1.cwd("/../F2/incoming").await.is_err());
    let bytes = b"F1's extract".to_vec();
    let mut reader = &bytes[..];
    let _ = f1.put_file("../F2/incoming/forged.zip", &mut reader).await;
    assert!(!root.join("F2/incoming/forged.zip").exists());
    f1.put_file("incoming/a.zip.part", &mut &bytes[..])
        .await
        .unwrap();
    f1.rename("incoming/a.zip.part", "incoming/a.zip")
        .await
        .unwrap();
    f1.quit().await.unwrap();

    // The connector walks every folder with its own account, over TLS.
    let topics = topics_config();
    ensure_topics(&topics).await;
    let password_env = format!("MEDLAKE_IT_FTP_PW_{}", short_id());
    let yaml = format!(
        "landing:\n  - sessions: 2\n    server:\n      id: landing\n      \
         host: 127.0.0.1\n      port: {}\n      user: {USER}\n      \
         password: {{ env: {password_env} }}\n      directory: /{{facility}}/incoming\n      \
         glob: '*.zip'\n      poll_interval_ms: 300\n      timeout_ms: 5000\n      \
         ca_file: {}\nfacilities:\n  - id: F1\n  - id: F2\n",
        server.port,
        ca.display()
    );
    std::fs::write(dir.path().join("facilities.yaml"), yaml).unwrap();
    let connector = Connector::start(&topics, dir.path(), &[(&password_env, &server.password)]);
    let messages = read_topic(&topics.raw_files(), 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1, "{}", connector.logs());
    assert_raw_message(&messages[0], "F1", "a.zip", &bytes);
    assert_no_more(&topics.raw_files(), 1, Duration::from_secs(2)).await;
}
