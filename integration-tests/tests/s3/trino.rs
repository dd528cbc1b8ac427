//! Trino 476 (its Delta Lake connector, the file metastore) reads every table
//! medlake writes, from local disk and from S3, and sees what Spark and
//! medlake see: every data set of `schemas/` (appends; merges with updates,
//! older events and deletes), `_dead_letters`, `_files`, and a table whose
//! definition gained a column; each after OPTIMIZE and vacuum. Values are
//! compared in `scripts/spark_check.py`'s canonical text. Timestamps: Trino's
//! connector types a Delta `timestamp` as `timestamp(3) with time zone`, so
//! its values are microseconds rounded half up to milliseconds; the others'
//! values are rounded the same way before the comparison, and every other
//! value must be equal as it is.
//!
//! The server is started by `scripts/trino-up.sh` on JDK 24+ (Trino's
//! minimum). Without such a JDK (Debian 12 packages none) the scenario says
//! so and stops: the one thing this suite cannot install.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use medlake_common::dataset::{self, Dataset};
use medlake_integration_tests::{free_port, repo_root};
use medlake_sink::delta::{TableSpec, TableWriter, WriterOptions};
use medlake_sink::maintain::{MaintainConfig, maintain_table};
use serde_json::{Value, json};

use crate::Lakes;
use crate::spark::{medlake_rows, normalise_map, python, write_builtins, write_dataset};

/// `scripts/trino-up.sh`'s exit status when no JDK 24+ is installed.
const NO_JAVA: i32 = 3;

/// A data set whose definition gains a nullable column between writes.
const EVOLVING_V1: &str = r#"
name: evolving
match: { entry: ["evolving*.csv"] }
format: { type: csv }
fields:
  - { name: id, type: int64, required: true }
  - { name: ward, type: string }
  - { name: amount, type: "decimal(12,4)" }
  - { name: seen_at, type: timestamp }
table: { mode: append, partition_by: [ward] }
"#;

/// A Trino server of this scenario, stopped when dropped.
struct Trino {
    dir: tempfile::TempDir,
    port: u16,
}

impl Trino {
    fn script(name: &str, dir: &Path, port: u16, s3_endpoint: &str) -> Command {
        let mut command = Command::new(repo_root().join("scripts").join(name));
        command
            .env("MEDLAKE_TRINO_DIR", dir)
            .env("TRINO_PORT", port.to_string())
            .env("TRINO_S3_ENDPOINT", s3_endpoint)
            .env(
                "TRINO_S3_ACCESS_KEY",
                medlake_integration_tests::S3Server::ACCESS_KEY,
            )
            .env(
                "TRINO_S3_SECRET_KEY",
                medlake_integration_tests::S3Server::SECRET_KEY,
            );
        command
    }

    /// Starts it; `None` when Trino cannot run on this machine (no JDK 24+).
    fn start(s3_endpoint: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("Trino directory");
        let port = free_port();
        let started = Instant::now();
        let output = Self::script("trino-up.sh", dir.path(), port, s3_endpoint)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/trino-up.sh");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(NO_JAVA) {
            eprintln!("s3: SKIPPED Trino: {}", stderr.trim());
            return None;
        }
        assert!(
            output.status.success(),
            "scripts/trino-up.sh failed ({}):\n{stderr}",
            output.status
        );
        eprintln!(
            "s3: Trino 476 started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Some(Self { dir, port })
    }

    /// `scripts/trino_check.py` on `locations` of `catalog`: one report per table.
    fn check(&self, catalog: &str, locations: &[String]) -> Vec<Value> {
        let output = Command::new(python())
            .arg(repo_root().join("scripts/trino_check.py"))
            .args(["--server", &format!("http://127.0.0.1:{}", self.port)])
            .args(["--catalog", catalog])
            .args(locations)
            .output()
            .expect("run scripts/trino_check.py");
        assert!(
            output.status.success(),
            "trino_check.py ({catalog}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        reports(&output.stdout)
    }
}

impl Drop for Trino {
    fn drop(&mut self) {
        let _ = Self::script("trino-down.sh", self.dir.path(), self.port, "")
            .arg("--kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn reports(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON report"))
        .collect()
}

/// The `evolving` table: two batches, then the definition gains `unit` and
/// a third batch fills it.
async fn write_evolving(lake: &str) -> usize {
    let v1 = Dataset::from_yaml(EVOLVING_V1, Path::new("evolving.yaml")).unwrap();
    let v2 = Dataset::from_yaml(
        &EVOLVING_V1.replace(
            "  - { name: seen_at, type: timestamp }",
            "  - { name: seen_at, type: timestamp }\n  - { name: unit, type: string }",
        ),
        Path::new("evolving.yaml"),
    )
    .unwrap();
    let mut offset = 0;
    for (dataset, ids) in [(&v1, 0..20), (&v1, 20..40), (&v2, 40..60)] {
        let spec = TableSpec::from_dataset(dataset).unwrap();
        let mut writer = TableWriter::open_or_create(lake, &spec, &WriterOptions::new("trino"))
            .await
            .unwrap();
        let records: Vec<(i64, Value)> = ids
            .map(|i: i64| {
                offset += 1;
                let mut record = json!({
                    "id": i,
                    "ward": format!("w{}", i % 3),
                    "amount": format!("{}.{:04}", i * 7, i * 37 % 10_000),
                    // Microseconds that round both ways to milliseconds.
                    "seen_at": format!("2024-03-01T10:{:02}:{:02}.{:06}Z", i % 60, i % 7, i * 1_499 % 1_000_000),
                    "_file_id": format!("file-{}", i / 20),
                    "_facility_id": "fac-1",
                    "_entry": "evolving.csv",
                    "_record_index": i,
                    "_ingested_at": "2024-03-01T10:00:00.000001Z",
                });
                if spec.schema.field_with_name("unit").is_ok() {
                    record["unit"] = json!(format!("mg/dL-{i}"));
                }
                (offset, record)
            })
            .collect();
        crate::spark::write(&mut writer, &spec, &records).await;
    }
    60
}

/// Rounds canonical microseconds half up to milliseconds, as Trino does.
fn to_millis(micros: &str) -> String {
    let us: i64 = micros.parse().expect("canonical microseconds");
    ((us + 500).div_euclid(1000) * 1000).to_string()
}

/// `rows` with the columns Trino shows in milliseconds rounded, maps
/// normalised, sorted.
fn comparable(
    columns: &[String],
    precision: &[Value],
    mut rows: Vec<Vec<Option<String>>>,
) -> Vec<Vec<Option<String>>> {
    for row in &mut rows {
        for (i, value) in row.iter_mut().enumerate() {
            if precision.get(i).and_then(Value::as_i64) == Some(3) {
                *value = value.as_deref().map(to_millis);
            }
            if columns[i] == "records" {
                *value = value.as_deref().map(normalise_map);
            }
        }
    }
    rows.sort();
    rows
}

pub async fn reads_every_table(lakes: &Lakes) {
    let local_dir = tempfile::tempdir().unwrap();
    let local = local_dir.path().to_str().unwrap().to_string();
    let s3 = lakes.lake("trino");
    let datasets = dataset::load_dir(&repo_root().join("schemas")).unwrap();

    // The same tables on both lakes, then OPTIMIZE and vacuum (no
    // retention, so the replaced files are gone) on every one.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let maintain = MaintainConfig {
        vacuum_retention_hours: 0,
        enforce_retention: false,
        ..MaintainConfig::default()
    };
    for lake in [&local, &s3] {
        let (mut compacted, mut vacuumed) = (0, 0);
        for dataset in &datasets {
            expected.insert(dataset.name.clone(), write_dataset(lake, dataset).await);
        }
        write_builtins(lake).await;
        expected.insert("evolving".into(), write_evolving(lake).await);
        expected.insert("_dead_letters".into(), 4);
        expected.insert("_files".into(), 3);
        for table in expected.keys() {
            let report = maintain_table(lake, table, &maintain)
                .await
                .unwrap()
                .expect("the table exists");
            compacted += report.files_removed;
            vacuumed += report.files_vacuumed;
        }
        // What each table had to give depends on its partitions; the lake as
        // a whole had files to compact and replaced files to delete.
        assert!(vacuumed > 0, "vacuum deleted nothing in {lake}");
        assert!(compacted > 0, "OPTIMIZE compacted nothing in {lake}");
    }

    let Some(trino) = Trino::start(&lakes.server.endpoint) else {
        return;
    };
    let tables: Vec<&String> = expected.keys().collect();
    let local_locations: Vec<String> = tables.iter().map(|t| format!("{local}/{t}")).collect();
    let s3_locations: Vec<String> = tables.iter().map(|t| format!("{s3}/{t}")).collect();
    let started = Instant::now();
    let from_disk = trino.check("local", &local_locations);
    let from_s3 = trino.check("s3", &s3_locations);
    eprintln!(
        "s3: Trino read {} tables from disk and S3 in {:.1} s",
        tables.len(),
        started.elapsed().as_secs_f64()
    );

    // Spark on the local tables.
    let mut command = Command::new(python());
    command.arg(repo_root().join("scripts/spark_check.py"));
    for location in &local_locations {
        command.arg(location).args(["--limit", "100000"]);
    }
    let output = command.output().expect("run spark_check.py");
    assert!(
        output.status.success(),
        "spark_check.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let spark = reports(&output.stdout);
    assert_eq!(spark.len(), tables.len());
    assert_eq!(from_disk.len(), tables.len());
    assert_eq!(from_s3.len(), tables.len());

    let rows_of = |report: &Value| -> Vec<Vec<Option<String>>> {
        serde_json::from_value(report["rows"].clone()).unwrap()
    };
    for (i, table) in tables.iter().enumerate() {
        let rows_expected = expected[*table];
        let (columns, ours) = medlake_rows(&local, table).await;
        let (s3_columns, ours_s3) = medlake_rows(&s3, table).await;
        assert_eq!(ours.len(), rows_expected, "{table}: medlake's count");
        assert_eq!(
            (&s3_columns, &ours_s3),
            (&columns, &ours),
            "{table}: medlake on S3"
        );
        for (reader, report) in [("Trino (disk)", &from_disk[i]), ("Trino (S3)", &from_s3[i])] {
            assert_eq!(
                report["count"], rows_expected as u64,
                "{table}: {reader}'s count"
            );
            let trino_columns: Vec<String> =
                serde_json::from_value(report["columns"].clone()).unwrap();
            assert_eq!(trino_columns, columns, "{table}: {reader}'s columns");
            let precision = report["timestamp_precision"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert_eq!(
                comparable(&columns, &precision, rows_of(report)),
                comparable(&columns, &precision, ours.clone()),
                "{table}: {reader} and medlake read different values"
            );
            assert_eq!(
                comparable(&columns, &precision, rows_of(report)),
                comparable(&columns, &precision, rows_of(&spark[i])),
                "{table}: {reader} and Spark read different values"
            );
        }
        assert_eq!(
            spark[i]["count"], rows_expected as u64,
            "{table}: Spark's count"
        );
    }
    // The evolved table: old rows read null in the new column, everywhere.
    let evolving = tables.iter().position(|t| *t == "evolving").unwrap();
    let unit = columns_of(&from_s3[evolving])
        .iter()
        .position(|c| c == "unit")
        .unwrap();
    let nulls = rows_of(&from_s3[evolving])
        .iter()
        .filter(|r| r[unit].is_none())
        .count();
    assert_eq!(
        nulls, 40,
        "rows written before the column existed read null"
    );
    let types: Vec<String> = serde_json::from_value(from_s3[evolving]["types"].clone()).unwrap();
    let amount = columns_of(&from_s3[evolving])
        .iter()
        .position(|c| c == "amount")
        .unwrap();
    assert_eq!(
        types[amount], "decimal(12, 4)",
        "decimals keep precision and scale"
    );
    let seen_at = columns_of(&from_s3[evolving])
        .iter()
        .position(|c| c == "seen_at")
        .unwrap();
    assert_eq!(
        types[seen_at], "timestamp(3) with time zone",
        "Trino's Delta connector shows a Delta timestamp in milliseconds"
    );
    drop(trino);
}

fn columns_of(report: &Value) -> Vec<String> {
    serde_json::from_value(report["columns"].clone()).unwrap()
}
