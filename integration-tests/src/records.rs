//! Records and data sets of the sink tests: what the parser would publish
//! to a records topic, with its lineage columns.

use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};

use crate::kafka_config;

/// An append data set.
pub const EVENTS: &str = r#"
name: events
match: { entry: ["events*.csv"] }
format: { type: csv }
fields:
  - { name: event_id, type: int64, required: true }
  - { name: note, type: string }
table: { mode: append }
"#;

/// A merge data set: the latest `seq` per account wins.
pub const ACCOUNTS: &str = r#"
name: accounts
match: { entry: ["accounts*.csv"] }
format: { type: csv }
fields:
  - { name: account_id, type: int64, required: true }
  - { name: seq, type: int64, required: true }
  - { name: balance, type: int64 }
table: { mode: merge, primary_key: [account_id], sequence_by: seq }
"#;

/// Adds the lineage columns the parser sets on every record.
pub fn lineage(record: &mut Value, index: i64) {
    let obj = record.as_object_mut().unwrap();
    obj.insert("_file_id".into(), json!("f-1"));
    obj.insert("_facility_id".into(), json!("F1"));
    obj.insert("_entry".into(), json!("entry.csv"));
    obj.insert("_record_index".into(), json!(index));
    obj.insert("_ingested_at".into(), json!("2024-03-01T10:00:00.000001Z"));
}

/// `events` records `range` (key, value), keyed over seven keys.
pub fn events(range: std::ops::Range<i64>) -> Vec<(String, Value)> {
    range
        .map(|i| {
            let mut v = json!({"event_id": i, "note": format!("n{i}")});
            lineage(&mut v, i);
            (format!("f-{}", i % 7), v)
        })
        .collect()
}

/// Produces `records` (key, JSON value) to `topic`, to `partition` or by key,
/// and waits for every ack.
pub async fn send(topic: &str, partition: Option<i32>, records: &[(String, Value)]) {
    let producer = medlake_common::kafka::producer(&kafka_config()).unwrap();
    let payloads: Vec<(String, String)> = records
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let sends = payloads.iter().map(|(key, payload)| {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let record = match partition {
            Some(partition) => record.partition(partition),
            None => record,
        };
        producer.send(record, Duration::from_secs(30))
    });
    for result in futures::future::join_all(sends).await {
        result.map_err(|(e, _)| e).expect("produce");
    }
}

/// An int64 column of every batch, in order.
pub fn int64s(rows: &[RecordBatch], column: &str) -> Vec<i64> {
    rows.iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column");
            c.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}
