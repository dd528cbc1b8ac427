//! The dead-letter message on `medlake.dlq`, shared by every producer of dead
//! letters (the parser, the sink) and every reader (the sink's
//! `_dead_letters` table, `medlake replay`).
//!
//! A dead letter is keyed by the file id and says what went wrong in headers:
//! `medlake.error.stage`, `medlake.error.code` (one of the fixed
//! [`ErrorCode`]s), `medlake.error.message` (never a field *value*: PHI stays
//! out of errors), where the input came from
//! (`medlake.origin.topic/partition/offset`), and the raw-file headers of the
//! input copied unchanged (`medlake.file_id`, `medlake.facility_id`, …), so a
//! dead letter can be replayed to its origin topic as the original message.
//!
//! Three scopes, told apart by the optional location headers:
//! - a whole file (no `medlake.error.entry`): the value is the file's bytes,
//!   or empty with `medlake.payload_ref` pointing into the raw zone when the
//!   file is too big to carry;
//! - an entry of an archive (`medlake.error.entry`, no index): the value is a
//!   JSON [`Summary`];
//! - one record (`medlake.error.entry` + `medlake.error.index`, optionally
//!   `medlake.error.field`): the value is a JSON [`Summary`], never the record.

use std::fmt;
use std::str::FromStr;

use rdkafka::message::{Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};

/// Header names of a dead letter.
pub mod header {
    /// The stage that failed (`decode`, `unzip`, `route`, `parse`, `validate`, `write`).
    pub const STAGE: &str = "medlake.error.stage";
    /// The error code, one of [`super::ErrorCode`].
    pub const CODE: &str = "medlake.error.code";
    /// What went wrong, for people; never a field value.
    pub const MESSAGE: &str = "medlake.error.message";
    /// The entry (name inside the archive) concerned, if not the whole file.
    pub const ENTRY: &str = "medlake.error.entry";
    /// The record's row (CSV/TXT, 1-based data row) or element number (XML) within its entry.
    pub const INDEX: &str = "medlake.error.index";
    /// The field concerned, if one.
    pub const FIELD: &str = "medlake.error.field";
    /// Topic of the input message.
    pub const ORIGIN_TOPIC: &str = "medlake.origin.topic";
    /// Partition of the input message.
    pub const ORIGIN_PARTITION: &str = "medlake.origin.partition";
    /// Offset of the input message.
    pub const ORIGIN_OFFSET: &str = "medlake.origin.offset";

    /// Prefix shared by every header medlake itself sets.
    pub const PREFIX: &str = "medlake.";

    /// Whether `name` is one of the headers this module adds (as opposed to
    /// the input's own headers copied along).
    pub fn is_dead_letter_header(name: &str) -> bool {
        name.starts_with("medlake.error.") || name.starts_with("medlake.origin.")
    }
}

/// Where in the pipeline an input failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the input message itself (headers, payload reference).
    Decode,
    /// Opening the archive: zip, gzip, passwords, limits.
    Unzip,
    /// Finding the data set an entry belongs to.
    Route,
    /// Reading an entry's text into records (CSV, TXT, XML, JSON syntax).
    Parse,
    /// Typing and checking a record's fields.
    Validate,
    /// Writing a record to its table (the sink).
    Write,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Unzip,
        Stage::Route,
        Stage::Parse,
        Stage::Validate,
        Stage::Write,
    ];

    /// The header and metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Unzip => "unzip",
            Stage::Route => "route",
            Stage::Parse => "parse",
            Stage::Validate => "validate",
            Stage::Write => "write",
        }
    }
}

/// Defines [`ErrorCode`] with its stage and string form in one table.
macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal @ $stage:ident, )*) => {
        /// Why an input was dead-lettered: a small fixed set, safe as a metric
        /// label. Each code belongs to one [`Stage`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The header and metric label value (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The stage this code is reported by.
            pub fn stage(self) -> Stage {
                match self { $(ErrorCode::$variant => Stage::$stage,)* }
            }
        }
    };
}

error_codes! {
    /// A header the input must carry is missing or malformed.
    MissingHeader = "missing_header" @ Decode,
    /// The payload reference could not be read from the raw zone.
    PayloadUnavailable = "payload_unavailable" @ Decode,
    /// The payload is not what its file id says (SHA-256 mismatch).
    FileIdMismatch = "file_id_mismatch" @ Decode,
    /// The text is not in the data set's encoding.
    BadEncoding = "bad_encoding" @ Decode,
    /// The archive is encrypted and the facility has no password configured.
    PasswordRequired = "password_required" @ Unzip,
    /// None of the facility's passwords opens the archive.
    WrongPassword = "wrong_password" @ Unzip,
    /// The facility's password secret could not be read.
    PasswordUnavailable = "password_unavailable" @ Unzip,
    /// The archive is damaged or not an archive of the kind it claims.
    CorruptArchive = "corrupt_archive" @ Unzip,
    /// Compression or encryption method not supported.
    UnsupportedArchive = "unsupported_archive" @ Unzip,
    /// More entries than allowed (nested archives count too).
    TooManyEntries = "too_many_entries" @ Unzip,
    /// An entry expands past the per-entry byte limit.
    EntryTooLarge = "entry_too_large" @ Unzip,
    /// The archive expands past the total byte limit.
    ArchiveTooLarge = "archive_too_large" @ Unzip,
    /// An entry expands more than the allowed compression ratio (a zip bomb).
    CompressionRatio = "compression_ratio" @ Unzip,
    /// Archives nested deeper than allowed.
    NestingTooDeep = "nesting_too_deep" @ Unzip,
    /// The archive holds no file (an export that produced nothing).
    EmptyArchive = "empty_archive" @ Unzip,
    /// No data set matches the entry.
    NoDataset = "no_dataset" @ Route,
    /// More than one data set matches the entry.
    AmbiguousDataset = "ambiguous_dataset" @ Route,
    /// The entry is not valid CSV / delimited text.
    MalformedCsv = "malformed_csv" @ Parse,
    /// The entry is not well-formed XML.
    MalformedXml = "malformed_xml" @ Parse,
    /// The entry is not valid JSON / NDJSON.
    MalformedJson = "malformed_json" @ Parse,
    /// XML nested deeper than allowed.
    XmlTooDeep = "xml_too_deep" @ Parse,
    /// The entry holds no record.
    NoRecords = "no_records" @ Parse,
    /// A record is longer than `parser.limits.max_record_bytes` (one CSV line,
    /// one fixed-width line, one JSON document, one XML record element).
    RecordTooLarge = "record_too_large" @ Parse,
    /// A field's value is longer than `parser.limits.max_field_bytes`.
    FieldTooLarge = "field_too_large" @ Parse,
    /// The parser died this many times while the raw message was being
    /// parsed (`parser.max_parse_attempts`); it is set aside, not re-read.
    PoisonFile = "poison_file" @ Parse,
    /// The parser failed on the file (a bug); replay it once fixed.
    InternalError = "internal_error" @ Parse,
    /// A required field has no value.
    MissingRequired = "missing_required" @ Validate,
    /// A value is not an integer (or out of the type's range).
    BadInt = "bad_int" @ Validate,
    /// A value is not a number.
    BadFloat = "bad_float" @ Validate,
    /// A value is not a decimal of the field's precision and scale.
    BadDecimal = "bad_decimal" @ Validate,
    /// A value is not a boolean.
    BadBool = "bad_bool" @ Validate,
    /// A value is not a date in any of the field's formats.
    BadDate = "bad_date" @ Validate,
    /// A value is not a timestamp in any of the field's formats.
    BadTimestamp = "bad_timestamp" @ Validate,
    /// A value is not one of the allowed values.
    NotAllowed = "not_allowed" @ Validate,
    /// A value does not match the field's pattern.
    RegexMismatch = "regex_mismatch" @ Validate,
    /// More records of the entry were rejected than `max_reject_ratio` allows;
    /// the entry's records are all dead, not only the bad ones.
    RejectRatioExceeded = "reject_ratio_exceeded" @ Validate,
    /// A record could not be written to its table (schema mismatch, bad JSON).
    WriteFailed = "write_failed" @ Write,
    /// A message is larger than the broker accepts even as a dead letter.
    MessageTooLarge = "message_too_large" @ Write,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage or code string that is not one of the fixed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// `stage` or `error code`.
    pub what: &'static str,
    /// The string given.
    pub value: String,
}

impl FromStr for Stage {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "stage",
                value: s.to_string(),
            })
    }
}

impl FromStr for ErrorCode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "error code",
                value: s.to_string(),
            })
    }
}

/// Where the failed input was read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Where inside the file a dead letter points, when not at the whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Name of the entry inside the archive (the file name for a plain file).
    pub entry: String,
    /// Row (CSV/TXT) or element (XML) number within the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// The field concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One dead letter's metadata: everything but the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stage: Stage,
    pub code: ErrorCode,
    /// For people; never a field value.
    pub message: String,
    pub origin: Origin,
    /// `None` for a whole file.
    pub location: Option<Location>,
    /// The input's own headers (raw-file headers), copied unchanged.
    pub input_headers: Vec<(String, Vec<u8>)>,
}

/// The JSON value of an entry or record dead letter. A record's values are
/// never in it: the file can be found by id in the raw zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub file_id: String,
    pub facility_id: String,
    pub stage: Stage,
    pub code: ErrorCode,
    pub message: String,
    #[serde(flatten)]
    pub location: Location,
}

/// A message on the DLQ is not a well-formed dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead letter has no {header} header")]
    MissingHeader { header: &'static str },
    #[error("dead letter header {header} is invalid")]
    InvalidHeader { header: &'static str },
}

impl crate::Classify for DeadLetterError {
    fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::BadInput
    }
}

impl DeadLetter {
    /// A dead letter for `code`, at `code`'s stage.
    pub fn new(code: ErrorCode, message: impl Into<String>, origin: Origin) -> Self {
        Self {
            stage: code.stage(),
            code,
            message: message.into(),
            origin,
            location: None,
            input_headers: Vec::new(),
        }
    }

    /// Points the dead letter at an entry, record or field.
    pub fn at(mut self, location: Location) -> Self {
        self.location = Some(location);
        self
    }

    /// Copies the input message's headers (all of them, except dead-letter
    /// headers of an input that was itself a dead letter).
    pub fn with_input_headers<H: Headers>(mut self, headers: Option<&H>) -> Self {
        self.input_headers = headers
            .map(|h| {
                h.iter()
                    .filter(|h| !header::is_dead_letter_header(h.key))
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        self
    }

    /// The value of one of the input's headers as UTF-8.
    pub fn input_header(&self, name: &str) -> Option<&str> {
        self.input_headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Replaces (or adds) one of the input's headers, e.g. `medlake.payload_ref`
    /// when the bytes are not carried inline.
    pub fn set_input_header(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.input_headers.retain(|(k, _)| k != name);
        self.input_headers.push((name.to_string(), value.into()));
    }

    /// The Kafka headers: the input's own, then the dead-letter headers.
    pub fn headers(&self) -> OwnedHeaders {
        let partition = self.origin.partition.to_string();
        let offset = self.origin.offset.to_string();
        let index = self
            .location
            .as_ref()
            .and_then(|l| l.index)
            .map(|i| i.to_string());
        let mut pairs: Vec<(&str, &[u8])> = self
            .input_headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        pairs.extend([
            (header::STAGE, self.stage.as_str().as_bytes()),
            (header::CODE, self.code.as_str().as_bytes()),
            (header::MESSAGE, self.message.as_bytes()),
            (header::ORIGIN_TOPIC, self.origin.topic.as_bytes()),
            (header::ORIGIN_PARTITION, partition.as_bytes()),
            (header::ORIGIN_OFFSET, offset.as_bytes()),
        ]);
        if let Some(location) = &self.location {
            pairs.push((header::ENTRY, location.entry.as_bytes()));
            if let Some(index) = &index {
                pairs.push((header::INDEX, index.as_bytes()));
            }
            if let Some(field) = &location.field {
                pairs.push((header::FIELD, field.as_bytes()));
            }
        }
        crate::kafka::headers(pairs)
    }

    /// The JSON value of an entry or record dead letter.
    pub fn summary(&self, file_id: &str, facility_id: &str) -> Summary {
        Summary {
            file_id: file_id.to_string(),
            facility_id: facility_id.to_string(),
            stage: self.stage,
            code: self.code,
            message: self.message.clone(),
            location: self.location.clone().unwrap_or_default(),
        }
    }

    /// Reads a dead letter back from its headers (the sink's `_dead_letters`
    /// table, `medlake replay`).
    pub fn from_headers<H: Headers>(headers: &H) -> Result<Self, DeadLetterError> {
        let get = |name: &'static str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| {
                    std::str::from_utf8(v)
                        .map_err(|_| DeadLetterError::InvalidHeader { header: name })
                })
                .transpose()
        };
        let need =
            |name: &'static str| get(name)?.ok_or(DeadLetterError::MissingHeader { header: name });
        let parse = |name: &'static str| -> Result<_, DeadLetterError> {
            let invalid = DeadLetterError::InvalidHeader { header: name };
            need(name)?.parse::<i64>().map_err(|_| invalid)
        };
        let stage = need(header::STAGE)?
            .parse()
            .map_err(|_| DeadLetterError::InvalidHeader {
                header: header::STAGE,
            })?;
        let code = need(header::CODE)?
            .parse()
            .map_err(|_| DeadLetterError::InvalidHeader {
                header: header::CODE,
            })?;
        let partition = i32::try_from(parse(header::ORIGIN_PARTITION)?).map_err(|_| {
            DeadLetterError::InvalidHeader {
                header: header::ORIGIN_PARTITION,
            }
        })?;
        let origin = Origin {
            topic: need(header::ORIGIN_TOPIC)?.to_string(),
            partition,
            offset: parse(header::ORIGIN_OFFSET)?,
        };
        let location = match get(header::ENTRY)? {
            None => None,
            Some(entry) => Some(Location {
                entry: entry.to_string(),
                index: get(header::INDEX)?
                    .map(|i| i.parse::<u64>())
                    .transpose()
                    .map_err(|_| DeadLetterError::InvalidHeader {
                        header: header::INDEX,
                    })?,
                field: get(header::FIELD)?.map(str::to_string),
            }),
        };
        Ok(Self {
            stage,
            code,
            message: get(header::MESSAGE)?.unwrap_or_default().to_string(),
            origin,
            location,
            input_headers: Vec::new(),
        }
        .with_input_headers(Some(headers)))
    }

    /// Whether the value is the whole input (replayable to the origin topic),
    /// as opposed to a summary of one entry or record.
    pub fn is_whole_file(&self) -> bool {
        self.location.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            topic: "medlake.raw.files".into(),
            partition: 2,
            offset: 41,
        }
    }

    fn raw_headers() -> OwnedHeaders {
        crate::kafka::headers([
            ("medlake.file_id", b"abc".as_slice()),
            ("medlake.facility_id", b"F1".as_slice()),
            ("medlake.error.code", b"stale".as_slice()),
        ])
    }

    #[test]
    fn names_round_trip_and_codes_know_their_stage() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>().unwrap(), stage);
        }
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), *code);
            assert_eq!(
                serde_json::to_string(code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        assert_eq!(ErrorCode::WrongPassword.stage(), Stage::Unzip);
        assert_eq!(ErrorCode::NoDataset.stage(), Stage::Route);
        assert_eq!(ErrorCode::RejectRatioExceeded.stage(), Stage::Validate);
        assert!("nope".parse::<ErrorCode>().is_err());
    }

    #[test]
    fn whole_file_headers_round_trip() {
        let dl = DeadLetter::new(
            ErrorCode::CompressionRatio,
            "entry a.csv expands 1000x",
            origin(),
        )
        .with_input_headers(Some(&raw_headers()));
        assert!(dl.is_whole_file());
        let headers = dl.headers();
        let back = DeadLetter::from_headers(&headers).unwrap();
        assert_eq!(back, dl);
        assert_eq!(back.input_header("medlake.file_id"), Some("abc"));
        // The stale error header of the input was not copied.
        assert_eq!(headers.iter().filter(|h| h.key == header::CODE).count(), 1);
    }

    #[test]
    fn record_dead_letter_points_at_field_and_summarises() {
        let dl = DeadLetter::new(ErrorCode::BadDate, "not a date", origin())
            .at(Location {
                entry: "dir/adt_1.csv".into(),
                index: Some(7),
                field: Some("event_time".into()),
            })
            .with_input_headers(Some(&raw_headers()));
        let back = DeadLetter::from_headers(&dl.headers()).unwrap();
        assert_eq!(back, dl);
        let json = serde_json::to_value(dl.summary("abc", "F1")).unwrap();
        assert_eq!(json["code"], "bad_date");
        assert_eq!(json["stage"], "validate");
        assert_eq!(json["entry"], "dir/adt_1.csv");
        assert_eq!(json["index"], 7);
        assert_eq!(json["field"], "event_time");
    }

    #[test]
    fn malformed_headers_are_reported() {
        let missing = crate::kafka::headers([(header::STAGE, b"unzip".as_slice())]);
        assert_eq!(
            DeadLetter::from_headers(&missing),
            Err(DeadLetterError::MissingHeader {
                header: header::CODE
            })
        );
        let mut dl = DeadLetter::new(ErrorCode::MalformedCsv, "x", origin());
        dl.set_input_header("medlake.payload_ref", "_raw/F1/abc");
        dl.set_input_header("medlake.payload_ref", "_raw/F1/abd");
        assert_eq!(dl.input_header("medlake.payload_ref"), Some("_raw/F1/abd"));
        let bad = crate::kafka::headers([
            (header::STAGE, b"unzip".as_slice()),
            (header::CODE, b"corrupt_archive".as_slice()),
            (header::ORIGIN_TOPIC, b"t".as_slice()),
            (header::ORIGIN_PARTITION, b"x".as_slice()),
            (header::ORIGIN_OFFSET, b"1".as_slice()),
        ]);
        assert_eq!(
            DeadLetter::from_headers(&bad),
            Err(DeadLetterError::InvalidHeader {
                header: header::ORIGIN_PARTITION
            })
        );
    }
}
