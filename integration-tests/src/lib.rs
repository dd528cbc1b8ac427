//! The harness of medlake's integration tests: they run against a real Kafka
//! broker (`KAFKA_BROKERS`, default `127.0.0.1:9092`; `make test` starts one),
//! real child processes of the `medlake` binary and temporary lakes. Every
//! test takes fresh topic names and consumer groups, so tests run in parallel
//! and never see each other's data.
//!
//! A test that needs the broker fails when it is unreachable: nothing here
//! skips.

pub mod records;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medlake_common::config::{KafkaConfig, TopicsConfig};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

/// The broker under test.
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Client settings for the broker under test.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: brokers(),
        ..KafkaConfig::default()
    }
}

/// A short random id: `[0-9a-f]{12}`.
pub fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A unique name for a consumer group, transactional id, ….
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", short_id())
}

/// Topic settings with a prefix no other test uses (`it<random>`), three
/// partitions and replication factor 1.
pub fn topics_config() -> TopicsConfig {
    TopicsConfig {
        prefix: format!("it{}", short_id()),
        partitions: 3,
        ..TopicsConfig::default()
    }
}

/// A free TCP port on the loopback interface (for a child's listen address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local address")
        .port()
}

/// The repository root (for `schemas/`, `config/`, scripts).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent")
        .to_path_buf()
}

/// The `medlake` binary: `MEDLAKE_BIN`, or `medlake` beside the test
/// executable's `deps/` folder (`make test` builds it before the tests).
pub fn medlake_bin() -> PathBuf {
    if let Ok(path) = std::env::var("MEDLAKE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join("medlake");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p medlake`; `make test` does)",
        bin.display()
    );
    bin
}

/// A `medlake` command with the broker and topic prefix of a test set in
/// its environment, and no inherited configuration file. The push API
/// serves plain HTTP (`MEDLAKE_API_CONNECTOR__TLS=none`) unless a test
/// removes that and names certificate files.
pub fn medlake(topics: &TopicsConfig) -> Command {
    let mut command = Command::new(medlake_bin());
    command
        .current_dir(repo_root())
        .env_remove("MEDLAKE_CONFIG")
        .env("MEDLAKE_API_CONNECTOR__TLS", "none")
        .env("KAFKA_BROKERS", brokers())
        .env("MEDLAKE_TOPICS__PREFIX", &topics.prefix)
        .env("MEDLAKE_TOPICS__PARTITIONS", topics.partitions.to_string());
    command
}

/// A child process killed when dropped, so a failing test leaves no service
/// running.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(mut command: Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn child process");
        Self(child)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; true when it exited
    /// with status 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.kill();
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every committed message of `topic` (all partitions) until `expected`
/// messages arrived or `timeout` passed; returns (key, value, headers) as
/// owned messages.
pub async fn read_topic(
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer =
        medlake_common::kafka::consumer(&kafka_config(), &unique("it-reader"))
            .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(message)) => out.push(message.detach()),
            // A topic created a moment ago may not be in the metadata of
            // every part of the client yet, on a busy machine.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(Err(error)) => panic!("consuming {topic}: {error}"),
            Err(_) => break,
        }
    }
    out
}

/// Asserts that no further message shows up on `topic` beyond the `seen`
/// ones within `quiet` (used to prove "exactly once").
pub async fn assert_no_more(topic: &str, seen: usize, quiet: Duration) {
    let all = read_topic(topic, seen + 1, quiet).await;
    assert_eq!(all.len(), seen, "{topic} has more messages than expected");
}

/// The payload of a message as a UTF-8 string.
pub fn payload_str(message: &rdkafka::message::OwnedMessage) -> &str {
    std::str::from_utf8(message.payload().unwrap_or_default()).expect("utf-8 payload")
}

/// A running FTP server (`scripts/ftp_server.py`, pyftpdlib, with
/// `MEDLAKE_PYTHON`, else `python3`) on a free port, serving `root` to one
/// user; stopped when dropped.
pub struct FtpServer {
    _child: ChildGuard,
    /// The control port it bound.
    pub port: u16,
    /// Its login user.
    pub user: String,
    /// Its login password.
    pub password: String,
}

impl FtpServer {
    /// Starts the server and waits (up to 20 s) for its ready line.
    pub fn start(root: &std::path::Path, user: &str) -> Self {
        Self::start_with(root, user, &[])
    }

    /// Like [`FtpServer::start`], with extra arguments for the script (FTPS).
    pub fn start_with(root: &std::path::Path, user: &str, extra_args: &[&std::ffi::OsStr]) -> Self {
        Self::start_with_env(root, user, extra_args, &[])
    }

    /// Like [`FtpServer::start_with`], with variables for the script's
    /// environment (the passwords of `--account`s).
    pub fn start_with_env(
        root: &std::path::Path,
        user: &str,
        extra_args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
    ) -> Self {
        use std::io::BufRead;
        let python = std::env::var("MEDLAKE_PYTHON").unwrap_or_else(|_| "python3".into());
        let password = format!("ftp-pw-{}", short_id());
        std::fs::create_dir_all(root).expect("create the FTP root");
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("scripts/ftp_server.py"))
            .args(["--port", "0", "--user", user, "--quiet", "--root"])
            .arg(root)
            .args(extra_args)
            .env("FTP_PASSWORD", &password)
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(command);
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("FTP server ready line (is pyftpdlib installed? scripts/py-deps.sh)");
        let port = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in FTP server line {line:?}"));
        Self {
            _child: child,
            port,
            user: user.to_string(),
            password,
        }
    }
}

/// A Kafka broker of one test (same scripts as `make kafka-up`, its own
/// directory and free ports), for fault tests that restart their broker
/// without disturbing the tests sharing `KAFKA_BROKERS`. Stopped and wiped
/// when dropped.
pub struct PrivateBroker {
    dir: tempfile::TempDir,
    port: u16,
    controller_port: u16,
}

impl PrivateBroker {
    /// Starts it (`scripts/kafka-up.sh`); panics with the script's output
    /// when it does not come up.
    pub fn start() -> Self {
        let broker = Self {
            dir: tempfile::tempdir().expect("broker directory"),
            port: free_port(),
            controller_port: free_port(),
        };
        broker.script("kafka-up.sh", &[]);
        broker
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL with `kill`, else a clean shutdown) and starts it
    /// again with its data (`scripts/kafka-restart.sh`).
    pub fn restart(&self, kill: bool) {
        self.script("kafka-restart.sh", if kill { &["--kill"] } else { &[] });
    }

    fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new(repo_root().join("scripts").join(script));
        command
            .args(args)
            .env("MEDLAKE_KAFKA_DIR", self.dir.path())
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string());
        command
    }

    fn script(&self, script: &str, args: &[&str]) {
        let output = self
            .command(script, args)
            .output()
            .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
        assert!(
            output.status.success(),
            "scripts/{script} {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self
            .command("kafka-down.sh", &["--kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `http://<addr>/readyz` until it answers 200; panics after `timeout`
/// or as soon as `child` exits.
pub async fn wait_ready(child: &mut ChildGuard, addr: &str, what: &str, timeout: Duration) {
    let url = format!("http://{addr}/readyz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("{what} exited ({status}) before it was ready");
        }
        let ready = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready at {url} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `/metrics` text of the admin server at `admin` (`host:port`); empty
/// while the server is not up.
pub async fn metrics_text(admin: &str) -> String {
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of one sample (`name{labels}` exactly as exposed) in a
/// `/metrics` text, if present.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A real S3 API server for the tests of the lake on object storage: `moto`
/// in server mode (`scripts/requirements.txt`), in memory, any credentials,
/// conditional PUTs answered as S3 does (412 to the loser of an
/// `If-None-Match: *` race, which is what Delta commits rely on). Stopped
/// when dropped.
pub struct S3Server {
    _child: ChildGuard,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl S3Server {
    /// Credentials the tests use (moto takes any).
    pub const ACCESS_KEY: &'static str = "medlake-test";
    pub const SECRET_KEY: &'static str = "medlake-test-secret";

    /// The `AWS_*` settings object_store and delta-rs read for a server at
    /// `endpoint`: plain HTTP, path-style URLs, conditional PUTs, no locking
    /// provider. `docker-compose.yml` sets the same for its S3 server.
    pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false".to_string()),
            ("AWS_CONDITIONAL_PUT", "etag".to_string()),
        ]
    }

    /// Starts `python -m moto.server` (`MEDLAKE_PYTHON`, else `python3`) on
    /// `port` and waits (up to 30 s) until it answers.
    pub fn start(port: u16) -> Self {
        let python = std::env::var("MEDLAKE_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut command = Command::new(python);
        command
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(command);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "moto server exited ({status}): is moto[server] installed? scripts/py-deps.sh"
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto server not up on port {port} after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            _child: child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Creates `bucket` (a plain PUT, as moto allows).
    pub fn create_bucket(&self, bucket: &str) {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("connect to moto");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("send the bucket PUT");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the bucket PUT's answer");
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "creating bucket {bucket}: {}",
            response.lines().next().unwrap_or_default()
        );
    }
}
