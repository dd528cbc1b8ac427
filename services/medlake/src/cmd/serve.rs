//! `medlake serve`: the customers' SQL API over the lake.

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let section = config.serve.clone();
    super::run_service("serve", config, |ctx, shutdown| {
        medlake_serve::run(ctx, section, shutdown)
    })
    .await
}
