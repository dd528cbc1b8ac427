//! `medlake api-connector`: files in over HTTP.
//!
//! - **Push** ([`push`]): facilities upload with `PUT /v1/files/{name}` (or a
//!   multipart `POST /v1/files`), authenticated by an API key that maps to
//!   exactly one facility ([`auth`]). The answer is `202 Accepted` with the
//!   file id only once the file is in the raw zone and Kafka acked it; a
//!   re-sent identical file is answered idempotently ([`recent`]).
//! - **Pull** ([`pull`]): each `http_pull` endpoint of the facility registry
//!   is polled for pages of files behind a cursor that is persisted in the
//!   raw zone after the page's files are ingested.
//!
//! The key design choice: acknowledge late, deliver at least once. Nothing
//! is acknowledged (a 202, a stored cursor) before
//! [`medlake_common::ingest::Ingestor::ingest`] returned, and every path that
//! can repeat a file repeats it with the same file id (the SHA-256 of its
//! bytes), so the parser's ledger makes repeats harmless. The in-memory
//! memory of recent files only saves work; correctness never depends on it,
//! which keeps the service stateless and free to run as many replicas.
//!
//! Files are buffered in memory up to `max_body_bytes` (64 MiB by default):
//! a file is hashed once, off the async runtime when it is large
//! ([`medlake_common::ingest::RawFile::identify`]); that id answers a re-sent
//! file and goes along to the ingest step, which writes and publishes the
//! whole file. What all uploads together hold is bounded by a memory budget,
//! and each facility gets a share of the upload slots ([`push::slots`]).
//! The push API serves TLS itself ([`tls`]); plain HTTP only when the
//! configuration says `tls: none`.

pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pull;
pub mod push;
pub mod recent;
pub mod serve;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use medlake_common::budget::ByteBudget;
use medlake_common::facilities::Registry;
use medlake_common::ingest::Ingestor;
use medlake_common::{Context, Shutdown};
use tokio::task::JoinSet;

pub use config::{ApiConnectorConfig, PullConfig, TlsConfig, TlsFiles};
pub use error::ApiConnectorError;

use crate::auth::KeyIndex;
use crate::pull::{EndpointPuller, Fetcher};
use crate::push::PushState;
use crate::push::slots::{UploadLimits, UploadSlots};
use crate::recent::RecentFiles;
use crate::serve::Transport;
use crate::tls::CertificateStore;

/// How long open requests may take to finish after a stop signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);

/// Runs the push API and every pull endpoint until `shutdown`.
///
/// On shutdown the server stops accepting connections and finishes the
/// requests in flight (each ends with its 202 or an error); pollers stop
/// between files, leaving their cursor at the last fully ingested page.
pub async fn run(
    ctx: Context,
    config: ApiConnectorConfig,
    shutdown: Shutdown,
) -> Result<(), ApiConnectorError> {
    let upload_limits = UploadLimits {
        max_uploads: config.max_concurrent_uploads,
        max_per_facility: config.max_uploads_per_facility,
        max_memory_bytes: config.max_upload_memory_bytes,
        inline_limit_bytes: config.ingest.inline_limit_bytes,
    };
    upload_limits
        .check(config.max_body_bytes)
        .map_err(|message| ApiConnectorError::Limits { message })?;
    if upload_limits.one_facility_fills_memory(config.max_body_bytes) {
        tracing::warn!(
            "One facility at its share of uploads (max_uploads_per_facility) can hold all of \
             max_upload_memory_bytes and keep the other facilities out; lower the one or raise \
             the other."
        );
    }
    let certificates = match config.tls.as_ref() {
        None => return Err(ApiConnectorError::TlsNotConfigured),
        Some(TlsConfig::None) => None,
        Some(TlsConfig::Files(files)) => Some(
            CertificateStore::load(files.clone())
                .map_err(|source| ApiConnectorError::Tls { source })?,
        ),
    };
    let transport = match &certificates {
        None => Transport::Plain,
        Some(store) => Transport::Tls(
            store
                .acceptor()
                .map_err(|source| ApiConnectorError::Tls { source })?,
        ),
    };
    let registry = Registry::load(&ctx.facilities_file)
        .map_err(|source| ApiConnectorError::Registry { source })?;
    let (keys, skipped) =
        KeyIndex::from_registry(&registry).map_err(|source| ApiConnectorError::Keys { source })?;
    for error in &skipped {
        tracing::warn!(%error, "Facility cannot push: its API key is unavailable.");
    }
    let ingestor = Arc::new(Ingestor::new(&ctx, &config.ingest).map_err(|source| {
        ApiConnectorError::Ingest {
            source: Box::new(source),
        }
    })?);
    let recent = Arc::new(RecentFiles::new(config.recent_files));
    let pullers = pullers(&registry, &config, &ingestor, &recent)?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ApiConnectorError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ApiConnectorError::Bind {
            addr: config.listen,
            source,
        })?;
    let facilities = keys.len();
    let app = push::router(Arc::new(PushState {
        keys,
        recent,
        ingestor,
        max_body_bytes: config.max_body_bytes,
        slots: UploadSlots::new(upload_limits),
    }));

    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    let endpoints = pullers.len();
    for puller in pullers {
        tasks.spawn(puller.run(stop.clone()));
    }
    if let Some(store) = certificates {
        tasks.spawn(store.watch(stop.clone()));
    } else {
        tracing::warn!(
            %addr,
            "The push API serves plain HTTP (api_connector.tls: none): API keys and files cross the network unencrypted."
        );
    }
    let scheme = if matches!(transport, Transport::Plain) {
        "http"
    } else {
        "https"
    };
    tracing::info!(%addr, scheme, facilities, endpoints, "Push API listening.");
    ctx.health.set_ready(true);
    let limits = serve::ServerLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        body_chunk_timeout: Duration::from_millis(config.body_chunk_timeout_ms),
        max_header_bytes: config.max_header_bytes,
        max_connections: config.max_connections,
    };
    let served = serve::serve(
        listener,
        transport,
        app,
        limits,
        stop.clone(),
        SHUTDOWN_DRAIN,
    )
    .await;
    ctx.health.set_ready(false);
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    served.map_err(|source| ApiConnectorError::Serve { source })
}

/// One poller per `http_pull` endpoint (the registry validated the
/// definitions and their ids when it was loaded).
fn pullers(
    registry: &Registry,
    config: &ApiConnectorConfig,
    ingestor: &Arc<Ingestor>,
    recent: &Arc<RecentFiles>,
) -> Result<Vec<EndpointPuller>, ApiConnectorError> {
    // Endpoints reach the public internet only, unless they allow private
    // addresses (see `pull::guard`).
    let budget = ByteBudget::new(config.pull.download_budget_bytes);
    let client = |allow_private| {
        Fetcher::new(&config.pull, allow_private, budget.clone())
            .map_err(|source| ApiConnectorError::Client { source })
    };
    let (guarded, open) = (client(false)?, client(true)?);
    let mut out = Vec::new();
    for facility in registry.iter() {
        for endpoint in &facility.http_pull {
            let puller = EndpointPuller::new(
                &facility.id,
                endpoint.clone(),
                if endpoint.allow_private_network {
                    open.clone()
                } else {
                    guarded.clone()
                },
                ingestor.clone(),
                recent.clone(),
            )
            .map_err(|source| ApiConnectorError::EndpointUrl {
                facility_id: facility.id.clone(),
                endpoint_id: endpoint.id.clone(),
                source,
            })?;
            out.push(puller);
        }
    }
    Ok(out)
}
