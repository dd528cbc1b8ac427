//! `medlake ftp-connector`: polls the FTP endpoints of the facility registry.

use crate::config::Config;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let section = config.ftp_connector.clone();
    super::run_service("ftp-connector", config, |ctx, shutdown| {
        medlake_ftp_connector::run(ctx, section, shutdown)
    })
    .await
}
