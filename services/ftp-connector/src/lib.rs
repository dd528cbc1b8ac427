//! `medlake ftp-connector`: polls FTP and FTPS folders for new files and
//! ingests them: the company's landing server, where each facility pushes
//! into its own folder (source `ftp`), and customers' own servers (source
//! `ftp_pull`). The endpoints come from the facility registry (`ftp:` of
//! each facility); this crate's configuration only tunes the service.
//!
//! The key design choice is the order of acknowledgement. A file is
//! downloaded, written to the raw zone and published, and only after the
//! broker acked it is the remote file moved to `processed/` (or deleted).
//! A crash at any point loses nothing: before the move the file is still
//! there and is taken again at the next start; its file id is the SHA-256
//! of its bytes, so a second publish is recognised as a duplicate by the
//! parser's ledger. The connector therefore keeps no state of its own.
//!
//! Other choices:
//! - one task per endpoint, each with its own session, stability memory and
//!   exponential backoff, so a dead server or a wrong password (logged and
//!   counted in `medlake_connector_poll_errors_total`, never with the
//!   password) holds up no other endpoint;
//! - a file is taken once it is settled: the same size in two listings in a
//!   row and/or a modification time older than `min_age_ms`; a file whose
//!   download does not match its listed size waits for the next listings;
//! - files over `max_file_bytes` are moved to `rejected/` and counted,
//!   rather than retried forever;
//! - replicas split the endpoints by a hash of their id (`shard_count`,
//!   `shard_index`), so each endpoint has exactly one poller.

mod config;
mod endpoint;
mod error;
mod landing;
mod session;
mod stability;

use std::sync::Arc;

use medlake_common::budget::ByteBudget;
use medlake_common::endpoints::ftp::FtpEndpoint;
use medlake_common::facilities::Registry;
use medlake_common::ingest::Ingestor;
use medlake_common::{Context, Shutdown};
use tokio::task::JoinSet;

pub use crate::config::FtpConnectorConfig;
pub use crate::error::{FtpConnectorError, PollError};

/// Runs the connector until `shutdown` (or a fatal error).
pub async fn run(
    ctx: Context,
    config: FtpConnectorConfig,
    shutdown: Shutdown,
) -> Result<(), FtpConnectorError> {
    config
        .validate()
        .map_err(|reason| FtpConnectorError::Config { reason })?;
    cap_library_logs();
    let registry = Registry::load(&ctx.facilities_file)?;
    let endpoints = endpoints(&registry, &config);
    let ingestor = Arc::new(Ingestor::new(&ctx, &config.ingest)?);
    let budget = ByteBudget::new(config.download_budget_bytes);

    // A fatal error in one task stops the others, not the admin server.
    let stop = shutdown.child_token();
    let mut tasks = JoinSet::new();
    for (facility_id, endpoint) in endpoints {
        let id = endpoint.id.clone();
        let backoff = medlake_common::backoff::Backoff::from_ms(
            config.retry_backoff_initial_ms,
            config.retry_backoff_max_ms,
        );
        let folder = endpoint::Folder::new(facility_id, endpoint, ingestor.clone(), budget.clone());
        let worker = endpoint::Worker::new(folder, backoff);
        let stop = stop.clone();
        tasks.spawn(async move { (id, worker.run(stop).await) });
    }
    for server in registry.landing() {
        let backoff = medlake_common::backoff::Backoff::from_ms(
            config.retry_backoff_initial_ms,
            config.retry_backoff_max_ms,
        );
        let landing = landing::Landing::new(
            server.clone(),
            &registry,
            &config,
            &ingestor,
            &budget,
            backoff,
        );
        let id = landing.id().to_string();
        let stop = stop.clone();
        tasks.spawn(async move { (id, landing.run(stop).await) });
    }
    if tasks.is_empty() {
        tracing::warn!("No FTP endpoint to poll; idle until shutdown.");
    }
    ctx.health.set_ready(true);
    tracing::info!(
        endpoints = tasks.len(),
        shard_index = config.shard_index,
        shard_count = config.shard_count,
        "FTP connector running."
    );

    let mut result = Ok(());
    if tasks.is_empty() {
        stop.cancelled().await;
    }
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok((_, Ok(()))) => continue,
            Ok((endpoint, Err(source))) => FtpConnectorError::Poll {
                endpoint,
                source: Box::new(source),
            },
            Err(panic) => FtpConnectorError::Crashed {
                reason: panic.to_string(),
            },
        };
        if result.is_ok() {
            result = Err(failure);
        }
        stop.cancel();
    }
    ctx.health.set_ready(false);
    result
}

/// The FTP library logs (through the `log` crate) every command it sends at
/// trace level, `PASS <password>` included. Records of `log` below debug
/// are therefore dropped in this process whatever `RUST_LOG` says.
fn cap_library_logs() {
    if log::max_level() > log::LevelFilter::Debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// The endpoints this replica polls, with their facility id, in a stable
/// order (the registry validated them and their ids when it was loaded).
fn endpoints(registry: &Registry, config: &FtpConnectorConfig) -> Vec<(String, FtpEndpoint)> {
    let mut facilities: Vec<_> = registry.iter().collect();
    facilities.sort_by(|a, b| a.id.cmp(&b.id));
    facilities
        .into_iter()
        .flat_map(|facility| {
            facility
                .ftp
                .iter()
                .filter(|endpoint| config.owns(&endpoint.id))
                .map(|endpoint| (facility.id.clone(), endpoint.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const REGISTRY: &str = "
facilities:
  - id: F2
    ftp:
      - { id: e2, host: h, user: u, password: { env: P } }
  - id: F1
    ftp:
      - { id: e1a, host: h, user: u, password: { env: P } }
      - { id: e1b, host: h, user: u, password: { env: P }, source: ftp_pull }
  - id: F3
";

    #[test]
    fn endpoints_come_from_the_registry_in_a_stable_order() {
        let registry = Registry::parse(REGISTRY, Path::new("f")).unwrap();
        let all = endpoints(&registry, &FtpConnectorConfig::default());
        let ids: Vec<(&str, &str)> = all
            .iter()
            .map(|(f, e)| (f.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(ids, [("F1", "e1a"), ("F1", "e1b"), ("F2", "e2")]);
    }

    #[test]
    fn shards_take_disjoint_endpoints() {
        let registry = Registry::parse(REGISTRY, Path::new("f")).unwrap();
        let mut total = 0;
        for shard_index in 0..2 {
            let config = FtpConnectorConfig {
                shard_count: 2,
                shard_index,
                ..FtpConnectorConfig::default()
            };
            total += endpoints(&registry, &config).len();
        }
        assert_eq!(total, 3);
    }
}
