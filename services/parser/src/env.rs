//! Everything the pipeline needs besides the file: the data sets compiled once (globs,
//! regexes, time zones, PII keys), the facility registry and the limits. Routing an
//! entry to its data set lives here too.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use medlake_common::dataset::{Dataset, Format, Pii, Table};
use medlake_common::facilities::Registry;
use medlake_common::secret::Secret;

use crate::archive::Limits;
use crate::convert::FieldPlan;
use crate::error::ErrorCode;
use crate::formats::{XmlPath, header_of, root_of};
use crate::text;

/// How many bytes of an entry are looked at to route it by header or root element.
const PEEK_BYTES: usize = 64 * 1024;

/// The environment variable that names the variable holding the parser's global PII
/// key: the configuration's `parser.pii_key.env` (see `medlake_common::config`).
pub const PII_KEY_ENV_VAR: &str = "MEDLAKE_PARSER__PII_KEY__ENV";

/// The environment variable that names a file holding the parser's global PII key:
/// the configuration's `parser.pii_key.file`.
pub const PII_KEY_FILE_VAR: &str = "MEDLAKE_PARSER__PII_KEY__FILE";

/// The parser's environment could not be built (a configuration problem: fatal).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A data set's own PII key cannot be read.
    #[error("data set {dataset}: {reason}")]
    PiiKey {
        /// The data set.
        dataset: String,
        /// What is missing (never the key).
        reason: String,
    },
    /// A data set hashes PII, names no key of its own, and the parser has no global key.
    #[error(
        "data set {dataset}: `pii: hash` fields need a key: set `pii_key` in the data set, \
         or `parser.pii_key` in the configuration (`{{ env: NAME }}` or `{{ file: PATH }}`), \
         e.g. {PII_KEY_ENV_VAR}=NAME with the key in variable NAME, or {PII_KEY_FILE_VAR}=PATH"
    )]
    NoPiiKey {
        /// The data set.
        dataset: String,
    },
    /// A field could not be compiled (should have been caught by validation).
    #[error("data set {dataset}: field {field}: {reason}")]
    Field {
        /// The data set.
        dataset: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A match glob could not be compiled.
    #[error("data set {dataset}: {reason}")]
    Glob {
        /// The data set.
        dataset: String,
        /// What is wrong.
        reason: String,
    },
}

/// A data set compiled for parsing.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub dataset: Dataset,
    pub plans: Vec<FieldPlan>,
    globs: GlobSet,
    xml_root: Option<XmlPath>,
    header: Vec<String>,
    /// Field indexes of the primary key (merge data sets).
    pub primary_key: Vec<usize>,
    /// Index of the sequence field (merge data sets).
    pub sequence: Option<usize>,
    /// Delete rule: field index and values.
    pub delete: Option<(usize, Vec<String>)>,
}

/// Data sets, facility registry and limits: built once, shared by every file.
#[derive(Debug)]
pub struct ParseEnv {
    pub(crate) datasets: Vec<Prepared>,
    /// Facilities and their zip passwords.
    pub registry: Registry,
    /// Unpacking limits.
    pub limits: Limits,
}

impl ParseEnv {
    /// Compiles the data sets. `pii_key` is the global key for `pii: hash` fields of data
    /// sets that name no key of their own.
    pub fn new(
        datasets: Vec<Dataset>,
        registry: Registry,
        limits: Limits,
        pii_key: Option<&Secret>,
    ) -> Result<ParseEnv, EnvError> {
        let datasets = datasets
            .into_iter()
            .map(|d| prepare(d, pii_key))
            .collect::<Result<_, _>>()?;
        Ok(ParseEnv {
            datasets,
            registry,
            limits,
        })
    }

    /// The data sets, in the order given.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.iter().map(|p| &p.dataset)
    }

    /// Finds the one data set an entry belongs to.
    pub(crate) fn route(
        &self,
        facility_id: &str,
        entry: &str,
        bytes: &[u8],
    ) -> Result<&Prepared, (ErrorCode, String)> {
        let base = entry.rsplit('/').next().unwrap_or(entry);
        let found: Vec<&Prepared> = self
            .datasets
            .iter()
            .filter(|p| p.accepts(facility_id, entry, base, bytes))
            .collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err((
                ErrorCode::NoDataset,
                "no data set matches this entry".into(),
            )),
            many => {
                let names: Vec<&str> = many.iter().map(|p| p.dataset.name.as_str()).collect();
                Err((
                    ErrorCode::AmbiguousDataset,
                    format!("entry matches several data sets: {}", names.join(", ")),
                ))
            }
        }
    }
}

/// Whether a data set has `pii: hash` fields.
fn hashes_pii(dataset: &Dataset) -> bool {
    dataset.fields.iter().any(|f| f.pii == Some(Pii::Hash))
}

/// Whether a data set hashes PII with the parser's global key (it names no key of its
/// own).
pub fn needs_global_pii_key(dataset: &Dataset) -> bool {
    dataset.pii_key.is_none() && hashes_pii(dataset)
}

fn prepare(dataset: Dataset, global_key: Option<&Secret>) -> Result<Prepared, EnvError> {
    let name = dataset.name.clone();
    let needs_key = hashes_pii(&dataset);
    let own_key = match (&dataset.pii_key, needs_key) {
        (Some(r), true) => Some(r.resolve().map_err(|e| EnvError::PiiKey {
            dataset: name.clone(),
            reason: e.to_string(),
        })?),
        _ => None,
    };
    let key = own_key
        .as_ref()
        .or(global_key)
        .map(|s| s.expose().as_bytes());
    if needs_key && key.is_none() {
        return Err(EnvError::NoPiiKey { dataset: name });
    }
    let plans = dataset
        .fields
        .iter()
        .map(|f| {
            FieldPlan::new(f, key).map_err(|reason| EnvError::Field {
                dataset: name.clone(),
                field: f.name.clone(),
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut globs = GlobSetBuilder::new();
    for g in &dataset.matching.entry {
        let glob = GlobBuilder::new(g)
            .case_insensitive(true)
            .build()
            .map_err(|e| EnvError::Glob {
                dataset: name.clone(),
                reason: e.to_string(),
            })?;
        globs.add(glob);
    }
    let globs = globs.build().map_err(|e| EnvError::Glob {
        dataset: name.clone(),
        reason: e.to_string(),
    })?;
    let xml_root = match (&dataset.matching.xml_root, &dataset.format) {
        (Some(root), Format::Xml(o)) => Some(XmlPath::parse(root, &o.namespaces)),
        _ => None,
    };
    let index = |n: &str| dataset.fields.iter().position(|f| f.name == n);
    let (primary_key, sequence, delete) = match &dataset.table {
        Table::Append { .. } => (Vec::new(), None, None),
        Table::Merge {
            primary_key,
            sequence_by,
            delete_when,
            ..
        } => (
            primary_key.iter().filter_map(|k| index(k)).collect(),
            index(sequence_by),
            delete_when
                .as_ref()
                .and_then(|r| Some((index(&r.field)?, r.values.clone()))),
        ),
    };
    let header = dataset
        .matching
        .header_contains
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    Ok(Prepared {
        plans,
        globs,
        xml_root,
        header,
        primary_key,
        sequence,
        delete,
        dataset,
    })
}

impl Prepared {
    /// Whether every match rule of the data set holds for the entry.
    fn accepts(&self, facility_id: &str, entry: &str, base: &str, bytes: &[u8]) -> bool {
        let m = &self.dataset.matching;
        if !m.facilities.is_empty() && !m.facilities.iter().any(|f| f == facility_id) {
            return false;
        }
        if !(m.entry.is_empty() || self.globs.is_match(base) || self.globs.is_match(entry)) {
            return false;
        }
        if !self.header.is_empty() {
            let (Format::Csv(o) | Format::Delimited(o)) = &self.dataset.format else {
                return false;
            };
            let head = text::peek(bytes, self.dataset.encoding, PEEK_BYTES);
            let delimiter = self.dataset.format.delimiter().unwrap_or(b',');
            let Some(columns) = header_of(&head, o, delimiter) else {
                return false;
            };
            if !self.header.iter().all(|h| columns.contains(h)) {
                return false;
            }
        }
        if let Some(root) = &self.xml_root {
            let head = text::peek(bytes, self.dataset.encoding, PEEK_BYTES);
            let Some((ns, local)) = root_of(&head) else {
                return false;
            };
            if !root.matches_root(ns.as_deref(), &local) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HASHED: &str = r#"
name: visits
match: { entry: ["visits*.csv"] }
format: { type: csv }
fields:
  - { name: patient, type: string, source: Patient, pii: hash }
table: { mode: append }
"#;

    fn dataset(yaml: &str) -> Dataset {
        Dataset::from_yaml(yaml, Path::new("t.yaml")).unwrap()
    }

    #[test]
    fn a_missing_key_says_which_setting_and_variable_to_set() {
        let err = ParseEnv::new(
            vec![dataset(HASHED)],
            Registry::default(),
            Limits::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(&err, EnvError::NoPiiKey { dataset } if dataset == "visits"));
        let message = err.to_string();
        for names in [
            "parser.pii_key",
            "MEDLAKE_PARSER__PII_KEY__ENV=",
            "{ env: NAME }",
        ] {
            assert!(message.contains(names), "{message}");
        }
        assert!(!message.contains("MEDLAKE_PII_KEY"), "{message}");
    }

    #[test]
    fn only_data_sets_without_their_own_key_need_the_global_one() {
        assert!(needs_global_pii_key(&dataset(HASHED)));
        let own = HASHED.replace("table:", "pii_key: { env: VISITS_PII_KEY }\ntable:");
        assert!(!needs_global_pii_key(&dataset(&own)));
        let plain = HASHED.replace(", pii: hash", "");
        assert!(!needs_global_pii_key(&dataset(&plain)));
    }
}
