//! The harness of medlake's integration tests: they run against a real Kafka
//! broker (`KAFKA_BROKERS`, default `127.0.0.1:9092`; `make test` starts one),
//! real child processes of the `medlake` binary and temporary lakes. Every
//! test takes fresh topic names and consumer groups, so tests run in parallel
//! and never see each other's data.
//!
//! A test that needs the broker fails when it is unreachable: nothing here
//! skips.

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
/// its environment, and no inherited configuration file.
pub fn medlake(topics: &TopicsConfig) -> Command {
    let mut command = Command::new(medlake_bin());
    command
        .current_dir(repo_root())
        .env_remove("MEDLAKE_CONFIG")
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
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
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
