//! One module per subcommand; each turns parsed arguments and the loaded
//! configuration into a call of a library crate.

pub mod api_connector;
pub mod datasets;
pub mod ftp_connector;
pub mod r#gen;
pub mod maintain;
pub mod parse;
pub mod parser;
pub mod replay;
pub mod serve;
pub mod sink;
pub mod tables;
pub mod topics;

use std::future::Future;

use medlake_common::{Context, Shutdown, admin, shutdown};

use crate::config::Config;

/// Runs a long-lived service: starts the admin server, installs the signal
/// handlers and awaits `service` until it returns (after a shutdown signal
/// or a fatal error).
pub async fn run_service<F, Fut, E>(
    name: &'static str,
    config: &Config,
    service: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Context, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    medlake_common::metrics::BUILD_INFO
        .with_label_values(&[env!("CARGO_PKG_VERSION"), name])
        .set(1);
    let ctx = config.context();
    let stop = Shutdown::new();
    shutdown::cancel_on_signals(stop.clone());
    admin::serve(config.admin.listen, ctx.health.clone(), stop.clone()).await?;
    tracing::info!(service = name, "Starting.");
    let result = service(ctx, stop.clone()).await;
    stop.cancel();
    match result {
        Ok(()) => {
            tracing::info!(service = name, "Stopped.");
            Ok(())
        }
        Err(error) => {
            tracing::error!(service = name, %error, "Stopped on a fatal error.");
            Err(error.into())
        }
    }
}
