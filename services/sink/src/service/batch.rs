//! The in-flight batch of one topic: messages taken but not yet written,
//! and the three limits that close it (rows, bytes, age).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

/// One message of a batch.
#[derive(Debug)]
pub(crate) struct Buffered {
    /// The message as consumed.
    pub message: OwnedMessage,
    /// Its dead letter is already on the dead-letter topic (set when a
    /// batch is retried, so the letter is not sent twice by this process).
    pub dead_lettered: bool,
}

impl Buffered {
    pub(crate) fn partition(&self) -> i32 {
        self.message.partition()
    }

    pub(crate) fn offset(&self) -> i64 {
        self.message.offset()
    }
}

/// Messages of one topic waiting to be written, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    messages: Vec<Buffered>,
    bytes: u64,
    opened: Option<Instant>,
}

impl Buffer {
    /// Adds a message; the first one starts the batch's clock.
    pub(crate) fn push(&mut self, message: OwnedMessage) {
        self.bytes += message.payload().map_or(0, |p| p.len() as u64);
        self.opened.get_or_insert_with(Instant::now);
        self.messages.push(Buffered {
            message,
            dead_lettered: false,
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes of the message values.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn messages(&self) -> &[Buffered] {
        &self.messages
    }

    pub(crate) fn messages_mut(&mut self) -> &mut [Buffered] {
        &mut self.messages
    }

    /// Whether the row or byte limit is reached.
    pub(crate) fn is_full(&self, max_rows: usize, max_bytes: u64) -> bool {
        self.messages.len() >= max_rows.max(1) || self.bytes >= max_bytes
    }

    /// When the batch must be written at the latest.
    pub(crate) fn deadline(&self, interval: Duration) -> Option<Instant> {
        self.opened.map(|opened| opened + interval)
    }

    /// Whether the batch is full or past its deadline.
    pub(crate) fn is_due(&self, max_rows: usize, max_bytes: u64, interval: Duration) -> bool {
        !self.is_empty()
            && (self.is_full(max_rows, max_bytes)
                || self.deadline(interval).is_some_and(|d| d <= Instant::now()))
    }

    /// The last offset of every partition in the batch.
    pub(crate) fn last_offsets(&self) -> BTreeMap<i32, i64> {
        let mut last = BTreeMap::new();
        for m in &self.messages {
            let entry = last.entry(m.partition()).or_insert(m.offset());
            *entry = (*entry).max(m.offset());
        }
        last
    }

    /// Drops the messages of `partition` (revoked: the new owner re-reads
    /// them from the table's offsets). Returns how many were dropped.
    pub(crate) fn drop_partition(&mut self, partition: i32) -> usize {
        let before = self.messages.len();
        self.messages.retain(|m| m.partition() != partition);
        let dropped = before - self.messages.len();
        if dropped > 0 {
            self.bytes = self
                .messages
                .iter()
                .map(|m| m.message.payload().map_or(0, |p| p.len() as u64))
                .sum();
            if self.messages.is_empty() {
                self.opened = None;
            }
        }
        dropped
    }

    /// Empties the batch (after it was written).
    pub(crate) fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
        self.opened = None;
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;

    use super::*;

    fn message(partition: i32, offset: i64, payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn limits_close_the_batch() {
        let mut b = Buffer::default();
        assert!(!b.is_due(2, 100, Duration::from_secs(60)));
        assert!(b.deadline(Duration::from_secs(1)).is_none());
        b.push(message(0, 1, b"12345"));
        assert!(!b.is_due(2, 100, Duration::from_secs(60)));
        assert!(b.is_due(2, 5, Duration::from_secs(60)), "bytes");
        b.push(message(1, 7, b"1"));
        assert!(b.is_due(2, 100, Duration::from_secs(60)), "rows");
        assert!(b.is_due(10, 100, Duration::ZERO), "age");
        assert_eq!(b.bytes(), 6);
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn last_offsets_per_partition() {
        let mut b = Buffer::default();
        for (p, o) in [(0, 3), (1, 9), (0, 4), (2, 1)] {
            b.push(message(p, o, b"x"));
        }
        let last: Vec<_> = b.last_offsets().into_iter().collect();
        assert_eq!(last, vec![(0, 4), (1, 9), (2, 1)]);
    }

    #[test]
    fn revoked_partitions_leave_the_batch() {
        let mut b = Buffer::default();
        b.push(message(0, 1, b"aa"));
        b.push(message(1, 1, b"bbb"));
        assert_eq!(b.drop_partition(1), 1);
        assert_eq!(b.bytes(), 2);
        assert_eq!(b.drop_partition(0), 1);
        assert!(b.is_empty());
        assert!(b.deadline(Duration::from_secs(1)).is_none());
        b.push(message(0, 2, b"a"));
        b.clear();
        assert!(b.is_empty() && b.bytes() == 0);
    }
}
