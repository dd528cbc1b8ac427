//! Poison files: a raw message that kills the parser process (out of
//! memory, an abort in a library) would be read again after every restart
//! and stall its partition, and so every facility behind it, for good.
//!
//! The parser counts its deaths per message where the count survives them:
//! in the metadata of the group's committed offset. Before a transaction
//! starts, the offset it starts from is committed again (the same offset,
//! so progress never moves) with the note "`n` attempts at offsets
//! `first..=through` began and did not finish". The transaction's own
//! offset commit replaces the note. A process that dies in between leaves
//! the note for whoever reads the partition next, and:
//!
//! - With a note, the messages `first..=through` are suspects: the first
//!   death may have come from any of them, so they are parsed one per
//!   transaction, each with its own note (`n + 1`). The innocent ones
//!   commit; the guilty one dies again.
//! - A message whose note has reached `parser.max_parse_attempts` is not
//!   parsed again: it is dead-lettered whole as `poison_file` (its bytes, or
//!   a raw-zone reference) and its partition moves on. `medlake replay
//!   --code poison_file` brings it back once the cause is fixed.
//!
//! A failure the process survives (broker away, raw zone unreachable) is not
//! a death: the note is put back as it was before the retry. Only a note
//! that cannot be put back (the broker is away too) counts one death too
//! many, which is why at least two attempts are required.
//!
//! Costs: one committed-offset fetch and one offset commit per transaction
//! (a round trip to the group coordinator each, a few milliseconds against a
//! transaction's ~10 ms). The commit carries the consumer's group generation,
//! so a replica that lost the partition in a rebalance cannot write a note.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

/// A topic and partition.
pub type Partition = (String, i32);

/// The note committed with an offset: `count` attempts at the offsets from
/// the committed one through `through` began and did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub count: u32,
    pub through: i64,
}

/// What marks a committed offset's metadata as a [`Note`].
const NOTE_PREFIX: &str = "medlake.parse-attempts:";

impl Note {
    /// The note in a committed offset's metadata, if the metadata is one.
    pub fn decode(metadata: &str) -> Option<Note> {
        let (count, through) = metadata.strip_prefix(NOTE_PREFIX)?.split_once('@')?;
        Some(Note {
            count: count.parse().ok()?,
            through: through.parse().ok()?,
        })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NOTE_PREFIX}{}@{}", self.count, self.through)
    }
}

/// What the next transaction does with the messages it was given.
#[derive(Debug, Default)]
pub struct Decision {
    /// The index in the batch of a suspect the transaction takes alone (the
    /// other messages are put back); `None`: the transaction takes them all.
    pub alone: Option<usize>,
    /// The taken message is set aside unparsed: the parser died this many
    /// times on it.
    pub poison: Option<u32>,
    /// The notes committed now, before the transaction begins.
    pub before: BTreeMap<Partition, (i64, Note)>,
    /// What was committed before them, put back if the transaction fails
    /// without the process dying.
    pub previous: BTreeMap<Partition, (i64, String)>,
    /// The notes the transaction commits with its offsets: the suspects
    /// still to be parsed one by one.
    pub after: BTreeMap<Partition, Note>,
}

/// The first offset of each partition of `batch`, and the last.
fn spans(batch: &[&OwnedMessage]) -> BTreeMap<Partition, (i64, i64)> {
    let mut spans: BTreeMap<Partition, (i64, i64)> = BTreeMap::new();
    for m in batch {
        let span = spans
            .entry((m.topic().to_string(), m.partition()))
            .or_insert((m.offset(), m.offset()));
        span.0 = span.0.min(m.offset());
        span.1 = span.1.max(m.offset());
    }
    spans
}

/// Decides what the transaction over `batch` does, given each partition's
/// committed offset and metadata. Pure: the broker calls are
/// [`fetch`] and [`commit`].
pub fn decide(
    batch: &[&OwnedMessage],
    committed: &BTreeMap<Partition, (i64, String)>,
    max_attempts: u32,
) -> Decision {
    let spans = spans(batch);
    // A note counts only where the partition resumes exactly at its offset:
    // a committed offset elsewhere is somebody else's progress.
    let note_of = |partition: &Partition, first: i64| {
        committed
            .get(partition)
            .filter(|(offset, _)| *offset == first)
            .and_then(|(_, metadata)| Note::decode(metadata))
            .filter(|note| note.count > 0 && note.through >= first)
    };
    let mut decision = Decision::default();
    let suspect = batch.iter().enumerate().find_map(|(index, m)| {
        let partition = (m.topic().to_string(), m.partition());
        let first = spans[&partition].0;
        (m.offset() == first)
            .then(|| note_of(&partition, first))
            .flatten()
            .map(|note| (index, partition, first, note))
    });
    match suspect {
        Some((index, partition, first, note)) => {
            decision.alone = Some(index);
            if note.count >= max_attempts {
                decision.poison = Some(note.count);
            } else {
                let next = Note {
                    count: note.count + 1,
                    through: note.through,
                };
                decision.before.insert(partition.clone(), (first, next));
            }
            if first < note.through {
                decision.after.insert(
                    partition.clone(),
                    Note {
                        count: 1,
                        through: note.through,
                    },
                );
            }
            if let Some(previous) = committed.get(&partition) {
                decision.previous.insert(partition, previous.clone());
            }
        }
        None => {
            for (partition, (first, last)) in spans {
                let note = Note {
                    count: 1,
                    through: last,
                };
                if let Some(previous) = committed.get(&partition) {
                    decision
                        .previous
                        .insert(partition.clone(), previous.clone());
                }
                decision.before.insert(partition, (first, note));
            }
        }
    }
    decision
}

/// The committed offset and metadata of each partition of `batch`.
pub fn fetch(
    consumer: &StreamConsumer,
    batch: &[&OwnedMessage],
    timeout: Duration,
) -> Result<BTreeMap<Partition, (i64, String)>, KafkaError> {
    let mut wanted = TopicPartitionList::new();
    for (topic, partition) in spans(batch).into_keys() {
        wanted.add_partition(&topic, partition);
    }
    let committed = consumer.committed_offsets(wanted, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some((
                (e.topic().to_string(), e.partition()),
                (offset, e.metadata().to_string()),
            )),
            _ => None,
        })
        .collect())
}

/// Commits each partition's offset with its metadata, synchronously.
pub fn commit<'a>(
    consumer: &StreamConsumer,
    offsets: impl IntoIterator<Item = (&'a Partition, i64, String)>,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset, metadata) in offsets {
        let mut element = list.add_partition(topic, *partition);
        element.set_offset(Offset::Offset(offset))?;
        element.set_metadata(metadata);
    }
    if list.count() == 0 {
        return Ok(());
    }
    consumer.commit(&list, CommitMode::Sync)
}

/// A message of topic `raw` without key, value or headers, for tests.
#[cfg(test)]
pub(crate) fn bare_message(partition: i32, offset: i64) -> OwnedMessage {
    OwnedMessage::new(
        None,
        None,
        "raw".into(),
        rdkafka::message::Timestamp::NotAvailable,
        partition,
        offset,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        bare_message(partition, offset)
    }

    fn committed(entries: &[(i32, i64, &str)]) -> BTreeMap<Partition, (i64, String)> {
        entries
            .iter()
            .map(|(p, o, m)| (("raw".to_string(), *p), (*o, m.to_string())))
            .collect()
    }

    fn p(partition: i32) -> Partition {
        ("raw".to_string(), partition)
    }

    #[test]
    fn notes_read_back_what_they_wrote_and_nothing_else() {
        let note = Note {
            count: 2,
            through: 41,
        };
        assert_eq!(Note::decode(&note.to_string()), Some(note));
        assert_eq!(Note::decode(""), None);
        assert_eq!(Note::decode("someone else's metadata"), None);
        assert_eq!(Note::decode("medlake.parse-attempts:x@1"), None);
    }

    #[test]
    fn a_clean_batch_is_taken_whole_with_one_note_per_partition() {
        let messages = [message(0, 5), message(1, 2), message(0, 6), message(0, 7)];
        let batch: Vec<_> = messages.iter().collect();
        let decision = decide(&batch, &committed(&[(0, 5, ""), (1, 2, "")]), 3);
        assert_eq!(decision.alone, None);
        assert_eq!(decision.poison, None);
        assert_eq!(
            decision.before[&p(0)],
            (
                5,
                Note {
                    count: 1,
                    through: 7
                }
            )
        );
        assert_eq!(
            decision.before[&p(1)],
            (
                2,
                Note {
                    count: 1,
                    through: 2
                }
            )
        );
        assert!(decision.after.is_empty());
        assert_eq!(decision.previous[&p(0)], (5, String::new()));
    }

    #[test]
    fn after_a_death_the_suspects_go_one_at_a_time() {
        let messages = [message(1, 3), message(0, 5), message(0, 6), message(0, 7)];
        let batch: Vec<_> = messages.iter().collect();
        let died = Note {
            count: 1,
            through: 7,
        }
        .to_string();
        let decision = decide(&batch, &committed(&[(1, 3, ""), (0, 5, &died)]), 3);
        assert_eq!(decision.alone, Some(1), "the suspect, whatever its place");
        assert!(!decision.before.contains_key(&p(1)));
        assert_eq!(decision.poison, None);
        assert_eq!(
            decision.before[&p(0)],
            (
                5,
                Note {
                    count: 2,
                    through: 7
                }
            )
        );
        // The next suspects keep one death against them.
        assert_eq!(
            decision.after[&p(0)],
            Note {
                count: 1,
                through: 7
            }
        );
        assert_eq!(decision.previous[&p(0)], (5, died));

        // The last suspect alone leaves no note behind it.
        let last = [message(0, 7)];
        let batch: Vec<_> = last.iter().collect();
        let died = Note {
            count: 1,
            through: 7,
        }
        .to_string();
        let decision = decide(&batch, &committed(&[(0, 7, &died)]), 3);
        assert_eq!(decision.alone, Some(0));
        assert!(decision.after.is_empty());
    }

    #[test]
    fn a_message_that_killed_the_parser_max_times_is_set_aside() {
        let messages = [message(0, 6), message(0, 7)];
        let batch: Vec<_> = messages.iter().collect();
        let note = Note {
            count: 3,
            through: 6,
        }
        .to_string();
        let decision = decide(&batch, &committed(&[(0, 6, &note)]), 3);
        assert_eq!(decision.alone, Some(0));
        assert_eq!(decision.poison, Some(3));
        assert!(decision.before.is_empty(), "no note for a file not parsed");
        assert!(decision.after.is_empty());
    }

    #[test]
    fn a_note_at_another_offset_is_not_ours_to_count() {
        let messages = [message(0, 9)];
        let batch: Vec<_> = messages.iter().collect();
        let note = Note {
            count: 5,
            through: 8,
        }
        .to_string();
        let decision = decide(&batch, &committed(&[(0, 7, &note)]), 3);
        assert_eq!(decision.alone, None);
        assert_eq!(decision.poison, None);
        assert_eq!(decision.before[&p(0)].1.count, 1);
    }
}
