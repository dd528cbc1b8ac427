//! Errors that stop the api-connector (start-up and server failures).
//! Per-request and per-poll failures are answered or retried where they
//! happen and never reach here.

use std::net::SocketAddr;

use medlake_common::facilities::RegistryError;
use medlake_common::ingest::IngestError;
use medlake_common::{Classify, ErrorKind};

/// The api-connector cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ApiConnectorError {
    #[error("{source}")]
    Registry { source: RegistryError },
    #[error("{source}")]
    Keys { source: crate::auth::KeyIndexError },
    #[error(
        "facility {facility_id}: http_pull endpoint {endpoint_id}: url does not parse: {source}"
    )]
    EndpointUrl {
        facility_id: String,
        endpoint_id: String,
        source: url::ParseError,
    },
    #[error("cannot set up ingestion: {source}")]
    Ingest { source: Box<IngestError> },
    #[error("cannot build the HTTP client: {source}")]
    Client { source: reqwest::Error },
    #[error("cannot listen on {addr} for the push API: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the push API server failed: {source}")]
    Serve { source: std::io::Error },
    #[error(
        "api_connector.tls is not set: give the push API its certificate \
         (`tls: {{ cert_file: ..., key_file: ... }}`, or MEDLAKE_API_CONNECTOR__TLS__CERT_FILE and \
         __KEY_FILE), or choose plain HTTP explicitly (`tls: none`, MEDLAKE_API_CONNECTOR__TLS=none)"
    )]
    TlsNotConfigured,
    #[error("push API TLS: {source}")]
    Tls { source: crate::tls::TlsError },
    #[error("{message}")]
    Limits { message: String },
}

impl Classify for ApiConnectorError {
    fn kind(&self) -> ErrorKind {
        match self {
            ApiConnectorError::Ingest { source } => source.kind(),
            _ => ErrorKind::Fatal,
        }
    }
}
