//! The `api_connector` section of the configuration file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use medlake_common::ingest::IngestConfig;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Settings of `medlake api-connector`. Pull endpoints themselves are listed
/// per facility in the facility registry (`http_pull`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConnectorConfig {
    /// Address the push API listens on (`PUT /v1/files/{name}`,
    /// `POST /v1/files`); port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How the push API is served: `{ cert_file, key_file }` for HTTPS, or
    /// `none` for plain HTTP. Required: without it the api-connector does
    /// not start, so cleartext is always a choice someone wrote down.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest file accepted by the push API, in bytes; a larger body is
    /// answered 413 without being buffered.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Uploads handled at once, all facilities together; one more is
    /// answered `503` with `Retry-After`.
    #[serde(default = "default_max_concurrent_uploads")]
    pub max_concurrent_uploads: usize,
    /// Uploads one facility may have in progress at once; one more is
    /// answered `429` with `Retry-After`, while other facilities are still
    /// served.
    #[serde(default = "default_max_uploads_per_facility")]
    pub max_uploads_per_facility: usize,
    /// Memory all uploads in progress may hold, in bytes: the received
    /// bytes of each, three times over for a file that goes inline to Kafka
    /// (the producer's copy and its compressed batch). An upload that
    /// would pass it is answered `503` with `Retry-After`.
    #[serde(default = "default_max_upload_memory_bytes")]
    pub max_upload_memory_bytes: usize,
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

/// How the push API is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsConfig {
    /// Plain HTTP (`tls: none`): for local development and tests, or behind
    /// a proxy that terminates TLS on the same host.
    None,
    /// HTTPS with the certificate in these files.
    Files(TlsFiles),
}

/// The certificate the push API serves, reloaded when the files change.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// How often the two files are read for a new certificate, in
    /// milliseconds. A new pair that does not load is logged and the
    /// previous certificate stays in service.
    #[serde(default = "default_tls_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

impl Serialize for TlsConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TlsConfig::None => serializer.serialize_str("none"),
            TlsConfig::Files(files) => files.serialize(serializer),
        }
    }
}

/// `none`, or a map with the files.
impl<'de> Deserialize<'de> for TlsConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TlsVisitor;
        impl<'de> Visitor<'de> for TlsVisitor {
            type Value = TlsConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none` or `{ cert_file, key_file }`")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<TlsConfig, E> {
                if value == "none" {
                    Ok(TlsConfig::None)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(value), &self))
                }
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<TlsConfig, M::Error> {
                TlsFiles::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(TlsConfig::Files)
            }
        }
        deserializer.deserialize_any(TlsVisitor)
    }
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
    128
}
fn default_max_uploads_per_facility() -> usize {
    4
}
fn default_max_upload_memory_bytes() -> usize {
    512 * 1024 * 1024
}
fn default_tls_reload_interval_ms() -> u64 {
    5_000
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
    64 * 1024 * 1024
}

impl Default for ApiConnectorConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            max_body_bytes: default_max_body_bytes(),
            max_concurrent_uploads: default_max_concurrent_uploads(),
            max_uploads_per_facility: default_max_uploads_per_facility(),
            max_upload_memory_bytes: default_max_upload_memory_bytes(),
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
    fn tls_is_none_or_a_pair_of_files_and_has_no_default() {
        let c: ApiConnectorConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.tls, None);
        let c: ApiConnectorConfig = serde_yaml::from_str("tls:").unwrap();
        assert_eq!(c.tls, None);
        let c: ApiConnectorConfig = serde_yaml::from_str("tls: none").unwrap();
        assert_eq!(c.tls, Some(TlsConfig::None));
        let c: ApiConnectorConfig =
            serde_yaml::from_str("tls: { cert_file: /c.pem, key_file: /k.pem }").unwrap();
        let Some(TlsConfig::Files(files)) = &c.tls else {
            panic!("{:?}", c.tls)
        };
        assert_eq!(files.cert_file, PathBuf::from("/c.pem"));
        assert_eq!(files.reload_interval_ms, 5_000);
        // Written back the way it was read.
        let yaml = serde_yaml::to_string(&c.tls).unwrap();
        let again: Option<TlsConfig> = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(again, c.tls);
        assert_eq!(serde_yaml::to_string(&TlsConfig::None).unwrap(), "none\n");

        for bad in [
            "tls: off",
            "tls: { cert_file: /c.pem }",
            "tls: { cert: /c.pem, key_file: /k }",
        ] {
            let err = serde_yaml::from_str::<ApiConnectorConfig>(bad).unwrap_err();
            assert!(
                err.to_string().contains("tls") || err.to_string().contains("cert"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml::from_str::<ApiConnectorConfig>("max_body: 3").unwrap_err();
        assert!(err.to_string().contains("max_body"), "{err}");
        let err = serde_yaml::from_str::<ApiConnectorConfig>("pull: { retries: 3 }").unwrap_err();
        assert!(err.to_string().contains("retries"), "{err}");
    }
}
