//! `medlake api-connector` as a real child process, against the real broker:
//! the push API with a real HTTP client, and the pull side against a small
//! HTTP server run by the test that serves pages of files behind a cursor.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use medlake_common::config::TopicsConfig;
use medlake_common::kafka::header_str;
use medlake_common::raw_file::sha256_hex;
use medlake_common::topics;
use medlake_integration_tests::{
    ChildGuard, assert_no_more, eventually, free_port, kafka_config, medlake, read_topic, short_id,
    topics_config,
};
use rdkafka::Message;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn ensure_topics(config: &TopicsConfig) {
    let admin = medlake_common::kafka::admin(&kafka_config()).unwrap();
    topics::ensure(&admin, &topics::specs(config, []))
        .await
        .expect("create the test topics (is the broker up? `make kafka-up`)");
}

/// A running `medlake api-connector` and where to reach it.
pub(crate) struct Connector {
    pub(crate) child: ChildGuard,
    /// `http://127.0.0.1:port`, or `https://…` when it serves TLS.
    pub(crate) base: String,
    admin: String,
    log: PathBuf,
}

/// What a test gives the connector.
pub(crate) struct Setup<'a> {
    pub(crate) topics: &'a TopicsConfig,
    pub(crate) lake: &'a Path,
    pub(crate) facilities: &'a Path,
    pub(crate) env: &'a [(&'a str, &'a str)],
    pub(crate) log: PathBuf,
    /// Serve HTTPS with `tls.crt` and `tls.key` of this folder (re-read
    /// every 200 ms); plain HTTP when `None`.
    pub(crate) tls: Option<&'a Path>,
}

impl Connector {
    /// Starts the connector (debug logs to `setup.log`) and waits until it
    /// is ready.
    pub(crate) async fn start(setup: &Setup<'_>) -> Self {
        let port = free_port();
        let admin_port = free_port();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&setup.log)
            .unwrap();
        let mut command = medlake(setup.topics);
        command
            .arg("api-connector")
            .env("MEDLAKE_LAKE_URI", setup.lake)
            .env("MEDLAKE_FACILITIES_FILE", setup.facilities)
            .env("MEDLAKE_API_CONNECTOR__LISTEN", format!("127.0.0.1:{port}"))
            .env("MEDLAKE_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(dir) = setup.tls {
            command
                .env_remove("MEDLAKE_API_CONNECTOR__TLS")
                .env("MEDLAKE_API_CONNECTOR__TLS__CERT_FILE", dir.join("tls.crt"))
                .env("MEDLAKE_API_CONNECTOR__TLS__KEY_FILE", dir.join("tls.key"))
                .env("MEDLAKE_API_CONNECTOR__TLS__RELOAD_INTERVAL_MS", "200");
        }
        for (k, v) in setup.env {
            command.env(k, v);
        }
        let child = ChildGuard::spawn(command);
        let scheme = if setup.tls.is_some() { "https" } else { "http" };
        let connector = Self {
            child,
            base: format!("{scheme}://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            log: setup.log.clone(),
        };
        let client = reqwest::Client::new();
        let ready = format!("{}/readyz", connector.admin);
        eventually(TIMEOUT, "the api-connector to be ready", || {
            let request = client.get(&ready).send();
            async move { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        connector
    }

    /// `127.0.0.1:port` of the push API.
    pub(crate) fn address(&self) -> &str {
        self.base.split("://").nth(1).unwrap_or(&self.base)
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn write_facilities(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("facilities.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Two pushing facilities, A and B, with keys in environment variables.
pub(crate) struct PushFixture {
    pub(crate) topics: TopicsConfig,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) key_a: String,
    pub(crate) key_b: String,
    env_a: String,
    env_b: String,
}

impl PushFixture {
    pub(crate) async fn new() -> Self {
        let topics = topics_config();
        ensure_topics(&topics).await;
        let dir = tempfile::tempdir().unwrap();
        let id = short_id().to_uppercase();
        let (env_a, env_b) = (format!("IT_KEY_A_{id}"), format!("IT_KEY_B_{id}"));
        write_facilities(
            dir.path(),
            &format!(
                "facilities:\n  - id: FA\n    api_key: {{ env: {env_a} }}\n  - id: FB\n    api_key: {{ env: {env_b} }}\n  - id: FC\n"
            ),
        );
        Self {
            topics,
            dir,
            key_a: format!("key-a-{}", short_id()),
            key_b: format!("key-b-{}", short_id()),
            env_a,
            env_b,
        }
    }

    pub(crate) async fn start(&self, extra_env: &[(&str, &str)]) -> Connector {
        self.start_with(extra_env, None).await
    }

    /// Starts the connector; with `tls`, serving HTTPS with the certificate
    /// files of that folder.
    pub(crate) async fn start_with(
        &self,
        extra_env: &[(&str, &str)],
        tls: Option<&Path>,
    ) -> Connector {
        let mut env = vec![
            (self.env_a.as_str(), self.key_a.as_str()),
            (self.env_b.as_str(), self.key_b.as_str()),
        ];
        env.extend_from_slice(extra_env);
        Connector::start(&Setup {
            topics: &self.topics,
            lake: &self.dir.path().join("lake"),
            facilities: &self.dir.path().join("facilities.yaml"),
            env: &env,
            log: self.dir.path().join("connector.log"),
            tls,
        })
        .await
    }

    pub(crate) fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }
}

pub(crate) async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let body: Value = response.json().await.expect("a JSON body");
    (status, body)
}

fn multipart_body(boundary: &str, file_name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/zip\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

#[tokio::test]
async fn push_answers_202_after_the_raw_zone_and_kafka_and_resends_are_idempotent() {
    let fx = PushFixture::new().await;
    let connector = fx.start(&[]).await;
    let client = reqwest::Client::new();
    let topic = fx.topics.raw_files();

    // PUT with a bearer key.
    let bytes = format!("PK-not-really-a-zip {}", short_id()).into_bytes();
    let response = client
        .put(format!("{}/v1/files/extract%201.zip", connector.base))
        .bearer_auth(&fx.key_a)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, receipt) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let file_id = sha256_hex(&bytes);
    assert_eq!(receipt["file_id"], file_id.as_str());
    assert_eq!(receipt["facility_id"], "FA");
    assert_eq!(receipt["duplicate"], false);
    let raw_path = receipt["raw_path"].as_str().unwrap().to_string();
    assert!(raw_path.starts_with("_raw/FA/"), "{raw_path}");
    assert!(raw_path.ends_with(&file_id), "{raw_path}");
    // The 202 came after the raw zone write: the object is there now.
    assert_eq!(std::fs::read(fx.lake().join(&raw_path)).unwrap(), bytes);

    // Multipart POST with X-API-Key, for facility B.
    let other = format!("second file {}", short_id()).into_bytes();
    let boundary = "medlake-test-boundary";
    let response = client
        .post(format!("{}/v1/files", connector.base))
        .header("X-API-Key", &fx.key_b)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(multipart_body(boundary, "b.csv", &other))
        .send()
        .await
        .unwrap();
    let (status, receipt_b) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt_b}");
    assert_eq!(receipt_b["facility_id"], "FB");
    assert_eq!(receipt_b["file_id"], sha256_hex(&other).as_str());

    // Both are on the topic with the raw-file headers.
    let messages = read_topic(&topic, 2, TIMEOUT).await;
    assert_eq!(messages.len(), 2);
    let first = messages
        .iter()
        .find(|m| header_str(*m, "medlake.file_id") == Some(file_id.as_str()))
        .expect("the PUT file is on the topic");
    assert_eq!(first.key(), Some(&b"FA"[..]));
    assert_eq!(first.payload(), Some(bytes.as_slice()));
    assert_eq!(header_str(first, "medlake.facility_id"), Some("FA"));
    assert_eq!(header_str(first, "medlake.source"), Some("http"));
    assert_eq!(
        header_str(first, "medlake.file_name"),
        Some("extract 1.zip")
    );
    let received = header_str(first, "medlake.received_at").unwrap();
    assert!(
        chrono_like_rfc3339(received),
        "received_at is RFC 3339 UTC: {received}"
    );
    let second = messages
        .iter()
        .find(|m| m.key() == Some(&b"FB"[..]))
        .unwrap();
    assert_eq!(header_str(second, "medlake.file_name"), Some("b.csv"));
    assert_eq!(second.payload(), Some(other.as_slice()));

    // The identical file again: same id, duplicate, nothing new published.
    let response = client
        .put(format!("{}/v1/files/extract%201.zip", connector.base))
        .header("X-API-Key", &fx.key_a)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, again) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["file_id"], file_id.as_str());
    assert_eq!(again["raw_path"], raw_path.as_str());
    assert_eq!(again["duplicate"], true);
    assert_no_more(&topic, 2, Duration::from_secs(5)).await;

    let metrics = connector.metrics().await;
    assert!(
        metrics.contains(
            "medlake_api_connector_http_requests_total{route=\"/v1/files/{name}\",status=\"202\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("medlake_connector_files_received_total{source=\"http\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn push_takes_a_large_file_by_reference_to_the_raw_zone() {
    let fx = PushFixture::new().await;
    // Inline up to 1 MiB here, so a 20 MiB file travels by reference.
    let connector = fx
        .start(&[(
            "MEDLAKE_API_CONNECTOR__INGEST__INLINE_LIMIT_BYTES",
            "1048576",
        )])
        .await;
    let bytes: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let response = reqwest::Client::new()
        .put(format!("{}/v1/files/big.zip", connector.base))
        .bearer_auth(&fx.key_b)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, receipt) = json_of(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    let raw_path = receipt["raw_path"].as_str().unwrap();
    assert!(std::fs::read(fx.lake().join(raw_path)).unwrap() == bytes);

    let messages = read_topic(&fx.topics.raw_files(), 1, TIMEOUT).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        header_str(&messages[0], "medlake.payload_ref"),
        Some(raw_path)
    );
    assert_eq!(
        header_str(&messages[0], "medlake.file_id"),
        Some(sha256_hex(&bytes).as_str())
    );
    assert!(messages[0].payload().unwrap_or_default().is_empty());
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn chrono_like_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[4] == b'-'
}

#[tokio::test]
async fn push_refusals_are_clear_json_errors_and_publish_nothing() {
    let fx = PushFixture::new().await;
    let connector = fx
        .start(&[("MEDLAKE_API_CONNECTOR__MAX_BODY_BYTES", "1024")])
        .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/files/a.zip", connector.base);
    let body = b"some bytes".to_vec();

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "no key",
            client.put(&url).body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
        ),
        (
            "wrong key",
            client.put(&url).bearer_auth("not-a-key").body(body.clone()),
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            "another facility's id in the header",
            client
                .put(&url)
                .bearer_auth(&fx.key_a)
                .header("X-Facility-Id", "FB")
                .body(body.clone()),
            StatusCode::FORBIDDEN,
            "forbidden_facility",
        ),
        (
            "another facility's id in the path",
            client
                .put(format!("{}/v1/facilities/FB/files/a.zip", connector.base))
                .bearer_auth(&fx.key_a)
                .body(body.clone()),
            StatusCode::FORBIDDEN,
            "forbidden_facility",
        ),
        (
            "oversize",
            client
                .put(&url)
                .bearer_auth(&fx.key_a)
                .body(vec![7u8; 4096]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "oversize, chunked without a length",
            client
                .put(&url)
                .bearer_auth(&fx.key_a)
                .body(reqwest::Body::wrap_stream(futures_stream(vec![
                    vec![1u8; 700],
                    vec![2u8; 700],
                ]))),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "oversize multipart file",
            client
                .post(format!("{}/v1/files", connector.base))
                .bearer_auth(&fx.key_a)
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body(multipart_body("xyz", "big.zip", &[9u8; 2048])),
            StatusCode::PAYLOAD_TOO_LARGE,
            "file_too_large",
        ),
        (
            "multipart without a file part",
            client
                .post(format!("{}/v1/files", connector.base))
                .bearer_auth(&fx.key_a)
                .header("content-type", "multipart/form-data; boundary=xyz")
                .body("--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--xyz--\r\n"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "empty",
            client.put(&url).bearer_auth(&fx.key_a).body(Vec::new()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_file",
        ),
        (
            "a path in the name",
            client
                .put(format!("{}/v1/files/a%2Fb.zip", connector.base))
                .bearer_auth(&fx.key_a)
                .body(body.clone()),
            StatusCode::BAD_REQUEST,
            "bad_file_name",
        ),
    ];
    for (what, request, expected, code) in cases {
        let (status, json) = json_of(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "{what}: {json}");
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(
            !json["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
    // A part whose headers take 1 MiB: refused once 16 KiB of them are read.
    let started = std::time::Instant::now();
    let (status, answer) = exchange(
        connector.address(),
        multipart_request_with_part_header(&fx.key_a, 1 << 20),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("part_header_too_large"), "{answer}");
    assert!(
        took < Duration::from_secs(2),
        "a 1 MiB part header took {took:?}"
    );
    eprintln!("api: a multipart part header of 1 MiB refused in {took:?}");

    // The right facility named explicitly is fine.
    let response = client
        .put(format!("{}/v1/facilities/FA/files/a.zip", connector.base))
        .bearer_auth(&fx.key_a)
        .header("X-Facility-Id", "FA")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);

    assert_no_more(&fx.topics.raw_files(), 1, Duration::from_secs(5)).await;
    let metrics = connector.metrics().await;
    for needle in [
        "route=\"/v1/files/{name}\",status=\"401\"} 2",
        "route=\"/v1/files/{name}\",status=\"413\"} 2",
        "route=\"/v1/files/{name}\",status=\"422\"} 1",
        "route=\"/v1/facilities/{facility_id}/files/{name}\",status=\"403\"} 1",
        "route=\"/v1/files\",status=\"413\"} 1",
        "route=\"/v1/files\",status=\"400\"} 2",
    ] {
        assert!(metrics.contains(needle), "{needle} in\n{metrics}");
    }
}

/// A multipart `POST /v1/files` with `key` whose file part carries a
/// header line of `header_bytes`.
fn multipart_request_with_part_header(key: &str, header_bytes: usize) -> Vec<u8> {
    let body = format!(
        "--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\
         X-Padding: {}\r\n\r\nPK\r\n--xyz--\r\n",
        "a".repeat(header_bytes)
    );
    format!(
        "POST /v1/files HTTP/1.1\r\nHost: medlake\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `request` on a new connection and reads the answer to its end
/// (within 10 s). Writing stops without failing when the server answers
/// and closes first, as it does when it refuses a body it has not read.
/// Returns the status code (0 when the answer is not HTTP) and the answer.
pub(crate) async fn exchange(address: &str, request: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        for piece in request.chunks(16 * 1024) {
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
        // Kept open until the answer is read.
        writer
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buffer).await {
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the answer did not end within 10 s");
    drop(writing.await);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    futures::stream::iter(chunks.into_iter().map(Ok))
}

// ------------------------------------------------------------------ pull

/// The customer API of the pull tests: page 1 (no cursor) has two files,
/// page 2 (`since=c1`) is empty until released, then has two more files;
/// `since=c2` is the end. Requests without the token are refused.
#[derive(Default)]
struct FakeApi {
    token: String,
    released: bool,
    /// 503 answers still to give for page 2 once released.
    failures_left: u32,
    /// Every page request's cursor (`None` for the first page).
    page_requests: Vec<Option<String>>,
    /// Every download's file id.
    downloads: Vec<String>,
    unauthorized: u32,
}

type Api = Arc<Mutex<FakeApi>>;

fn content(name: &str) -> Vec<u8> {
    format!("contents of {name}\n").into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn api_page(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let mut api = api.lock().unwrap();
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(api.token.as_str()) {
        api.unauthorized += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let since = query.get("since").cloned();
    api.page_requests.push(since.clone());
    let page = match since.as_deref() {
        None => json!({"files": [
                {"name": "p1-a.csv", "content_base64": b64(&content("p1-a.csv"))},
                {"name": "p1-b.csv", "url": "/files/p1-b.csv"}],
            "next_cursor": "c1"}),
        Some("c1") if !api.released => json!({"files": [], "next_cursor": null}),
        Some("c1") if api.failures_left > 0 => {
            api.failures_left -= 1;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Some("c1") => json!({"files": [
                {"name": "p2-c.csv", "url": "files/p2-c.csv"},
                {"name": "p2-d.csv", "content_base64": b64(&content("p2-d.csv"))}],
            "next_cursor": "c2"}),
        _ => json!({"files": []}),
    };
    axum::Json(page).into_response()
}

async fn api_file(
    State(api): State<Api>,
    headers: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let mut api = api.lock().unwrap();
    if headers.get("x-auth-token").and_then(|v| v.to_str().ok()) != Some(api.token.as_str()) {
        api.unauthorized += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    api.downloads.push(name.clone());
    content(&name).into_response()
}

/// Serves the fake API on a free port; returns its base URL.
async fn serve_api(api: Api) -> String {
    let app = axum::Router::new()
        .route("/pages", get(api_page))
        .route("/files/{name}", get(api_file))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A registry whose facility FP pulls from the fake API at `api_base` (on
/// loopback: allowed only with `allow_private`).
fn pull_facilities(dir: &Path, api_base: &str, token_env: &str, allow_private: bool) -> PathBuf {
    write_facilities(
        dir,
        &format!(
            "facilities:\n  - id: FP\n    http_pull:\n      - id: exports\n        url: {api_base}/pages\n        poll_interval_ms: 200\n        cursor_param: since\n        allow_private_network: {allow_private}\n        auth: {{ header_name: X-Auth-Token, secret: {{ env: {token_env} }} }}\n"
        ),
    )
}

#[tokio::test]
async fn pull_resumes_from_the_persisted_cursor_after_a_kill() {
    let topics = topics_config();
    ensure_topics(&topics).await;
    let topic = topics.raw_files();
    let dir = tempfile::tempdir().unwrap();
    let token = format!("tok-{}", short_id());
    let token_env = format!("IT_PULL_TOKEN_{}", short_id().to_uppercase());
    let api: Api = Arc::new(Mutex::new(FakeApi {
        token: token.clone(),
        ..FakeApi::default()
    }));
    let api_base = serve_api(api.clone()).await;
    let facilities = pull_facilities(dir.path(), &api_base, &token_env, true);
    let lake = dir.path().join("lake");
    let setup = Setup {
        topics: &topics,
        lake: &lake,
        facilities: &facilities,
        env: &[(token_env.as_str(), token.as_str())],
        log: dir.path().join("connector.log"),
        tls: None,
    };

    // First run: page 1 is ingested and its cursor stored.
    let mut first = Connector::start(&setup).await;
    let page1 = read_topic(&topic, 2, TIMEOUT).await;
    assert_eq!(page1.len(), 2, "page 1 on the topic");
    let cursor_file = lake.join("_raw/_cursors/FP/exports");
    eventually(
        TIMEOUT,
        "page 2 to be asked for with the stored cursor",
        || {
            let asked = api
                .lock()
                .unwrap()
                .page_requests
                .contains(&Some("c1".to_string()));
            async move { asked.then_some(()) }
        },
    )
    .await;
    let stored: Value = serde_json::from_slice(&std::fs::read(&cursor_file).unwrap()).unwrap();
    assert_eq!(stored["cursor"], "c1");
    first.child.kill();

    // Page 2 appears (behind one 503); a new connector resumes at c1.
    {
        let mut api = api.lock().unwrap();
        api.released = true;
        api.failures_left = 1;
    }
    let second = Connector::start(&setup).await;
    let all = read_topic(&topic, 4, TIMEOUT).await;
    assert_eq!(all.len(), 4, "pages 1 and 2 on the topic");
    assert_no_more(&topic, 4, Duration::from_secs(3)).await;

    let mut ids: Vec<String> = all
        .iter()
        .map(|m| header_str(m, "medlake.file_id").unwrap().to_string())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = ["p1-a.csv", "p1-b.csv", "p2-c.csv", "p2-d.csv"]
        .iter()
        .map(|n| sha256_hex(&content(n)))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "every file exactly once");
    for message in &all {
        assert_eq!(header_str(message, "medlake.source"), Some("http_pull"));
        assert_eq!(message.key(), Some(&b"FP"[..]));
        let name = header_str(message, "medlake.file_name").unwrap();
        assert_eq!(message.payload(), Some(content(name).as_slice()));
    }

    eventually(TIMEOUT, "the cursor to reach c2", || {
        let stored = std::fs::read(&cursor_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        async move { stored.filter(|s| s["cursor"] == "c2") }
    })
    .await;
    {
        let api = api.lock().unwrap();
        let first_pages = api.page_requests.iter().filter(|c| c.is_none()).count();
        assert_eq!(first_pages, 1, "page 1 was never fetched again");
        let mut downloads = api.downloads.clone();
        downloads.sort();
        assert_eq!(downloads, ["p1-b.csv", "p2-c.csv"], "each download once");
        assert_eq!(api.failures_left, 0, "the 503 was served and retried");
        assert_eq!(api.unauthorized, 0, "the auth header was always sent");
    }
    let metrics = second.metrics().await;
    assert!(
        metrics.contains("medlake_api_connector_pull_retries_total{endpoint=\"FP/exports\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("medlake_connector_files_received_total{source=\"http_pull\"} 2"),
        "{metrics}"
    );

    // SIGTERM: a clean, graceful exit.
    let mut second = second;
    assert!(
        second.child.terminate(Duration::from_secs(20)),
        "clean exit on SIGTERM; logs:\n{}",
        second.logs()
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let topics = topics_config();
    ensure_topics(&topics).await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = short_id();
    let key = format!("pushkey{suffix}");
    let token = format!("pulltoken{suffix}");
    let (key_env, token_env) = (
        format!("IT_KEY_{}", suffix.to_uppercase()),
        format!("IT_TOKEN_{}", suffix.to_uppercase()),
    );
    let api: Api = Arc::new(Mutex::new(FakeApi {
        token: token.clone(),
        ..FakeApi::default()
    }));
    let api_base = serve_api(api.clone()).await;
    write_facilities(
        dir.path(),
        &format!(
            "facilities:\n  - id: FS\n    api_key: {{ env: {key_env} }}\n    http_pull:\n      - id: exports\n        url: {api_base}/pages\n        poll_interval_ms: 200\n        allow_private_network: true\n        auth: {{ header_name: X-Auth-Token, secret: {{ env: {token_env} }} }}\n  - id: FT\n    api_key_sha256: {}\n",
            sha256_hex(b"other facility key")
        ),
    );
    let lake = dir.path().join("lake");
    let facilities = dir.path().join("facilities.yaml");
    let setup = Setup {
        topics: &topics,
        lake: &lake,
        facilities: &facilities,
        env: &[
            (key_env.as_str(), key.as_str()),
            (token_env.as_str(), token.as_str()),
        ],
        log: dir.path().join("connector.log"),
        tls: None,
    };
    let mut connector = Connector::start(&setup).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/files/s.csv", connector.base);
    for request in [
        client.put(&url).bearer_auth(&key).body("x"),
        client.put(&url).bearer_auth(format!("{key}x")).body("x"),
        client
            .put(&url)
            .header("X-API-Key", &key)
            .header("X-Facility-Id", "FT")
            .body("x"),
        client.put(&url).bearer_auth(&key).body(""),
    ] {
        request.send().await.unwrap();
    }
    // Let the poller fetch page 1 (auth header in use) and log at debug.
    read_topic(&topics.raw_files(), 3, TIMEOUT).await;
    assert!(connector.child.terminate(Duration::from_secs(20)));

    let logs = connector.logs();
    assert!(
        logs.contains("Push API listening"),
        "logs captured:\n{logs}"
    );
    assert!(logs.contains("DEBUG"), "debug logs captured");
    assert!(logs.contains("refused"), "the 403 was logged:\n{logs}");
    for secret in [key.as_str(), token.as_str()] {
        assert!(
            !logs.contains(secret),
            "a secret ({secret:?}) is in the logs:\n{logs}"
        );
    }
}

/// A registry that would send one facility's files to another (two
/// facilities with one key) or that holds a key written inline is refused
/// at start, with a message that names the facilities and never repeats the
/// key.
#[tokio::test]
async fn a_shared_key_or_an_inline_secret_stops_the_start_without_echoing_it() {
    let topics = topics_config();
    let dir = tempfile::tempdir().unwrap();
    let key = format!("shared-key-{}", short_id());
    let env = format!("IT_SHARED_KEY_{}", short_id().to_uppercase());
    let cases = [
        (
            format!(
                "facilities:\n  - id: FA\n    api_key: {{ env: {env} }}\n  - id: FB\n    api_key_sha256: {}\n  - id: FC\n",
                medlake_common::raw_file::sha256_hex(key.as_bytes())
            ),
            "facilities FA and FB have the same API key",
        ),
        (
            format!("facilities:\n  - id: FA\n    api_key: \"{key}\"\n"),
            "must be a reference",
        ),
    ];
    for (yaml, expected) in cases {
        let facilities = write_facilities(dir.path(), &yaml);
        let printed = failed_start(
            api_connector_command(&topics, dir.path(), &facilities),
            &dir.path().join("start.log"),
            &[(&env, &key)],
        )
        .await;
        assert!(printed.contains(expected), "{printed}");
        assert!(
            !printed.contains(&key),
            "the key is in the output: {printed}"
        );
    }
}

/// `medlake api-connector` with a lake in `dir` and the registry
/// `facilities`, on free ports.
pub(crate) fn api_connector_command(
    topics: &TopicsConfig,
    dir: &Path,
    facilities: &Path,
) -> Command {
    let mut command = medlake(topics);
    command
        .arg("api-connector")
        .env("MEDLAKE_LAKE_URI", dir.join("lake"))
        .env("MEDLAKE_FACILITIES_FILE", facilities)
        .env(
            "MEDLAKE_API_CONNECTOR__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "MEDLAKE_ADMIN__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("RUST_LOG", "debug");
    command
}

/// Runs `command` (with `env` added) expecting it to fail at start; returns
/// what it printed (kept in `log`).
pub(crate) async fn failed_start(mut command: Command, log: &Path, env: &[(&str, &str)]) -> String {
    command
        .envs(env.iter().copied())
        .stdout(Stdio::from(File::create(log).unwrap()))
        .stderr(Stdio::from(File::options().append(true).open(log).unwrap()));
    let mut child = ChildGuard::spawn(command);
    let status = eventually(Duration::from_secs(30), "the start to fail", || {
        let exited = child.0.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let printed = std::fs::read_to_string(log).unwrap();
    assert!(!status.success(), "it started: {printed}");
    printed
}

/// A pull endpoint on an internal address (here loopback) is refused before
/// any request unless the registry allows it: no page is asked for, and the
/// log says why.
#[tokio::test]
async fn a_pull_endpoint_on_an_internal_address_is_never_asked_unless_allowed() {
    let topics = topics_config();
    ensure_topics(&topics).await;
    let dir = tempfile::tempdir().unwrap();
    let token = format!("tok-{}", short_id());
    let token_env = format!("IT_PULL_TOKEN_{}", short_id().to_uppercase());
    let api: Api = Arc::new(Mutex::new(FakeApi {
        token: token.clone(),
        ..FakeApi::default()
    }));
    let api_base = serve_api(api.clone()).await;
    let facilities = pull_facilities(dir.path(), &api_base, &token_env, false);
    let connector = Connector::start(&Setup {
        topics: &topics,
        lake: &dir.path().join("lake"),
        facilities: &facilities,
        env: &[(token_env.as_str(), token.as_str())],
        log: dir.path().join("connector.log"),
        tls: None,
    })
    .await;
    eventually(TIMEOUT, "the refusal in the log", || {
        let logs = connector.logs();
        async move { logs.contains("pull endpoints may not reach").then_some(()) }
    })
    .await;
    // Several poll intervals later, still nothing asked.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        api.lock().unwrap().page_requests.is_empty(),
        "a refused endpoint's page was requested"
    );
}

/// Pushes a small file as `name` with `key` and asserts the 202.
pub(crate) async fn assert_upload_served(connector: &Connector, key: &str, name: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/v1/files/{name}", connector.base))
        .bearer_auth(key)
        .body(format!("PK {}", short_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{name}");
}

/// Reads from `stream` until the server closes it (EOF or reset) or
/// `limit` passes, writing one byte of `drip` every 200 ms meanwhile (none
/// when empty); returns how long the connection lived.
pub(crate) async fn lifetime(
    mut stream: tokio::net::TcpStream,
    drip: &'static [u8],
    limit: Duration,
) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 256];
    let mut next = 0;
    while started.elapsed() < limit {
        if next < drip.len() && stream.write_all(&drip[next..=next]).await.is_err() {
            break;
        }
        next += 1;
        // An answer (408) before the close, or nothing yet: keep reading.
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await
        {
            break;
        }
    }
    started.elapsed()
}

/// Slowloris (headers a byte at a time) and half-open connections (nothing
/// sent) are closed within the header timeout; past the connection cap a
/// connection is closed at once and counted; afterwards uploads are served.
#[tokio::test]
async fn slow_and_silent_connections_are_closed_and_the_cap_holds() {
    let fx = PushFixture::new().await;
    let timeout = Duration::from_millis(1_500);
    let connector = fx
        .start(&[
            ("MEDLAKE_API_CONNECTOR__HEADER_READ_TIMEOUT_MS", "1500"),
            ("MEDLAKE_API_CONNECTOR__MAX_CONNECTIONS", "30"),
        ])
        .await;
    let address = connector.base.trim_start_matches("http://").to_string();
    const SLOW: &[u8] = b"PUT /v1/files/slow.zip HTTP/1.1\r\nHost: medlake\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut tasks = Vec::new();
    for i in 0..30 {
        let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let drip: &'static [u8] = if i % 2 == 0 { SLOW } else { b"" };
        tasks.push(tokio::spawn(lifetime(
            stream,
            drip,
            Duration::from_secs(20),
        )));
    }
    // Every slot is taken: one more connection is closed at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = tokio::net::TcpStream::connect(&address).await.unwrap();
    let extra_life = lifetime(extra, b"", Duration::from_secs(20)).await;
    assert!(
        extra_life < timeout,
        "over the cap, yet open {extra_life:?}"
    );
    for task in tasks {
        let life = task.await.unwrap();
        assert!(
            life >= timeout - Duration::from_millis(300) && life < timeout * 3,
            "a slow or silent connection lived {life:?} (header timeout {timeout:?})"
        );
    }
    let metrics = connector.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("medlake_api_connector_connections_refused_total ")
                && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    // The slots are free again: an upload is served.
    assert_upload_served(&connector, &fx.key_a, "after.zip").await;
}

/// A flood of connections that each send a large, never-finished header
/// block: each is cut off at `max_header_bytes` and answered or closed, so
/// the connector's peak memory grows by far less than the flood's volume.
#[tokio::test]
async fn a_header_flood_is_cut_off_at_the_header_limit() {
    use tokio::io::AsyncWriteExt;
    let fx = PushFixture::new().await;
    let connector = fx.start(&[]).await;
    let pid = connector.child.0.id();
    let before_kb = crate::parser::vm_hwm_kb(pid);
    let address = connector.base.trim_start_matches("http://").to_string();
    // 300 connections × 400 KB of header lines = 120 MB offered.
    let line = format!("X-Flood: {}\r\n", "a".repeat(1_000));
    let block: Vec<u8> = std::iter::once("PUT /v1/files/f.zip HTTP/1.1\r\nHost: m\r\n".to_string())
        .chain(std::iter::repeat_n(line, 400))
        .collect::<String>()
        .into_bytes();
    let block = std::sync::Arc::new(block);
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let address = address.clone();
        let block = block.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.ok()?;
            // The server stops reading (and answers 431) at its limit.
            let sent =
                tokio::time::timeout(Duration::from_secs(10), stream.write_all(&block)).await;
            Some((stream, sent.is_ok_and(|r| r.is_ok())))
        }));
    }
    let mut held = Vec::new();
    let mut fully_sent = 0;
    for task in tasks {
        if let Some((stream, sent)) = task.await.unwrap() {
            fully_sent += usize::from(sent);
            held.push(stream);
        }
    }
    // Time for the server to read what the kernel buffered for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kb = crate::parser::vm_hwm_kb(pid);
    drop(held);
    let growth_mib = after_kb.saturating_sub(before_kb) / 1024;
    eprintln!(
        "api: header flood of 300 × {} KB: peak RSS {} -> {} MiB (+{growth_mib} MiB); {fully_sent} connections could send it all",
        block.len() / 1024,
        before_kb / 1024,
        after_kb / 1024
    );
    // 300 × 64 KiB of header buffers is ~19 MiB; the flood offered 120 MB.
    assert!(
        growth_mib < 64,
        "peak RSS grew by {growth_mib} MiB under the header flood"
    );
    // And the connector still serves.
    assert_upload_served(&connector, &fx.key_a, "after-flood.zip").await;
}
