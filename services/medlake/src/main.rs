//! `medlake`: one binary whose subcommands start each service and tool.
//!
//! This file only parses the command line, sets up logging, loads the
//! configuration and calls into the library crates; every behaviour lives
//! in a library so tests drive it in-process.

mod cmd;
mod config;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// medlake: EMR extracts from FTP and HTTP, through Kafka, into Delta Lake tables.
#[derive(Debug, Parser)]
#[command(name = "medlake", version, about, long_about = None)]
struct Cli {
    /// Configuration file (YAML). Without it: built-in defaults and the environment.
    #[arg(long, short, global = true, env = "MEDLAKE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the Kafka topics medlake uses.
    #[command(subcommand)]
    Topics(cmd::topics::TopicsCommand),
    /// Parse raw files into records, dead letters and ledger entries (exactly once).
    Parser,
    /// Re-publish dead-lettered files to their origin topic once the cause is fixed.
    Replay(cmd::replay::ReplayArgs),
    /// Poll the FTP folders of the facility registry and ingest new files.
    FtpConnector,
    /// Write the records topics (and the dead-letter and ledger topics) into Delta tables.
    Sink,
    /// Receive files over HTTP (push API) and poll customers' HTTP APIs.
    ApiConnector,
    /// The customers' SQL API over the lake, each customer scoped to its facilities.
    Serve,
    /// Parse one file offline (no Kafka): records on stdout, rejects on stderr.
    Parse(cmd::parse::ParseArgs),
    /// Check data set definitions.
    #[command(subcommand)]
    Datasets(cmd::datasets::DatasetsCommand),
    /// Generate facility files and their manifest (test and demo data).
    Gen(cmd::r#gen::GenArgs),
    /// Compact (OPTIMIZE, optional Z-order) and vacuum the tables, once or on a schedule.
    Maintain(cmd::maintain::MaintainArgs),
    /// Read the lake: rows per table, ledger, dead letters; reconcile with a manifest.
    #[command(subcommand)]
    Tables(cmd::tables::TablesCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("medlake: {error}");
            return ExitCode::from(2);
        }
    };
    // Offline tools: their own exit statuses, no logging set-up or runtime.
    match &cli.command {
        Command::Parse(args) => return cmd::parse::run(args, &config),
        Command::Datasets(command) => return cmd::datasets::run(command, &config),
        Command::Gen(args) => return cmd::r#gen::run(args),
        _ => {}
    }
    medlake_common::logging::init(&config.log);
    // `s3://` lake URIs for Delta tables (the raw zone uses object_store directly).
    deltalake::aws::register_handlers(None);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("medlake: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Topics(command) => cmd::topics::run(command, &config).await,
            Command::Parser => cmd::parser::run(&config).await,
            Command::Replay(args) => cmd::replay::run(args, &config).await,
            Command::FtpConnector => cmd::ftp_connector::run(&config).await,
            Command::Sink => cmd::sink::run(&config).await,
            Command::ApiConnector => cmd::api_connector::run(&config).await,
            Command::Serve => cmd::serve::run(&config).await,
            Command::Tables(command) => cmd::tables::run(command, &config).await,
            Command::Maintain(args) => cmd::maintain::run(args, &config).await,
            Command::Parse(_) | Command::Datasets(_) | Command::Gen(_) => Ok(()), // handled above
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("medlake: {error:#}");
            ExitCode::FAILURE
        }
    }
}
