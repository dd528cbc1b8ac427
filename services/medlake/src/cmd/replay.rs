//! `medlake replay`: re-publish dead-lettered files to their origin topic
//! once the cause is fixed.

use std::time::Duration;

use clap::Args;
use medlake_parser::service::replay::{ReplayFilter, replay};

use crate::config::Config;

/// Which dead letters to replay.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Only dead letters with this error code (repeatable), e.g. `wrong_password`.
    #[arg(long = "code")]
    codes: Vec<String>,
    /// Only files of this facility.
    #[arg(long)]
    facility: Option<String>,
    /// Only this file id.
    #[arg(long)]
    file_id: Option<String>,
    /// Count what would be replayed without publishing anything.
    #[arg(long)]
    dry_run: bool,
    /// How long reading the dead-letter topic to its end may take, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

pub async fn run(args: ReplayArgs, config: &Config) -> anyhow::Result<()> {
    let codes = args
        .codes
        .iter()
        .map(|c| c.parse())
        .collect::<Result<Vec<_>, _>>()?;
    let filter = ReplayFilter {
        codes,
        facility_id: args.facility,
        file_id: args.file_id,
    };
    let ctx = config.context();
    let report = replay(
        &ctx,
        &filter,
        args.dry_run,
        Duration::from_secs(args.timeout_s),
    )
    .await?;
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    println!(
        "{verb} {} file(s); {} entry/record dead letter(s) left alone; {} skipped",
        report.replayed, report.partial, report.skipped
    );
    Ok(())
}
