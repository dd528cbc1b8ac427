//! `medlake api-connector`: the HTTP push API and the HTTP pull endpoints.

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let section = config.api_connector.clone();
    super::run_service("api-connector", config, |ctx, shutdown| {
        medlake_api_connector::run(ctx, section, shutdown)
    })
    .await
}
