//! The raw-file contract (DESIGN.md, "Topics"): what a message on
//! `<prefix>.raw.files` says about the file it carries. Connectors build
//! these headers, the parser reads them, dead letters copy them and the sink
//! turns them into columns; all of them take the names, the [`Source`]
//! values and the file id from here.
//!
//! The key design choice: a file is named by its content. Its id is the
//! lower-case hex SHA-256 of its bytes ([`sha256_hex`]), so every path that
//! delivers a file twice delivers it under the same id (the parser's ledger
//! records the repeat as a duplicate), and a payload can be checked against
//! the id it travels with ([`is_id_of`]). A file is hashed once, where it
//! is received ([`file_id`]); everything downstream passes the id along.
//!
//! This module depends on nothing of medlake but the Kafka header helpers,
//! so the registry, the endpoints and the ingest path can all use it.

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Names of the raw-file message headers.
pub mod header {
    /// Hex SHA-256 of the file's bytes.
    pub const FILE_ID: &str = "medlake.file_id";
    /// The facility the file came from (also the message key).
    pub const FACILITY_ID: &str = "medlake.facility_id";
    /// How it arrived: `ftp`, `ftp_pull`, `http` or `http_pull`.
    pub const SOURCE: &str = "medlake.source";
    /// The file's name at its source.
    pub const FILE_NAME: &str = "medlake.file_name";
    /// When medlake received it, RFC 3339 UTC.
    pub const RECEIVED_AT: &str = "medlake.received_at";
    /// Raw zone path of the bytes when the payload is not inline.
    pub const PAYLOAD_REF: &str = "medlake.payload_ref";
}

/// How a file arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Pushed by a facility to the company's landing FTP server.
    Ftp,
    /// Pulled from a customer's own FTP server.
    FtpPull,
    /// Pushed by a facility to the HTTP API.
    Http,
    /// Pulled from a customer's HTTP API.
    HttpPull,
}

impl Source {
    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ftp => "ftp",
            Source::FtpPull => "ftp_pull",
            Source::Http => "http",
            Source::HttpPull => "http_pull",
        }
    }

    /// Parses a header value.
    pub fn parse(value: &str) -> Option<Self> {
        [Source::Ftp, Source::FtpPull, Source::Http, Source::HttpPull]
            .into_iter()
            .find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The raw-file headers of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeaders {
    pub file_id: String,
    pub facility_id: String,
    pub source: Source,
    pub file_name: String,
    pub received_at: DateTime<Utc>,
    /// Set when the bytes are in the raw zone only.
    pub payload_ref: Option<String>,
}

impl RawHeaders {
    /// Name/value pairs, in the order of DESIGN.md.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (header::FILE_ID, self.file_id.clone()),
            (header::FACILITY_ID, self.facility_id.clone()),
            (header::SOURCE, self.source.as_str().to_string()),
            (header::FILE_NAME, self.file_name.clone()),
            (
                header::RECEIVED_AT,
                self.received_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ];
        if let Some(r) = &self.payload_ref {
            pairs.push((header::PAYLOAD_REF, r.clone()));
        }
        pairs
    }

    /// The Kafka headers.
    pub fn to_kafka(&self) -> rdkafka::message::OwnedHeaders {
        let pairs = self.pairs();
        crate::kafka::headers(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))
    }

    /// Reads the headers of a raw-file message; `Err` names the first
    /// missing or malformed one.
    pub fn from_message<M: rdkafka::Message>(message: &M) -> Result<Self, &'static str> {
        use crate::kafka::header_str;
        let get = |name: &'static str| header_str(message, name).ok_or(name);
        let source = Source::parse(get(header::SOURCE)?).ok_or(header::SOURCE)?;
        let received_at = DateTime::parse_from_rfc3339(get(header::RECEIVED_AT)?)
            .map_err(|_| header::RECEIVED_AT)?
            .with_timezone(&Utc);
        Ok(Self {
            file_id: get(header::FILE_ID)?.to_string(),
            facility_id: get(header::FACILITY_ID)?.to_string(),
            source,
            file_name: get(header::FILE_NAME)?.to_string(),
            received_at,
            payload_ref: header_str(message, header::PAYLOAD_REF).map(str::to_string),
        })
    }
}

/// Lower-case hex SHA-256 of `bytes`: a file's id when `bytes` are the
/// file's (also the digest of an API key, and the hash replicas shard by).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The digest a hex SHA-256 (a file id, an `api_key_sha256`) stands for:
/// `Some` only for exactly 64 hex digits, in either case.
pub fn sha256_from_hex(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

/// Whether `file_id` is the id of `bytes` (hex digits in either case).
pub fn is_id_of(file_id: &str, bytes: &[u8]) -> bool {
    sha256_from_hex(file_id) == Some(sha256(bytes))
}

/// Files up to this size are hashed on the calling task (well under a
/// millisecond); larger ones on the blocking thread pool, so a 40 MB upload
/// holds up no other task of the runtime.
pub const HASH_ON_TASK_MAX_BYTES: usize = 256 * 1024;

/// The file id of `bytes`, hashed off the async runtime when they are large.
pub async fn file_id(bytes: &Bytes) -> String {
    if bytes.len() <= HASH_ON_TASK_MAX_BYTES {
        return sha256_hex(bytes);
    }
    let shared = bytes.clone();
    tokio::task::spawn_blocking(move || sha256_hex(&shared))
        .await
        // The blocking pool is gone only while the runtime shuts down.
        .unwrap_or_else(|_| sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rdkafka::Message;
    use rdkafka::message::{Headers, OwnedMessage, Timestamp};

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 7, 23, 59, 1).unwrap()
    }

    #[test]
    fn headers_round_trip_through_a_message() {
        let h = RawHeaders {
            file_id: sha256_hex(b"x"),
            facility_id: "F1".into(),
            source: Source::FtpPull,
            file_name: "a b.zip".into(),
            received_at: at(),
            payload_ref: Some("_raw/F1/2024/03/07/id".into()),
        };
        let names: Vec<_> = h.pairs().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "medlake.file_id",
                "medlake.facility_id",
                "medlake.source",
                "medlake.file_name",
                "medlake.received_at",
                "medlake.payload_ref"
            ]
        );
        let received = h
            .pairs()
            .into_iter()
            .find(|(k, _)| *k == header::RECEIVED_AT)
            .unwrap()
            .1;
        assert_eq!(received, "2024-03-07T23:59:01.000Z");
        let message = OwnedMessage::new(
            None,
            Some(b"F1".to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(h.to_kafka()),
        );
        assert_eq!(message.headers().unwrap().count(), 6);
        assert_eq!(RawHeaders::from_message(&message).unwrap(), h);

        let inline = RawHeaders {
            payload_ref: None,
            ..h
        };
        assert_eq!(inline.pairs().len(), 5);
        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, None);
        assert_eq!(RawHeaders::from_message(&bare).unwrap_err(), header::SOURCE);
    }

    #[test]
    fn source_names_match_the_design() {
        for (s, name) in [
            (Source::Ftp, "ftp"),
            (Source::FtpPull, "ftp_pull"),
            (Source::Http, "http"),
            (Source::HttpPull, "http_pull"),
        ] {
            assert_eq!(s.as_str(), name);
            assert_eq!(Source::parse(name), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
        }
        assert_eq!(Source::parse("smtp"), None);
    }

    #[test]
    fn file_ids_are_64_hex_digits_of_the_bytes() {
        let id = sha256_hex(b"abc");
        assert_eq!(
            id,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_from_hex(&id), Some(sha256(b"abc")));
        assert!(is_id_of(&id, b"abc"));
        assert!(is_id_of(&id.to_uppercase(), b"abc"));
        assert!(!is_id_of(&id, b"abd"));
        for bad in [
            "",
            "abc",
            &id[..62],
            &format!("{id}00"),
            &id.replace('b', "g"),
        ] {
            assert_eq!(sha256_from_hex(bad), None, "{bad}");
            assert!(!is_id_of(bad, b"abc"), "{bad}");
        }
    }

    #[tokio::test]
    async fn large_files_hash_to_the_same_id_off_the_runtime() {
        let small = Bytes::from_static(b"small");
        assert_eq!(file_id(&small).await, sha256_hex(&small));
        let large = Bytes::from(vec![7u8; HASH_ON_TASK_MAX_BYTES + 1]);
        assert_eq!(file_id(&large).await, sha256_hex(&large));
    }
}
