//! The run loop: one input message, one transaction; retry with backoff on
//! retryable failures, stop on fatal ones, finish the current transaction
//! before stopping on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use medlake_common::backoff::Backoff;
use medlake_common::config::TopicsConfig;
use medlake_common::dead_letter::{DeadLetter, ErrorCode, Origin};
use medlake_common::events::{ConsumeFailed, Event, WorkFailed};
use medlake_common::ingest::RawZone;
use medlake_common::ledger::{FileStatus, LedgerEntry, timestamp};
use medlake_common::raw_file::header::PAYLOAD_REF;
use medlake_common::{Classify, ErrorKind, Shutdown, metrics};
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::config::ParserConfig;
use super::emit;
use super::error::ParserError;
use super::input::{self, Plan};
use super::known::KnownFiles;
use super::outbox::Outbox;
use crate::ParseEnv;
use crate::pipeline::{FileSummary, NO_DATASET};

/// The parser's consume-transform-produce loop.
pub struct Worker {
    pub topics: TopicsConfig,
    pub config: ParserConfig,
    pub consumer: StreamConsumer,
    pub producer: FutureProducer,
    pub known: KnownFiles,
    pub raw: RawZone,
    pub env: Arc<ParseEnv>,
}

/// The `component` label of the parser's events.
const COMPONENT: &str = "parser";

/// The longest pause after a consumer error. Such errors (broker away,
/// coordinator moving) are reports of librdkafka, which reconnects on its
/// own; several of them queue up while the broker is away, and a long pause
/// for each would leave the parser idle for minutes after the broker is back.
const MAX_CONSUME_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How often [`Txn::await_deliveries`] looks at the producer's queue.
const DELIVERY_POLL: Duration = Duration::from_millis(1);

/// What one committed transaction did, for logs and metrics.
struct Committed {
    entry: LedgerEntry,
    /// Time spent in `send_offsets_to_transaction` and `commit_transaction`.
    commit: Duration,
    /// What the file amounted to (the ledger entry's counts come from it).
    summary: FileSummary,
}

impl Worker {
    /// Consumes until `shutdown` or a fatal error.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), ParserError> {
        let initial = Duration::from_millis(self.config.retry_backoff_initial_ms.max(1));
        let mut backoff = Backoff::new(
            initial,
            Duration::from_millis(self.config.retry_backoff_max_ms),
        );
        let mut consume_backoff = Backoff::new(initial, MAX_CONSUME_ERROR_PAUSE);
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                received = self.consumer.recv() => received,
            };
            let (message, inline) = match received {
                Ok(message) => {
                    consume_backoff.reset();
                    detach(&message)
                }
                Err(error) => {
                    let pause = consume_backoff.next_base();
                    ConsumeFailed {
                        component: COMPONENT,
                        pause,
                        error: &error,
                    }
                    .emit();
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            let (topic, partition, offset) = (
                message.topic().to_string(),
                message.partition(),
                message.offset(),
            );
            // Not raced with shutdown: the transaction is finished or aborted.
            match self.handle(message, inline).await {
                Ok(()) => backoff.reset(),
                Err(error) => {
                    let fatal = error.kind() == ErrorKind::Fatal;
                    let wait = (!fatal).then(|| backoff.next_base());
                    WorkFailed {
                        component: COMPONENT,
                        work: "raw file",
                        origin: Some((&topic, partition, offset)),
                        dataset: None,
                        file: None,
                        attempt: backoff.failures(),
                        retry_in: wait,
                        error: &error,
                    }
                    .emit();
                    let Some(wait) = wait else {
                        return Err(error);
                    };
                    self.rewind(&topic, partition, offset);
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Moves the consumer back to `offset` so the message comes again. A
    /// partition revoked meanwhile is someone else's now: nothing to do.
    fn rewind(&self, topic: &str, partition: i32, offset: i64) {
        if let Err(error) = self.consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(10),
        ) {
            tracing::info!(%error, topic, partition, offset, "Rewind skipped.");
        }
    }

    /// One message, one transaction.
    async fn handle(&self, message: OwnedMessage, inline: Bytes) -> Result<(), ParserError> {
        let started = Instant::now();
        let origin = input::origin(&message);
        let plan = input::plan(&message, inline, &self.known, &self.raw).await?;
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| ParserError::Task {
                reason: "the consumer has no group metadata".into(),
            })?;
        let txn = Txn {
            producer: self.producer.clone(),
            topics: self.topics.clone(),
            origin: origin.clone(),
            timeout: Duration::from_millis(self.config.transaction_call_timeout_ms),
            inline_max_bytes: self.config.dead_letter_inline_max_bytes,
            max_record_bytes: self.config.max_record_bytes,
            raw: self.raw.clone(),
            runtime: Handle::current(),
            env: self.env.clone(),
        };
        let done = tokio::task::spawn_blocking(move || {
            let result = txn.run(plan, &message, &group);
            if let Err(error) = &result {
                txn.abort(error);
            }
            result
        })
        .await
        .map_err(|e| ParserError::Task {
            reason: e.to_string(),
        })??;

        let Committed {
            entry,
            commit,
            summary,
        } = done;
        if entry.status.is_settled() {
            self.known.insert(&entry.file_id);
        }
        count_output(&summary);
        metrics::PARSER_FILES
            .with_label_values(&[entry.status.as_str()])
            .inc();
        metrics::PARSER_BYTES_IN.inc_by(entry.bytes);
        metrics::PARSER_TRANSACTIONS
            .with_label_values(&["committed"])
            .inc();
        metrics::PARSER_FILE_SECONDS.observe(started.elapsed().as_secs_f64());
        tracing::info!(
            file_id = entry.file_id,
            facility_id = entry.facility_id,
            status = entry.status.as_str(),
            entries = entry.entries,
            records = entry.records_total(),
            rejects = entry.rejects_total(),
            partition = origin.partition,
            offset = origin.offset,
            elapsed_ms = started.elapsed().as_millis() as u64,
            commit_ms = commit.as_millis() as u64,
            "File done."
        );
        Ok(())
    }
}

/// The message without its payload, and the payload (copied once).
fn detach(message: &BorrowedMessage<'_>) -> (OwnedMessage, Bytes) {
    let inline = Bytes::copy_from_slice(message.payload().unwrap_or_default());
    let owned = OwnedMessage::new(
        None,
        message.key().map(<[u8]>::to_vec),
        message.topic().to_string(),
        message.timestamp(),
        message.partition(),
        message.offset(),
        message.headers().map(|h| h.detach()),
    );
    (owned, inline)
}

/// Counts a committed file's entries, records and dead letters in the metrics.
fn count_output(summary: &FileSummary) {
    for (dataset, n) in &summary.entries_by_dataset {
        metrics::PARSER_ENTRIES
            .with_label_values(&[dataset.as_str()])
            .inc_by(*n);
    }
    for (dataset, n) in &summary.records {
        metrics::PARSER_RECORDS
            .with_label_values(&[dataset.as_str()])
            .inc_by(*n);
    }
    for (dataset, codes) in &summary.rejects_by_dataset {
        for (code, n) in codes {
            metrics::PARSER_REJECTS
                .with_label_values(&[dataset.as_str(), code.stage().as_str(), code.as_str()])
                .inc_by(*n);
        }
    }
}

/// One transaction, run on a blocking thread (the parse is CPU work and the
/// transaction calls block).
struct Txn {
    producer: FutureProducer,
    topics: TopicsConfig,
    origin: Origin,
    timeout: Duration,
    inline_max_bytes: usize,
    max_record_bytes: usize,
    raw: RawZone,
    runtime: Handle,
    env: Arc<ParseEnv>,
}

impl Txn {
    fn error(&self, step: &'static str) -> impl Fn(KafkaError) -> ParserError + '_ {
        move |source| ParserError::Transaction {
            step,
            at: Box::new(self.origin.clone()),
            source,
        }
    }

    fn begin(&self) -> Result<Outbox, ParserError> {
        self.producer
            .begin_transaction()
            .map_err(self.error("begin"))?;
        Ok(Outbox::new(self.producer.clone(), self.max_record_bytes))
    }

    fn run(
        &self,
        plan: Plan,
        message: &OwnedMessage,
        group: &ConsumerGroupMetadata,
    ) -> Result<Committed, ParserError> {
        let mut outbox = self.begin()?;
        let mut summary = FileSummary::default();
        let mut entry = match plan {
            Plan::Duplicate { headers, bytes } => {
                let mut entry = input::ledger_entry(&headers, bytes);
                entry.status = FileStatus::Duplicate;
                entry
            }
            Plan::Reject {
                entry,
                dead_letter,
                bytes,
            } => {
                summary = FileSummary::rejected_file(dead_letter.code);
                self.dead_letter_file(&mut outbox, &entry, *dead_letter, bytes)?;
                *entry
            }
            Plan::Parse { headers, bytes } => {
                let entry = input::ledger_entry(&headers, bytes.len() as u64);
                let template = DeadLetter::new(ErrorCode::CorruptArchive, "", self.origin.clone())
                    .with_input_headers(message.headers());
                let parsed = emit::parse(
                    &self.env,
                    &self.topics,
                    &headers,
                    &bytes,
                    &template,
                    &mut outbox,
                );
                match parsed {
                    Ok(parsed) => summary = parsed,
                    Err(failure) => {
                        if !outbox.is_empty() {
                            // Records of a file rejected as a whole never leave.
                            self.producer
                                .abort_transaction(self.timeout)
                                .map_err(self.error("abort"))?;
                            metrics::PARSER_TRANSACTIONS
                                .with_label_values(&["aborted"])
                                .inc();
                            outbox = self.begin()?;
                        }
                        summary = FileSummary::rejected_file(failure.code);
                        let mut dead_letter = template;
                        dead_letter.code = failure.code;
                        dead_letter.stage = failure.code.stage();
                        dead_letter.message = failure.message;
                        self.dead_letter_file(&mut outbox, &entry, dead_letter, bytes)?;
                    }
                }
                entry
            }
        };
        entry.entries = summary.entries;
        entry.records = summary.records.clone();
        entry.rejects = summary.rejects_by_code();
        if entry.status != FileStatus::Duplicate {
            entry.settle_status();
        }
        entry.processed_at = timestamp(chrono::Utc::now());
        outbox.ledger(&self.topics.files(), &entry);
        if let Some(error) = outbox.take_error() {
            return Err(self.error("produce")(error));
        }

        let commit_started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(
                &self.origin.topic,
                self.origin.partition,
                Offset::Offset(self.origin.offset + 1),
            )
            .map_err(self.error("offsets"))?;
        self.producer
            .send_offsets_to_transaction(&offsets, group, self.timeout)
            .map_err(self.error("send_offsets"))?;
        self.await_deliveries();
        self.producer
            .commit_transaction(self.timeout)
            .map_err(self.error("commit"))?;
        Ok(Committed {
            entry,
            commit: commit_started.elapsed(),
            summary,
        })
    }

    /// Waits, polling every millisecond, until the broker acknowledged every
    /// message of the transaction. rdkafka's `commit_transaction` flushes
    /// first and, with anything still in flight, waits in steps of 100 ms,
    /// which would put a 100 ms floor under every file. Gives up quietly at
    /// the transaction timeout: the commit's own flush then takes over.
    fn await_deliveries(&self) {
        let deadline = Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(DELIVERY_POLL);
        }
    }

    /// A whole file to the DLQ: its bytes, or a raw-zone reference when it is
    /// too big to carry.
    fn dead_letter_file(
        &self,
        outbox: &mut Outbox,
        entry: &LedgerEntry,
        mut dead_letter: DeadLetter,
        bytes: Bytes,
    ) -> Result<(), ParserError> {
        let mut payload = bytes;
        if payload.len() > self.inline_max_bytes {
            let path = match dead_letter.input_header(PAYLOAD_REF) {
                Some(path) => path.to_string(),
                None => {
                    let received = chrono::DateTime::parse_from_rfc3339(&entry.received_at)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .unwrap_or_else(|_| chrono::Utc::now());
                    let facility = if entry.facility_id.is_empty() {
                        NO_DATASET
                    } else {
                        entry.facility_id.as_str()
                    };
                    let path = RawZone::raw_path(facility, received, &entry.file_id);
                    self.runtime
                        .block_on(self.raw.put(&path, payload.clone()))
                        .map_err(|source| ParserError::RawZone {
                            path: path.clone(),
                            source: Box::new(source),
                        })?;
                    path
                }
            };
            dead_letter.set_input_header(PAYLOAD_REF, path);
            payload = Bytes::new();
        }
        tracing::warn!(
            file_id = entry.file_id,
            facility_id = entry.facility_id,
            stage = dead_letter.stage.as_str(),
            error_code = dead_letter.code.as_str(),
            message = dead_letter.message,
            "File rejected."
        );
        outbox.dead_letter(&self.topics.dlq(), &entry.file_id, &dead_letter, &payload);
        Ok(())
    }

    /// Aborts after a failure; an abort that fails leaves the producer to be
    /// fenced or reinitialised by the next `begin`.
    fn abort(&self, error: &ParserError) {
        metrics::PARSER_TRANSACTIONS
            .with_label_values(&["aborted"])
            .inc();
        if let Err(abort_error) = self.producer.abort_transaction(self.timeout) {
            tracing::warn!(%error, %abort_error, "Aborting the transaction failed.");
        }
    }
}
