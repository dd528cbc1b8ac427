//! One Kafka transaction over a batch of raw files: every file's records,
//! dead letters and ledger entry, and the offsets of all of them, commit
//! together or not at all. A file that is bad rejects only itself: its dead
//! letter and ledger entry go in the same transaction as the others' rows.
//!
//! Runs on a blocking thread: the parse is CPU work and the transaction
//! calls block.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use medlake_common::config::TopicsConfig;
use medlake_common::dead_letter::{DeadLetter, ErrorCode, Origin};
use medlake_common::ingest::RawZone;
use medlake_common::ledger::{FileStatus, LedgerEntry, timestamp};
use medlake_common::metrics;
use medlake_common::raw_file::header::PAYLOAD_REF;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::attempts::{Note, Partition};
use super::emit::{self, Failure};
use super::error::ParserError;
use super::input::{self, Plan};
use super::outbox::Outbox;
use crate::ParseEnv;
use crate::pipeline::{FileSummary, NO_DATASET};

/// How often [`Txn::await_deliveries`] looks at the producer's queue.
const DELIVERY_POLL: Duration = Duration::from_millis(1);

/// One input message of a batch and what to do with it.
pub struct Planned {
    pub message: OwnedMessage,
    pub plan: Plan,
    /// The file is rejected whole without being parsed (a poison file).
    pub set_aside: Option<Failure>,
}

/// What one file of a committed transaction amounted to.
pub struct Settled {
    pub entry: LedgerEntry,
    pub summary: FileSummary,
    pub origin: Origin,
}

/// What one committed transaction did, for logs and metrics.
pub struct Committed {
    pub files: Vec<Settled>,
    /// Time spent in `send_offsets_to_transaction` and `commit_transaction`.
    pub commit: Duration,
}

/// A file that failed after it had sent records into the transaction: the
/// transaction is aborted and run again with this file rejected up front.
struct Poisoned {
    index: usize,
    failure: Failure,
}

/// What one transaction needs besides its batch.
pub struct Txn {
    pub producer: FutureProducer,
    pub topics: TopicsConfig,
    pub timeout: Duration,
    pub inline_max_bytes: usize,
    pub max_record_bytes: usize,
    pub raw: RawZone,
    pub runtime: Handle,
    pub env: Arc<ParseEnv>,
    /// Metadata committed with each partition's offset (the parse attempts
    /// of the suspects still ahead, see [`super::attempts`]).
    pub notes: BTreeMap<Partition, Note>,
}

impl Txn {
    fn error(&self, step: &'static str, at: &Origin) -> impl Fn(KafkaError) -> ParserError {
        let at = at.clone();
        move |source| ParserError::Transaction {
            step,
            at: Box::new(at.clone()),
            source,
        }
    }

    fn begin(&self, at: &Origin) -> Result<Outbox, ParserError> {
        self.producer
            .begin_transaction()
            .map_err(self.error("begin", at))?;
        Ok(Outbox::new(self.producer.clone(), self.max_record_bytes))
    }

    /// Runs `batch` in one transaction and commits it with the offsets past
    /// every message of the batch. On an error the transaction is aborted.
    pub fn run(
        &self,
        batch: &[Planned],
        group: &ConsumerGroupMetadata,
    ) -> Result<Committed, ParserError> {
        let at = input::origin(&batch[0].message);
        let mut rejected_up_front: HashMap<usize, Failure> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, planned)| Some((index, planned.set_aside.clone()?)))
            .collect();
        loop {
            match self.attempt(batch, group, &rejected_up_front) {
                Ok(Ok(committed)) => return Ok(committed),
                Ok(Err(Poisoned { index, failure })) => {
                    // Records of a file rejected as a whole never leave: the
                    // others' output is produced again without them.
                    self.producer
                        .abort_transaction(self.timeout)
                        .map_err(self.error("abort", &at))?;
                    metrics::PARSER_TRANSACTIONS
                        .with_label_values(&["aborted"])
                        .inc();
                    rejected_up_front.insert(index, failure);
                }
                Err(error) => {
                    self.abort(&error);
                    return Err(error);
                }
            }
        }
    }

    /// One try at the transaction; `Ok(Err(_))` when a file must be
    /// rejected up front and the transaction run again.
    fn attempt(
        &self,
        batch: &[Planned],
        group: &ConsumerGroupMetadata,
        rejected_up_front: &HashMap<usize, Failure>,
    ) -> Result<Result<Committed, Poisoned>, ParserError> {
        let at = input::origin(&batch[0].message);
        let mut outbox = self.begin(&at)?;
        let mut files = Vec::with_capacity(batch.len());
        for (index, planned) in batch.iter().enumerate() {
            let forced = rejected_up_front.get(&index);
            match self.file(&mut outbox, planned, forced)? {
                Ok(settled) => files.push(settled),
                Err(failure) => return Ok(Err(Poisoned { index, failure })),
            }
        }
        if let Some(error) = outbox.take_error() {
            return Err(self.error("produce", &at)(error));
        }

        let commit_started = Instant::now();
        let offsets = next_offsets(batch, &self.notes).map_err(self.error("offsets", &at))?;
        self.producer
            .send_offsets_to_transaction(&offsets, group, self.timeout)
            .map_err(self.error("send_offsets", &at))?;
        self.await_deliveries();
        self.producer
            .commit_transaction(self.timeout)
            .map_err(self.error("commit", &at))?;
        Ok(Ok(Committed {
            files,
            commit: commit_started.elapsed(),
        }))
    }

    /// One file's output into the transaction. `Ok(Err(_))`: the file failed
    /// after it sent records, which the transaction must not keep.
    fn file(
        &self,
        outbox: &mut Outbox,
        planned: &Planned,
        forced: Option<&Failure>,
    ) -> Result<Result<Settled, Failure>, ParserError> {
        let origin = input::origin(&planned.message);
        let mut summary = FileSummary::default();
        let mut entry = match &planned.plan {
            Plan::Duplicate { headers, bytes } => {
                let mut entry = input::ledger_entry(headers, *bytes);
                entry.status = FileStatus::Duplicate;
                entry
            }
            Plan::Reject {
                entry,
                dead_letter,
                bytes,
            } => {
                summary = FileSummary::rejected_file(dead_letter.code);
                self.dead_letter_file(outbox, entry, (**dead_letter).clone(), bytes.clone())?;
                (**entry).clone()
            }
            Plan::Parse { headers, bytes } => {
                let entry = input::ledger_entry(headers, bytes.len() as u64);
                let template = DeadLetter::new(ErrorCode::CorruptArchive, "", origin.clone())
                    .with_input_headers(planned.message.headers());
                let parsed = match forced {
                    Some(failure) => Err(failure.clone()),
                    None => {
                        let before = outbox.produced();
                        match emit::parse(
                            &self.env,
                            &self.topics,
                            headers,
                            bytes,
                            &template,
                            outbox,
                        ) {
                            Ok(summary) => Ok(summary),
                            Err(failure) if outbox.produced() > before => return Ok(Err(failure)),
                            Err(failure) => Err(failure),
                        }
                    }
                };
                match parsed {
                    Ok(parsed) => summary = parsed,
                    Err(failure) => {
                        summary = FileSummary::rejected_file(failure.code);
                        let mut dead_letter = template;
                        dead_letter.code = failure.code;
                        dead_letter.stage = failure.code.stage();
                        dead_letter.message = failure.message;
                        self.dead_letter_file(outbox, &entry, dead_letter, bytes.clone())?;
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
        Ok(Ok(Settled {
            entry,
            summary,
            origin,
        }))
    }

    /// Waits, polling every millisecond, until the broker acknowledged every
    /// message of the transaction. rdkafka's `commit_transaction` flushes
    /// first and, with anything still in flight, waits in steps of 100 ms,
    /// which would put a 100 ms floor under every transaction. Gives up
    /// quietly at the transaction timeout: the commit's own flush then takes
    /// over.
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

/// The consumer offsets the transaction commits: past the last message of
/// each partition in the batch, with the partition's note if it has one.
fn next_offsets(
    batch: &[Planned],
    notes: &BTreeMap<Partition, Note>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for planned in batch {
        let m = &planned.message;
        let slot = last.entry((m.topic(), m.partition())).or_insert(m.offset());
        *slot = (*slot).max(m.offset());
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in last {
        let mut element = offsets.add_partition(topic, partition);
        element.set_offset(Offset::Offset(offset + 1))?;
        if let Some(note) = notes.get(&(topic.to_string(), partition)) {
            element.set_metadata(note.to_string());
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(partition: i32, offset: i64) -> Planned {
        Planned {
            message: super::super::attempts::bare_message(partition, offset),
            plan: Plan::Duplicate {
                headers: medlake_common::raw_file::RawHeaders {
                    file_id: String::new(),
                    facility_id: String::new(),
                    source: medlake_common::raw_file::Source::Http,
                    file_name: String::new(),
                    received_at: chrono::Utc::now(),
                    payload_ref: None,
                },
                bytes: 0,
            },
            set_aside: None,
        }
    }

    #[test]
    fn a_batch_commits_past_its_last_message_of_each_partition() {
        let batch = [planned(0, 5), planned(1, 2), planned(0, 7), planned(0, 6)];
        let note = Note {
            count: 1,
            through: 4,
        };
        let notes = BTreeMap::from([(("raw".to_string(), 1), note)]);
        let offsets = next_offsets(&batch, &notes).unwrap();
        let got: Vec<_> = offsets
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset(), e.metadata().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (0, Offset::Offset(8), String::new()),
                (1, Offset::Offset(3), note.to_string())
            ]
        );
    }
}
