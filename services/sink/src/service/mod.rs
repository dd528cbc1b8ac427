//! `medlake sink`: the Kafka side of the sink. It consumes the records
//! topics of the configured data sets (and the dead-letter and ledger
//! topics), batches each topic by rows, bytes and time, decodes the JSON with
//! the data set's schema and hands the batch to the table's
//! [`TableWriter`](crate::delta::TableWriter).
//!
//! # Exactly once
//!
//! The Delta table is the only source of truth for where to resume: each
//! commit carries the last offset of every partition of its batch; a
//! partition the table holds no offset for starts at the topic's earliest
//! retained offset, never at the consumer group's position (the `start`
//! module says why, and what happens when Kafka no longer holds the offsets
//! a table needs). When a
//! partition is assigned (start or rebalance), the first message that
//! arrives from it is checked against the table and the partition is sought
//! to the table's offset + 1 when they differ (the `partitions` module says
//! why the check waits for a message). Kafka offsets are committed only after the
//! Delta commit, for monitoring and lag; the writer also drops rows the table
//! already holds, so a rebalance racing a commit writes nothing twice. A
//! revoked partition's messages leave the open batch: the new owner reads
//! them again from the table's offsets.
//!
//! # Bad records
//!
//! A record the table cannot take (not JSON, a value of the wrong type, a
//! missing required column, an unknown key, a bad `_op`) becomes a dead
//! letter of stage `write` that is acknowledged by the broker *before* the
//! commit that skips it; the rest of the batch is written. See the
//! `dead_letters` module.
//!
//! # Failures
//!
//! Errors are classified once ([`SinkError`] implements
//! [`Classify`](medlake_common::Classify)): retryable ones (storage or broker
//! unavailable, commit conflicts beyond the writer's own retries) are retried
//! with back-off while the batch is kept; fatal ones (bad configuration, an
//! incompatible definition change) stop the service.

mod batch;
mod config;
mod dead_letters;
mod error;
mod flush;
mod partitions;
mod start;
mod tables;
mod worker;

pub use config::SinkConfig;
pub use error::SinkError;
pub use start::UntrackedStart;

use medlake_common::{Context, Shutdown};

/// The whole sink service: runs until `shutdown`, then writes the open
/// batches and returns; returns early on a fatal error.
pub async fn run(ctx: Context, config: SinkConfig, shutdown: Shutdown) -> Result<(), SinkError> {
    let worker = worker::Worker::start(&ctx, config).await?;
    worker.run(shutdown).await
}
