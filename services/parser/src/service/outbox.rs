//! What one input message produces inside its transaction: records, dead
//! letters and the ledger entry. What they amount to is counted by the
//! pipeline ([`crate::FileSummary`]), not here.
//!
//! Messages are handed to the producer as they come (the parse streams, no
//! file-sized buffer); when the producer's queue is full the parse waits.
//! Delivery results are not awaited one by one: `commit_transaction` flushes
//! and fails if any message failed, and the whole transaction is retried.

use std::time::Duration;

use medlake_common::dead_letter::DeadLetter;
use medlake_common::ledger::LedgerEntry;
use medlake_common::raw_file::header::RECEIVED_AT;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// How long to wait for room in a full producer queue before trying again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// The output of one input message, in its transaction.
pub struct Outbox {
    producer: FutureProducer,
    /// Records larger than this are refused as too large.
    max_record_bytes: usize,
    /// First error enqueuing a message: the transaction must be aborted.
    failed: Option<KafkaError>,
    /// Headers every record carries (the file's `medlake.received_at`, for
    /// the sink's file-to-table latency).
    record_headers: Option<OwnedHeaders>,
    /// Messages enqueued.
    produced: u64,
}

impl Outbox {
    pub fn new(producer: FutureProducer, max_record_bytes: usize) -> Self {
        Self {
            producer,
            max_record_bytes,
            failed: None,
            record_headers: None,
            produced: 0,
        }
    }

    /// Stamps every record that follows with the file's arrival time.
    pub fn stamp_records(&mut self, received_at: &str) {
        self.record_headers = Some(OwnedHeaders::new().insert(Header {
            key: RECEIVED_AT,
            value: Some(received_at),
        }));
    }

    /// Enqueues one message, waiting while the producer's queue is full. A
    /// message too large for the broker is refused (`Err`) without failing
    /// the transaction; any other error fails it.
    fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        if self.failed.is_some() {
            return Ok(());
        }
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send_result(record) {
                // Delivery is confirmed by the transaction's commit.
                Ok(_delivery) => {
                    self.produced += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(QUEUE_FULL_WAIT);
                }
                Err((
                    error @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                    _,
                )) => return Err(error),
                Err((error, _)) => {
                    self.failed = Some(error);
                    return Ok(());
                }
            }
        }
    }

    /// One record to its records topic; `Err` when it is too large to send
    /// (the caller dead-letters it instead).
    pub fn record(&mut self, topic: &str, key: &[u8], json: &[u8]) -> Result<(), KafkaError> {
        if json.len() > self.max_record_bytes {
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageSizeTooLarge,
            ));
        }
        let headers = self.record_headers.clone();
        self.send(topic, key, json, headers)
    }

    /// One dead letter, keyed by the file id.
    pub fn dead_letter(
        &mut self,
        topic: &str,
        file_id: &str,
        dead_letter: &DeadLetter,
        payload: &[u8],
    ) {
        if let Err(error) = self.send(
            topic,
            file_id.as_bytes(),
            payload,
            Some(dead_letter.headers()),
        ) {
            // Dead letters are capped below the broker's limit; if one still
            // does not fit, the transaction must not commit without it.
            self.failed = Some(error);
        }
    }

    /// The ledger entry, keyed by the file id.
    pub fn ledger(&mut self, topic: &str, entry: &LedgerEntry) {
        if let Err(error) = self.send(topic, entry.file_id.as_bytes(), &entry.to_json(), None) {
            self.failed = Some(error);
        }
    }

    /// The first enqueue error, if any: the transaction must not commit.
    pub fn take_error(&mut self) -> Option<KafkaError> {
        self.failed.take()
    }

    /// Messages enqueued so far in the transaction.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}
