//! JSON records → Arrow, with arrow-json's [`Decoder`] against the table's
//! schema: no per-field code, so a new data set needs no new code here.
//!
//! One Kafka message holds one JSON object. The fast path feeds every
//! message of a batch into one decoder and checks that each produced exactly
//! one row. When anything fails (bad JSON, a value of the wrong type, a
//! missing required field, an unknown key in strict mode), the batch is
//! decoded again one record at a time so only the bad records are refused;
//! each refusal names the column when the decoder says which one, and never
//! carries the value (arrow's own messages quote values, so they are not
//! passed on).

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_json::ReaderBuilder;
use arrow_json::reader::Decoder;

/// A record the decoder refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeReject {
    /// Position of the record in the input.
    pub index: usize,
    /// The column at fault, when known.
    pub column: Option<String>,
    /// What is wrong, without any value.
    pub reason: &'static str,
}

/// Decoded rows and refused records of one batch.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// One row per accepted record.
    pub records: RecordBatch,
    /// `rows[i]` is the input position of row `i`.
    pub rows: Vec<usize>,
    /// Refused records.
    pub rejects: Vec<DecodeReject>,
}

/// Decoding could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// arrow-json cannot decode this schema.
    #[error("the schema of {table} cannot be decoded from JSON: {source}")]
    UnsupportedSchema {
        /// Table (data set) name.
        table: String,
        /// Underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
    /// Putting the accepted rows together failed.
    #[error("assembling the rows of {table} failed: {source}")]
    Assemble {
        /// Table (data set) name.
        table: String,
        /// Underlying error.
        #[source]
        source: arrow::error::ArrowError,
    },
}

impl medlake_common::Classify for DecodeError {
    fn kind(&self) -> medlake_common::ErrorKind {
        medlake_common::ErrorKind::Fatal
    }
}

/// Decodes the JSON records of one table.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    table: String,
    schema: SchemaRef,
    strict: bool,
}

impl RecordDecoder {
    /// A decoder for `schema`. In `strict` mode a key the schema does not
    /// know refuses the record (a definition the sink has not loaded yet must
    /// not lose a column silently); otherwise such keys are ignored.
    pub fn new(
        table: impl Into<String>,
        schema: SchemaRef,
        strict: bool,
    ) -> Result<Self, DecodeError> {
        let decoder = Self {
            table: table.into(),
            schema,
            strict,
        };
        decoder.decoder(1)?;
        Ok(decoder)
    }

    /// The schema rows are decoded into.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn decoder(&self, batch_size: usize) -> Result<Decoder, DecodeError> {
        ReaderBuilder::new(self.schema.clone())
            .with_batch_size(batch_size.max(1))
            .with_strict_mode(self.strict)
            .build_decoder()
            .map_err(|source| DecodeError::UnsupportedSchema {
                table: self.table.clone(),
                source,
            })
    }

    /// Decodes `records`, one JSON object each.
    pub fn decode<B: AsRef<[u8]>>(&self, records: &[B]) -> Result<Decoded, DecodeError> {
        if let Some(records) = self.decode_all(records)? {
            return Ok(Decoded {
                rows: (0..records.num_rows()).collect(),
                records,
                rejects: Vec::new(),
            });
        }
        let mut batches = Vec::new();
        let mut rows = Vec::new();
        let mut rejects = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match self.decode_one(record.as_ref())? {
                Ok(batch) => {
                    batches.push(batch);
                    rows.push(index);
                }
                Err((column, reason)) => rejects.push(DecodeReject {
                    index,
                    column,
                    reason,
                }),
            }
        }
        let records = arrow::compute::concat_batches(&self.schema, &batches).map_err(|source| {
            DecodeError::Assemble {
                table: self.table.clone(),
                source,
            }
        })?;
        Ok(Decoded {
            records,
            rows,
            rejects,
        })
    }

    /// The fast path: every record in one decoder; `None` when any record
    /// is bad.
    fn decode_all<B: AsRef<[u8]>>(
        &self,
        records: &[B],
    ) -> Result<Option<RecordBatch>, DecodeError> {
        let mut decoder = self.decoder(records.len())?;
        for (i, record) in records.iter().enumerate() {
            if !feed(&mut decoder, record.as_ref()) || decoder.len() != i + 1 {
                return Ok(None);
            }
        }
        match decoder.flush() {
            Ok(Some(batch)) if batch.num_rows() == records.len() => Ok(Some(batch)),
            Ok(None) if records.is_empty() => Ok(Some(RecordBatch::new_empty(self.schema.clone()))),
            _ => Ok(None),
        }
    }

    /// One record on its own: its row, or the column and reason it fails.
    #[allow(clippy::type_complexity)]
    fn decode_one(
        &self,
        record: &[u8],
    ) -> Result<Result<RecordBatch, (Option<String>, &'static str)>, DecodeError> {
        let mut decoder = self.decoder(2)?;
        let not_an_object = Err((None, "record is not one JSON object"));
        if let Err(err) = decoder.decode(record) {
            return Ok(Err(describe(&err.to_string())));
        }
        if decoder.has_partial_record() || decoder.len() != 1 {
            return Ok(not_an_object);
        }
        Ok(match decoder.flush() {
            Ok(Some(batch)) if batch.num_rows() == 1 => Ok(batch),
            Ok(_) => not_an_object,
            Err(err) => Err(describe(&err.to_string())),
        })
    }
}

/// Feeds one whole record; false when it was not consumed as one value.
fn feed(decoder: &mut Decoder, record: &[u8]) -> bool {
    match decoder.decode(record) {
        Ok(read) => read == record.len() && !decoder.has_partial_record(),
        Err(_) => false,
    }
}

/// The column and a value-free reason from an arrow-json message.
fn describe(message: &str) -> (Option<String>, &'static str) {
    let quoted_after = |marker: &str, quote: char| {
        message.find(marker).and_then(|start| {
            let rest = &message[start + marker.len()..];
            rest.find(quote).map(|end| rest[..end].to_string())
        })
    };
    if let Some(column) = quoted_after("whilst decoding field '", '\'') {
        if message.contains("missing from schema") {
            let unknown = quoted_after("column '", '\'').unwrap_or(column);
            return (Some(unknown), "key is not a column of the data set");
        }
        return (Some(column), "value does not match the column type");
    }
    if message.contains("missing from schema") {
        return (
            quoted_after("column '", '\''),
            "key is not a column of the data set",
        );
    }
    if message.contains("non-nullable") {
        return (
            quoted_after("Field { \"", '"').or_else(|| quoted_after("field \"", '"')),
            "required column is missing or null",
        );
    }
    (None, "record is not valid JSON")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Date32Type, Field, Int64Type, Schema, TimeUnit};

    use super::*;

    fn decoder() -> RecordDecoder {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("born", DataType::Date32, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]);
        RecordDecoder::new("t", Arc::new(schema), true).unwrap()
    }

    #[test]
    fn typed_values_decode() {
        let rec = br#"{"id": 7, "name": "x", "amount": "12.34", "born": "2001-02-03", "at": "2024-01-02T03:04:05.123456Z"}"#;
        let out = decoder().decode(&[rec.as_slice()]).unwrap();
        assert!(out.rejects.is_empty());
        assert_eq!(out.records.num_rows(), 1);
        assert_eq!(
            out.records.column(0).as_primitive::<Int64Type>().value(0),
            7
        );
        let born = out.records.column(3).as_primitive::<Date32Type>().value(0);
        assert_eq!(born, 11356);
        assert_eq!(
            out.records
                .column(4)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(0),
            1_704_164_645_123_456
        );
    }

    #[test]
    fn bad_records_are_refused_one_by_one_without_values() {
        let records: Vec<&[u8]> = vec![
            br#"{"id": 1}"#,
            br#"{"id": "secret-value"}"#,
            br#"{"name": "no id"}"#,
            br#"not json"#,
            br#"{"id": 5, "extra": 1}"#,
            br#"{"id": 6}{"id": 7}"#,
            br#"{"id": 8, "name": null}"#,
        ];
        let out = decoder().decode(&records).unwrap();
        assert_eq!(out.rows, vec![0, 6]);
        assert_eq!(out.records.num_rows(), 2);
        let by_index: Vec<_> = out
            .rejects
            .iter()
            .map(|r| (r.index, r.column.as_deref()))
            .collect();
        assert_eq!(
            by_index,
            vec![
                (1, Some("id")),
                (2, Some("id")),
                (3, None),
                (4, Some("extra")),
                (5, None)
            ]
        );
        for reject in &out.rejects {
            assert!(!reject.reason.contains("secret"));
        }
        assert!(out.records.column(1).is_null(1));
    }

    #[test]
    fn lenient_mode_ignores_unknown_keys() {
        let lenient = RecordDecoder::new("t", decoder().schema().clone(), false).unwrap();
        let out = lenient.decode(&[br#"{"id": 5, "extra": 1}"#]).unwrap();
        assert!(out.rejects.is_empty());
    }

    #[test]
    fn an_empty_batch_is_empty() {
        let out = decoder().decode::<&[u8]>(&[]).unwrap();
        assert_eq!(out.records.num_rows(), 0);
    }
}
