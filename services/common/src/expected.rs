//! What a lake must hold once a known set of files is in: the contract between what
//! knows the truth (the generator's manifest, `medlake_datagen::Manifest::expectation`)
//! and the reader that reconciles a lake against it (`medlake_sink::inspect`), so
//! that neither depends on the other.

use std::collections::BTreeMap;

/// One file the ledger must list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFile {
    /// Its file id (hex SHA-256 of its bytes).
    pub id: String,
    /// Where it was written, to name it while it is missing.
    pub path: String,
}

/// What the lake must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Every file, in the order they were produced; the ledger table (`_files`) holds
    /// one row per file.
    pub files: Vec<ExpectedFile>,
    /// Rows per data set table: the records for append tables, the live keys for
    /// merge tables.
    pub table_rows: BTreeMap<String, u64>,
    /// Records per data set the files hold (more than a merge table's rows when
    /// updates collapse and deletes remove).
    pub records: BTreeMap<String, u64>,
    /// Dead letters per error code.
    pub dead_letters: BTreeMap<String, u64>,
}
