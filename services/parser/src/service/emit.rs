//! Emitting a file into its transaction: the parsing pipeline runs with a
//! [`RecordSink`] that hands each record and reject to the [`Outbox`] as the
//! pipeline emits it. What the file amounted to is the pipeline's
//! [`FileSummary`].

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use medlake_common::config::TopicsConfig;
use medlake_common::dataset::Dataset;
use medlake_common::dead_letter::{DeadLetter, ErrorCode, Location};
use medlake_common::facilities::Registry;
use medlake_common::raw_file::RawHeaders;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::config::ParserConfig;
use super::error::ParserError;
use super::outbox::Outbox;
use crate::pipeline::{
    Delivery, FileInput, FileSummary, ProcessError, Record, RecordSink, process_file,
};
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

/// The whole file is rejected: one dead letter with this code.
#[derive(Debug, Clone)]
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
) -> Result<FileSummary, Failure> {
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
    let mut emitter = Emitter {
        topics,
        template,
        file_id: &headers.file_id,
        facility_id: &headers.facility_id,
        outbox,
        record_topics: BTreeMap::new(),
    };
    let result = catch_unwind(AssertUnwindSafe(|| process_file(&input, env, &mut emitter)));
    match result {
        Ok(Ok(summary)) => Ok(summary),
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
/// outbox (the transaction then aborts), so the emitter itself never fails.
struct Emitter<'a> {
    topics: &'a TopicsConfig,
    template: &'a DeadLetter,
    file_id: &'a str,
    facility_id: &'a str,
    outbox: &'a mut Outbox,
    /// Records topic by data set name, built once per file.
    record_topics: BTreeMap<String, String>,
}

impl RecordSink for Emitter<'_> {
    type Error = std::convert::Infallible;

    fn record(&mut self, record: &Record<'_>) -> Result<Delivery, Self::Error> {
        let name = &record.dataset.name;
        if !self.record_topics.contains_key(name) {
            let topic = self.topics.records(name);
            self.record_topics.insert(name.clone(), topic);
        }
        let topic = &self.record_topics[name];
        let sent = self
            .outbox
            .record(topic, record.key.as_bytes(), record.json);
        if let Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) = sent {
            // Parsed fine but too big for the broker: a dead letter, not a crash.
            return Ok(Delivery::Refused {
                code: ErrorCode::MessageTooLarge,
                message: format!(
                    "record of {} bytes is too large for the broker",
                    record.json.len()
                ),
            });
        }
        Ok(Delivery::Taken)
    }

    fn reject(&mut self, reject: &Reject) -> Result<(), Self::Error> {
        let mut dead_letter = self.template.clone();
        dead_letter.stage = reject.code.stage();
        dead_letter.code = reject.code;
        dead_letter.message = reject.message.clone();
        let dead_letter = dead_letter.at(Location {
            entry: reject.entry.clone(),
            index: reject.index,
            field: reject.field.clone(),
        });
        let summary = serde_json::to_vec(&dead_letter.summary(self.file_id, self.facility_id))
            .expect("a summary always serializes");
        let dlq = self.topics.dlq();
        self.outbox
            .dead_letter(&dlq, self.file_id, &dead_letter, &summary);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_code_is_a_dead_letter_code() {
        // The pipeline's codes are the dead-letter codes; each has a stage.
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), *code);
        }
    }
}
