//! Where each assigned partition stands, and the rebalance events that
//! change it.
//!
//! The Delta table, not Kafka, knows where to resume: it holds the last
//! offset written per partition (`txn` actions). librdkafka only allows a
//! `seek` on a partition that is already fetching, so the sink checks a
//! partition when its *first* message after an assignment arrives: it asks
//! the table for the last written offset and either takes the message (it is
//! the next one) or seeks to the table's offset + 1 and drops the message.
//! Until the seek takes effect, messages below the target are dropped; after
//! it, a message below the expected next offset is a duplicate and dropped.
//!
//! Offsets may jump (transaction markers of the parser's transactional
//! producer, compaction of the ledger topic), so only going *backwards* is
//! treated as a duplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::TopicPartitionList;

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
    /// Assigned; the table has not been asked yet.
    Unverified,
    /// A seek to `target` was issued; older messages are stale.
    Seeking { target: i64 },
    /// In order; `next` is the smallest offset not taken yet.
    Tracking { next: i64 },
}

/// What to do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Take it into the batch.
    Accept,
    /// Already written or about to be re-read: drop it.
    Drop,
    /// First message since the assignment: ask the table, then call
    /// [`Partitions::verified`].
    Verify,
}

/// After the table was asked: take the message or seek.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The message is the next one the table needs.
    Accept,
    /// Seek the partition to this offset and drop the message.
    Seek(i64),
}

/// The position of every partition this instance consumes.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    positions: HashMap<TopicPartition, Position>,
}

impl Partitions {
    /// Applies a rebalance event.
    pub(crate) fn apply(&mut self, event: &RebalanceEvent) {
        match event {
            RebalanceEvent::Assigned(list) => {
                for tp in list {
                    self.positions.insert(tp.clone(), Position::Unverified);
                }
            }
            RebalanceEvent::Revoked(list) => {
                for tp in list {
                    self.positions.remove(tp);
                }
            }
        }
    }

    /// Decides about a message at `offset`. A partition never announced by
    /// a rebalance (the callback raced the fetch) is verified like a new one.
    pub(crate) fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let key = (topic.to_string(), partition);
        let position = self.positions.entry(key).or_insert(Position::Unverified);
        match *position {
            Position::Unverified => Verdict::Verify,
            Position::Seeking { target } if offset < target => Verdict::Drop,
            Position::Seeking { target } => {
                if offset > target {
                    tracing::warn!(
                        topic,
                        partition,
                        expected = target,
                        offset,
                        "Resumed past the table's offset (messages deleted by retention?)."
                    );
                }
                *position = Position::Tracking { next: offset + 1 };
                Verdict::Accept
            }
            Position::Tracking { next } if offset < next => Verdict::Drop,
            Position::Tracking { .. } => {
                *position = Position::Tracking { next: offset + 1 };
                Verdict::Accept
            }
        }
    }

    /// Records what the table said for a partition in [`Verdict::Verify`]:
    /// `table_next` is the table's last offset + 1, `None` when the table
    /// never saw the partition (Kafka's committed offset is then the best
    /// there is, and the message is taken).
    pub(crate) fn verified(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        table_next: Option<i64>,
    ) -> Resume {
        let key = (topic.to_string(), partition);
        match table_next {
            Some(target) if target != offset => {
                self.positions.insert(key, Position::Seeking { target });
                Resume::Seek(target)
            }
            _ => {
                self.positions
                    .insert(key, Position::Tracking { next: offset + 1 });
                Resume::Accept
            }
        }
    }

    /// Forgets a partition's position so its next message is verified again
    /// (after a failed seek, or when a batch was dropped).
    pub(crate) fn reset(&mut self, topic: &str, partition: i32) {
        if let Some(position) = self.positions.get_mut(&(topic.to_string(), partition)) {
            *position = Position::Unverified;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn first_message_after_assignment_is_verified() {
        let mut parts = Partitions::default();
        parts.apply(&RebalanceEvent::Assigned(vec![tp(0), tp(1)]));
        assert_eq!(parts.check("t", 0, 5), Verdict::Verify);
        assert_eq!(parts.verified("t", 0, 5, Some(5)), Resume::Accept);
        assert_eq!(parts.check("t", 0, 6), Verdict::Accept);
        // Offsets may jump (transaction markers).
        assert_eq!(parts.check("t", 0, 9), Verdict::Accept);
        // Going backwards is a duplicate.
        assert_eq!(parts.check("t", 0, 8), Verdict::Drop);
    }

    #[test]
    fn behind_the_table_seeks_and_drops_stale_messages() {
        let mut parts = Partitions::default();
        parts.apply(&RebalanceEvent::Assigned(vec![tp(0)]));
        assert_eq!(parts.check("t", 0, 3), Verdict::Verify);
        assert_eq!(parts.verified("t", 0, 3, Some(10)), Resume::Seek(10));
        assert_eq!(parts.check("t", 0, 4), Verdict::Drop);
        assert_eq!(parts.check("t", 0, 10), Verdict::Accept);
        assert_eq!(parts.check("t", 0, 11), Verdict::Accept);
    }

    #[test]
    fn ahead_of_the_table_seeks_back() {
        let mut parts = Partitions::default();
        parts.apply(&RebalanceEvent::Assigned(vec![tp(2)]));
        assert_eq!(parts.check("t", 2, 50), Verdict::Verify);
        assert_eq!(parts.verified("t", 2, 50, Some(20)), Resume::Seek(20));
        assert_eq!(parts.check("t", 2, 20), Verdict::Accept);
    }

    #[test]
    fn a_partition_the_table_never_saw_starts_where_kafka_is() {
        let mut parts = Partitions::default();
        assert_eq!(parts.check("t", 0, 0), Verdict::Verify);
        assert_eq!(parts.verified("t", 0, 0, None), Resume::Accept);
        assert_eq!(parts.check("t", 0, 1), Verdict::Accept);
    }

    #[test]
    fn revoked_then_assigned_is_verified_again() {
        let mut parts = Partitions::default();
        parts.apply(&RebalanceEvent::Assigned(vec![tp(0)]));
        parts.check("t", 0, 0);
        parts.verified("t", 0, 0, None);
        parts.apply(&RebalanceEvent::Revoked(vec![tp(0)]));
        assert!(parts.positions.is_empty());
        parts.apply(&RebalanceEvent::Assigned(vec![tp(0)]));
        assert_eq!(parts.check("t", 0, 1), Verdict::Verify);
        parts.verified("t", 0, 1, Some(2));
        parts.reset("t", 0);
        assert_eq!(parts.check("t", 0, 2), Verdict::Verify);
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
