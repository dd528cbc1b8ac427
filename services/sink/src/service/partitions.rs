//! Where each assigned partition stands, and the rebalance events that
//! change it.
//!
//! The Delta table, not Kafka, knows where to resume: it holds the last
//! offset written per partition (`txn` actions). When partitions are
//! assigned, the run loop asks the table and seeks each partition to the
//! table's offset + 1. librdkafka refuses a seek until the partition's
//! fetcher has started, so a refused seek stays pending and is tried again
//! on every turn of the loop (and at once when a message of the partition
//! arrives); until it succeeds every message of the partition is dropped,
//! because Kafka's committed offset may be *ahead* of the table (offsets
//! committed by hand, a table restored) as well as behind it. After the
//! seek, messages below the target are stale and dropped.
//!
//! Where a partition starts is decided by the `start` module (the table's
//! offset, or the earliest retained one for a partition the table never
//! saw); a partition whose needed offsets are gone from Kafka is refused:
//! every message of it is dropped, and nothing is written for it.
//!
//! Offsets may jump (transaction markers of the parser's transactional
//! producer, compaction of the ledger topic), so only going *backwards* is
//! treated as a duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::start::Start;

/// A topic and one of its partitions.
pub(crate) type TopicPartition = (String, i32);

/// A change of assignment seen by the consumer context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RebalanceEvent {
    /// These partitions are now ours.
    Assigned(Vec<TopicPartition>),
    /// These partitions are no longer ours.
    Revoked(Vec<TopicPartition>),
}

/// The consumer context: records rebalances for the run loop.
///
/// Callbacks run inside the consumer's `recv`, on the run loop's own task,
/// so the loop sees every event before the first message that follows it.
#[derive(Clone, Default)]
pub(crate) struct SinkContext {
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
}

impl SinkContext {
    /// Takes the events recorded since the last call.
    pub(crate) fn drain(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, event: RebalanceEvent) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }
}

fn elements(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "Partitions revoked.");
            self.push(RebalanceEvent::Revoked(elements(tpl)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Partitions assigned.");
                self.push(RebalanceEvent::Assigned(elements(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance failed."),
        }
    }
}

/// Where one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The table says resume at `target`; the seek has not succeeded yet.
    SeekPending { target: i64 },
    /// Sought to `target`; older messages are stale.
    Sought { target: i64 },
    /// Kafka no longer holds what the table needs: nothing is written.
    Refused,
    /// In order; `next` is the smallest offset not taken yet.
    Tracking { next: i64 },
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Take it into the batch.
    Accept,
    /// Already written or about to be read again: drop it.
    Drop,
    /// Drop it and seek the partition to this offset now (its fetcher runs).
    Seek(i64),
    /// A partition no rebalance announced: ask the table, call
    /// [`Partitions::assigned`], then check again.
    Verify,
}

/// The position of every partition this instance consumes.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    positions: HashMap<TopicPartition, Position>,
}

impl Partitions {
    /// A partition was assigned and `start` decided where it starts.
    pub(crate) fn assigned(&mut self, topic: &str, partition: i32, start: Start) {
        let position = match start {
            Start::At(target) => Position::SeekPending { target },
            Start::Refuse(_) => Position::Refused,
        };
        self.positions
            .insert((topic.to_string(), partition), position);
    }

    /// How many partitions of `topic` are refused.
    pub(crate) fn refused(&self, topic: &str) -> usize {
        self.positions
            .iter()
            .filter(|((t, _), p)| t == topic && **p == Position::Refused)
            .count()
    }

    /// Partitions are no longer ours.
    pub(crate) fn revoked(&mut self, list: &[TopicPartition]) {
        for tp in list {
            self.positions.remove(tp);
        }
    }

    /// Seeks still to be made: (topic, partition, target).
    pub(crate) fn pending_seeks(&self) -> Vec<(String, i32, i64)> {
        self.positions
            .iter()
            .filter_map(|((topic, partition), position)| match position {
                Position::SeekPending { target } => Some((topic.clone(), *partition, *target)),
                _ => None,
            })
            .collect()
    }

    /// The seek of a pending partition succeeded.
    pub(crate) fn sought(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        if let Some(Position::SeekPending { target }) = self.positions.get(&key).copied() {
            self.positions.insert(key, Position::Sought { target });
        }
    }

    /// Decides about a message at `offset`.
    pub(crate) fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let Some(position) = self.positions.get_mut(&(topic.to_string(), partition)) else {
            return Verdict::Verify;
        };
        match *position {
            Position::SeekPending { target } => Verdict::Seek(target),
            Position::Refused => Verdict::Drop,
            Position::Sought { target } | Position::Tracking { next: target }
                if offset < target =>
            {
                Verdict::Drop
            }
            Position::Sought { .. } | Position::Tracking { .. } => {
                *position = Position::Tracking { next: offset + 1 };
                Verdict::Accept
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::start::Refusal;
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn resumes_where_the_table_says_after_the_seek() {
        let mut parts = Partitions::default();
        parts.assigned("t", 0, Start::At(10));
        assert_eq!(parts.pending_seeks(), vec![("t".to_string(), 0, 10)]);
        // Before the seek succeeded nothing is taken, whatever the offset.
        assert_eq!(parts.check("t", 0, 3), Verdict::Seek(10));
        assert_eq!(parts.check("t", 0, 50), Verdict::Seek(10));
        parts.sought("t", 0);
        assert!(parts.pending_seeks().is_empty());
        assert_eq!(parts.check("t", 0, 4), Verdict::Drop, "stale");
        assert_eq!(parts.check("t", 0, 10), Verdict::Accept);
        assert_eq!(parts.check("t", 0, 11), Verdict::Accept);
    }

    #[test]
    fn offsets_may_jump_but_not_go_back() {
        let mut parts = Partitions::default();
        parts.assigned("t", 0, Start::At(5));
        parts.sought("t", 0);
        assert_eq!(
            parts.check("t", 0, 7),
            Verdict::Accept,
            "a transaction marker at 5"
        );
        assert_eq!(parts.check("t", 0, 9), Verdict::Accept);
        assert_eq!(parts.check("t", 0, 8), Verdict::Drop);
    }

    #[test]
    fn a_refused_partition_takes_nothing_and_others_flow() {
        let mut parts = Partitions::default();
        parts.assigned(
            "t",
            1,
            Start::Refuse(Refusal::Gone {
                needed: 3,
                earliest: 40,
            }),
        );
        parts.assigned("t", 2, Start::At(0));
        parts.sought("t", 2);
        assert!(
            parts.pending_seeks().is_empty(),
            "no seek for a refused one"
        );
        for offset in [0, 3, 40, 41] {
            assert_eq!(parts.check("t", 1, offset), Verdict::Drop);
        }
        assert_eq!(parts.check("t", 2, 0), Verdict::Accept);
        assert_eq!(parts.refused("t"), 1);
        assert_eq!(parts.refused("u"), 0);
        parts.revoked(&[tp(1)]);
        assert_eq!(parts.refused("t"), 0);
    }

    #[test]
    fn unannounced_and_revoked_partitions_are_verified() {
        let mut parts = Partitions::default();
        assert_eq!(parts.check("t", 2, 0), Verdict::Verify);
        parts.assigned("t", 2, Start::At(0));
        parts.sought("t", 2);
        assert_eq!(parts.check("t", 2, 0), Verdict::Accept);
        parts.revoked(&[tp(2)]);
        assert_eq!(parts.check("t", 2, 1), Verdict::Verify);
    }

    #[test]
    fn context_hands_over_events_once() {
        let ctx = SinkContext::default();
        ctx.push(RebalanceEvent::Assigned(vec![tp(0)]));
        ctx.push(RebalanceEvent::Revoked(vec![tp(0)]));
        assert_eq!(ctx.drain().len(), 2);
        assert!(ctx.drain().is_empty());
    }
}
