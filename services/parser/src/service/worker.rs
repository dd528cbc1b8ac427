//! The run loop: the raw files already waiting (up to
//! `max_files_per_transaction` and `max_transaction_bytes`), one transaction;
//! retry with backoff on retryable failures, stop on fatal ones, finish the
//! current transaction before stopping on shutdown.
//!
//! Why batches: a transaction costs about 10 ms of broker round trips
//! whatever it carries, which caps one parser at ~90 files/s when each file
//! has its own. Files that arrive one at a time still go one per
//! transaction; a backlog goes in batches. The same file id twice in one
//! batch ends the batch before the second copy, so the second is recognised
//! as a duplicate once the first is committed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use medlake_common::backoff::Backoff;
use medlake_common::config::TopicsConfig;
use medlake_common::dead_letter::ErrorCode;
use medlake_common::events::{ConsumeFailed, Event, WorkFailed};
use medlake_common::ingest::RawZone;
use medlake_common::raw_file::header::FILE_ID;
use medlake_common::{Classify, ErrorKind, Shutdown, metrics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset};
use tokio::runtime::Handle;

use super::attempts::{self, Note, Partition};
use super::config::ParserConfig;
use super::emit::Failure;
use super::error::ParserError;
use super::input;
use super::known::KnownFiles;
use super::txn::{Committed, Planned, Txn};
use crate::ParseEnv;
use crate::pipeline::FileSummary;

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

/// Raw-file messages taken from the consumer, without their payloads, and
/// the payloads.
type Batch = Vec<(OwnedMessage, Bytes)>;

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
            let first = match received {
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
            let taken = self.waiting(first).await;
            let mut batches = split_at_repeats(taken).into_iter();
            while let Some(batch) = batches.next() {
                let origin = input::origin(&batch[0].0);
                // Not raced with shutdown: the transaction is finished or aborted.
                match self.guarded(batch.clone()).await {
                    Ok(None) => backoff.reset(),
                    Ok(Some(put_back)) => {
                        // A suspect went alone: the others come again.
                        backoff.reset();
                        let rest: Vec<_> = batches.by_ref().flatten().collect();
                        self.rewind(put_back.iter().chain(&rest));
                        break;
                    }
                    Err(error) => {
                        let fatal = error.kind() == ErrorKind::Fatal;
                        let wait = (!fatal).then(|| backoff.next_base());
                        WorkFailed {
                            component: COMPONENT,
                            work: "raw files",
                            origin: Some((&origin.topic, origin.partition, origin.offset)),
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
                        // This batch and the ones after it come again.
                        let rest: Vec<_> = batches.by_ref().flatten().collect();
                        self.rewind(batch.iter().chain(&rest));
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tokio::time::sleep(wait) => {}
                        }
                        break;
                    }
                }
            }
        }
    }

    /// `first` and the messages already waiting behind it, up to
    /// `max_files_per_transaction` files and `max_transaction_bytes`.
    async fn waiting(&self, first: (OwnedMessage, Bytes)) -> Batch {
        let mut bytes = first.1.len() as u64;
        let mut taken = vec![first];
        while taken.len() < self.config.max_files_per_transaction
            && bytes < self.config.max_transaction_bytes
        {
            // A zero timeout takes what the consumer holds, never waits.
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    let next = detach(&message);
                    bytes += next.1.len() as u64;
                    taken.push(next);
                }
                Ok(Err(error)) => {
                    ConsumeFailed {
                        component: COMPONENT,
                        pause: Duration::ZERO,
                        error: &error,
                    }
                    .emit();
                    break;
                }
                Err(_nothing_waiting) => break,
            }
        }
        taken
    }

    /// Moves the consumer back to the first of `messages` of each partition,
    /// so they come again. A partition revoked meanwhile is someone else's
    /// now: nothing to do.
    fn rewind<'a>(&self, messages: impl Iterator<Item = &'a (OwnedMessage, Bytes)>) {
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (message, _) in messages {
            let slot = first
                .entry((message.topic().to_string(), message.partition()))
                .or_insert(message.offset());
            *slot = (*slot).min(message.offset());
        }
        for ((topic, partition), offset) in first {
            if let Err(error) = self.consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::info!(%error, topic, partition, offset, "Rewind skipped.");
            }
        }
    }

    /// One batch through the poison-file guard (see [`attempts`]) and its
    /// transaction. Returns the messages put back when a suspect went alone.
    async fn guarded(&self, mut batch: Batch) -> Result<Option<Batch>, ParserError> {
        let timeout = Duration::from_millis(self.config.transaction_call_timeout_ms);
        let messages: Vec<&OwnedMessage> = batch.iter().map(|(m, _)| m).collect();
        let at = input::origin(messages[0]);
        let failed = |step| {
            let at = at.clone();
            move |source| ParserError::Attempts {
                step,
                topic: at.topic.clone(),
                partition: at.partition,
                source,
            }
        };
        let committed =
            tokio::task::block_in_place(|| attempts::fetch(&self.consumer, &messages, timeout))
                .map_err(failed("fetch"))?;
        let decision = attempts::decide(&messages, &committed, self.config.max_parse_attempts);
        let put_back = decision.alone.map(|index| {
            let suspect = batch.remove(index);
            std::mem::replace(&mut batch, vec![suspect])
        });
        let set_aside = decision.poison.map(|deaths| {
            let message = &batch[0].0;
            tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                deaths,
                "The parser died on this raw message too often: set aside as poison_file."
            );
            Failure {
                code: ErrorCode::PoisonFile,
                message: format!(
                    "the parser died {deaths} times while this file was being parsed \
                     (parser.max_parse_attempts = {}); set aside unparsed",
                    self.config.max_parse_attempts
                ),
            }
        });
        if decision.alone.is_some() && set_aside.is_none() {
            let message = &batch[0].0;
            tracing::info!(
                partition = message.partition(),
                offset = message.offset(),
                "The parser died during a transaction that held this raw message: parsing it alone."
            );
        }
        let notes = decision
            .before
            .iter()
            .map(|(partition, (offset, note))| (partition, *offset, note.to_string()));
        tokio::task::block_in_place(|| attempts::commit(&self.consumer, notes))
            .map_err(failed("commit"))?;

        let result = self.handle(batch, set_aside, decision.after).await;
        if result.is_err() && !decision.before.is_empty() {
            // The process lives: this was not a death. Put the notes back.
            let previous = decision
                .previous
                .iter()
                .map(|(partition, (offset, metadata))| (partition, *offset, metadata.clone()));
            if let Err(error) =
                tokio::task::block_in_place(|| attempts::commit(&self.consumer, previous))
            {
                tracing::warn!(%error, "Putting back the parse attempts failed; one death too many is counted.");
            }
        }
        result.map(|()| put_back.filter(|rest| !rest.is_empty()))
    }

    /// One batch, one transaction.
    async fn handle(
        &self,
        batch: Batch,
        set_aside: Option<Failure>,
        notes: BTreeMap<Partition, Note>,
    ) -> Result<(), ParserError> {
        let started = Instant::now();
        let mut planned = Vec::with_capacity(batch.len());
        for (message, inline) in batch {
            let plan = input::plan(&message, inline, &self.known, &self.raw).await?;
            planned.push(Planned {
                message,
                plan,
                set_aside: set_aside.clone(),
            });
        }
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| ParserError::Task {
                reason: "the consumer has no group metadata".into(),
            })?;
        let txn = Txn {
            producer: self.producer.clone(),
            topics: self.topics.clone(),
            timeout: Duration::from_millis(self.config.transaction_call_timeout_ms),
            inline_max_bytes: self.config.dead_letter_inline_max_bytes,
            max_record_bytes: self.config.max_record_bytes,
            raw: self.raw.clone(),
            runtime: Handle::current(),
            env: self.env.clone(),
            notes,
        };
        let Committed { files, commit } =
            tokio::task::spawn_blocking(move || txn.run(&planned, &group))
                .await
                .map_err(|e| ParserError::Task {
                    reason: e.to_string(),
                })??;

        metrics::PARSER_TRANSACTIONS
            .with_label_values(&["committed"])
            .inc();
        let elapsed = started.elapsed();
        for settled in &files {
            let entry = &settled.entry;
            if entry.status.is_settled() {
                self.known.insert(&entry.file_id);
            }
            count_output(&settled.summary);
            metrics::PARSER_FILES
                .with_label_values(&[entry.status.as_str()])
                .inc();
            metrics::PARSER_BYTES_IN.inc_by(entry.bytes);
            metrics::PARSER_FILE_SECONDS.observe(elapsed.as_secs_f64() / files.len() as f64);
            tracing::info!(
                file_id = entry.file_id,
                facility_id = entry.facility_id,
                status = entry.status.as_str(),
                entries = entry.entries,
                records = entry.records_total(),
                rejects = entry.rejects_total(),
                partition = settled.origin.partition,
                offset = settled.origin.offset,
                batch_files = files.len(),
                elapsed_ms = elapsed.as_millis() as u64,
                commit_ms = commit.as_millis() as u64,
                "File done."
            );
        }
        Ok(())
    }
}

/// Cuts `taken` into batches in which no file id appears twice: a repeat
/// starts the next batch, so it sees the first copy's ledger entry.
fn split_at_repeats(taken: Batch) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    let mut ids = HashSet::new();
    for item in taken {
        let id = file_id(&item.0);
        let repeat = id.as_ref().is_some_and(|id| ids.contains(id));
        if repeat || batches.is_empty() {
            ids.clear();
            batches.push(Vec::new());
        }
        if let Some(id) = id {
            ids.insert(id);
        }
        batches.last_mut().expect("a batch").push(item);
    }
    batches
}

/// The `medlake.file_id` header of a raw-file message, if it has one.
fn file_id(message: &OwnedMessage) -> Option<Vec<u8>> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == FILE_ID)
        .and_then(|h| h.value.map(<[u8]>::to_vec))
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
