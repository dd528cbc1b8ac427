//! Where an assigned partition starts, decided from the table alone.
//!
//! The Delta table is the only source of truth for what has been written.
//! The consumer group's committed Kafka position is *not* trusted to say
//! where to start: a table that was lost, restored from an older copy or
//! recreated while its group survived would otherwise skip every row before
//! the group's position, silently. So:
//!
//! - the table holds an offset for the partition: resume right after it;
//!   if Kafka no longer holds the offsets the table needs (retention deleted
//!   them), the partition is **refused** (paused, an ERROR naming the gone
//!   range, `medlake_sink_partitions_refused`) unless the operator set
//!   `sink.resume_past_offset_gaps` after refilling the gap from the raw zone;
//!   a table offset past the end of the partition means the topic was
//!   recreated: refused too (a new consumer group starts the table's
//!   partitions over, see docs/operations.md);
//! - the table holds nothing for it: start at the topic's earliest retained
//!   offset, unless `sink.untracked_partition_start` says `latest` or `group`;
//! - either way, a group position ahead of what the table holds is reported
//!   (WARN with both offsets, `medlake_sink_offset_mismatches_total`), never
//!   followed.
//!
//! Whenever a partition starts anywhere but right after the table's own
//! offset, the first commit that covers it records why, under
//! [`START_METADATA_KEY`] in the commit's metadata, so the table's history
//! shows every deliberate skip.

use serde::{Deserialize, Serialize};

/// Key of the commit metadata that records deliberate starts.
pub(crate) const START_METADATA_KEY: &str = "medlake.partition_starts";

/// Where a partition the table holds no offset for starts
/// (`sink.untracked_partition_start`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UntrackedStart {
    /// The topic's earliest retained offset: every row Kafka still has.
    #[default]
    Earliest,
    /// The end of the partition: only what arrives from now on.
    Latest,
    /// The consumer group's committed position (the topic's earliest when
    /// the group has none).
    Group,
}

impl UntrackedStart {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
            Self::Group => "group",
        }
    }
}

/// What is known about a partition when it is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The table's last offset + 1; `None` when the table never saw it.
    pub table_next: Option<i64>,
    /// Earliest retained offset (low watermark).
    pub earliest: i64,
    /// End of the partition (high watermark).
    pub latest: i64,
    /// The group's committed position, if it has one.
    pub group: Option<i64>,
}

/// The operator's choices that bear on the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StartPolicy {
    pub untracked: UntrackedStart,
    pub resume_past_gaps: bool,
}

/// Where the partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Seek here.
    At(i64),
    /// Write nothing for the partition.
    Refuse(Refusal),
}

/// Why a partition is not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The offsets `needed..earliest` are gone from Kafka (retention).
    Gone { needed: i64, earliest: i64 },
    /// The table needs `needed` but the partition ends at `latest`: the
    /// topic was deleted and recreated (or truncated), so the table's
    /// offsets belong to another incarnation of it.
    PastEnd { needed: i64, latest: i64 },
}

/// Why a partition starts somewhere other than right after the table's
/// offset; written into the first commit that covers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct StartNote {
    /// `untracked` (the table held no offset) or `offset_gap` (Kafka no
    /// longer held the offsets the table needed).
    pub reason: &'static str,
    /// The policy that chose the offset (`earliest`, `latest`, `group`, or
    /// `resume_past_offset_gaps`).
    pub policy: &'static str,
    /// The first offset read.
    pub start_offset: i64,
    /// For a gap: the first offset the table needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_offset: Option<i64>,
}

/// The decision for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub start: Start,
    /// The group's position is ahead of what the table holds.
    pub group_ahead: bool,
    /// Recorded in the first commit, when the start is deliberate.
    pub note: Option<StartNote>,
}

/// Decides where a partition starts.
pub(crate) fn decide(seen: Observed, policy: StartPolicy) -> Decision {
    let Observed {
        table_next,
        earliest,
        latest,
        group,
    } = seen;
    // What the table already covers; everything from here on must be read.
    let covered = table_next.unwrap_or(earliest);
    let group_ahead = group.is_some_and(|g| g > covered);
    let (start, note) = match table_next {
        Some(needed) if needed < earliest && policy.resume_past_gaps => (
            Start::At(earliest),
            Some(StartNote {
                reason: "offset_gap",
                policy: "resume_past_offset_gaps",
                start_offset: earliest,
                needed_offset: Some(needed),
            }),
        ),
        Some(needed) if needed < earliest => {
            (Start::Refuse(Refusal::Gone { needed, earliest }), None)
        }
        Some(needed) if needed > latest => {
            (Start::Refuse(Refusal::PastEnd { needed, latest }), None)
        }
        Some(needed) => (Start::At(needed), None),
        None => {
            let at = match policy.untracked {
                UntrackedStart::Earliest => earliest,
                UntrackedStart::Latest => latest,
                UntrackedStart::Group => group.unwrap_or(earliest).clamp(earliest, latest),
            };
            (
                Start::At(at),
                Some(StartNote {
                    reason: "untracked",
                    policy: policy.untracked.as_str(),
                    start_offset: at,
                    needed_offset: None,
                }),
            )
        }
    };
    Decision {
        start,
        group_ahead,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: StartPolicy = StartPolicy {
        untracked: UntrackedStart::Earliest,
        resume_past_gaps: false,
    };

    fn seen(table_next: Option<i64>, earliest: i64, latest: i64, group: Option<i64>) -> Observed {
        Observed {
            table_next,
            earliest,
            latest,
            group,
        }
    }

    #[test]
    fn the_table_says_where_to_resume_whatever_the_group_says() {
        for group in [None, Some(3), Some(10), Some(90)] {
            let d = decide(seen(Some(10), 0, 100, group), DEFAULT);
            assert_eq!(d.start, Start::At(10));
            assert_eq!(d.group_ahead, group == Some(90), "group {group:?}");
            assert_eq!(d.note, None, "an ordinary resume is not noted");
        }
    }

    #[test]
    fn an_empty_table_starts_at_the_earliest_retained_offset() {
        let d = decide(seen(None, 5, 100, Some(100)), DEFAULT);
        assert_eq!(d.start, Start::At(5));
        assert!(d.group_ahead, "the group read rows the table does not hold");
        let note = d.note.unwrap();
        assert_eq!(
            (note.reason, note.policy, note.start_offset),
            ("untracked", "earliest", 5)
        );
        // A group at the start of the topic is not ahead.
        assert!(!decide(seen(None, 5, 100, Some(5)), DEFAULT).group_ahead);
        assert!(!decide(seen(None, 5, 100, None), DEFAULT).group_ahead);
    }

    #[test]
    fn the_operator_may_choose_latest_or_the_group_for_untracked_partitions() {
        let latest = StartPolicy {
            untracked: UntrackedStart::Latest,
            ..DEFAULT
        };
        assert_eq!(
            decide(seen(None, 5, 100, Some(40)), latest).start,
            Start::At(100)
        );
        let group = StartPolicy {
            untracked: UntrackedStart::Group,
            ..DEFAULT
        };
        let d = decide(seen(None, 5, 100, Some(40)), group);
        assert_eq!(d.start, Start::At(40));
        assert_eq!(d.note.unwrap().policy, "group");
        // No group position, or one outside the retained range.
        assert_eq!(decide(seen(None, 5, 100, None), group).start, Start::At(5));
        assert_eq!(
            decide(seen(None, 5, 100, Some(2)), group).start,
            Start::At(5)
        );
    }

    #[test]
    fn offsets_gone_from_kafka_refuse_the_partition() {
        let d = decide(seen(Some(10), 50, 100, Some(10)), DEFAULT);
        assert_eq!(
            d.start,
            Start::Refuse(Refusal::Gone {
                needed: 10,
                earliest: 50
            })
        );
        // Exactly at the earliest retained offset nothing is missing.
        assert_eq!(
            decide(seen(Some(50), 50, 100, None), DEFAULT).start,
            Start::At(50)
        );
    }

    #[test]
    fn a_table_ahead_of_a_recreated_topic_refuses_the_partition() {
        let d = decide(seen(Some(5_001), 0, 100, None), DEFAULT);
        assert_eq!(
            d.start,
            Start::Refuse(Refusal::PastEnd {
                needed: 5_001,
                latest: 100
            })
        );
        // Right at the end: caught up, nothing new yet.
        assert_eq!(
            decide(seen(Some(100), 0, 100, None), DEFAULT).start,
            Start::At(100)
        );
        // Resuming past gaps does not cover a topic that started over.
        let lenient = StartPolicy {
            resume_past_gaps: true,
            ..DEFAULT
        };
        assert!(matches!(
            decide(seen(Some(5_001), 0, 100, None), lenient).start,
            Start::Refuse(Refusal::PastEnd { .. })
        ));
    }

    #[test]
    fn resuming_past_a_gap_is_explicit_and_noted() {
        let policy = StartPolicy {
            resume_past_gaps: true,
            ..DEFAULT
        };
        let d = decide(seen(Some(10), 50, 100, None), policy);
        assert_eq!(d.start, Start::At(50));
        let note = d.note.unwrap();
        assert_eq!(note.reason, "offset_gap");
        assert_eq!(note.needed_offset, Some(10));
        let json = serde_json::to_value(&note).unwrap();
        assert_eq!(json["start_offset"], 50);
    }
}
