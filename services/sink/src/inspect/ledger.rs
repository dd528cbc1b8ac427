//! Reads the file ledger topic (`medlake.files`, compacted) from the beginning to its
//! current end: the parser's own record of every file, before any sink copies it
//! into `<lake>/_files`.

use std::collections::BTreeMap;
use std::time::Duration;

use medlake_common::config::KafkaConfig;
use medlake_common::ledger::LedgerEntry;
use medlake_common::topic_reader::{TopicReadError, TopicReader};
use rdkafka::Message;

use super::InspectError;

/// The latest ledger entry of every file id on `topic`.
pub async fn read(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, LedgerEntry>, InspectError> {
    let ledger_error = |e: TopicReadError| InspectError::Ledger {
        topic: topic.to_string(),
        reason: e.to_string(),
    };
    let reader =
        TopicReader::open(config, "medlake-tables-summary", topic).map_err(ledger_error)?;
    let mut entries = BTreeMap::new();
    reader
        .read_to_end(timeout, |message| {
            if let Some(entry) = message
                .payload()
                .and_then(|p| LedgerEntry::from_json(p).ok())
            {
                entries.insert(entry.file_id.clone(), entry);
            }
        })
        .await
        .map_err(ledger_error)?;
    Ok(entries)
}
