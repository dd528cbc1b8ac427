//! Dead letters of stage `write`: records the table cannot take.
//!
//! The value is the record as consumed, so `medlake replay` can put it back
//! on its records topic once the definition is fixed; the headers say why
//! (column and reason, never a value) and where it came from. Letters are
//! sent, and acknowledged by the broker, *before* the Delta commit that
//! skips their records: a crash in between re-reads the batch and sends
//! them again (at least once, recognisable by `medlake.origin.*`), but a
//! record is never skipped without its letter.

use std::time::Duration;

use medlake_common::dead_letter::{DeadLetter, ErrorCode, Origin};
use medlake_common::metrics::SINK_DEAD_LETTERS;
use medlake_common::raw_file::header::{
    FACILITY_ID as FACILITY_ID_HEADER, FILE_ID as FILE_ID_HEADER,
};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::error::SinkError;
use crate::decode::DecodeReject;

/// How long the broker may take to acknowledge a dead letter.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The dead letter of a record of `table` refused for `reason`.
pub(crate) fn letter(table: &str, message: &OwnedMessage, reject: &DecodeReject) -> DeadLetter {
    let text = match &reject.column {
        Some(column) => format!("table {table}: column '{column}': {}", reject.reason),
        None => format!("table {table}: {}", reject.reason),
    };
    letter_with_text(message, text)
}

/// A dead letter for a message refused for a reason that is not one record's
/// (the table refused the whole batch).
pub(crate) fn letter_with_text(message: &OwnedMessage, text: String) -> DeadLetter {
    let origin = Origin {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let mut letter =
        DeadLetter::new(ErrorCode::WriteFailed, text, origin).with_input_headers(message.headers());
    // Records carry their file in lineage fields rather than headers; the
    // ids (never values) make the letter findable by file.
    let (file_id, facility_id) = lineage(message.payload());
    for (header, value) in [(FILE_ID_HEADER, file_id), (FACILITY_ID_HEADER, facility_id)] {
        if let Some(value) = value
            && letter.input_header(header).is_none()
        {
            letter.set_input_header(header, value);
        }
    }
    letter
}

/// `_file_id` and `_facility_id` of a JSON record, when it parses.
fn lineage(payload: Option<&[u8]>) -> (Option<String>, Option<String>) {
    let Some(value) = payload.and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
    else {
        return (None, None);
    };
    let get = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_string);
    (get("_file_id"), get("_facility_id"))
}

/// Sends `letters` (with the message each is about) to `dlq_topic` and waits
/// until the broker acknowledged every one.
pub(crate) async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    table: &str,
    letters: &[(&OwnedMessage, DeadLetter)],
) -> Result<(), SinkError> {
    let deliveries = letters.iter().map(|(message, letter)| async move {
        let key = letter
            .input_header(FILE_ID_HEADER)
            .map(|k| k.as_bytes().to_vec())
            .or_else(|| message.key().map(<[u8]>::to_vec))
            .unwrap_or_default();
        let mut record = FutureRecord::to(dlq_topic)
            .key(&key)
            .headers(letter.headers());
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map_err(|(source, _)| SinkError::DeadLetter {
                origin_topic: letter.origin.topic.clone(),
                partition: letter.origin.partition,
                offset: letter.origin.offset,
                source,
            })
    });
    for result in futures::future::join_all(deliveries).await {
        result?;
    }
    for (_, letter) in letters {
        SINK_DEAD_LETTERS
            .with_label_values(&[table, letter.code.as_str()])
            .inc();
    }
    if !letters.is_empty() {
        tracing::warn!(
            table,
            dead_letters = letters.len(),
            "Records refused by the table sent to the dead-letter topic."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use medlake_common::dead_letter::{Stage, header};
    use rdkafka::Timestamp;
    use rdkafka::message::Headers;

    use super::*;

    fn record(payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"k".to_vec()),
            "p.records.labs".into(),
            Timestamp::NotAvailable,
            2,
            17,
            None,
        )
    }

    #[test]
    fn a_refused_record_names_the_column_not_the_value() {
        let message = record(br#"{"_file_id": "f1", "_facility_id": "F9", "value": "secret-123"}"#);
        let reject = DecodeReject {
            index: 0,
            column: Some("value".into()),
            reason: "value does not match the column type",
        };
        let letter = letter("labs", &message, &reject);
        assert_eq!(letter.stage, Stage::Write);
        assert_eq!(letter.code, ErrorCode::WriteFailed);
        assert!(letter.message.contains("'value'"));
        assert!(!letter.message.contains("secret"));
        assert_eq!(letter.origin.offset, 17);
        assert_eq!(letter.input_header(FILE_ID_HEADER), Some("f1"));
        assert_eq!(letter.input_header(FACILITY_ID_HEADER), Some("F9"));
        let headers = letter.headers();
        let stage = headers.iter().find(|h| h.key == header::STAGE).unwrap();
        assert_eq!(stage.value, Some(b"write".as_slice()));
        // A whole input: replayable to its origin topic.
        assert!(letter.is_whole_file());
    }

    #[test]
    fn bad_json_still_gets_a_letter() {
        let reject = DecodeReject {
            index: 0,
            column: None,
            reason: "record is not valid JSON",
        };
        let letter = letter("labs", &record(b"{not json"), &reject);
        assert_eq!(letter.input_header(FILE_ID_HEADER), None);
        assert!(letter.message.contains("not valid JSON"));
    }
}
