//! The `api_connector` section of the configuration file.

use std::net::SocketAddr;

use medlake_common::ingest::IngestConfig;
use serde::{Deserialize, Serialize};

/// Settings of `medlake api-connector`. Pull endpoints themselves are listed
/// per facility in the facility registry (`http_pull`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConnectorConfig {
    /// Address the push API listens on (`PUT /v1/files/{name}`,
    /// `POST /v1/files`); port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest file accepted by the push API, in bytes; a larger body is
    /// answered 413 without being buffered.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Uploads handled at once; one more is answered `503` with
    /// `Retry-After`. Bounds memory to about this times `max_body_bytes`.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
    /// Time a client has to send a request's headers, on a new connection
    /// and between the requests of a kept-alive one (which it also closes
    /// when idle), in milliseconds.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Longest pause between two chunks of a request body, in milliseconds;
    /// a stalled upload fails and frees its slot.
    #[serde(default = "default_body_chunk_timeout_ms")]
    pub body_chunk_timeout_ms: u64,
    /// Bytes of request headers buffered per connection (8 KiB at least).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Connections open at once; one more is closed at once. With
    /// `max_header_bytes` it bounds what unfinished headers can hold:
    /// 1,024 × 64 KiB = 64 MiB by default.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How many recently accepted files (facility + file id) are remembered
    /// so that a re-sent identical file is answered without publishing it
    /// again.
    #[serde(default = "default_recent_files")]
    pub recent_files: usize,
    /// How endpoints of the facilities' `http_pull` lists are polled.
    #[serde(default)]
    pub pull: PullConfig,
    /// Raw zone and Kafka publishing (inline size limit, queue timeout).
    #[serde(default)]
    pub ingest: IngestConfig,
}

/// Request and retry settings of the pull side.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Time limit of one request (a page or a file download), in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Attempts of one request before the round is given up (5xx, 429,
    /// timeouts and connection errors are retried; other 4xx are not).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay, in milliseconds; doubled per attempt, with full jitter.
    #[serde(default = "default_retry_backoff_initial_ms")]
    pub retry_backoff_initial_ms: u64,
    /// Ceiling of the retry delay, in milliseconds.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Largest page or file downloaded, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_file_bytes: usize,
    /// Bytes the bodies of all pull endpoints hold in memory at once, from
    /// the download until the file is published (see
    /// [`medlake_common::budget`]). A body holds its Content-Length, or
    /// `max_file_bytes` when the server does not announce one; a download
    /// waits for its share, so one slow endpoint cannot multiply memory by
    /// the number of endpoints.
    #[serde(default = "default_download_budget_bytes")]
    pub download_budget_bytes: u64,
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_body_chunk_timeout_ms() -> u64 {
    30_000
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_connections() -> usize {
    1024
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_concurrent_uploads() -> usize {
    32
}
fn default_recent_files() -> usize {
    100_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_backoff_initial_ms() -> u64 {
    200
}
fn default_retry_backoff_max_ms() -> u64 {
    30_000
}
fn default_download_budget_bytes() -> u64 {
    128 * 1024 * 1024
}

impl Default for ApiConnectorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_concurrent_uploads: default_max_concurrent_uploads(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_chunk_timeout_ms: default_body_chunk_timeout_ms(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: default_max_connections(),
            recent_files: default_recent_files(),
            pull: PullConfig::default(),
            ingest: IngestConfig::default(),
        }
    }
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_request_timeout_ms(),
            max_attempts: default_max_attempts(),
            retry_backoff_initial_ms: default_retry_backoff_initial_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            max_file_bytes: default_max_body_bytes(),
            download_budget_bytes: default_download_budget_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_accept_64_mib_files() {
        let c: ApiConnectorConfig = serde_yaml::from_str("{}").unwrap();
        assert!(c.max_body_bytes >= 64 * 1024 * 1024);
        assert!(c.pull.max_file_bytes >= 64 * 1024 * 1024);
        assert_eq!(c.listen.port(), 8080);
        assert!(c.pull.max_attempts >= 1);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml::from_str::<ApiConnectorConfig>("max_body: 3").unwrap_err();
        assert!(err.to_string().contains("max_body"), "{err}");
        let err = serde_yaml::from_str::<ApiConnectorConfig>("pull: { retries: 3 }").unwrap_err();
        assert!(err.to_string().contains("retries"), "{err}");
    }
}
