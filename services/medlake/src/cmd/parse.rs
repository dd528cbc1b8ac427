//! `medlake parse FILE`: offline dry run of the parser (no Kafka). Records as JSON lines
//! on stdout, rejects on stderr; exit 0 when all parsed, 1 when anything was rejected,
//! 2 on a usage or configuration error.

use std::path::PathBuf;
use std::process::ExitCode;

use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;
use medlake_parser::offline::{self, OfflineOptions};

use crate::config::Config;

/// Arguments of `medlake parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The file to parse, as a facility sends it (zip, gzip or plain).
    pub file: PathBuf,
    /// Facility the file comes from: selects its zip passwords and facility-specific data sets.
    #[arg(long, default_value = offline::DEFAULT_FACILITY)]
    pub facility: String,
    /// Folder of data set definitions (default: `schemas_dir` of the configuration).
    #[arg(long)]
    pub schemas: Option<PathBuf>,
    /// `_ingested_at` of the records (RFC 3339), for reproducible output. Default: now.
    #[arg(long, env = "MEDLAKE_PARSE_NOW")]
    pub now: Option<String>,
    /// Key for `pii: hash` fields of data sets that name no key of their own; overrides
    /// `parser.pii_key` of the configuration.
    #[arg(
        long = "pii-key-env",
        env = "MEDLAKE_PII_KEY",
        hide_env_values = true,
        hide = true
    )]
    pub pii_key: Option<String>,
}

/// The key the service would hash with: `MEDLAKE_PII_KEY`, else `parser.pii_key` of the
/// configuration. `None` when neither is set (the dry run then uses a throw-away key).
fn pii_key(args: &ParseArgs, config: &Config) -> Result<Option<Secret>, String> {
    if let Some(key) = &args.pii_key {
        return Ok(Some(Secret::new(key.clone())));
    }
    config
        .parser
        .pii_key
        .as_ref()
        .map(|r| r.resolve().map_err(|e| format!("parser.pii_key: {e}")))
        .transpose()
}

/// Runs the dry run; returns the process exit status.
pub fn run(args: &ParseArgs, config: &Config) -> ExitCode {
    let usage = |message: String| {
        eprintln!("medlake parse: {message}");
        ExitCode::from(2)
    };
    let registry = if config.facilities_file.exists() {
        match Registry::load(&config.facilities_file) {
            Ok(r) => r,
            Err(e) => return usage(e.to_string()),
        }
    } else {
        Registry::default()
    };
    let now = match offline::now_from(args.now.as_deref()) {
        Ok(now) => now,
        Err(e) => return usage(e),
    };
    let pii_key = match pii_key(args, config) {
        Ok(key) => key,
        Err(e) => return usage(e),
    };
    let options = OfflineOptions {
        file: args.file.clone(),
        facility_id: args.facility.clone(),
        schemas_dir: args
            .schemas
            .clone()
            .unwrap_or_else(|| config.schemas_dir.clone()),
        registry,
        pii_key,
        now,
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match offline::run(&options, &mut stdout.lock(), &mut stderr.lock()) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => usage(e.to_string()),
    }
}
