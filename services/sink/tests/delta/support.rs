//! Shared helpers: data set definitions, JSON batches, reading tables back.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use medlake_common::dataset::Dataset;
use medlake_sink::decode::RecordDecoder;
use medlake_sink::delta::{RowOrigin, SinkBatch, TableSpec, TableWriter, WriterOptions, read};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const TOPIC: &str = "medlake.records.test";
pub const GROUP: &str = "sink-test";

/// A merge data set: visits by `visit_id`, ordered by `seq`.
pub const VISITS: &str = r#"
name: visits
match: { entry: ["visits*.csv"] }
format: { type: csv }
fields:
  - { name: visit_id, type: int64, required: true }
  - { name: seq, type: int64, required: true }
  - { name: ward, type: string }
  - { name: amount, type: "decimal(10,2)" }
  - { name: admitted_on, type: date }
  - { name: seen_at, type: timestamp }
table: { mode: merge, primary_key: [visit_id], sequence_by: seq }
"#;

/// An append data set partitioned by `ward`.
pub const LABS: &str = r#"
name: labs
match: { entry: ["labs*.csv"] }
format: { type: csv }
fields:
  - { name: lab_id, type: int64, required: true }
  - { name: ward, type: string }
  - { name: value, type: float64 }
table: { mode: append, partition_by: [ward] }
"#;

pub fn dataset(yaml: &str) -> Dataset {
    Dataset::from_yaml(yaml, Path::new("test.yaml")).unwrap_or_else(|p| panic!("{p:?}"))
}

pub fn spec(yaml: &str) -> TableSpec {
    TableSpec::from_dataset(&dataset(yaml)).unwrap()
}

pub fn lake() -> TempDir {
    tempfile::tempdir().unwrap()
}

pub fn uri(lake: &TempDir) -> &str {
    lake.path().to_str().unwrap()
}

pub async fn writer(lake: &TempDir, spec: &TableSpec) -> TableWriter {
    TableWriter::open_or_create(uri(lake), spec, &WriterOptions::new(GROUP))
        .await
        .unwrap()
}

/// Adds the lineage fields every record carries.
pub fn with_lineage(mut record: Value, index: i64) -> Value {
    let obj = record.as_object_mut().unwrap();
    obj.insert("_file_id".into(), json!("f-1"));
    obj.insert("_facility_id".into(), json!("fac-1"));
    obj.insert("_entry".into(), json!("entry.csv"));
    obj.insert("_record_index".into(), json!(index));
    obj.insert("_ingested_at".into(), json!("2024-03-01T10:00:00.000001Z"));
    record
}

/// A batch decoded from JSON records with their (partition, offset).
pub fn batch(spec: &TableSpec, rows: &[(i32, i64, Value)]) -> SinkBatch {
    let decoder = RecordDecoder::new(&spec.name, spec.schema.clone(), true).unwrap();
    let bytes: Vec<Vec<u8>> = rows
        .iter()
        .enumerate()
        .map(|(i, (_, _, v))| serde_json::to_vec(&with_lineage(v.clone(), i as i64)).unwrap())
        .collect();
    let decoded = decoder.decode(&bytes).unwrap();
    assert!(decoded.rejects.is_empty(), "{:?}", decoded.rejects);
    let origins = rows
        .iter()
        .map(|(partition, offset, _)| RowOrigin {
            partition: *partition,
            offset: *offset,
        })
        .collect();
    SinkBatch::new(TOPIC, decoded.records, origins)
}

/// Upsert event of the visits data set.
pub fn visit(id: i64, seq: i64, ward: &str) -> Value {
    json!({"visit_id": id, "seq": seq, "ward": ward, "amount": "12.50",
           "admitted_on": "2024-02-29", "seen_at": "2024-03-01T08:30:00.123456Z", "_op": "upsert"})
}

/// Delete event of the visits data set.
pub fn visit_delete(id: i64, seq: i64) -> Value {
    json!({"visit_id": id, "seq": seq, "_op": "delete"})
}

pub fn lab(id: i64, ward: &str) -> Value {
    json!({"lab_id": id, "ward": ward, "value": 1.5})
}

/// All rows of a table, concatenated and sorted by the Int64 column `key`.
pub async fn rows(lake: &TempDir, table: &str, key: &str) -> RecordBatch {
    let batches = read::read_all(uri(lake), table).await.unwrap();
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let keys = all.column_by_name(key).unwrap();
    let order = arrow::compute::sort_to_indices(keys, None, None).unwrap();
    arrow::compute::take_record_batch(&all, &order).unwrap()
}

pub fn int64s(batch: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    let col = batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>();
    (0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i)))
        .collect()
}

pub fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let col = arrow::compute::cast(
        batch.column_by_name(column).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    let col = col.as_string::<i32>();
    (0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i).to_string()))
        .collect()
}
