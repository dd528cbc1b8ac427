//! `medlake parse FILE`: the pipeline with no Kafka, for onboarding a feed. Records go to
//! `out` as JSON lines, rejects and a summary to `err`.
//!
//! Each stdout line is `{"dataset":…,"key":…,"record":{…}}` where `record` is byte for
//! byte the value the service publishes on `medlake.records.<dataset>`. Lineage:
//! `_file_id` is the SHA-256 of the file as in production, and `_ingested_at` is the
//! `now` given (the command takes `--now` / `MEDLAKE_PARSE_NOW` so output is
//! reproducible; it defaults to the current time).
//!
//! `pii: hash` fields are hashed with the key the service would use (`parser.pii_key`)
//! when one is given. Without one the dry run still runs, with a throw-away random key
//! it announces on `err`: the hashes then match nothing in the lake.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use medlake_common::dataset::{self, DatasetError};
use medlake_common::facilities::Registry;
use medlake_common::raw_file::sha256_hex;
use medlake_common::secret::Secret;

use crate::archive::Limits;
use crate::env::{EnvError, ParseEnv, needs_global_pii_key};
use crate::error::{FileError, Reject};
use crate::pipeline::{
    Delivery, FileInput, FileSummary, ProcessError, Record, RecordSink, process_file,
};

/// Facility id used when none is given.
pub const DEFAULT_FACILITY: &str = "offline";

/// The stderr line of a dry run that hashes with a throw-away key.
pub const THROW_AWAY_KEY_NOTICE: &str = "note: no PII key configured (parser.pii_key): \
    `pii: hash` fields are hashed with a throw-away random key, not comparable with the lake's";

/// A key nobody knows: 32 random bytes, hex.
fn random_key() -> Secret {
    Secret::new(hex::encode(rand::random::<[u8; 32]>()))
}

/// What the dry run needs.
#[derive(Debug)]
pub struct OfflineOptions {
    /// The file to parse, as a facility would send it.
    pub file: PathBuf,
    /// The facility it comes from (selects passwords and `match.facilities`).
    pub facility_id: String,
    /// Directory of the data set definitions.
    pub schemas_dir: PathBuf,
    /// Facility registry (zip passwords); empty when there is none.
    pub registry: Registry,
    /// Global key for `pii: hash`; `None`: a throw-away random key, announced on `err`
    /// when a data set needs it.
    pub pii_key: Option<Secret>,
    /// `_ingested_at` of every record.
    pub now: DateTime<Utc>,
}

/// The dry run could not start (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The input file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The data set definitions are invalid.
    #[error(transparent)]
    Datasets(#[from] DatasetError),
    /// The parser cannot be configured (e.g. no PII key).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// How the dry run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was parsed; the summary says whether anything was rejected.
    Parsed(FileSummary),
    /// The whole file was rejected.
    Rejected(FileError),
}

impl Outcome {
    /// 0 when everything parsed, 1 when anything was rejected.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Parsed(s) if !s.has_rejects() => 0,
            _ => 1,
        }
    }
}

struct JsonLines<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl RecordSink for JsonLines<'_> {
    type Error = std::io::Error;

    fn record(&mut self, record: &Record<'_>) -> std::io::Result<Delivery> {
        write!(self.out, "{{\"dataset\":")?;
        serde_json::to_writer(&mut *self.out, &record.dataset.name)?;
        write!(self.out, ",\"key\":")?;
        serde_json::to_writer(&mut *self.out, record.key)?;
        write!(self.out, ",\"record\":")?;
        self.out.write_all(record.json)?;
        writeln!(self.out, "}}")?;
        Ok(Delivery::Taken)
    }

    fn reject(&mut self, reject: &Reject) -> std::io::Result<()> {
        writeln!(self.err, "rejected: {reject}")
    }
}

/// The `_ingested_at` of a dry run: the RFC 3339 time given, or now.
pub fn now_from(arg: Option<&str>) -> Result<DateTime<Utc>, String> {
    match arg {
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("--now must be an RFC 3339 time: {e}")),
        None => Ok(Utc::now()),
    }
}

/// Loads the definitions, then parses the file.
pub fn run(
    opts: &OfflineOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, OfflineError> {
    let datasets = dataset::load_dir(&opts.schemas_dir)?;
    let throw_away;
    let pii_key = match &opts.pii_key {
        Some(key) => key,
        None => {
            if datasets.iter().any(needs_global_pii_key) {
                writeln!(err, "{THROW_AWAY_KEY_NOTICE}")?;
            }
            throw_away = random_key();
            &throw_away
        }
    };
    let env = ParseEnv::new(
        datasets,
        opts.registry.clone(),
        Limits::default(),
        Some(pii_key),
    )?;
    parse_file(&opts.file, &opts.facility_id, &env, opts.now, out, err)
}

/// Parses one file with a ready environment.
pub fn parse_file(
    path: &Path,
    facility_id: &str,
    env: &ParseEnv,
    now: DateTime<Utc>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, OfflineError> {
    let bytes = std::fs::read(path).map_err(|source| OfflineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file_id = sha256_hex(&bytes);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let input = FileInput {
        file_id: &file_id,
        facility_id,
        file_name: &file_name,
        bytes: &bytes,
        ingested_at: now,
    };
    let mut sink = JsonLines { out, err };
    let outcome = match process_file(&input, env, &mut sink) {
        Ok(summary) => Outcome::Parsed(summary),
        Err(ProcessError::File(e)) => Outcome::Rejected(e),
        Err(ProcessError::Sink(e)) => return Err(OfflineError::Output(e)),
    };
    match &outcome {
        Outcome::Parsed(s) => writeln!(
            err,
            "summary: {} entries, {} records {}, {} rejected records, {} rejected entries",
            s.entries,
            s.total_records(),
            serde_json::to_string(&s.records).unwrap_or_default(),
            s.rejected_records,
            s.rejected_entries
        )?,
        Outcome::Rejected(e) => writeln!(err, "rejected file: {} {}: {e}", e.stage(), e.code())?,
    }
    Ok(outcome)
}
