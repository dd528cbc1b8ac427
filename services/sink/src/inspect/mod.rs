//! Reads a lake back, `medlake tables summary`: which files the ledger settled and
//! how, rows per table, dead letters per error code, and the time from the first file
//! received to the last table commit; [`reconcile`](reconcile()) compares that with
//! what the lake must hold ([`Expected`], e.g. from a `medlake gen` manifest) and
//! [`wait_for`] polls until it does.
//!
//! Everything is read through the sink's own table reader ([`crate::delta::read`]), so
//! what is checked is what Spark and Trino see: the latest committed version of each
//! Delta table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use medlake_common::config::KafkaConfig;
use serde::Serialize;

use crate::delta::builtin::{DEAD_LETTERS_TABLE, FILES_TABLE};
use crate::delta::read;

mod error;
mod layout;
mod ledger;
mod reconcile;
mod render;

pub use error::InspectError;
pub use layout::{TableLayout, layout};
pub use medlake_common::expected::{Expected, ExpectedFile};
pub use reconcile::{Reconciliation, reconcile, wait_for};
pub use render::render;

/// What the lake holds now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LakeSummary {
    /// Rows per data set table (tables not created yet are absent).
    pub tables: BTreeMap<String, u64>,
    /// Files in the ledger, by status (latest entry per file id).
    pub files_by_status: BTreeMap<String, u64>,
    /// File ids in the ledger.
    #[serde(skip)]
    pub file_ids: BTreeSet<String>,
    /// Dead letters by error code.
    pub dead_letters: BTreeMap<String, u64>,
    /// Earliest `received_at` in the ledger.
    pub first_received: Option<DateTime<Utc>>,
    /// Latest commit of any data set table or the ledger.
    pub last_commit: Option<DateTime<Utc>>,
    /// Where the ledger was read: the topic, or the `_files` table.
    pub ledger: String,
    /// Rows of the `_files` table (the sink's copy of the ledger topic).
    pub ledger_table_rows: u64,
}

/// Read the ledger from its topic rather than from `<lake>/_files`.
#[derive(Debug, Clone)]
pub struct LedgerTopic {
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// The ledger topic (`<prefix>.files`).
    pub topic: String,
}

impl LakeSummary {
    fn observe(&mut self, file_id: String, status: String, received: Option<DateTime<Utc>>) {
        *self.files_by_status.entry(status).or_default() += 1;
        self.file_ids.insert(file_id);
        self.first_received = match (self.first_received, received) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl LakeSummary {
    /// Seconds from the first file received to the last commit.
    pub fn elapsed_s(&self) -> Option<f64> {
        Some((self.last_commit? - self.first_received?).num_milliseconds() as f64 / 1000.0)
    }
}

/// A column as plain UTF-8 strings, whatever string encoding the reader chose (views,
/// dictionaries).
fn strings(batch: &RecordBatch, column: &str) -> Option<StringArray> {
    let array = batch.column_by_name(column)?;
    let utf8 = arrow::compute::cast(array, &arrow::datatypes::DataType::Utf8).ok()?;
    utf8.as_any().downcast_ref::<StringArray>().cloned()
}

/// A timestamp column in microseconds, whatever unit or zone the reader chose.
fn micros(batch: &RecordBatch, column: &str) -> Option<TimestampMicrosecondArray> {
    use arrow::datatypes::{DataType, TimeUnit};
    let array = batch.column_by_name(column)?;
    let target = DataType::Timestamp(TimeUnit::Microsecond, None);
    let cast = arrow::compute::cast(array, &target).ok()?;
    cast.as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .cloned()
}

/// Whether `<lake>/<table>` is a Delta table yet (local lakes: its log exists).
async fn exists(lake_uri: &str, table: &str) -> bool {
    read::open(lake_uri, table).await.is_ok()
}

async fn last_commit(lake_uri: &str, table: &str) -> Result<Option<DateTime<Utc>>, InspectError> {
    let delta = read::open(lake_uri, table)
        .await
        .map_err(|e| InspectError::table(table, e))?;
    let mut history = delta.history(Some(1));
    let mut latest = None;
    while let Some(commit) = history.next().await {
        let commit = commit.map_err(|e| InspectError::table(table, e))?;
        latest = latest.max(commit.timestamp.and_then(DateTime::from_timestamp_millis));
    }
    Ok(latest)
}

/// Latest status per file id in `_files` batches (a redelivery adds a `duplicate`
/// entry), with when the file was received.
type Latest = BTreeMap<String, (Option<DateTime<Utc>>, String)>;

fn latest_per_file(batches: &[RecordBatch]) -> Result<Latest, InspectError> {
    let mut latest: BTreeMap<String, (i64, Option<DateTime<Utc>>, String)> = BTreeMap::new();
    for batch in batches {
        let (Some(ids), Some(status)) = (strings(batch, "file_id"), strings(batch, "status"))
        else {
            return Err(InspectError::table(
                FILES_TABLE,
                "no file_id or status column",
            ));
        };
        let received = micros(batch, "received_at");
        let processed = micros(batch, "processed_at");
        for row in 0..batch.num_rows() {
            let received = received
                .as_ref()
                .filter(|r| r.is_valid(row))
                .and_then(|r| DateTime::from_timestamp_micros(r.value(row)));
            let at = processed
                .as_ref()
                .filter(|p| p.is_valid(row))
                .map_or(0, |p| p.value(row));
            let entry =
                latest
                    .entry(ids.value(row).to_string())
                    .or_insert((i64::MIN, None, String::new()));
            if at >= entry.0 {
                *entry = (at, received, status.value(row).to_string());
            }
        }
    }
    Ok(latest
        .into_iter()
        .map(|(id, (_, received, status))| (id, (received, status)))
        .collect())
}

/// Files, statuses and first arrival from the ledger topic.
async fn from_topic(summary: &mut LakeSummary, source: &LedgerTopic) -> Result<(), InspectError> {
    let entries = ledger::read(&source.kafka, &source.topic, Duration::from_secs(30)).await?;
    summary.ledger = format!("topic {}", source.topic);
    for (id, entry) in entries {
        let received = DateTime::parse_from_rfc3339(&entry.received_at)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        summary.observe(id, entry.status.as_str().to_string(), received);
    }
    Ok(())
}

/// Reads the tables of `datasets` and the two built-in tables; the ledger from its
/// topic when `ledger` is given, else from `<lake>/_files`.
pub async fn summarize(
    lake_uri: &str,
    datasets: &[String],
    ledger: Option<&LedgerTopic>,
) -> Result<LakeSummary, InspectError> {
    let mut summary = LakeSummary::default();
    if let Some(source) = ledger {
        from_topic(&mut summary, source).await?;
    }
    for table in datasets {
        if !exists(lake_uri, table).await {
            continue;
        }
        let rows = read::count_rows(lake_uri, table)
            .await
            .map_err(|e| InspectError::table(table, e))?;
        summary.tables.insert(table.clone(), rows as u64);
        summary.last_commit = summary.last_commit.max(last_commit(lake_uri, table).await?);
    }
    if exists(lake_uri, FILES_TABLE).await {
        let batches = read::read_all(lake_uri, FILES_TABLE)
            .await
            .map_err(|e| InspectError::table(FILES_TABLE, e))?;
        summary.ledger_table_rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        if ledger.is_none() {
            summary.ledger = format!("table {FILES_TABLE}");
            for (id, (received, status)) in latest_per_file(&batches)? {
                summary.observe(id, status, received);
            }
        }
        summary.last_commit = summary
            .last_commit
            .max(last_commit(lake_uri, FILES_TABLE).await?);
    }
    if exists(lake_uri, DEAD_LETTERS_TABLE).await {
        let batches = read::read_all(lake_uri, DEAD_LETTERS_TABLE)
            .await
            .map_err(|e| InspectError::table(DEAD_LETTERS_TABLE, e))?;
        for batch in &batches {
            let Some(codes) = strings(batch, "error_code") else {
                return Err(InspectError::table(
                    DEAD_LETTERS_TABLE,
                    "no error_code column",
                ));
            };
            for row in 0..batch.num_rows() {
                *summary
                    .dead_letters
                    .entry(codes.value(row).to_string())
                    .or_default() += 1;
            }
        }
    }
    Ok(summary)
}
