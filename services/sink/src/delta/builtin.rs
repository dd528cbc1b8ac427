//! The two built-in tables: `<lake>/_dead_letters` (the `medlake.dlq` topic)
//! and `<lake>/_files` (the `medlake.files` ledger). Both are append tables
//! written by the same [`TableWriter`](super::TableWriter) as any data set.
//!
//! `_dead_letters`, one row per dead letter, built from the message headers
//! of DESIGN.md (every header column is nullable except stage and code):
//!
//! | column | type | from |
//! |---|---|---|
//! | `error_stage` | string | `medlake.error.stage` |
//! | `error_code` | string | `medlake.error.code` |
//! | `error_message` | string | `medlake.error.message` |
//! | `origin_topic`, `origin_partition`, `origin_offset` | string, int, long | `medlake.origin.*` |
//! | `file_id`, `facility_id`, `source`, `file_name` | string | raw-file headers |
//! | `received_at` | timestamp | `medlake.received_at` (RFC 3339) |
//! | `payload_ref` | string | `medlake.payload_ref` |
//! | `payload_size_bytes` | long | size of the message value |
//! | `payload` | binary | the value itself when at most `max_payload_bytes`, else null (the file stays in the raw zone and on the topic) |
//! | `dead_lettered_at` | timestamp | Kafka message timestamp |
//! | `dlq_partition`, `dlq_offset` | int, long | position on the dead-letter topic |
//!
//! `_files`, one row per ledger entry as the parser publishes it (JSON,
//! decoded leniently: keys the table does not know are ignored, so the
//! ledger may grow). An append table: a file delivered twice has two
//! entries, the later one with `status = duplicate`; readers wanting the
//! current state per file take the latest `processed_at` per `file_id`.
//!
//! | column | type |
//! |---|---|
//! | `file_id` | string, required |
//! | `facility_id`, `file_name`, `source` | string |
//! | `received_at`, `processed_at` | timestamp |
//! | `status` | string, required (`parsed`, `partial`, `rejected`, `duplicate`) |
//! | `records` | map string → long: rows per data set |
//! | `rejects` | long: records dead-lettered |
//! | `error_code` | string: why a whole file was rejected |
//! | `duplicate_of` | string: the earlier delivery (raw topic position) |

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use medlake_common::dead_letter::header as error_header;
use medlake_common::raw_file::header as raw_header;

use super::error::DeltaError;
use super::spec::{TableMode, TableSpec};

/// Table of the dead-letter topic.
pub const DEAD_LETTERS_TABLE: &str = "_dead_letters";
/// Table of the file ledger topic.
pub const FILES_TABLE: &str = "_files";

/// Columns of `_dead_letters` filled from headers, with their header names.
const HEADER_COLUMNS: [(&str, &str); 11] = [
    ("error_stage", error_header::STAGE),
    ("error_code", error_header::CODE),
    ("error_message", error_header::MESSAGE),
    ("origin_topic", error_header::ORIGIN_TOPIC),
    ("file_id", raw_header::FILE_ID),
    ("facility_id", raw_header::FACILITY_ID),
    ("source", raw_header::SOURCE),
    ("file_name", raw_header::FILE_NAME),
    ("payload_ref", raw_header::PAYLOAD_REF),
    ("origin_partition", error_header::ORIGIN_PARTITION),
    ("origin_offset", error_header::ORIGIN_OFFSET),
];

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of `_dead_letters`.
pub fn dead_letters_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("error_stage", false),
        text("error_code", false),
        text("error_message", true),
        text("origin_topic", true),
        Field::new("origin_partition", DataType::Int32, true),
        Field::new("origin_offset", DataType::Int64, true),
        text("file_id", true),
        text("facility_id", true),
        text("source", true),
        text("file_name", true),
        Field::new("received_at", timestamp(), true),
        text("payload_ref", true),
        Field::new("payload_size_bytes", DataType::Int64, false),
        Field::new("payload", DataType::Binary, true),
        Field::new("dead_lettered_at", timestamp(), true),
        Field::new("dlq_partition", DataType::Int32, false),
        Field::new("dlq_offset", DataType::Int64, false),
    ]))
}

/// Spec of `_dead_letters`.
pub fn dead_letters_spec() -> TableSpec {
    TableSpec::new(
        DEAD_LETTERS_TABLE,
        dead_letters_schema(),
        TableMode::Append,
        vec![],
    )
    .expect("the built-in dead-letter spec is valid")
}

/// Schema of `_files`.
pub fn files_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    // Counts by name: records by data set, rejects by error code.
    let counts = || {
        let entries = Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Int64, true),
            ])),
            false,
        );
        DataType::Map(Arc::new(entries), false)
    };
    Arc::new(Schema::new(vec![
        text("file_id", false),
        text("facility_id", true),
        text("file_name", true),
        text("source", true),
        Field::new("received_at", timestamp(), true),
        Field::new("processed_at", timestamp(), true),
        text("status", false),
        Field::new("bytes", DataType::Int64, true),
        Field::new("entries", DataType::Int64, true),
        Field::new("records", counts(), true),
        Field::new("rejects", counts(), true),
    ]))
}

/// Spec of `_files`.
pub fn files_spec() -> TableSpec {
    TableSpec::new(FILES_TABLE, files_schema(), TableMode::Append, vec![])
        .expect("the built-in ledger spec is valid")
}

/// One message of the dead-letter topic, as the consumer sees it.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterMessage<'a> {
    /// Message headers (name, value); missing values are skipped.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Message value.
    pub payload: Option<&'a [u8]>,
    /// Kafka timestamp in milliseconds since the epoch, if any.
    pub timestamp_ms: Option<i64>,
    /// Partition on the dead-letter topic.
    pub partition: i32,
    /// Offset on the dead-letter topic.
    pub offset: i64,
}

/// Rows of `_dead_letters` for `messages`. Payloads above
/// `max_payload_bytes` are not copied (their size is).
pub fn dead_letter_rows(
    messages: &[DeadLetterMessage<'_>],
    max_payload_bytes: usize,
) -> Result<RecordBatch, DeltaError> {
    let header = |m: &DeadLetterMessage<'_>, name: &str| {
        m.headers
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_string)
    };
    let text_column = |name: &str, default: Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for m in messages {
            b.append_option(header(m, name).or(default.map(str::to_string)));
        }
        Arc::new(b.finish())
    };
    let parsed = |name: &str, to: &DataType| -> Result<ArrayRef, DeltaError> {
        let raw: StringArray = messages.iter().map(|m| header(m, name)).collect();
        cast(&raw, to)
            .map_err(|e| DeltaError::arrow(DEAD_LETTERS_TABLE, "read dead-letter headers", e))
    };
    let column = |name: &str| -> Result<ArrayRef, DeltaError> {
        let (_, header_name) = HEADER_COLUMNS
            .iter()
            .find(|(c, _)| *c == name)
            .expect("known header column");
        Ok(match name {
            "error_stage" | "error_code" => text_column(header_name, Some("unknown")),
            "origin_partition" => parsed(header_name, &DataType::Int32)?,
            "origin_offset" => parsed(header_name, &DataType::Int64)?,
            _ => text_column(header_name, None),
        })
    };
    let mut size = Int64Builder::new();
    let mut payload = BinaryBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut partition = Int32Builder::new();
    let mut offset = Int64Builder::new();
    for m in messages {
        let bytes = m.payload.unwrap_or_default();
        size.append_value(bytes.len() as i64);
        payload.append_option(
            (m.payload.is_some() && bytes.len() <= max_payload_bytes).then_some(bytes),
        );
        at.append_option(m.timestamp_ms.map(|ms| ms * 1000));
        partition.append_value(m.partition);
        offset.append_value(m.offset);
    }
    let schema = dead_letters_schema();
    let columns: Vec<ArrayRef> = vec![
        column("error_stage")?,
        column("error_code")?,
        column("error_message")?,
        column("origin_topic")?,
        column("origin_partition")?,
        column("origin_offset")?,
        column("file_id")?,
        column("facility_id")?,
        column("source")?,
        column("file_name")?,
        parsed(raw_header::RECEIVED_AT, &timestamp())?,
        column("payload_ref")?,
        Arc::new(size.finish()),
        Arc::new(payload.finish()),
        Arc::new(at.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| DeltaError::arrow(DEAD_LETTERS_TABLE, "build dead-letter rows", e))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};

    use super::*;

    #[test]
    fn headers_become_columns() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("medlake.error.stage", b"parse"),
            ("medlake.error.code", b"bad_csv"),
            ("medlake.origin.partition", b"3"),
            ("medlake.origin.offset", b"42"),
            ("medlake.received_at", b"2024-05-06T07:08:09Z"),
            ("medlake.file_id", b"abc"),
        ];
        let messages = [
            DeadLetterMessage {
                headers: &headers,
                payload: Some(b"0123456789"),
                timestamp_ms: Some(1_000),
                partition: 1,
                offset: 9,
            },
            DeadLetterMessage {
                headers: &[],
                payload: Some(b"x"),
                timestamp_ms: None,
                partition: 0,
                offset: 1,
            },
        ];
        let rows = dead_letter_rows(&messages, 4).unwrap();
        assert_eq!(rows.num_rows(), 2);
        let col = |n: &str| rows.column_by_name(n).unwrap().clone();
        assert_eq!(col("error_stage").as_string::<i32>().value(0), "parse");
        assert_eq!(col("error_stage").as_string::<i32>().value(1), "unknown");
        assert_eq!(
            col("origin_partition").as_primitive::<Int32Type>().value(0),
            3
        );
        assert_eq!(
            col("origin_offset").as_primitive::<Int64Type>().value(0),
            42
        );
        assert_eq!(
            col("received_at")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_714_979_289_000_000
        );
        assert!(col("payload").is_null(0), "over the inline limit");
        assert_eq!(col("payload").as_binary::<i32>().value(1), b"x");
        assert_eq!(
            col("payload_size_bytes")
                .as_primitive::<Int64Type>()
                .value(0),
            10
        );
        assert_eq!(col("dlq_offset").as_primitive::<Int64Type>().value(1), 1);
    }

    #[test]
    fn ledger_entries_decode_with_the_generic_decoder() {
        let decoder =
            crate::decode::RecordDecoder::new(FILES_TABLE, files_schema(), false).unwrap();
        // What the parser really writes: a serialized ledger entry.
        let entry: medlake_common::ledger::LedgerEntry = serde_json::from_value(serde_json::json!({
            "file_id": "f1", "facility_id": "F1", "file_name": "labs.zip", "source": "ftp",
            "received_at": "2024-01-01T00:00:00Z", "processed_at": "2024-01-01T00:00:01.000001Z",
            "status": "partial", "bytes": 2048, "entries": 3,
            "records": {"labs": 10, "adt": 2}, "rejects": {"bad_date": 1, "missing_required": 2}
        }))
        .unwrap();
        let entry = serde_json::to_vec(&entry).unwrap();
        let out = decoder.decode(&[entry.as_slice()]).unwrap();
        assert!(out.rejects.is_empty(), "{:?}", out.rejects);
        let records = out.records.column_by_name("records").unwrap().as_map();
        assert_eq!(records.value(0).len(), 2);
        let rejects = out.records.column_by_name("rejects").unwrap().as_map();
        assert_eq!(rejects.value(0).len(), 2);
    }

    #[test]
    fn built_in_specs_are_valid() {
        assert_eq!(dead_letters_spec().name, DEAD_LETTERS_TABLE);
        assert_eq!(files_spec().name, FILES_TABLE);
    }
}
