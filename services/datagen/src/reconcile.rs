//! Reads a lake back and reconciles it with a manifest: which files the ledger
//! (`<lake>/_files`) settled and how, rows per table, dead letters per error code, and
//! the time from the first file received to the last table commit.
//!
//! Everything is read through the sink's own table reader, so what is checked is what
//! Spark and Trino see: the latest committed version of each Delta table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use medlake_common::config::KafkaConfig;
use medlake_sink::delta::builtin::{DEAD_LETTERS_TABLE, FILES_TABLE};
use medlake_sink::delta::read;
use serde::Serialize;

use crate::error::GenError;
use crate::manifest::Manifest;

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

fn table_error(table: &str, e: impl std::fmt::Display) -> GenError {
    GenError::Table {
        table: table.to_string(),
        reason: e.to_string(),
    }
}

/// Whether `<lake>/<table>` is a Delta table yet (local lakes: its log exists).
async fn exists(lake_uri: &str, table: &str) -> bool {
    read::open(lake_uri, table).await.is_ok()
}

async fn last_commit(lake_uri: &str, table: &str) -> Result<Option<DateTime<Utc>>, GenError> {
    let delta = read::open(lake_uri, table)
        .await
        .map_err(|e| table_error(table, e))?;
    let mut history = delta.history(Some(1));
    let mut latest = None;
    while let Some(commit) = history.next().await {
        let commit = commit.map_err(|e| table_error(table, e))?;
        latest = latest.max(commit.timestamp.and_then(DateTime::from_timestamp_millis));
    }
    Ok(latest)
}

/// Latest status per file id in `_files` batches (a redelivery adds a `duplicate`
/// entry), with when the file was received.
type Latest = BTreeMap<String, (Option<DateTime<Utc>>, String)>;

fn latest_per_file(batches: &[RecordBatch]) -> Result<Latest, GenError> {
    let mut latest: BTreeMap<String, (i64, Option<DateTime<Utc>>, String)> = BTreeMap::new();
    for batch in batches {
        let (Some(ids), Some(status)) = (strings(batch, "file_id"), strings(batch, "status"))
        else {
            return Err(table_error(FILES_TABLE, "no file_id or status column"));
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
async fn from_topic(summary: &mut LakeSummary, source: &LedgerTopic) -> Result<(), GenError> {
    let entries =
        crate::ledger::read(&source.kafka, &source.topic, Duration::from_secs(30)).await?;
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
) -> Result<LakeSummary, GenError> {
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
            .map_err(|e| table_error(table, e))?;
        summary.tables.insert(table.clone(), rows as u64);
        summary.last_commit = summary.last_commit.max(last_commit(lake_uri, table).await?);
    }
    if exists(lake_uri, FILES_TABLE).await {
        let batches = read::read_all(lake_uri, FILES_TABLE)
            .await
            .map_err(|e| table_error(FILES_TABLE, e))?;
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
            .map_err(|e| table_error(DEAD_LETTERS_TABLE, e))?;
        for batch in &batches {
            let Some(codes) = strings(batch, "error_code") else {
                return Err(table_error(DEAD_LETTERS_TABLE, "no error_code column"));
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

/// How a lake compares with a manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Manifest files the ledger does not list yet.
    pub missing_files: Vec<String>,
    /// Tables whose row count differs: (table, expected, actual).
    pub table_mismatches: Vec<(String, u64, u64)>,
    /// Error codes whose dead-letter count differs: (code, expected, actual).
    pub dead_letter_mismatches: Vec<(String, u64, u64)>,
}

impl Reconciliation {
    /// Every file settled, every table and dead-letter count as expected.
    pub fn is_complete(&self) -> bool {
        self.missing_files.is_empty()
            && self.table_mismatches.is_empty()
            && self.dead_letter_mismatches.is_empty()
    }
}

/// Compares a summary with what the manifest says the lake must hold.
pub fn reconcile(manifest: &Manifest, summary: &LakeSummary) -> Reconciliation {
    let missing_files = manifest
        .files
        .iter()
        .filter(|f| !summary.file_ids.contains(&f.sha256))
        .map(|f| f.path.clone())
        .collect();
    let mut table_mismatches: Vec<(String, u64, u64)> = manifest
        .totals
        .table_rows
        .iter()
        .filter_map(|(table, expected)| {
            let actual = summary.tables.get(table).copied().unwrap_or(0);
            (actual != *expected).then(|| (table.clone(), *expected, actual))
        })
        .collect();
    // One row per file in the sink's copy of the ledger.
    let files = manifest.files.len() as u64;
    if summary.ledger_table_rows != files {
        table_mismatches.push((FILES_TABLE.to_string(), files, summary.ledger_table_rows));
    }
    let codes: BTreeSet<&String> = manifest
        .totals
        .rejects
        .keys()
        .chain(summary.dead_letters.keys())
        .collect();
    let dead_letter_mismatches = codes
        .into_iter()
        .filter_map(|code| {
            let expected = manifest.totals.rejects.get(code).copied().unwrap_or(0);
            let actual = summary.dead_letters.get(code).copied().unwrap_or(0);
            (actual != expected).then(|| (code.clone(), expected, actual))
        })
        .collect();
    Reconciliation {
        missing_files,
        table_mismatches,
        dead_letter_mismatches,
    }
}

/// Polls the lake until it reconciles with the manifest or `timeout` passes; returns
/// the last summary and reconciliation either way. Tables being written while read
/// are retried at the next poll.
pub async fn wait_for(
    lake_uri: &str,
    ledger: Option<&LedgerTopic>,
    manifest: &Manifest,
    timeout: Duration,
    poll: Duration,
    mut progress: impl FnMut(&LakeSummary, &Reconciliation),
) -> Result<(LakeSummary, Reconciliation), GenError> {
    let datasets: Vec<String> = manifest.totals.table_rows.keys().cloned().collect();
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        // Tables are only read once the (cheap) ledger topic lists every file.
        if let Some(source) = ledger {
            let mut files = LakeSummary::default();
            match from_topic(&mut files, source).await {
                Ok(()) => {
                    let rec = reconcile(manifest, &files);
                    if !rec.missing_files.is_empty() && Instant::now() < deadline {
                        progress(&files, &rec);
                        tokio::time::sleep(poll).await;
                        continue;
                    }
                }
                Err(e) if Instant::now() < deadline => {
                    last_error = Some(e);
                    tokio::time::sleep(poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        match summarize(lake_uri, &datasets, ledger).await {
            Ok(summary) => {
                let rec = reconcile(manifest, &summary);
                progress(&summary, &rec);
                if rec.is_complete() || Instant::now() >= deadline {
                    return Ok((summary, rec));
                }
            }
            Err(e) if Instant::now() < deadline => last_error = Some(e),
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(last_error.unwrap_or_else(|| table_error("lake", "timed out")));
        }
        tokio::time::sleep(poll).await;
    }
}

/// A human summary: files, rows per table against the manifest, dead letters by code.
pub fn render(summary: &LakeSummary, manifest: Option<&Manifest>) -> String {
    let mut out = String::new();
    let files: u64 = summary.files_by_status.values().sum();
    let statuses: Vec<String> = summary
        .files_by_status
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let _ = write!(
        out,
        "files in the ledger ({}): {files} ({})",
        summary.ledger,
        statuses.join(", ")
    );
    if let Some(m) = manifest {
        let _ = write!(out, " of {} generated", m.files.len());
    }
    out.push('\n');
    let _ = writeln!(out, "rows per table:");
    let _ = write!(out, "  {FILES_TABLE:<18} {:>9}", summary.ledger_table_rows);
    if let Some(m) = manifest {
        let expected = m.files.len() as u64;
        let mark = if summary.ledger_table_rows == expected {
            "ok"
        } else {
            "MISMATCH"
        };
        let _ = write!(out, "   expected {expected:>9} (one per file)  {mark}");
    }
    out.push('\n');
    let mut tables: BTreeSet<&String> = summary.tables.keys().collect();
    if let Some(m) = manifest {
        tables.extend(m.totals.table_rows.keys());
    }
    for table in tables {
        let actual = summary.tables.get(table).copied().unwrap_or(0);
        let _ = write!(out, "  {table:<18} {actual:>9}");
        if let Some(m) = manifest {
            let expected = m.totals.table_rows.get(table).copied().unwrap_or(0);
            let records = m.totals.records.get(table).copied().unwrap_or(0);
            let mark = if actual == expected { "ok" } else { "MISMATCH" };
            let _ = write!(out, "   expected {expected:>9} ({records} records)  {mark}");
        }
        out.push('\n');
    }
    let total: u64 = summary.dead_letters.values().sum();
    let _ = writeln!(out, "dead letters by error code: {total}");
    let mut codes: BTreeSet<&String> = summary.dead_letters.keys().collect();
    if let Some(m) = manifest {
        codes.extend(m.totals.rejects.keys());
    }
    for code in codes {
        let actual = summary.dead_letters.get(code).copied().unwrap_or(0);
        let _ = write!(out, "  {code:<22} {actual:>6}");
        if let Some(m) = manifest {
            let expected = m.totals.rejects.get(code).copied().unwrap_or(0);
            let mark = if actual == expected { "ok" } else { "MISMATCH" };
            let _ = write!(out, "   expected {expected:>6}  {mark}");
        }
        out.push('\n');
    }
    if let Some(s) = summary.elapsed_s() {
        let _ = writeln!(out, "first file received to last commit: {s:.1} s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facilities::Protection;
    use crate::manifest::{Container, FileEntry, Totals};

    fn manifest() -> Manifest {
        let file = FileEntry {
            path: "files/F1/a.zip".into(),
            name: "a.zip".into(),
            facility_id: "F1".into(),
            dataset: "patients".into(),
            at: Utc::now(),
            container: Container::Zip,
            protection: Protection::None,
            bytes: 10,
            sha256: "abc".into(),
            entries: 1,
            bad: None,
            records: BTreeMap::from([("patients".into(), 3)]),
            rejects: BTreeMap::from([("bad_date".into(), 1)]),
            file_rejected: None,
        };
        let mut totals = Totals::default();
        totals.add(&file);
        totals.table_rows.insert("patients".into(), 2);
        Manifest {
            seed: 1,
            start_date: chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            registry: "r.yaml".into(),
            env_file: None,
            files: vec![file],
            totals,
        }
    }

    #[test]
    fn reconciliation_names_what_is_missing() {
        let m = manifest();
        let mut s = LakeSummary::default();
        let rec = reconcile(&m, &s);
        assert_eq!(rec.missing_files, vec!["files/F1/a.zip".to_string()]);
        assert_eq!(
            rec.table_mismatches,
            vec![("patients".into(), 2, 0), (FILES_TABLE.into(), 1, 0)]
        );
        assert_eq!(rec.dead_letter_mismatches, vec![("bad_date".into(), 1, 0)]);
        s.file_ids.insert("abc".into());
        s.ledger_table_rows = 1;
        s.tables.insert("patients".into(), 2);
        s.dead_letters.insert("bad_date".into(), 1);
        assert!(reconcile(&m, &s).is_complete());
        let text = render(&s, Some(&m));
        assert!(text.contains("patients"), "{text}");
        assert!(!text.contains("MISMATCH"), "{text}");
    }
}
