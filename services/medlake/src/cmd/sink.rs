//! `medlake sink`: records topics into Delta tables.

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let section = config.sink.clone();
    super::run_service("sink", config, |ctx, shutdown| {
        medlake_sink::run(ctx, section, shutdown)
    })
    .await
}
