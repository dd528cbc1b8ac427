//! Golden tests: `offline::run` (what `medlake parse` runs) on every fixture in
//! `tests/data/` must print exactly `<fixture>.expected.jsonl` on stdout and
//! `<fixture>.expected.stderr` on stderr. Re-bless after a deliberate change with
//! `MEDLAKE_BLESS=1 cargo test -p medlake-parser --test golden`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;
use medlake_parser::offline::{OfflineOptions, Outcome, THROW_AWAY_KEY_NOTICE, run};

/// (fixture, facility, expected exit status)
const FIXTURES: &[(&str, &str, u8)] = &[
    ("adt_F001_20240301.zip", "F001", 1),
    ("census_F002_20240301.txt.gz", "F002", 1),
    ("BEDCENSUS_F003_20240301.zip", "F003", 1),
    ("labs_F001_20240301.zip", "F001", 1),
    ("patients_F002_20240301.zip", "F002", 1),
    ("src/adt_20240301.csv", "F001", 1),
];

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The registry of the fixtures' facilities; passwords in secret files (README.md).
fn registry(dir: &Path) -> Registry {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let yaml = format!(
        "facilities:\n  - id: F001\n    zip_passwords: [{{ file: {} }}, {{ file: {} }}, {{ file: {} }}]\n  - id: F002\n    zip_passwords: [{{ file: {} }}]\n  - id: F003\n",
        secret("f1-old", "autumn-2023"),
        secret("f1-a", "winter-2023"),
        secret("f1-b", "spring-2024"),
        secret("f2", "fac2-pass"),
    );
    Registry::parse(&yaml, Path::new("facilities.yaml")).unwrap()
}

fn options(file: &str, facility: &str, registry: Registry) -> OfflineOptions {
    OfflineOptions {
        file: data().join(file),
        facility_id: facility.into(),
        schemas_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas"),
        registry,
        pii_key: Some(Secret::new("golden-test-key")),
        now: DateTime::parse_from_rfc3339("2024-03-02T06:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    }
}

fn expected_path(file: &str, ext: &str) -> PathBuf {
    let name = Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    data().join(format!("{name}.{ext}"))
}

#[test]
fn every_fixture_prints_exactly_the_expected_records() {
    let dir = tempfile::tempdir().unwrap();
    let bless = std::env::var_os("MEDLAKE_BLESS").is_some();
    let mut failures = Vec::new();
    for (file, facility, exit) in FIXTURES {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = run(
            &options(file, facility, registry(dir.path())),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(
            outcome.exit_code(),
            *exit,
            "{file}: {}",
            String::from_utf8_lossy(&err)
        );
        assert!(matches!(outcome, Outcome::Parsed(_)), "{file}");
        for (ext, got) in [("expected.jsonl", &out), ("expected.stderr", &err)] {
            let path = expected_path(file, ext);
            if bless {
                std::fs::write(&path, got).unwrap();
                continue;
            }
            let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if &want != got {
                failures.push(format!(
                    "{}:\n--- want\n{}\n--- got\n{}",
                    path.display(),
                    String::from_utf8_lossy(&want),
                    String::from_utf8_lossy(got)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_record_line_has_lineage_and_a_typed_record() {
    let dir = tempfile::tempdir().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    run(
        &options("labs_F001_20240301.zip", "F001", registry(dir.path())),
        &mut out,
        &mut err,
    )
    .unwrap();
    let lines: Vec<serde_json::Value> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 19, "20 results, one without a code");
    for line in &lines {
        let r = &line["record"];
        assert_eq!(line["dataset"], "lab_results");
        assert_eq!(r["_facility_id"], "F001");
        assert_eq!(r["_record_index"], 1);
        assert!(r["_entry"].as_str().unwrap().starts_with("results/lab_"));
        assert_eq!(r["mrn"].as_str().unwrap().len(), 64, "MRN is pseudonymized");
        assert!(r.get("comment").is_none(), "pii: drop");
        assert_eq!(r["unit"], "mg/dL");
    }
    let stderr = String::from_utf8(err).unwrap();
    assert!(stderr.contains("rejected: validate missing_required entry results/lab_0007.xml record 1 field loinc_code"), "{stderr}");
}

#[test]
fn wrong_password_and_unknown_facility_reject_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for facility in ["F002", "F999"] {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = run(
            &options("labs_F001_20240301.zip", facility, registry(dir.path())),
            &mut out,
            &mut err,
        )
        .unwrap();
        let Outcome::Rejected(e) = &outcome else {
            panic!("{outcome:?}")
        };
        let want = if facility == "F002" {
            "wrong_password"
        } else {
            "password_required"
        };
        assert_eq!(e.code().as_str(), want);
        assert_eq!(outcome.exit_code(), 1);
        assert!(out.is_empty());
    }
}

#[test]
fn an_empty_archive_is_rejected_not_accepted_in_silence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("adt_F001_20240302.zip");
    std::fs::write(
        &file,
        medlake_datagen::pack::zip(&[], true, medlake_datagen::pack::Protection::None),
    )
    .unwrap();
    let mut o = options("unused", "F001", registry(dir.path()));
    o.file = file;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(&o, &mut out, &mut err).unwrap();
    let Outcome::Rejected(e) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(e.code().as_str(), "empty_archive");
    assert_eq!(outcome.exit_code(), 1);
    assert!(out.is_empty());
}

#[test]
fn configuration_errors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options("adt_F001_20240301.zip", "F001", registry(dir.path()));
    o.schemas_dir = dir.path().join("missing");
    assert!(run(&o, &mut Vec::new(), &mut Vec::new()).is_err());
    let o = options("nope.zip", "F001", registry(dir.path()));
    assert!(run(&o, &mut Vec::new(), &mut Vec::new()).is_err());
}

#[test]
fn without_a_pii_key_a_throw_away_key_hashes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = "adt_F001_20240301.zip";
    let mut o = options(file, "F001", registry(dir.path()));
    o.pii_key = None;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = run(&o, &mut out, &mut err).unwrap();
    assert_eq!(outcome.exit_code(), 1, "the fixture's bad rows");
    let stderr = String::from_utf8(err).unwrap();
    let golden = std::fs::read_to_string(expected_path(file, "expected.stderr")).unwrap();
    assert_eq!(stderr, format!("{THROW_AWAY_KEY_NOTICE}\n{golden}"));
    // Same records, other hashes: each run draws its own key.
    let golden = std::fs::read_to_string(expected_path(file, "expected.jsonl")).unwrap();
    let stdout = String::from_utf8(out).unwrap();
    assert_eq!(stdout.lines().count(), golden.lines().count());
    assert_ne!(stdout, golden);
    let mut again = Vec::new();
    run(&o, &mut again, &mut Vec::new()).unwrap();
    assert_ne!(again, stdout.as_bytes());
}
