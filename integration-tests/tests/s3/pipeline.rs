//! The whole pipeline with the lake on S3: the raw zone, every data set
//! table, `_dead_letters` and `_files` under `s3://…`, reconciled with the
//! manifest exactly as the on-disk end-to-end test does; then
//! `medlake tables summary`, `medlake replay` and `medlake maintain` against
//! the same lake.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use medlake_datagen::FileEntry;
use medlake_integration_tests::brokers;
use medlake_sink::delta::builtin::FILES_TABLE;
use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use serde_json::Value;

use crate::Lakes;
use crate::e2e::{Pipeline, SERVICES, assert_lake_matches, rows, tuples};

/// The same slice of files as the on-disk end-to-end test
/// (`e2e::every_file_ends_as_rows_or_a_dead_letter`), so their times compare.
const FILES: usize = 24;
const BAD: usize = 4;
const SEED: u64 = 7;

pub async fn reconciles(lakes: &Lakes) {
    let lake = lakes.lake("pipeline");
    // Every payload goes by reference through the raw zone (no file is
    // inline), so the parser reads each file back from S3.
    let env = ["FTP_CONNECTOR", "API_CONNECTOR"]
        .map(|s| {
            (
                format!("MEDLAKE_{s}__INGEST__INLINE_LIMIT_BYTES"),
                "0".into(),
            )
        })
        .to_vec();
    let mut pipeline = Pipeline::with_lake(brokers(), Some(lake.clone()), env);
    for service in SERVICES {
        pipeline.start(service).await;
    }
    let manifest = pipeline.generate(FILES, BAD, SEED);
    let files: Vec<&FileEntry> = manifest.files.iter().collect();
    let started = Instant::now();
    pipeline.deliver(&files).await;
    pipeline
        .wait_reconciled(&manifest, false, Duration::from_secs(240))
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_lake_matches(&lake, &manifest, false).await;
    let records: u64 = manifest.totals.records.values().sum();
    eprintln!(
        "s3: {} files, {records} records delivered and reconciled on S3 in {elapsed:.1} s \
         ({:.2} files/s, {:.0} records/s)",
        manifest.files.len(),
        manifest.files.len() as f64 / elapsed,
        records as f64 / elapsed
    );

    // The raw zone: one object per distinct file, under the lake's prefix.
    let prefix = lake.trim_start_matches("s3://").split_once('/').unwrap().1;
    let store = lakes.store();
    let raw: Vec<_> = store
        .list(Some(&StorePath::from(format!("{prefix}/_raw"))))
        .try_collect()
        .await
        .expect("list the raw zone");
    let distinct: std::collections::BTreeSet<&str> =
        manifest.files.iter().map(|f| f.sha256.as_str()).collect();
    assert_eq!(raw.len(), distinct.len(), "one raw object per file");

    // `tables summary` reconciles against the manifest from the lake alone.
    let output = pipeline
        .command()
        .args([
            "tables",
            "summary",
            "--ledger-table",
            "--json",
            "--manifest",
        ])
        .arg(pipeline.manifest_path())
        .output()
        .expect("run medlake tables summary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tables summary failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(&stdout).expect("summary JSON");
    for (table, expected) in &manifest.totals.table_rows {
        assert_eq!(
            summary["summary"]["tables"][table], *expected,
            "tables summary: rows of {table}"
        );
    }

    // `replay` of a rejected file: the parser reads it from the raw zone on
    // S3 again and rejects it with the same code (not `payload_unavailable`).
    let rejected = manifest
        .files
        .iter()
        .find(|f| f.file_rejected.is_some())
        .expect("the slice has a rejected file");
    let code = rejected.file_rejected.as_deref().unwrap();
    let ledger_before = rows(&lake, FILES_TABLE).await;
    let output = pipeline
        .command()
        .args(["replay", "--code", code, "--file-id", &rejected.sha256])
        .args(["--timeout-s", "60"])
        .output()
        .expect("run medlake replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("replayed 1 file(s)"),
        "replay: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let before = count(&ledger_before);
    let ledger = medlake_integration_tests::eventually(
        Duration::from_secs(120),
        "the replayed file's second ledger entry",
        || async {
            let ledger = rows(&lake, FILES_TABLE).await;
            (count(&ledger) > before).then_some(ledger)
        },
    )
    .await;
    let entries = tuples(&ledger, &["file_id", "status"]);
    let of_file: Vec<&str> = entries
        .iter()
        .filter(|e| e[0] == rejected.sha256)
        .map(|e| e[1].as_str())
        .collect();
    assert_eq!(
        of_file,
        ["rejected", "rejected"],
        "ledger of the replayed file"
    );
    assert_lake_matches(&lake, &manifest, true).await;

    // `maintain` compacts and vacuums every table on S3; the lake still
    // reconciles afterwards.
    let output = pipeline
        .command()
        .arg("maintain")
        .output()
        .expect("run medlake maintain");
    assert!(
        output.status.success(),
        "maintain failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_lake_matches(&lake, &manifest, true).await;

    pipeline.stop();
    pipeline.assert_no_secret_in_logs();
}

fn count(batches: &[arrow::array::RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}
