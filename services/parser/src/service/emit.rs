//! The bridge between the parsing pipeline and the transaction: a
//! [`RecordSink`] that hands records and rejects to the [`Outbox`] as the
//! pipeline emits them.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use medlake_common::config::TopicsConfig;
use medlake_common::dataset::Dataset;
use medlake_common::dead_letter::{DeadLetter, ErrorCode, Location};
use medlake_common::facilities::Registry;
use medlake_common::ingest::RawHeaders;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::outbox::{NO_DATASET, Outbox};
use super::{ParserConfig, ParserError};
use crate::pipeline::{FileInput, ProcessError, RecordSink, process_file};
use crate::{ParseEnv, Reject};

/// Builds the pipeline's environment from the definitions, the registry and
/// the configuration (the PII key is read now: a missing one is fatal).
pub fn parse_env(
    datasets: Vec<Dataset>,
    registry: Registry,
    config: &ParserConfig,
) -> Result<ParseEnv, ParserError> {
    let config_error = |reason: String| ParserError::Config { reason };
    let pii_key = config
        .pii_key
        .as_ref()
        .map(|r| r.resolve())
        .transpose()
        .map_err(|e| config_error(format!("parser.pii_key: {e}")))?;
    ParseEnv::new(datasets, registry, config.limits.clone(), pii_key.as_ref())
        .map_err(|e| config_error(e.to_string()))
}

/// What a parsed file amounted to, beyond what the outbox counted.
pub struct Summary {
    /// Entries in the file (after unpacking).
    pub entries: u64,
    /// Entries by the data set they were routed to (`none` when unrouted).
    pub entries_by_dataset: Vec<(String, u64)>,
}

/// The whole file is rejected: one dead letter with this code.
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

/// Parses `bytes` into `outbox`. Each reject becomes a dead letter built on
/// `template` (origin and input headers). A panic in the pipeline is caught
/// and rejects the file: a parser bug must not stop the stream.
pub fn parse(
    env: &ParseEnv,
    topics: &TopicsConfig,
    headers: &RawHeaders,
    bytes: &[u8],
    template: &DeadLetter,
    outbox: &mut Outbox,
) -> Result<Summary, Failure> {
    outbox.stamp_records(
        &headers
            .received_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    );
    let input = FileInput {
        file_id: &headers.file_id,
        facility_id: &headers.facility_id,
        file_name: &headers.file_name,
        bytes,
        ingested_at: chrono::Utc::now(),
    };
    let mut sink = KafkaSink {
        topics,
        template,
        file_id: &headers.file_id,
        facility_id: &headers.facility_id,
        outbox,
        record_topics: BTreeMap::new(),
        entries: BTreeMap::new(),
    };
    let result = catch_unwind(AssertUnwindSafe(|| process_file(&input, env, &mut sink)));
    let mut entries_by_dataset: BTreeMap<String, u64> = BTreeMap::new();
    for dataset in sink.entries.values() {
        *entries_by_dataset.entry(dataset.clone()).or_default() += 1;
    }
    match result {
        Ok(Ok(summary)) => Ok(Summary {
            entries: summary.entries,
            entries_by_dataset: entries_by_dataset.into_iter().collect(),
        }),
        Ok(Err(ProcessError::File(error))) => Err(Failure {
            code: error.code(),
            message: error.to_string(),
        }),
        Ok(Err(ProcessError::Sink(never))) => match never {},
        Err(_) => Err(Failure {
            code: ErrorCode::InternalError,
            message: "the parser failed on this file (a bug); the file can be replayed once fixed"
                .into(),
        }),
    }
}

/// Hands the pipeline's output to the outbox. Produce errors are kept in the
/// outbox (the transaction then aborts), so the sink itself never fails.
struct KafkaSink<'a> {
    topics: &'a TopicsConfig,
    template: &'a DeadLetter,
    file_id: &'a str,
    facility_id: &'a str,
    outbox: &'a mut Outbox,
    /// Records topic by data set name, built once per file.
    record_topics: BTreeMap<String, String>,
    /// Data set of every entry seen (`none` when unrouted), for the metrics.
    entries: BTreeMap<String, String>,
}

impl KafkaSink<'_> {
    fn dead_letter(&mut self, reject: &Reject, code: ErrorCode) {
        let mut dead_letter = self.template.clone();
        dead_letter.stage = code.stage();
        dead_letter.code = code;
        dead_letter.message = reject.message.clone();
        let dead_letter = dead_letter.at(Location {
            entry: reject.entry.clone(),
            index: reject.index,
            field: reject.field.clone(),
        });
        let summary = serde_json::to_vec(&dead_letter.summary(self.file_id, self.facility_id))
            .expect("a summary always serializes");
        let dlq = self.topics.dlq();
        self.outbox.dead_letter(
            &dlq,
            self.file_id,
            reject.dataset.as_deref(),
            &dead_letter,
            &summary,
        );
    }
}

impl RecordSink for KafkaSink<'_> {
    type Error = std::convert::Infallible;

    fn record(&mut self, dataset: &Dataset, key: &str, json: &[u8]) -> Result<(), Self::Error> {
        let topic = self
            .record_topics
            .entry(dataset.name.clone())
            .or_insert_with(|| self.topics.records(&dataset.name));
        let sent = self
            .outbox
            .record(topic, &dataset.name, key.as_bytes(), json);
        if let Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) = sent {
            // Parsed fine but too big for the broker: a dead letter, not a crash.
            let reject = Reject {
                code: ErrorCode::MessageTooLarge,
                dataset: Some(dataset.name.clone()),
                entry: lineage(json).and_then(|l| l._entry).unwrap_or_default(),
                index: lineage(json).and_then(|l| l._record_index),
                field: None,
                message: format!("record of {} bytes is too large for the broker", json.len()),
            };
            self.dead_letter(&reject, ErrorCode::MessageTooLarge);
        }
        if let Some(entry) = entry_of(json) {
            self.entries
                .entry(entry)
                .or_insert_with(|| dataset.name.clone());
        }
        Ok(())
    }

    fn reject(&mut self, reject: &Reject) -> Result<(), Self::Error> {
        self.entries
            .entry(reject.entry.clone())
            .or_insert_with(|| reject.dataset.clone().unwrap_or_else(|| NO_DATASET.into()));
        self.dead_letter(reject, reject.code);
        Ok(())
    }
}

/// The `_entry` lineage value of a record's JSON, found without parsing the
/// whole record (this runs for every record).
fn entry_of(json: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"_entry\":";
    let at = json.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let mut values = serde_json::Deserializer::from_slice(&json[at..]).into_iter::<String>();
    values.next()?.ok()
}

/// The lineage of a record, for the rare dead letter that needs it.
#[derive(serde::Deserialize)]
struct Lineage {
    #[serde(default)]
    _entry: Option<String>,
    #[serde(default)]
    _record_index: Option<u64>,
}

fn lineage(json: &[u8]) -> Option<Lineage> {
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_found_in_record_json() {
        let json = br#"{"a":"x","_entry":"dir/\"q\".csv","_record_index":3,"_ingested_at":"t"}"#;
        assert_eq!(entry_of(json).as_deref(), Some("dir/\"q\".csv"));
        assert_eq!(lineage(json).unwrap()._record_index, Some(3));
        assert_eq!(entry_of(b"{}"), None);
    }

    #[test]
    fn every_pipeline_code_is_a_dead_letter_code() {
        // The pipeline's codes are the dead-letter codes; each has a stage.
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), *code);
        }
    }
}
