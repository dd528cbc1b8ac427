//! The audit trail: one row per query in the Delta table `_audit` (HIPAA's
//! audit-control requirement). Who asked (customer, user), when, what (a
//! report's name or a digest of the SQL, the parameters), which tables at
//! which versions, how many rows and bytes went back, and the outcome.
//! Never a value of a row.
//!
//! Rows are queued and appended in batches (one Delta commit per
//! `flush_interval` or per 1,000 rows), not one commit per query. The
//! queue is bounded: when the table cannot be written for long, queries
//! wait for room rather than go unrecorded. A failed append is retried
//! with the same rows; on shutdown the queue is written out first.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::DeltaTable;
use tokio::sync::{mpsc, oneshot};

/// The audit table's name under the lake.
pub const AUDIT_TABLE: &str = "_audit";

/// Rows appended in one commit at most.
const MAX_ROWS_PER_COMMIT: usize = 1_000;

/// One query's audit row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub at: chrono::DateTime<chrono::Utc>,
    pub customer: String,
    pub user: String,
    /// `report=<name>` or `sql=<12 hex>`.
    pub query: String,
    /// SHA-256 of the SQL text, in full.
    pub sql_sha256: String,
    /// `name=value` pairs, `;`-separated (facility ids, dates: no PHI).
    pub params: String,
    /// `table@version` pairs, `;`-separated.
    pub tables: String,
    /// `json` or `csv`.
    pub answer: String,
    pub rows: i64,
    pub bytes: i64,
    /// `ok`, `cached`, `refused`, `invalid`, `timeout`, `memory`, `failed`,
    /// `cut` (a CSV cut at its row limit).
    pub outcome: String,
    pub elapsed_ms: i64,
}

/// The schema of `_audit`.
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        text("customer"),
        text("user"),
        text("query"),
        text("sql_sha256"),
        text("params"),
        text("tables"),
        text("answer"),
        int("rows"),
        int("bytes"),
        text("outcome"),
        int("elapsed_ms"),
    ]))
}

fn batch(rows: &[AuditRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: fn(&AuditRow) -> &str| -> Arc<dyn arrow::array::Array> {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let int = |f: fn(&AuditRow) -> i64| -> Arc<dyn arrow::array::Array> {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.at.timestamp_micros()),
                )
                .with_timezone("UTC"),
            ),
            text(|r| &r.customer),
            text(|r| &r.user),
            text(|r| &r.query),
            text(|r| &r.sql_sha256),
            text(|r| &r.params),
            text(|r| &r.tables),
            text(|r| &r.answer),
            int(|r| r.rows),
            int(|r| r.bytes),
            text(|r| &r.outcome),
            int(|r| r.elapsed_ms),
        ],
    )
}

enum Message {
    Row(Box<AuditRow>),
    Flush(oneshot::Sender<()>),
}

/// The handle services record rows with; cloning shares the queue.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("audit message")
    }
}

impl AuditLog {
    /// Starts the writer of `<lake_uri>/_audit`: it appends queued rows
    /// every `flush_interval` (and at 1,000 rows), and writes out the queue
    /// when every handle is dropped.
    pub fn start(lake_uri: &str, flush_interval: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(10_000);
        let writer = tokio::spawn(write_loop(lake_uri.to_string(), receiver, flush_interval));
        (Self { queue }, writer)
    }

    /// Queues `row`; waits while the queue is full.
    pub async fn record(&self, row: AuditRow) {
        if self.queue.send(Message::Row(Box::new(row))).await.is_err() {
            tracing::error!("The audit writer is gone; an audit row is lost.");
        }
    }

    /// Waits until every row recorded before is in the table.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_loop(lake_uri: String, mut queue: mpsc::Receiver<Message>, interval: Duration) {
    let mut pending: Vec<AuditRow> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut table: Option<DeltaTable> = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        let open = tokio::select! {
            message = queue.recv() => match message {
                Some(Message::Row(row)) => {
                    pending.push(*row);
                    if pending.len() < MAX_ROWS_PER_COMMIT {
                        continue;
                    }
                    true
                }
                Some(Message::Flush(done)) => {
                    waiting.push(done);
                    true
                }
                None => false,
            },
            _ = ticker.tick() => true,
        };
        // Retry until written: rows are never dropped while the process lives.
        while !pending.is_empty() {
            match append(&lake_uri, &mut table, &pending).await {
                Ok(()) => pending.clear(),
                Err(error) => {
                    tracing::error!(%error, rows = pending.len(), "Appending audit rows failed; retrying.");
                    table = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if !open {
            return;
        }
    }
}

async fn append(
    lake_uri: &str,
    table: &mut Option<DeltaTable>,
    rows: &[AuditRow],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let current = match table.take() {
        Some(table) => table,
        None => {
            let url = medlake_sink::delta::create::table_url(lake_uri, AUDIT_TABLE)?;
            DeltaTable::try_from_url(url).await?
        }
    };
    let written = current
        .write([batch(rows)?])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await?;
    *table = Some(written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn row(i: i64) -> AuditRow {
        AuditRow {
            at: chrono::Utc::now(),
            customer: "C1".into(),
            user: "ana".into(),
            query: format!("sql={i:012}"),
            sql_sha256: "ab".repeat(32),
            params: String::new(),
            tables: "lab_results@3".into(),
            answer: "json".into(),
            rows: i,
            bytes: 10 * i,
            outcome: "ok".into(),
            elapsed_ms: 1,
        }
    }

    async fn read(lake: &str) -> Vec<RecordBatch> {
        let table = medlake_sink::delta::read::open(lake, AUDIT_TABLE)
            .await
            .unwrap();
        let (_, stream) = table.scan_table().await.unwrap();
        stream.try_collect().await.unwrap()
    }

    #[tokio::test]
    async fn every_recorded_row_lands_in_the_audit_table() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().to_str().unwrap();
        let (log, writer) = AuditLog::start(lake, Duration::from_secs(3600));
        for i in 0..5 {
            log.record(row(i)).await;
        }
        log.flush().await;
        let rows: usize = read(lake).await.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 5);

        // Dropping the last handle writes out what is queued.
        log.record(row(5)).await;
        drop(log);
        writer.await.unwrap();
        let batches = read(lake).await;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 6);
        assert_eq!(batches[0].schema().fields().len(), schema().fields().len());
    }
}
