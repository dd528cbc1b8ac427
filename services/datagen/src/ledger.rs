//! Reads the file ledger topic (`medlake.files`, compacted) from the beginning to its
//! current end: the parser's own record of every file, before any sink copies it
//! into `<lake>/_files`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use medlake_common::config::KafkaConfig;
use medlake_common::kafka;
use medlake_common::ledger::LedgerEntry;
use rdkafka::consumer::Consumer;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::error::GenError;

fn ledger_error(topic: &str, e: impl std::fmt::Display) -> GenError {
    GenError::Ledger {
        topic: topic.to_string(),
        reason: e.to_string(),
    }
}

/// The latest ledger entry of every file id on `topic`.
pub async fn read(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, LedgerEntry>, GenError> {
    let mut config = config.clone();
    config
        .options
        .insert("isolation.level".into(), "read_committed".into());
    // Partitions are assigned: the group is never joined nor committed to.
    let consumer =
        kafka::consumer(&config, "medlake-tables-summary").map_err(|e| ledger_error(topic, e))?;
    let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(Some(topic), timeout))
        .map_err(|e| ledger_error(topic, e))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len() as i32);
    if partitions == 0 {
        return Err(ledger_error(topic, "the topic does not exist"));
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) =
            tokio::task::block_in_place(|| consumer.fetch_watermarks(topic, p, timeout))
                .map_err(|e| ledger_error(topic, e))?;
        if high > low {
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| ledger_error(topic, e))?;
        }
    }
    let mut entries = BTreeMap::new();
    if ends.is_empty() {
        return Ok(entries);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| ledger_error(topic, e))?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(ledger_error(topic, "timed out reading to the end"));
        }
        let Ok(message) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await
        else {
            // Transaction markers take offsets but are never delivered: ask where we are.
            let position = consumer.position().map_err(|e| ledger_error(topic, e))?;
            for elem in position.elements() {
                if let Offset::Offset(at) = elem.offset()
                    && ends.get(&elem.partition()).is_some_and(|end| at >= *end)
                {
                    ends.remove(&elem.partition());
                }
            }
            continue;
        };
        let message = message.map_err(|e| ledger_error(topic, e))?;
        if let Some(entry) = message
            .payload()
            .and_then(|p| LedgerEntry::from_json(p).ok())
        {
            entries.insert(entry.file_id.clone(), entry);
        }
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
    }
    Ok(entries)
}
