//! Writing one topic's batch: rows, dead letters, the Delta commit, then
//! Kafka offsets and metrics.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use medlake_common::metrics::{
    SINK_BATCH_BYTES, SINK_BATCH_ROWS, SINK_COMMIT_CONFLICTS, SINK_COMMIT_SECONDS,
    SINK_COMPACTED_FILES, SINK_COMPACTIONS, SINK_CONSUMER_LAG, SINK_FILE_TO_TABLE_SECONDS,
    SINK_MERGE_ROWS, SINK_MESSAGES, SINK_ROWS_WRITTEN, SINK_TABLE_FILES,
};
use medlake_common::raw_file::header::RECEIVED_AT;
use medlake_common::{Classify, ErrorKind};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::batch::{Buffer, Buffered};
use super::config::SinkConfig;
use super::dead_letters;
use super::error::SinkError;
use super::partitions::SinkContext;
use super::start::{START_METADATA_KEY, StartNote};
use super::tables::Target;
use crate::delta::{CommitOutcome, DeltaError, RowOrigin, SinkBatch};

/// How long a watermark query for the lag gauge may take.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

/// One table, its topic and its in-flight batch.
#[derive(Debug)]
pub(crate) struct Lane {
    pub target: Target,
    pub buffer: Buffer,
    /// Partitions that started somewhere other than right after the
    /// table's offset, until a commit has recorded why.
    pub starts: BTreeMap<i32, StartNote>,
}

/// The clients and settings a flush uses.
pub(crate) struct Io {
    pub consumer: Arc<StreamConsumer<SinkContext>>,
    pub producer: FutureProducer,
    pub dlq_topic: String,
    pub config: SinkConfig,
}

/// Writes the lane's batch. On success the batch is empty; on error it is
/// kept as it is, to be retried (dead letters already sent are not sent
/// again).
pub(crate) async fn flush(lane: &mut Lane, io: &Io) -> Result<(), SinkError> {
    if lane.buffer.is_empty() {
        return Ok(());
    }
    let table = lane.target.name().to_string();
    let topic = lane.target.topic.clone();
    let decoded = lane.target.rows(lane.buffer.messages())?;

    // Dead letters first: the commit below skips their records.
    let messages = lane.buffer.messages();
    let letters: Vec<_> = decoded
        .rejects
        .iter()
        .filter(|r| !messages[r.index].dead_lettered)
        .map(|r| {
            let message = &messages[r.index].message;
            (message, dead_letters::letter(&table, message, r))
        })
        .collect();
    dead_letters::send(&io.producer, &io.dlq_topic, &table, &letters).await?;
    drop(letters);
    for reject in &decoded.rejects {
        lane.buffer.messages_mut()[reject.index].dead_lettered = true;
    }

    let messages = lane.buffer.messages();
    let origins = decoded
        .rows
        .iter()
        .map(|&i| RowOrigin {
            partition: messages[i].partition(),
            offset: messages[i].offset(),
        })
        .collect();
    let last_offsets = lane.buffer.last_offsets();
    let batch = with_starts(
        lane,
        last_offsets.iter().fold(
            SinkBatch::new(&topic, decoded.records, origins),
            |batch, (partition, offset)| batch.consumed(*partition, *offset),
        ),
    );
    let outcome = match lane.target.writer.write(batch).await {
        Ok(outcome) => outcome,
        Err(error) if error.kind() == ErrorKind::BadInput => refuse_batch(lane, io, &error).await?,
        Err(error) => return Err(SinkError::table(&table, error)),
    };
    after_commit(lane, io, &outcome).await;
    if outcome.committed {
        for partition in last_offsets.keys() {
            lane.starts.remove(partition);
        }
    }

    SINK_MESSAGES
        .with_label_values(&[&table])
        .inc_by(lane.buffer.len() as u64);
    SINK_BATCH_ROWS
        .with_label_values(&[&table])
        .observe(lane.buffer.len() as f64);
    SINK_BATCH_BYTES
        .with_label_values(&[&table])
        .observe(lane.buffer.bytes() as f64);
    tracing::debug!(
        table,
        messages = lane.buffer.len(),
        bytes = lane.buffer.bytes(),
        rows = outcome.rows_written,
        dead_letters = decoded.rejects.len(),
        "Batch written."
    );
    commit_offsets(io, &topic, &last_offsets);
    update_lag(io, &topic, &table, &last_offsets);
    lane.buffer.clear();
    compact_if_due(lane).await;
    Ok(())
}

/// Runs the writer's compaction when it is due. A failure (most often a
/// concurrent writer's commit) is counted and logged; the rows are already
/// committed, and the writer tries again after its next commit.
async fn compact_if_due(lane: &mut Lane) {
    let table = lane.target.name().to_string();
    match lane.target.writer.compact_if_due().await {
        Ok(None) => {}
        Ok(Some(compaction)) => {
            SINK_COMPACTIONS.with_label_values(&[&table, "ok"]).inc();
            SINK_COMPACTED_FILES
                .with_label_values(&[&table])
                .inc_by(compaction.files_removed);
            SINK_TABLE_FILES
                .with_label_values(&[&table])
                .set(compaction.live_files as i64);
        }
        Err(error) => {
            SINK_COMPACTIONS
                .with_label_values(&[&table, "failed"])
                .inc();
            tracing::warn!(table, %error, "Compaction failed; trying again after the next commit.");
        }
    }
}

/// The table refused the batch as a whole (a value Delta cannot store that
/// the decoder let through): every message becomes a dead letter and only
/// the offsets are committed, so the service goes on. The error's text is
/// not passed on: library messages may quote values.
async fn refuse_batch(
    lane: &mut Lane,
    io: &Io,
    error: &DeltaError,
) -> Result<CommitOutcome, SinkError> {
    let table = lane.target.name().to_string();
    let operation = match error {
        DeltaError::Delta { operation, .. } | DeltaError::Arrow { operation, .. } => *operation,
        _ => "write",
    };
    tracing::error!(
        table,
        operation,
        messages = lane.buffer.len(),
        "The table refused a batch; its messages go to the dead-letter topic."
    );
    let text = format!("table {table}: the table refused the batch ({operation})");
    let letters: Vec<_> = lane
        .buffer
        .messages()
        .iter()
        .filter(|m| !m.dead_lettered)
        .map(|m| {
            (
                &m.message,
                dead_letters::letter_with_text(&m.message, text.clone()),
            )
        })
        .collect();
    dead_letters::send(&io.producer, &io.dlq_topic, &table, &letters).await?;
    drop(letters);
    for m in lane.buffer.messages_mut() {
        m.dead_lettered = true;
    }
    let schema = lane.target.writer.spec().schema.clone();
    let batch = lane.buffer.last_offsets().into_iter().fold(
        SinkBatch::new(
            &lane.target.topic,
            RecordBatch::new_empty(schema),
            Vec::new(),
        ),
        |batch, (partition, offset)| batch.consumed(partition, offset),
    );
    let batch = with_starts(lane, batch);
    lane.target
        .writer
        .write(batch)
        .await
        .map_err(|e| SinkError::table(&table, e))
}

/// Adds the start notes of the batch's partitions to its commit metadata.
fn with_starts(lane: &Lane, batch: SinkBatch) -> SinkBatch {
    let notes: serde_json::Map<String, serde_json::Value> = batch
        .offsets
        .iter()
        .filter_map(|p| {
            let note = lane.starts.get(&p.partition)?;
            Some((p.partition.to_string(), serde_json::to_value(note).ok()?))
        })
        .collect();
    if notes.is_empty() {
        return batch;
    }
    batch.with_metadata(START_METADATA_KEY, serde_json::Value::Object(notes))
}

/// Metrics of a commit, and dead letters for rows the MERGE refused. Those
/// are caught before the commit by [`Target::rows`]; should the writer still
/// refuse one, its letter follows the commit (and is logged if it fails).
async fn after_commit(lane: &Lane, io: &Io, outcome: &CommitOutcome) {
    let table = lane.target.name();
    if !outcome.rejects.is_empty() {
        let messages = lane.buffer.messages();
        let letters: Vec<_> = outcome
            .rejects
            .iter()
            .filter_map(|r| {
                messages
                    .iter()
                    .find(|m| m.partition() == r.origin.partition && m.offset() == r.origin.offset)
            })
            .map(|m| {
                let text = format!("table {table}: the merge refused the row");
                (&m.message, dead_letters::letter_with_text(&m.message, text))
            })
            .collect();
        if let Err(error) = dead_letters::send(&io.producer, &io.dlq_topic, table, &letters).await {
            tracing::error!(table, %error, "Dead letters of rows refused by the merge were not delivered.");
        }
    }
    if !outcome.committed {
        return;
    }
    let mode = lane.target.writer.spec().mode.label();
    SINK_ROWS_WRITTEN
        .with_label_values(&[table, mode])
        .inc_by(outcome.rows_written);
    SINK_COMMIT_SECONDS
        .with_label_values(&[table])
        .observe(outcome.duration.as_secs_f64());
    SINK_COMMIT_CONFLICTS
        .with_label_values(&[table])
        .inc_by(u64::from(outcome.attempts.saturating_sub(1)) + u64::from(outcome.rebased));
    for (action, count) in [
        ("inserted", outcome.merge.inserted),
        ("updated", outcome.merge.updated),
        ("deleted", outcome.merge.deleted),
    ] {
        if count > 0 {
            SINK_MERGE_ROWS
                .with_label_values(&[table, action])
                .inc_by(count);
        }
    }
    SINK_TABLE_FILES
        .with_label_values(&[table])
        .set(lane.target.writer.live_files() as i64);
    observe_file_to_table(table, lane.buffer.messages());
}

/// Observes, once per file with records in the committed batch, the seconds
/// since the file arrived (the `medlake.received_at` header the parser puts
/// on each record). Messages without it (ledger entries, dead letters,
/// records of older parsers) are not counted.
fn observe_file_to_table(table: &str, messages: &[Buffered]) {
    let now = chrono::Utc::now();
    let histogram = SINK_FILE_TO_TABLE_SECONDS.with_label_values(&[table]);
    let mut seen: HashSet<&[u8]> = HashSet::new();
    for buffered in messages {
        let Some(received_at) = buffered.message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == RECEIVED_AT)
                .and_then(|h| h.value)
        }) else {
            continue;
        };
        if !seen.insert(received_at) {
            continue;
        }
        let parsed = std::str::from_utf8(received_at)
            .ok()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        if let Some(at) = parsed {
            let seconds = (now - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1e3;
            histogram.observe(seconds.max(0.0));
        }
    }
}

/// Commits the batch's offsets to Kafka, after Delta: for monitoring and
/// lag only, the table is what the sink resumes from.
fn commit_offsets(io: &Io, topic: &str, last_offsets: &std::collections::BTreeMap<i32, i64>) {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in last_offsets {
        if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1))
        {
            tracing::debug!(topic, partition, %error, "Offset not committed to Kafka.");
        }
    }
    if let Err(error) = io.consumer.commit(&tpl, CommitMode::Async) {
        tracing::debug!(topic, %error, "Offsets not committed to Kafka (the table holds them).");
    }
}

/// Sets the lag gauge of the batch's partitions from the brokers' high
/// watermarks, off the run loop.
fn update_lag(
    io: &Io,
    topic: &str,
    table: &str,
    last_offsets: &std::collections::BTreeMap<i32, i64>,
) {
    let consumer = Arc::clone(&io.consumer);
    let topic = topic.to_string();
    let table = table.to_string();
    let positions: Vec<(i32, i64)> = last_offsets.iter().map(|(p, o)| (*p, o + 1)).collect();
    tokio::task::spawn_blocking(move || {
        for (partition, next) in positions {
            match consumer.fetch_watermarks(&topic, partition, WATERMARK_TIMEOUT) {
                Ok((_, high)) => SINK_CONSUMER_LAG
                    .with_label_values(&[&table, &partition.to_string()])
                    .set((high - next).max(0)),
                Err(error) => {
                    tracing::debug!(topic, partition, %error, "Watermarks not available.");
                }
            }
        }
    });
}
