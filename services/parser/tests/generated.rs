//! The generator's files against the parser: every file parses into exactly the
//! records and rejects its manifest entry says, and the merge tables' final row counts
//! follow from the parser's own output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use medlake_common::dataset;
use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;
use medlake_datagen::manifest::Container;
use medlake_datagen::{BadKind, GenOptions, Manifest, Volume, generate};
use medlake_parser::ParseEnv;
use medlake_parser::archive::Limits;
use medlake_parser::offline::{Outcome, parse_file};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A registry whose passwords are in files: F-A rotates two, F-B has one, F-C none.
fn registry(dir: &Path) -> PathBuf {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, value).unwrap();
        path.display().to_string()
    };
    let yaml = format!(
        "facilities:\n\
         \x20 - id: F-A\n    zip_passwords: [{{ file: {} }}, {{ file: {} }}]\n\
         \x20 - id: F-B\n    zip_passwords: [{{ file: {} }}]\n\
         \x20 - id: F-C\n",
        secret("a1", "old-pass-a"),
        secret("a2", "new-pass-a"),
        secret("b1", "pass-b"),
    );
    let path = dir.join("facilities.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Parses every file; returns the final row count per merge table computed from the
/// parser's records (latest sequence per key, deletes remove).
fn parse_all(out: &Path, manifest: &Manifest) -> BTreeMap<String, u64> {
    let datasets = dataset::load_dir(&repo_root().join("schemas")).unwrap();
    let registry = Registry::load(&manifest.registry).unwrap();
    let key = Secret::new("test-pii-key");
    let env = ParseEnv::new(datasets, registry, Limits::default(), Some(&key)).unwrap();
    let now = Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap();
    // (dataset, key) -> (sequence, deleted)
    let mut state: BTreeMap<(String, String), (serde_json::Value, bool)> = BTreeMap::new();
    for file in &manifest.files {
        let mut records = Vec::new();
        let mut rejects = Vec::new();
        let outcome = parse_file(
            &out.join(&file.path),
            &file.facility_id,
            &env,
            now,
            &mut records,
            &mut rejects,
        )
        .unwrap();
        let rejects = String::from_utf8_lossy(&rejects);
        match outcome {
            Outcome::Parsed(summary) => {
                assert_eq!(file.file_rejected, None, "{}: {rejects}", file.path);
                assert_eq!(summary.records, file.records, "{}: {rejects}", file.path);
                assert_eq!(summary.rejects, file.rejects, "{}: {rejects}", file.path);
            }
            Outcome::Rejected(e) => {
                assert_eq!(
                    file.file_rejected.as_deref(),
                    Some(e.code().as_str()),
                    "{}: {e}",
                    file.path
                );
                continue;
            }
        }
        for line in records.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let ds = v["dataset"].as_str().unwrap().to_string();
            let seq_field = match ds.as_str() {
                "adt_events" => "event_seq",
                "patients" => "updated_at",
                _ => continue,
            };
            let record = &v["record"];
            let seq = record[seq_field].clone();
            let deleted = record["_op"] == "delete";
            let k = (ds, v["key"].as_str().unwrap().to_string());
            let newer = match state.get(&k) {
                None => true,
                Some((old, _)) => match (old.as_i64(), seq.as_i64()) {
                    (Some(a), Some(b)) => b > a,
                    _ => seq.as_str() > old.as_str(),
                },
            };
            if newer {
                state.insert(k, (seq, deleted));
            }
        }
    }
    let mut rows = BTreeMap::new();
    for ((ds, _), (_, deleted)) in state {
        if !deleted {
            *rows.entry(ds).or_default() += 1;
        }
    }
    rows
}

#[test]
fn every_file_parses_into_its_manifest_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut opts = GenOptions::new(&out);
    opts.seed = 42;
    opts.registry = Some(registry(dir.path()));
    opts.volume = Volume::Files(60);
    opts.max_zip_bytes = 80_000;
    opts.bad = 8;
    let manifest = generate(&opts).unwrap();
    assert_eq!(manifest.files.len(), 60);
    // Every feed, both containers, every kind of bad file.
    let datasets: std::collections::BTreeSet<&str> =
        manifest.files.iter().map(|f| f.dataset.as_str()).collect();
    assert!(datasets.len() >= 4, "{datasets:?}");
    assert!(
        manifest
            .files
            .iter()
            .any(|f| f.container == Container::Gzip)
    );
    for kind in BadKind::CYCLE {
        assert_eq!(
            manifest
                .files
                .iter()
                .filter(|f| f.bad == Some(kind))
                .count(),
            2
        );
    }
    let merged = parse_all(&out, &manifest);
    for table in ["adt_events", "patients"] {
        assert_eq!(
            merged.get(table).copied().unwrap_or(0),
            manifest.totals.table_rows[table],
            "{table}"
        );
    }
    assert!(manifest.totals.rejects.values().sum::<u64>() >= 8);
}
