//! Turning one raw-file message into what the transaction must do: parse the
//! file, record a duplicate, or dead-letter the whole message.

use bytes::Bytes;
use medlake_common::dead_letter::{DeadLetter, ErrorCode, Origin};
use medlake_common::ingest::{IngestError, RawZone};
use medlake_common::ledger::{FileStatus, LedgerEntry, timestamp};
use medlake_common::raw_file::{RawHeaders, is_id_of, sha256_hex};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use super::error::ParserError;
use super::known::KnownFiles;

/// What to do with one input message.
pub enum Plan {
    /// Parse the file.
    Parse { headers: RawHeaders, bytes: Bytes },
    /// The file id is settled already: a `duplicate` ledger entry only.
    Duplicate { headers: RawHeaders, bytes: u64 },
    /// The message cannot be parsed at all: one dead letter with the bytes.
    Reject {
        entry: Box<LedgerEntry>,
        dead_letter: Box<DeadLetter>,
        bytes: Bytes,
    },
}

/// The origin of a message.
pub fn origin(message: &OwnedMessage) -> Origin {
    Origin {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// A ledger entry for a file with these headers, before it is settled.
pub fn ledger_entry(headers: &RawHeaders, bytes: u64) -> LedgerEntry {
    LedgerEntry {
        file_id: headers.file_id.clone(),
        facility_id: headers.facility_id.clone(),
        file_name: headers.file_name.clone(),
        source: headers.source.as_str().to_string(),
        received_at: timestamp(headers.received_at),
        processed_at: String::new(),
        status: FileStatus::Processed,
        bytes,
        entries: 0,
        records: Default::default(),
        rejects: Default::default(),
    }
}

/// Decides what to do with `message`, reading its payload from the raw zone
/// when it is passed by reference.
/// `message` is the input without its payload; `inline` is the payload.
pub async fn plan(
    message: &OwnedMessage,
    inline: Bytes,
    known: &KnownFiles,
    raw: &RawZone,
) -> Result<Plan, ParserError> {
    let origin = origin(message);
    let headers = match RawHeaders::from_message(message) {
        Ok(headers) => headers,
        Err(header) => {
            // Without its headers the file can only be kept, keyed by its hash.
            let file_id = sha256_hex(&inline);
            let facility_id = message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .unwrap_or_default()
                .to_string();
            let dead_letter = DeadLetter::new(
                ErrorCode::MissingHeader,
                format!("header {header} is missing or malformed"),
                origin,
            )
            .with_input_headers(message.headers());
            let entry = LedgerEntry {
                file_id,
                facility_id,
                file_name: String::new(),
                source: String::new(),
                received_at: String::new(),
                processed_at: String::new(),
                status: FileStatus::Rejected,
                bytes: inline.len() as u64,
                entries: 0,
                records: Default::default(),
                rejects: Default::default(),
            };
            return Ok(Plan::Reject {
                entry: Box::new(entry),
                dead_letter: Box::new(dead_letter),
                bytes: inline,
            });
        }
    };
    if known.contains(&headers.file_id) {
        let bytes = inline.len() as u64;
        return Ok(Plan::Duplicate { headers, bytes });
    }
    let reject = |headers: &RawHeaders, code, message_text: String, bytes: Bytes| {
        let mut entry = ledger_entry(headers, bytes.len() as u64);
        entry.status = FileStatus::Rejected;
        Plan::Reject {
            entry: Box::new(entry),
            dead_letter: Box::new(
                DeadLetter::new(code, message_text, origin.clone())
                    .with_input_headers(message.headers()),
            ),
            bytes,
        }
    };
    let bytes = match &headers.payload_ref {
        None => inline,
        Some(path) => match raw.get(path).await {
            Ok(bytes) => bytes,
            Err(error) if is_not_found(&error) => {
                let text = format!("payload {path} is not in the raw zone");
                return Ok(reject(
                    &headers,
                    ErrorCode::PayloadUnavailable,
                    text,
                    Bytes::new(),
                ));
            }
            Err(source) => {
                return Err(ParserError::RawZone {
                    path: path.clone(),
                    source: Box::new(source),
                });
            }
        },
    };
    if !is_id_of(&headers.file_id, &bytes) {
        let text = "the payload's SHA-256 differs from its file id".to_string();
        return Ok(reject(&headers, ErrorCode::FileIdMismatch, text, bytes));
    }
    Ok(Plan::Parse { headers, bytes })
}

/// Whether a raw zone read failed because the object does not exist (a
/// permanent condition, unlike a storage outage).
fn is_not_found(error: &IngestError) -> bool {
    matches!(
        error,
        IngestError::RawRead { source, .. } if matches!(**source, object_store::Error::NotFound { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use medlake_common::raw_file::Source;
    use rdkafka::message::Timestamp;

    fn message(headers: Option<&RawHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            None,
            Some(b"F1".to_vec()),
            "raw".into(),
            Timestamp::NotAvailable,
            1,
            9,
            headers.map(RawHeaders::to_kafka),
        )
    }

    fn headers(bytes: &[u8], payload_ref: Option<&str>) -> RawHeaders {
        RawHeaders {
            file_id: sha256_hex(bytes),
            facility_id: "F1".into(),
            source: Source::Http,
            file_name: "a.csv".into(),
            received_at: Utc::now(),
            payload_ref: payload_ref.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn plans_parse_duplicate_and_rejects() {
        let lake = tempfile::tempdir().unwrap();
        let raw = RawZone::open(lake.path().to_str().unwrap()).unwrap();
        let known = KnownFiles::new(1);

        let h = headers(b"a,b\n", None);
        let planned = super::plan(
            &message(Some(&h)),
            Bytes::from_static(b"a,b\n"),
            &known,
            &raw,
        )
        .await
        .unwrap();
        assert!(matches!(planned, Plan::Parse { bytes, .. } if bytes.as_ref() == b"a,b\n"));

        known.insert(&h.file_id);
        let planned = super::plan(
            &message(Some(&h)),
            Bytes::from_static(b"a,b\n"),
            &known,
            &raw,
        )
        .await
        .unwrap();
        assert!(matches!(planned, Plan::Duplicate { .. }));

        let Plan::Reject {
            dead_letter, entry, ..
        } = super::plan(&message(None), Bytes::from_static(b"x"), &known, &raw)
            .await
            .unwrap()
        else {
            panic!("no headers must be rejected")
        };
        assert_eq!(dead_letter.code, ErrorCode::MissingHeader);
        assert_eq!(entry.facility_id, "F1");
        assert_eq!(entry.file_id, sha256_hex(b"x"));

        let wrong = headers(b"other", None);
        let Plan::Reject { dead_letter, .. } = super::plan(
            &message(Some(&wrong)),
            Bytes::from_static(b"x"),
            &known,
            &raw,
        )
        .await
        .unwrap() else {
            panic!("a wrong file id must be rejected")
        };
        assert_eq!(dead_letter.code, ErrorCode::FileIdMismatch);
    }

    #[tokio::test]
    async fn payload_refs_are_read_from_the_raw_zone() {
        let lake = tempfile::tempdir().unwrap();
        let raw = RawZone::open(lake.path().to_str().unwrap()).unwrap();
        let known = KnownFiles::new(1);
        raw.put("_raw/F1/x", Bytes::from_static(b"big"))
            .await
            .unwrap();
        let h = headers(b"big", Some("_raw/F1/x"));
        let planned = super::plan(&message(Some(&h)), Bytes::from_static(b""), &known, &raw)
            .await
            .unwrap();
        assert!(matches!(planned, Plan::Parse { bytes, .. } if bytes.as_ref() == b"big"));

        let gone = headers(b"big", Some("_raw/F1/gone"));
        let Plan::Reject { dead_letter, .. } =
            super::plan(&message(Some(&gone)), Bytes::from_static(b""), &known, &raw)
                .await
                .unwrap()
        else {
            panic!("a missing payload must be rejected")
        };
        assert_eq!(dead_letter.code, ErrorCode::PayloadUnavailable);
    }
}
