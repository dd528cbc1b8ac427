//! `medlake parser`: the Kafka service around the parsing pipeline.
//!
//! It consumes `<prefix>.raw.files` and runs ONE Kafka transaction per batch
//! of input messages (the ones already waiting, up to
//! `parser.max_files_per_transaction`), holding everything they produce:
//! their records on `<prefix>.records.<dataset>`, their dead letters on
//! `<prefix>.dlq`, one ledger entry per file on `<prefix>.files` and the
//! consumer offsets past them (`send_offsets_to_transaction`). Readers with
//! `isolation.level = read_committed` therefore see a file's output entirely
//! or not at all, and a crash at any point leaves the batch to be parsed
//! again from scratch: exactly once per raw message. A bad file rejects
//! only itself: its dead letter and ledger entry commit with the others.
//!
//! # Transactional id and fencing
//!
//! One transactional producer per process, `transactional.id` =
//! `parser.transactional_id` or `<group_id>-<hostname>`, and the consumer's
//! group metadata passed to every `send_offsets_to_transaction` (KIP-447,
//! brokers ≥ 2.5, librdkafka ≥ 1.6). Zombies are fenced by the consumer
//! group generation: a replica that lost a partition in a rebalance cannot
//! commit offsets for it any more, so no per-partition producers are needed
//! and partition assignment stays the group's business (any strategy). The
//! id only has to be unique per live replica; keeping it stable across a
//! restart (host name, StatefulSet pod name) lets the new process abort the
//! crashed one's open transaction at once in `init_transactions` instead of
//! after `transaction.timeout.ms`, during which read-committed readers of
//! its output partitions would stall.
//!
//! # Failures
//!
//! The run loop classifies every error once ([`medlake_common::Classify`]):
//! bad input becomes a dead letter and the loop goes on; a retryable failure
//! aborts the transaction, rewinds the consumer to the message (`seek`) and
//! retries it after an exponential backoff; a fatal one (producer fenced,
//! missing topic, bad configuration) stops the service with an error. On
//! shutdown the current transaction is finished (or aborted) before `run`
//! returns.
//!
//! # Duplicates
//!
//! See [`known`]: the ledger topic is read to its end at startup and tailed
//! afterwards; a file id already settled produces a `duplicate` ledger entry
//! and nothing else. A file whose first delivery was `rejected` is parsed
//! again, so a dead-lettered file can be replayed once its cause is fixed.
//! Because a file's messages are keyed by facility, a redelivery lands on the
//! same partition as the original; only right after that partition moved to
//! another replica can a redelivery arriving within the ledger tail's lag (well
//! under a second) be parsed twice.
//!
//! # Poison files
//!
//! A raw message the process keeps dying on (out of memory, an abort) is
//! dead-lettered as `poison_file` after `parser.max_parse_attempts` deaths
//! instead of being read again after every restart; the count lives in the
//! metadata of the group's committed offsets. See [`attempts`].
//!
//! # Big files
//!
//! Payloads arrive inline or as a raw-zone reference (`medlake.payload_ref`,
//! read with `object_store` from the lake). A rejected file larger than
//! `dead_letter_inline_max_bytes` is dead-lettered with an empty value and a
//! `medlake.payload_ref` to its raw-zone copy (written if missing).

pub mod attempts;
mod config;
mod emit;
mod error;
mod input;
pub mod known;
mod outbox;
pub mod replay;
mod txn;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use medlake_common::dataset;
use medlake_common::facilities::Registry;
use medlake_common::ingest::RawZone;
use medlake_common::{Context, Shutdown, kafka};
use rdkafka::consumer::Consumer;

pub use config::ParserConfig;
pub use error::ParserError;

/// Runs the parser until `shutdown` is cancelled or a fatal error occurs.
pub async fn run(
    ctx: Context,
    config: ParserConfig,
    shutdown: Shutdown,
) -> Result<(), ParserError> {
    let datasets = dataset::load_dir(&ctx.schemas_dir).map_err(|source| ParserError::Datasets {
        source: Box::new(source),
    })?;
    let registry =
        Registry::load(&ctx.facilities_file).map_err(|source| ParserError::Facilities {
            source: Box::new(source),
        })?;
    if config.max_parse_attempts < 2 {
        return Err(ParserError::Config {
            reason: format!(
                "parser.max_parse_attempts is {}; it must be at least 2 (the first death may \
                 have come from any file of its transaction)",
                config.max_parse_attempts
            ),
        });
    }
    let env = Arc::new(emit::parse_env(datasets, registry, &config)?);
    let raw = RawZone::open(&ctx.lake_uri).map_err(|source| ParserError::Lake {
        source: Box::new(source),
    })?;

    // The producer first: with a stable transactional id, `init_transactions`
    // aborts what a crashed predecessor left open, so the ledger below reads
    // to its end without waiting for that transaction to time out.
    let transactional_id = config.transactional_id();
    let mut producer_kafka = ctx.kafka.clone();
    producer_kafka
        .options
        .entry("queue.buffering.max.kbytes".into())
        .or_insert_with(|| (config.producer_queue_max_bytes / 1024).to_string());
    let producer = {
        let id = transactional_id.clone();
        tokio::task::spawn_blocking(move || kafka::transactional_producer(&producer_kafka, &id))
            .await
            .map_err(|e| ParserError::Task {
                reason: e.to_string(),
            })?
            .map_err(|source| ParserError::Producer {
                transactional_id: transactional_id.clone(),
                source,
            })?
    };
    tracing::info!(transactional_id, "Transactional producer ready.");

    let known = known::KnownFiles::new(config.dedupe_window_days);
    known::load_ledger(
        &ctx.kafka,
        &config.group_id,
        &ctx.topics.files(),
        known.clone(),
        Duration::from_millis(config.ledger_load_timeout_ms),
        shutdown.child_token(),
    )
    .await?;

    let topic = ctx.topics.raw_files();
    let consumer_error = |source| ParserError::Consumer {
        topic: topic.clone(),
        source,
    };
    let consumer = kafka::consumer(&ctx.kafka, &config.group_id).map_err(consumer_error)?;
    consumer.subscribe(&[&topic]).map_err(consumer_error)?;
    ctx.health.set_ready(true);
    tracing::info!(topic, group_id = config.group_id, "Parser consuming.");

    let worker = worker::Worker {
        topics: ctx.topics.clone(),
        config,
        consumer,
        producer,
        known,
        raw,
        env,
    };
    let result = worker.run(shutdown.clone()).await;
    ctx.health.set_ready(false);
    shutdown.cancel();
    result
}
