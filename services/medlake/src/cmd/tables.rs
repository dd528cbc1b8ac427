//! `medlake tables summary`: rows per table, files in the ledger by status, dead
//! letters by error code, read from the lake; optionally reconciled with (and waiting
//! for) a `medlake gen` manifest. `medlake tables layout`: how each table lies in
//! storage (files, bytes, partitions, log length, load time).

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use medlake_datagen::Manifest;
use medlake_sink::delta::builtin::{DEAD_LETTERS_TABLE, FILES_TABLE};
use medlake_sink::inspect::{self, Expected, LakeSummary};

use crate::config::Config;

/// Reading the lake's tables.
#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// Rows per table, files by ledger status, dead letters by error code.
    Summary(SummaryArgs),
    /// Per table: data files, bytes, partitions, the most files in one
    /// partition, log length (version) and the time to load it.
    Layout(LayoutArgs),
}

#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Every data set table and the built-in tables, as they lie in storage.
async fn layout(args: LayoutArgs, config: &Config) -> anyhow::Result<()> {
    let mut names: Vec<String> = medlake_common::dataset::load_dir(&config.schemas_dir)?
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.extend([DEAD_LETTERS_TABLE.to_string(), FILES_TABLE.to_string()]);
    let mut layouts = Vec::new();
    for name in &names {
        if let Some(layout) = inspect::layout(&config.lake_uri, name).await? {
            layouts.push(layout);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&layouts)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>8} {:>8} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "table", "version", "files", "bytes", "avg_bytes", "partitions", "max/part", "load_s"
    );
    for l in &layouts {
        println!(
            "{:<20} {:>8} {:>8} {:>12} {:>10} {:>10} {:>10} {:>8.3}",
            l.table,
            l.version,
            l.files,
            l.bytes,
            l.average_file_bytes(),
            l.partitions,
            l.max_files_per_partition,
            l.load_s
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Manifest of `medlake gen`: compare the lake with what it says.
    #[arg(long)]
    manifest: Option<std::path::PathBuf>,
    /// With `--manifest`: wait up to this many seconds for the lake to reconcile;
    /// fail (exit 1) if it does not.
    #[arg(long, default_value_t = 0, requires = "manifest")]
    wait_s: u64,
    /// Read the ledger from `<lake>/_files` instead of the ledger topic (no Kafka needed).
    #[arg(long)]
    ledger_table: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn progress(summary: &LakeSummary, expected: &Expected) {
    let files: u64 = summary.files_by_status.values().sum();
    let rows: u64 = summary.tables.values().sum();
    let expected_rows: u64 = expected.table_rows.values().sum();
    eprintln!(
        "waiting: {files}/{} files in the ledger, {rows}/{expected_rows} table rows, {} dead letters",
        expected.files.len(),
        summary.dead_letters.values().sum::<u64>(),
    );
}

pub async fn run(command: TablesCommand, config: &Config) -> anyhow::Result<()> {
    let args = match command {
        TablesCommand::Summary(args) => args,
        TablesCommand::Layout(args) => return layout(args, config).await,
    };
    let lake = config.lake_uri.as_str();
    let expected = args
        .manifest
        .as_deref()
        .map(Manifest::load)
        .transpose()?
        .map(|m| m.expectation());
    let ledger = (!args.ledger_table).then(|| inspect::LedgerTopic {
        kafka: config.kafka.clone(),
        topic: config.topics.files(),
    });
    let (summary, rec) = match &expected {
        Some(e) => {
            let poll = Duration::from_secs(2);
            let timeout = Duration::from_secs(args.wait_s);
            let (s, r) = inspect::wait_for(lake, ledger.as_ref(), e, timeout, poll, |s, r| {
                if args.wait_s > 0 && !r.is_complete() {
                    progress(s, e);
                }
            })
            .await?;
            (s, Some(r))
        }
        None => {
            let datasets: Vec<String> = medlake_common::dataset::load_dir(&config.schemas_dir)?
                .into_iter()
                .map(|d| d.name)
                .collect();
            (
                inspect::summarize(lake, &datasets, ledger.as_ref()).await?,
                None,
            )
        }
    };
    if args.json {
        let value = serde_json::json!({ "summary": summary, "reconciliation": rec });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", inspect::render(&summary, expected.as_ref()));
    }
    if let Some(rec) = rec.filter(|r| !r.is_complete()) {
        let missing: Vec<&str> = rec
            .missing_files
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        bail!(
            "the lake does not match the manifest after {} s: {} file(s) not in the ledger {:?}{}, \
             table mismatches (table, expected, actual) {:?}, dead-letter mismatches {:?}",
            args.wait_s,
            rec.missing_files.len(),
            missing,
            if rec.missing_files.len() > 5 {
                " …"
            } else {
                ""
            },
            rec.table_mismatches,
            rec.dead_letter_mismatches
        );
    }
    Ok(())
}
