//! Spark interoperability: pyspark with delta-spark reads every table medlake
//! writes (every data set of `schemas/`, append and merge, plus the built-in
//! `_dead_letters` and `_files`) and sees the same rows as medlake's own read,
//! and the table history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Field};
use medlake_common::dataset::{Dataset, Table};
use medlake_sink::decode::RecordDecoder;
use medlake_sink::delta::builtin::{
    DeadLetterMessage, dead_letter_rows, dead_letters_spec, files_spec,
};
use medlake_sink::delta::{RowOrigin, SinkBatch, TableSpec, TableWriter, WriterOptions, read};
use serde_json::{Map, Value, json};

const ROWS: i64 = 60;

/// The project's Python with pyspark and delta-spark (`make spark-deps`).
pub(crate) fn python() -> PathBuf {
    let path = std::env::var("MEDLAKE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/medlake/venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} does not exist: run `make spark-deps` (or set MEDLAKE_PYTHON)",
        path.display()
    );
    path
}

/// A deterministic value of `field` for row `i`. Keys are unique per `key`,
/// partition columns take a few values.
fn value(field: &Field, i: i64, key: i64, partition: bool, version: i64) -> Value {
    let name = field.name();
    match field.data_type() {
        DataType::Utf8 if partition => json!(format!("fac-{}", i % 3)),
        DataType::Utf8 => json!(format!("{name}-{key}-v{version}")),
        DataType::Int32 => json!(i * 10 + version),
        DataType::Int64 => json!(i * 1000 + version),
        DataType::Float64 => json!(i as f64 * 0.25 + version as f64),
        DataType::Boolean => json!((i + version) % 2 == 0),
        DataType::Decimal128(p, s) => {
            let whole = (i * 7 + version) % 10_i64.pow((*p as i8 - *s).clamp(1, 6) as u32);
            json!(format!("{whole}.{}", "3".repeat(*s as usize)))
        }
        DataType::Date32 => json!(format!(
            "2024-{:02}-{:02}",
            1 + i % 12,
            1 + (i + version) % 28
        )),
        DataType::Timestamp(_, _) => json!(format!(
            "2024-03-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            1 + i % 28,
            i % 24,
            version % 60,
            i % 60,
            i * 37 % 1_000_000
        )),
        other => panic!("no generator for {other}"),
    }
}

/// One record of `dataset`.
fn record(dataset: &Dataset, spec: &TableSpec, i: i64, version: i64, op: &str) -> Value {
    let (keys, sequence_by) = match &dataset.table {
        Table::Merge {
            primary_key,
            sequence_by,
            ..
        } => (primary_key.clone(), Some(sequence_by.clone())),
        Table::Append { .. } => (vec![], None),
    };
    let mut obj = Map::new();
    for field in spec.schema.fields() {
        let name = field.name().as_str();
        let partition = spec.partition_by.iter().any(|p| p == name);
        let v = match name {
            "_file_id" => json!(format!("file-{version}")),
            "_facility_id" => json!("fac-1"),
            "_entry" => json!("entry.csv"),
            "_record_index" => json!(i),
            "_ingested_at" => json!("2024-03-01T10:00:00.000001Z"),
            "_op" => json!(op),
            _ if Some(name) == sequence_by.as_deref() => match field.data_type() {
                DataType::Timestamp(_, _) => {
                    json!(format!("2024-03-01T10:{:02}:00Z", version.rem_euclid(60)))
                }
                _ => json!(version),
            },
            // Key columns stay equal across versions so updates hit.
            _ if keys.iter().any(|k| k == name) => value(field, i, i, partition, 0),
            _ if op == "delete" && field.is_nullable() => Value::Null,
            _ => value(field, i, i, partition, version),
        };
        obj.insert(name.to_string(), v);
    }
    Value::Object(obj)
}

/// Writes one batch of JSON records through the decoder and the writer.
pub(crate) async fn write(writer: &mut TableWriter, spec: &TableSpec, records: &[(i64, Value)]) {
    let decoder = RecordDecoder::new(&spec.name, spec.schema.clone(), true).unwrap();
    let bytes: Vec<Vec<u8>> = records
        .iter()
        .map(|(_, v)| serde_json::to_vec(v).unwrap())
        .collect();
    let decoded = decoder.decode(&bytes).unwrap();
    assert!(
        decoded.rejects.is_empty(),
        "{}: {:?}",
        spec.name,
        decoded.rejects
    );
    let origins = records
        .iter()
        .map(|(offset, _)| RowOrigin {
            partition: 0,
            offset: *offset,
        })
        .collect();
    let outcome = writer
        .write(SinkBatch::new("spark-check", decoded.records, origins))
        .await
        .unwrap();
    assert!(outcome.committed && outcome.rejects.is_empty());
}

/// Writes the data set's table: appends in three batches; merges with
/// inserts, updates, older events and deletes.
pub(crate) async fn write_dataset(lake: &str, dataset: &Dataset) -> usize {
    let spec = TableSpec::from_dataset(dataset).unwrap();
    let mut writer = TableWriter::open_or_create(lake, &spec, &WriterOptions::new("spark"))
        .await
        .unwrap();
    let mut offset = 0;
    let mut next = || {
        offset += 1;
        offset
    };
    if dataset.table.is_merge() {
        let inserts: Vec<_> = (0..ROWS)
            .map(|i| (next(), record(dataset, &spec, i, 1, "upsert")))
            .collect();
        write(&mut writer, &spec, &inserts).await;
        let mut changes = Vec::new();
        for i in 0..ROWS {
            if i % 3 == 0 {
                changes.push((next(), record(dataset, &spec, i, 5, "upsert")));
            }
            if i % 7 == 0 {
                changes.push((next(), record(dataset, &spec, i, 0, "upsert")));
            }
        }
        write(&mut writer, &spec, &changes).await;
        let deletes: Vec<_> = (0..ROWS)
            .filter(|i| i % 5 == 1)
            .map(|i| (next(), record(dataset, &spec, i, 9, "delete")))
            .collect();
        write(&mut writer, &spec, &deletes).await;
        (ROWS - (0..ROWS).filter(|i| i % 5 == 1).count() as i64) as usize
    } else {
        for chunk in 0..3 {
            let rows: Vec<_> = (chunk * ROWS / 3..(chunk + 1) * ROWS / 3)
                .map(|i| (next(), record(dataset, &spec, i, 1, "upsert")))
                .collect();
            write(&mut writer, &spec, &rows).await;
        }
        ROWS as usize
    }
}

/// Built-in tables: a few dead letters and ledger entries.
pub(crate) async fn write_builtins(lake: &str) {
    let spec = dead_letters_spec();
    let mut writer = TableWriter::open_or_create(lake, &spec, &WriterOptions::new("spark"))
        .await
        .unwrap();
    let headers: Vec<(&str, &[u8])> = vec![
        ("medlake.error.stage", b"parse"),
        ("medlake.error.code", b"bad_row"),
        ("medlake.received_at", b"2024-05-06T07:08:09.5Z"),
        ("medlake.origin.offset", b"12"),
    ];
    let messages: Vec<_> = (0..4)
        .map(|offset| DeadLetterMessage {
            headers: &headers,
            payload: Some(b"x;y;z"),
            timestamp_ms: Some(1_700_000_000_000 + offset),
            partition: 0,
            offset,
        })
        .collect();
    let rows = dead_letter_rows(&messages, 1024).unwrap();
    let origins = messages
        .iter()
        .map(|m| RowOrigin {
            partition: 0,
            offset: m.offset,
        })
        .collect();
    writer
        .write(SinkBatch::new("dlq", rows, origins))
        .await
        .unwrap();

    let spec = files_spec();
    let mut writer = TableWriter::open_or_create(lake, &spec, &WriterOptions::new("spark"))
        .await
        .unwrap();
    let decoder = RecordDecoder::new(&spec.name, spec.schema.clone(), false).unwrap();
    let entries: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            serde_json::to_vec(&json!({"file_id": format!("f{i}"), "status": "parsed",
                "received_at": "2024-05-06T07:08:09Z", "records": {"labs": i}, "rejects": {}}))
            .unwrap()
        })
        .collect();
    let decoded = decoder.decode(&entries).unwrap();
    let origins = (0..3)
        .map(|offset| RowOrigin {
            partition: 0,
            offset,
        })
        .collect();
    writer
        .write(SinkBatch::new("files", decoded.records, origins))
        .await
        .unwrap();
}

/// medlake's own read of a table in the canonical text form of
/// `scripts/spark_check.py`, rows sorted.
pub(crate) async fn medlake_rows(
    lake: &str,
    table: &str,
) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let batches = read::read_all(lake, table).await.unwrap();
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let texts: Vec<Vec<Option<String>>> = all
        .columns()
        .iter()
        .map(|c| canonical(c.as_ref()))
        .collect();
    let mut rows: Vec<Vec<Option<String>>> = (0..all.num_rows())
        .map(|r| texts.iter().map(|c| c[r].clone()).collect())
        .collect();
    rows.sort();
    (columns, rows)
}

fn canonical(array: &dyn Array) -> Vec<Option<String>> {
    let as_text = |a: &dyn Array| {
        let text = arrow::compute::cast(a, &DataType::Utf8).unwrap();
        let text = text.as_string::<i32>().clone();
        (0..text.len())
            .map(|i| text.is_valid(i).then(|| text.value(i).to_string()))
            .collect()
    };
    match array.data_type() {
        DataType::Timestamp(_, _) => as_text(
            arrow::compute::cast(array, &DataType::Int64)
                .unwrap()
                .as_ref(),
        ),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bytes = arrow::compute::cast(array, &DataType::Binary).unwrap();
            let b = bytes.as_binary::<i32>();
            (0..b.len())
                .map(|i| {
                    b.is_valid(i)
                        .then(|| b.value(i).iter().map(|x| format!("{x:02x}")).collect())
                })
                .collect()
        }
        DataType::Map(_, _) => {
            let m = array.as_map();
            (0..m.len())
                .map(|i| {
                    m.is_valid(i).then(|| {
                        let entries = m.value(i);
                        let keys = canonical(entries.column(0).as_ref());
                        let values = canonical(entries.column(1).as_ref());
                        let obj: BTreeMap<String, Option<String>> =
                            keys.into_iter().map(Option::unwrap).zip(values).collect();
                        serde_json::to_string(&obj).unwrap()
                    })
                })
                .collect()
        }
        _ => as_text(array),
    }
}

/// Normalises a JSON map string the way Python's `json.dumps(sort_keys=True)` does.
pub(crate) fn normalise_map(text: &str) -> String {
    let v: BTreeMap<String, Option<String>> = serde_json::from_str(text).unwrap();
    serde_json::to_string(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_reads_every_table_medlake_writes() {
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = lake_dir.path().to_str().unwrap();
    let datasets =
        medlake_common::dataset::load_dir(&medlake_integration_tests::repo_root().join("schemas"))
            .unwrap();
    assert!(
        datasets.iter().any(|d| d.table.is_merge()) && datasets.iter().any(|d| !d.table.is_merge())
    );
    let mut expected = BTreeMap::new();
    for dataset in &datasets {
        expected.insert(dataset.name.clone(), write_dataset(lake, dataset).await);
    }
    write_builtins(lake).await;
    expected.insert("_dead_letters".to_string(), 4);
    expected.insert("_files".to_string(), 3);

    let mut command = Command::new(python());
    command.arg(medlake_integration_tests::repo_root().join("scripts/spark_check.py"));
    for table in expected.keys() {
        command
            .arg(lake_dir.path().join(table))
            .arg("--limit")
            .arg("100000");
    }
    let output = command.output().expect("run spark_check.py");
    assert!(
        output.status.success(),
        "spark_check.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let reports: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), expected.len(), "{stdout}");

    for (report, (table, rows_expected)) in reports.iter().zip(&expected) {
        assert!(report["path"].as_str().unwrap().ends_with(table.as_str()));
        let (columns, mut ours) = medlake_rows(lake, table).await;
        assert_eq!(ours.len(), *rows_expected, "{table}: medlake's own count");
        assert_eq!(
            report["count"], *rows_expected as u64,
            "{table}: Spark's count"
        );
        let spark_columns: Vec<String> = serde_json::from_value(report["columns"].clone()).unwrap();
        assert_eq!(spark_columns, columns, "{table}: columns");
        let mut theirs: Vec<Vec<Option<String>>> =
            serde_json::from_value(report["rows"].clone()).unwrap();
        if let Some(i) = columns.iter().position(|c| c == "records") {
            for row in ours.iter_mut().chain(theirs.iter_mut()) {
                row[i] = row[i].as_deref().map(normalise_map);
            }
        }
        theirs.sort();
        ours.sort();
        assert_eq!(
            theirs, ours,
            "{table}: Spark and medlake read different rows"
        );
        // Create + one commit per batch.
        let commits = if table.starts_with('_') { 2 } else { 4 };
        assert_eq!(report["history_length"], commits, "{table}: history");
    }
}
