//! `medlake replay`: re-publishes dead-lettered files to the topic they came
//! from, once the cause is fixed (a password deployed, a data set added, a
//! parser bug fixed).
//!
//! Only whole-file dead letters are replayed: their value is the file (or
//! empty with a `medlake.payload_ref` into the raw zone) and their headers
//! hold the original raw-file headers, so the replayed message is the
//! original one. A file whose first delivery was rejected is not in the
//! ledger as settled, so the parser processes it again instead of calling it
//! a duplicate. Entry and record dead letters describe part of a file whose
//! other records were written; they are counted and left alone.
//!
//! The DLQ is read from the beginning to its current end on every run and
//! nothing is committed: running replay twice publishes twice, and the
//! second copy of a file that now parses is recorded as a duplicate.

use std::time::Duration;

use medlake_common::dead_letter::{DeadLetter, ErrorCode};
use medlake_common::raw_file::header::FACILITY_ID;
use medlake_common::topic_reader::TopicReader;
use medlake_common::{Context, kafka};
use rdkafka::Message;
use rdkafka::producer::FutureRecord;

use super::error::ParserError;

/// Which dead letters to replay; empty means any.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only these error codes.
    pub codes: Vec<ErrorCode>,
    /// Only files of this facility.
    pub facility_id: Option<String>,
    /// Only this file.
    pub file_id: Option<String>,
}

impl ReplayFilter {
    fn accepts(&self, dead_letter: &DeadLetter, file_id: Option<&str>) -> bool {
        (self.codes.is_empty() || self.codes.contains(&dead_letter.code))
            && self
                .facility_id
                .as_deref()
                .is_none_or(|f| dead_letter.input_header(FACILITY_ID) == Some(f))
            && self.file_id.as_deref().is_none_or(|f| file_id == Some(f))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Whole-file dead letters re-published (or, on a dry run, that would be).
    pub replayed: u64,
    /// Dead letters of one entry or record, not replayable as such.
    pub partial: u64,
    /// Dead letters the filter left out, or not readable as dead letters.
    pub skipped: u64,
}

/// Reads `<prefix>.dlq` to its end and re-publishes every whole-file dead
/// letter accepted by `filter` to its origin topic (unless `dry_run`).
pub async fn replay(
    ctx: &Context,
    filter: &ReplayFilter,
    dry_run: bool,
    timeout: Duration,
) -> Result<ReplayReport, ParserError> {
    let dlq = ctx.topics.dlq();
    let reader = TopicReader::open(&ctx.kafka, "medlake-replay", &dlq)?;
    let producer = kafka::producer(&ctx.kafka).map_err(|source| ParserError::Publish {
        topic: dlq.clone(),
        source,
    })?;
    let mut report = ReplayReport::default();
    let mut pending = Vec::new();
    reader
        .read_to_end(timeout, |message| {
            let Some(dead_letter) = message
                .headers()
                .and_then(|h| DeadLetter::from_headers(h).ok())
            else {
                report.skipped += 1;
                return;
            };
            let file_id = message.key().and_then(|k| std::str::from_utf8(k).ok());
            if !filter.accepts(&dead_letter, file_id) {
                report.skipped += 1;
            } else if !dead_letter.is_whole_file() {
                report.partial += 1;
            } else {
                report.replayed += 1;
                pending.push((dead_letter, message.payload().unwrap_or_default().to_vec()));
            }
        })
        .await?;
    if dry_run {
        return Ok(report);
    }
    for (dead_letter, payload) in pending {
        let topic = dead_letter.origin.topic.clone();
        let key = dead_letter.input_header(FACILITY_ID).unwrap_or_default();
        let headers = kafka::headers(
            dead_letter
                .input_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice())),
        );
        let record = FutureRecord::to(&topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(source, _)| ParserError::Publish {
                topic: topic.clone(),
                source,
            })?;
        tracing::info!(
            topic,
            facility_id = key,
            error_code = dead_letter.code.as_str(),
            "Dead letter replayed."
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use medlake_common::dead_letter::{Location, Origin};

    fn letter(code: ErrorCode, facility: &str) -> DeadLetter {
        let origin = Origin {
            topic: "raw".into(),
            partition: 0,
            offset: 1,
        };
        let mut dl = DeadLetter::new(code, "m", origin);
        dl.set_input_header(FACILITY_ID, facility);
        dl
    }

    #[test]
    fn filter_by_code_facility_and_file() {
        let any = ReplayFilter::default();
        let dl = letter(ErrorCode::WrongPassword, "F1");
        assert!(any.accepts(&dl, Some("id")));
        let codes = ReplayFilter {
            codes: vec![ErrorCode::PasswordUnavailable],
            ..Default::default()
        };
        assert!(!codes.accepts(&dl, Some("id")));
        let facility = ReplayFilter {
            facility_id: Some("F2".into()),
            ..Default::default()
        };
        assert!(!facility.accepts(&dl, Some("id")));
        let file = ReplayFilter {
            file_id: Some("id".into()),
            ..Default::default()
        };
        assert!(file.accepts(&dl, Some("id")));
        assert!(!file.accepts(&dl, Some("other")));
        let record = dl.at(Location::default());
        assert!(!record.is_whole_file());
    }
}
