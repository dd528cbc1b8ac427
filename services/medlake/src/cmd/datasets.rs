//! `medlake datasets check [DIR]`: validates every data set definition and names the
//! file, the field and what is wrong. Exit 0 when all are valid, 1 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use medlake_common::dataset::{self, DatasetError};

use crate::config::Config;

/// `medlake datasets …`
#[derive(Debug, clap::Subcommand)]
pub enum DatasetsCommand {
    /// Validate every `*.yaml` definition in DIR (default: `schemas_dir` of the configuration).
    Check {
        /// Folder of data set definitions.
        dir: Option<PathBuf>,
    },
}

/// Runs the subcommand; returns the process exit status.
pub fn run(command: &DatasetsCommand, config: &Config) -> ExitCode {
    let DatasetsCommand::Check { dir } = command;
    let dir = dir.clone().unwrap_or_else(|| config.schemas_dir.clone());
    match dataset::check_dir(&dir) {
        Ok(datasets) => {
            for d in &datasets {
                println!(
                    "ok {} ({}, {}, {} fields) {}",
                    d.name,
                    d.format.type_name(),
                    if d.table.is_merge() {
                        "merge"
                    } else {
                        "append"
                    },
                    d.fields.len(),
                    d.source_file.display()
                );
            }
            println!("{} data set(s) valid", datasets.len());
            ExitCode::SUCCESS
        }
        Err(DatasetError::Invalid { problems }) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{} problem(s) found", problems.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("medlake datasets check: {e}");
            ExitCode::from(2)
        }
    }
}
