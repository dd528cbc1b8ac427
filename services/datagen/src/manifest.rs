//! `manifest.json`: every generated file with what it must become, so a demo or a test
//! can reconcile the lake against it ([`Manifest::expectation`]) without parsing
//! anything itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use medlake_common::expected::{Expected, ExpectedFile};
use serde::{Deserialize, Serialize};

use crate::error::GenError;
use crate::facilities::Protection;

/// A file made bad on purpose (`--bad N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadKind {
    /// A truncated zip: the whole file is rejected (`corrupt_archive`).
    CorruptZip,
    /// Encrypted with a password the facility does not have (`wrong_password`, or
    /// `password_required` for a facility without passwords).
    WrongPassword,
    /// A good entry plus one no data set matches (`no_dataset`).
    UnmatchedEntry,
    /// Rows with bad values among good ones (one record reject each).
    BadRows,
}

impl BadKind {
    /// In the order `--bad N` hands them out.
    pub const CYCLE: [BadKind; 4] = [
        BadKind::CorruptZip,
        BadKind::WrongPassword,
        BadKind::UnmatchedEntry,
        BadKind::BadRows,
    ];
}

/// How a file is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    /// A zip archive.
    Zip,
    /// A gzip stream of one file.
    Gzip,
}

/// One generated file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the output directory (`files/<facility>/<name>`).
    pub path: String,
    /// File name, as delivered.
    pub name: String,
    /// Sending facility.
    pub facility_id: String,
    /// The data set its main content belongs to.
    pub dataset: String,
    /// When the facility produced it.
    pub at: DateTime<Utc>,
    /// Zip or gzip.
    pub container: Container,
    /// How it is protected.
    pub protection: Protection,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 (the file id medlake gives it). Encrypted zips get a random salt,
    /// so this is the only field that differs between two runs with one seed.
    pub sha256: String,
    /// Entries inside.
    pub entries: u64,
    /// Made bad on purpose, and how.
    #[serde(default)]
    pub bad: Option<BadKind>,
    /// Records the parser must emit, by data set.
    pub records: BTreeMap<String, u64>,
    /// Entries and records the parser must reject, by error code.
    pub rejects: BTreeMap<String, u64>,
    /// Error code when the whole file must be rejected.
    #[serde(default)]
    pub file_rejected: Option<String>,
}

/// Sums over all files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Records by data set (what reaches `medlake.records.<dataset>`).
    pub records: BTreeMap<String, u64>,
    /// Rows each table holds after every file is in: the records for append tables,
    /// the live keys for merge tables (updates collapse, deletes remove).
    pub table_rows: BTreeMap<String, u64>,
    /// Rejects by error code (dead letters).
    pub rejects: BTreeMap<String, u64>,
    /// Files rejected whole.
    pub rejected_files: u64,
}

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Seed the files were generated with.
    pub seed: u64,
    /// First day of the generated period.
    pub start_date: NaiveDate,
    /// The facility registry the passwords come from.
    pub registry: PathBuf,
    /// `export` lines of the registry's secrets, when the generator created them.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Every file, in the order the facilities produced them.
    pub files: Vec<FileEntry>,
    /// Sums.
    pub totals: Totals,
}

impl Manifest {
    /// Reads a manifest written by `medlake gen`.
    pub fn load(path: &Path) -> Result<Manifest, GenError> {
        let text = std::fs::read(path).map_err(|source| GenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| GenError::Manifest {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes it as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), GenError> {
        let json = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        std::fs::write(path, json).map_err(|e| GenError::write(path, e))
    }

    /// What the lake must hold once every file is in: each file by its id, the
    /// tables' final rows and records, the dead letters by error code.
    pub fn expectation(&self) -> Expected {
        Expected {
            files: self
                .files
                .iter()
                .map(|f| ExpectedFile {
                    id: f.sha256.clone(),
                    path: f.path.clone(),
                })
                .collect(),
            table_rows: self.totals.table_rows.clone(),
            records: self.totals.records.clone(),
            dead_letters: self.totals.rejects.clone(),
        }
    }
}

impl Totals {
    /// Adds one file.
    pub(crate) fn add(&mut self, file: &FileEntry) {
        self.files += 1;
        self.bytes += file.bytes;
        for (dataset, n) in &file.records {
            *self.records.entry(dataset.clone()).or_default() += n;
        }
        for (code, n) in &file.rejects {
            *self.rejects.entry(code.clone()).or_default() += n;
        }
        if file.file_rejected.is_some() {
            self.rejected_files += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectation_takes_ids_paths_and_totals() {
        let file = FileEntry {
            path: "files/F1/a.zip".into(),
            name: "a.zip".into(),
            facility_id: "F1".into(),
            dataset: "patients".into(),
            at: Utc::now(),
            container: Container::Zip,
            protection: Protection::None,
            bytes: 10,
            sha256: "abc".into(),
            entries: 1,
            bad: None,
            records: BTreeMap::from([("patients".into(), 3)]),
            rejects: BTreeMap::from([("bad_date".into(), 1)]),
            file_rejected: None,
        };
        let mut totals = Totals::default();
        totals.add(&file);
        totals.table_rows.insert("patients".into(), 2);
        let manifest = Manifest {
            seed: 1,
            start_date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            registry: "r.yaml".into(),
            env_file: None,
            files: vec![file],
            totals,
        };
        let expected = manifest.expectation();
        assert_eq!(
            expected.files,
            vec![ExpectedFile {
                id: "abc".into(),
                path: "files/F1/a.zip".into()
            }]
        );
        assert_eq!(
            expected.table_rows,
            BTreeMap::from([("patients".into(), 2)])
        );
        assert_eq!(expected.records, BTreeMap::from([("patients".into(), 3)]));
        assert_eq!(
            expected.dead_letters,
            BTreeMap::from([("bad_date".into(), 1)])
        );
    }
}
