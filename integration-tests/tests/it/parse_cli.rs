//! `medlake parse FILE`, the offline dry run, through the real binary: on
//! every parser fixture it prints exactly the golden records on stdout and
//! the golden rejects on stderr, and exits 1 (the fixtures hold bad rows).

use std::path::{Path, PathBuf};
use std::process::Command;

use medlake_integration_tests::{medlake_bin, repo_root};

/// (fixture, facility); the same table as the parser crate's golden test.
const FIXTURES: &[(&str, &str)] = &[
    ("adt_F001_20240301.zip", "F001"),
    ("census_F002_20240301.txt.gz", "F002"),
    ("BEDCENSUS_F003_20240301.zip", "F003"),
    ("labs_F001_20240301.zip", "F001"),
    ("patients_F002_20240301.zip", "F002"),
    ("src/adt_20240301.csv", "F001"),
];

fn data() -> PathBuf {
    repo_root().join("services/parser/tests/data")
}

/// The fixtures' registry, passwords in secret files (see tests/data/README.md).
fn write_registry(dir: &Path) -> PathBuf {
    let secret = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let yaml = format!(
        "facilities:\n  - id: F001\n    zip_passwords: [{{ file: {} }}, {{ file: {} }}, {{ file: {} }}]\n  \
         - id: F002\n    zip_passwords: [{{ file: {} }}]\n  - id: F003\n",
        secret("f1-old", "autumn-2023"),
        secret("f1-a", "winter-2023"),
        secret("f1-b", "spring-2024"),
        secret("f2", "fac2-pass"),
    );
    let path = dir.join("facilities.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn golden(file: &str, ext: &str) -> String {
    let name = Path::new(file)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::read_to_string(data().join(format!("{name}.{ext}"))).unwrap()
}

#[test]
fn medlake_parse_prints_exactly_the_golden_records() {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(dir.path());
    for (file, facility) in FIXTURES {
        let output = Command::new(medlake_bin())
            .current_dir(repo_root())
            .env_remove("MEDLAKE_CONFIG")
            .env("MEDLAKE_FACILITIES_FILE", &registry)
            .env("MEDLAKE_PII_KEY", "golden-test-key")
            .args(["parse", "--facility", facility, "--schemas", "schemas"])
            .args(["--now", "2024-03-02T06:00:00Z"])
            .arg(data().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{file}: {stderr}");
        assert!(!stdout.is_empty(), "{file}: no records");
        assert_eq!(stdout, golden(file, "expected.jsonl"), "{file}: stdout");
        assert_eq!(stderr, golden(file, "expected.stderr"), "{file}: stderr");
    }
}

#[test]
fn medlake_parse_usage_errors_exit_2() {
    let output = Command::new(medlake_bin())
        .current_dir(repo_root())
        .env_remove("MEDLAKE_CONFIG")
        .args(["parse", "/nonexistent/file.zip"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
