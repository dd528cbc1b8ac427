//! `medlake serve`: the customers' portal and SQL API over the lake, each
//! customer seeing only its own facilities.
//!
//! - [`customers`]: who may read which facilities (the customer registry).
//! - [`catalog`]: the lake's tables and the facility column of each.
//! - [`engine`]: read-only SQL over views that filter every table to the
//!   asker's facilities, within a time, memory and size limit.
//! - [`http`]: the SQL API (`POST /v1/query`), with query slots per
//!   customer.

pub mod audit;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod customers;
pub mod engine;
pub mod http;
pub mod reports;
pub mod unestimated;

use std::sync::Arc;

use medlake_common::admin::{self, PlainLimits};
use medlake_common::{Context, Shutdown, dataset};

pub use config::ServeConfig;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serve configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Customers(#[from] customers::CustomerError),
    #[error(transparent)]
    Reports(#[from] reports::ReportError),
    #[error("data set definitions: {source}")]
    Datasets {
        source: Box<medlake_common::dataset::DatasetError>,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Serves the SQL API until `shutdown`.
pub async fn run(ctx: Context, config: ServeConfig, shutdown: Shutdown) -> Result<(), ServeError> {
    config
        .validate()
        .map_err(|reason| ServeError::Config { reason })?;
    let registry = customers::CustomerRegistry::load(&config.customers_file)?;
    let datasets = dataset::load_dir(&ctx.schemas_dir).map_err(|source| ServeError::Datasets {
        source: Box::new(source),
    })?;
    let reports = reports::load_dir(&config.reports_dir)?;
    let catalog = catalog::Catalog::from_datasets(&ctx.lake_uri, &datasets);
    let (audit, audit_writer) = audit::AuditLog::start(
        &ctx.lake_uri,
        std::time::Duration::from_millis(config.audit_flush_ms),
    );
    let state = Arc::new(http::AppState {
        registry,
        catalog,
        limits: config.limits(),
        max_csv_rows: config.max_csv_rows,
        slots: http::Slots::new(config.max_queries_per_customer, config.max_queries)
            .with_queue_wait(std::time::Duration::from_millis(config.queue_wait_ms)),
        reports,
        cache: cache::Cache::new(config.cache_bytes),
        audit,
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(
        addr = %config.listen,
        customers = state.registry.customers().len(),
        reports = state.reports.len(),
        "Serving the SQL API."
    );
    ctx.health.set_ready(true);
    let state_for_audit = state.clone();
    admin::serve_plain(
        listener,
        http::router(state),
        PlainLimits {
            max_connections: 1024,
            header_read_timeout: std::time::Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
        },
        shutdown,
    )
    .await;
    ctx.health.set_ready(false);
    // Queries still finishing record their rows meanwhile; the queue is
    // written out before the process ends.
    let flushed = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        state_for_audit.audit.flush(),
    )
    .await;
    if flushed.is_err() {
        tracing::error!("The audit queue was not written out within 30 s.");
    }
    drop(audit_writer);
    Ok(())
}
