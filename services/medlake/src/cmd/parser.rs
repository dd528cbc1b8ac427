//! `medlake parser`: raw files into records, dead letters and ledger entries,
//! one Kafka transaction per batch of waiting files.

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let section = config.parser.clone();
    super::run_service("parser", config, |ctx, shutdown| {
        medlake_parser::run(ctx, section, shutdown)
    })
    .await
}
