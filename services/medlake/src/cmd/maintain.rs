//! `medlake maintain`: compact (OPTIMIZE, optional Z-order) and vacuum the
//! lake's tables, once or every N minutes.

use clap::Args;
use medlake_common::Shutdown;
use medlake_sink::delta::builtin::{DEAD_LETTERS_TABLE, FILES_TABLE};
use medlake_sink::maintain::{self, MaintainConfig};

use crate::config::Config;

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Only this data set's table (default: every data set of `schemas_dir`
    /// plus `_dead_letters` and `_files`).
    #[arg(long)]
    dataset: Option<String>,
    /// Z-order the table by these columns (needs `--dataset`), e.g. `--zorder ward,visit_id`.
    #[arg(long, value_delimiter = ',', requires = "dataset")]
    zorder: Vec<String>,
    /// Target file size of compaction (default: `maintain.target_file_size_bytes`).
    #[arg(long)]
    target_file_size_bytes: Option<u64>,
    /// Vacuum files older than this (default: `maintain.vacuum_retention_hours`).
    #[arg(long)]
    retention_hours: Option<u64>,
    /// Run again every N minutes until stopped (default: `maintain.every_minutes`; none: once).
    #[arg(long)]
    every_minutes: Option<u64>,
}

/// The configuration with the command line's overrides applied.
fn effective(args: &MaintainArgs, base: &MaintainConfig) -> MaintainConfig {
    let mut config = base.clone();
    if let (Some(dataset), false) = (&args.dataset, args.zorder.is_empty()) {
        config
            .zorder_by
            .insert(dataset.clone(), args.zorder.clone());
    }
    if let Some(bytes) = args.target_file_size_bytes {
        config.target_file_size_bytes = bytes;
    }
    if let Some(hours) = args.retention_hours {
        config.vacuum_retention_hours = hours;
    }
    if args.every_minutes.is_some() {
        config.every_minutes = args.every_minutes;
    }
    config
}

pub async fn run(args: MaintainArgs, config: &Config) -> anyhow::Result<()> {
    let maintain_config = effective(&args, &config.maintain);
    let tables = match &args.dataset {
        Some(dataset) => vec![dataset.clone()],
        None => {
            let mut names: Vec<String> = medlake_common::dataset::load_dir(&config.schemas_dir)?
                .into_iter()
                .map(|d| d.name)
                .collect();
            names.extend([DEAD_LETTERS_TABLE.to_string(), FILES_TABLE.to_string()]);
            names
        }
    };
    let lake_uri = config.lake_uri.clone();
    if maintain_config.every_minutes.is_some() {
        return super::run_service("maintain", config, move |ctx, stop: Shutdown| async move {
            // Scheduled: ready while it runs, so a container healthcheck passes.
            ctx.health.set_ready(true);
            maintain::run(&lake_uri, &tables, &maintain_config, stop)
                .await
                .map(|_| ())
        })
        .await;
    }
    for report in maintain::run(&lake_uri, &tables, &maintain_config, Shutdown::new()).await? {
        println!(
            "{}: version {}, {} files compacted into {}, {} vacuumed, {} live",
            report.table,
            report.version,
            report.files_removed,
            report.files_added,
            report.files_vacuumed,
            report.live_files
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MaintainArgs,
    }

    #[test]
    fn command_line_overrides_the_configuration() {
        let cli = Cli::parse_from([
            "maintain",
            "--dataset",
            "labs",
            "--zorder",
            "ward,lab_id",
            "--retention-hours",
            "200",
            "--every-minutes",
            "30",
        ]);
        let config = effective(&cli.args, &MaintainConfig::default());
        assert_eq!(config.zorder_by["labs"], vec!["ward", "lab_id"]);
        assert_eq!(config.vacuum_retention_hours, 200);
        assert_eq!(config.every_minutes, Some(30));
        assert_eq!(
            config.target_file_size_bytes,
            MaintainConfig::default().target_file_size_bytes
        );
    }

    #[test]
    fn zorder_needs_a_dataset() {
        assert!(Cli::try_parse_from(["maintain", "--zorder", "ward"]).is_err());
    }
}
