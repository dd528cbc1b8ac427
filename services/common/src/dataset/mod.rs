//! Data set definitions: the metadata that drives the generic parser and the sink.
//!
//! One YAML file per data set in `schemas/` says which entries belong to it
//! ([`MatchRules`]), how to read them ([`Format`], [`Encoding`]), the typed [`Field`]s and
//! the [`Table`] they land in. Adding a feed is adding a file: no code. The parser uses
//! every part; the sink only needs [`Dataset::arrow_schema`], [`Dataset::table`] and
//! [`Dataset::records_topic`]. Loading validates everything and reports every problem
//! with its file and field, so `medlake datasets check` is a complete review.

mod field;
mod format;
mod table;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::secret::SecretRef;

pub use field::{Field, FieldType, Origin, Pii, TYPE_NAMES};
pub use format::{
    DelimitedOptions, Encoding, FixedColumn, FixedWidthOptions, Format, JsonOptions, NdjsonOptions,
    XmlOptions,
};
pub use table::{DeleteRule, MatchRules, Table};

/// Prefix of every records topic; the data set name follows.
pub const RECORDS_TOPIC_PREFIX: &str = "medlake.records.";

/// Lineage columns present on every record, in order.
pub const LINEAGE_FIELDS: [&str; 5] = [
    "_file_id",
    "_facility_id",
    "_entry",
    "_record_index",
    "_ingested_at",
];

/// Lineage column of merge data sets: `upsert` or `delete`.
pub const OP_FIELD: &str = "_op";

/// One data set: a feed's entries, how to read them and the table they land in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// Table directory name and records topic suffix (`[a-z][a-z0-9_]*`).
    pub name: String,
    /// Free text for people reading the definition.
    #[serde(default)]
    pub description: Option<String>,
    /// Which entries belong to this data set.
    #[serde(rename = "match")]
    pub matching: MatchRules,
    /// How the entries are laid out.
    pub format: Format,
    /// Text encoding of the entries.
    #[serde(default)]
    pub encoding: Encoding,
    /// Share of rejected records (0..=1) above which the whole entry is rejected
    /// (`reject_ratio_exceeded`) and none of its records is written.
    #[serde(default = "default_max_reject_ratio")]
    pub max_reject_ratio: f64,
    /// Where the key of `pii: hash` comes from for this data set; when absent the
    /// parser's global key is used. Names a secret, never holds it.
    #[serde(default)]
    pub pii_key: Option<SecretRef>,
    /// The typed fields, in table column order.
    pub fields: Vec<Field>,
    /// How records land in the table.
    pub table: Table,
    /// The file the definition was loaded from (not part of the YAML).
    #[serde(skip)]
    pub source_file: PathBuf,
}

fn default_max_reject_ratio() -> f64 {
    0.5
}

impl Dataset {
    /// `medlake.records.<name>`.
    pub fn records_topic(&self) -> String {
        format!("{RECORDS_TOPIC_PREFIX}{}", self.name)
    }

    /// Fields written to the table, in order (`pii: drop` removed).
    pub fn output_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.is_output())
    }

    /// The field of that name, if any.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Arrow schema of the table: user fields (without `pii: drop`), then the lineage
    /// columns, then `_op` for merge data sets. Required fields are not nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut cols: Vec<ArrowField> = self
            .output_fields()
            .map(|f| ArrowField::new(&f.name, arrow_type(f.kind), !f.required))
            .collect();
        cols.push(ArrowField::new("_file_id", DataType::Utf8, false));
        cols.push(ArrowField::new("_facility_id", DataType::Utf8, false));
        cols.push(ArrowField::new("_entry", DataType::Utf8, false));
        cols.push(ArrowField::new("_record_index", DataType::Int64, false));
        cols.push(ArrowField::new(
            "_ingested_at",
            arrow_type(FieldType::Timestamp),
            false,
        ));
        if self.table.is_merge() {
            cols.push(ArrowField::new(OP_FIELD, DataType::Utf8, false));
        }
        Arc::new(Schema::new(cols))
    }

    /// Parses and validates one definition; `file` is only used in messages.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Dataset, Vec<Problem>> {
        let mut dataset = validate::parse(text, file)?;
        dataset.source_file = file.to_path_buf();
        let problems = validate::check(&dataset);
        if problems.is_empty() {
            Ok(dataset)
        } else {
            Err(problems)
        }
    }
}

/// The Arrow type a field type is stored as.
pub fn arrow_type(kind: FieldType) -> DataType {
    match kind {
        FieldType::String => DataType::Utf8,
        FieldType::Int32 => DataType::Int32,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
        FieldType::Bool => DataType::Boolean,
        FieldType::Date => DataType::Date32,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// One thing wrong with a definition: the file, the field when there is one, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The definition file.
    pub file: PathBuf,
    /// The field (or key) concerned, if any.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}: field `{field}`: {}",
                self.file.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Loading data set definitions failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The directory or a file could not be read.
    #[error("cannot read data set definitions at {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// One or more definitions are invalid; every problem is listed.
    #[error("{} invalid data set definition(s):\n{}", problems.len(), render(problems))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads and validates every `*.yaml` / `*.yml` file of `dir`, sorted by file name.
/// All problems of all files are reported together; names must be unique.
pub fn load_dir(dir: &Path) -> Result<Vec<Dataset>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut datasets: Vec<Dataset> = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| DatasetError::Io {
            path: file.clone(),
            source,
        })?;
        match Dataset::from_yaml(&text, &file) {
            Ok(d) => {
                if let Some(other) = datasets.iter().find(|o| o.name == d.name) {
                    problems.push(Problem {
                        file: file.clone(),
                        field: None,
                        message: format!(
                            "data set name `{}` is already used by {}",
                            d.name,
                            other.source_file.display()
                        ),
                    });
                } else {
                    datasets.push(d);
                }
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(datasets)
    } else {
        Err(DatasetError::Invalid { problems })
    }
}

/// What `medlake datasets check [DIR]` runs: [`load_dir`], whose error lists every
/// problem of every file.
pub fn check_dir(dir: &Path) -> Result<Vec<Dataset>, DatasetError> {
    load_dir(dir)
}

#[cfg(test)]
mod tests;
