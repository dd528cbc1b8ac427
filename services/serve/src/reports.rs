//! Predefined reports as metadata: one YAML file per report in a folder
//! (`reports/`), like the data sets of `schemas/`. See `reports/README.md`
//! for the format.
//!
//! A report's SQL runs like any query of its asker, in the scoped views, so
//! it needs no security filter of its own. Its parameters are bound as
//! values (DataFusion named placeholders, `$name`), never pasted into the
//! text: `facility` and `string` as text, `date` as DATE, `integer` as
//! BIGINT; an absent optional parameter is NULL. A `facility` parameter
//! must be one of the asker's facilities.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{Days, NaiveDate};
use deltalake::datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::customers::Scope;

/// One report definition.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub params: Vec<Param>,
    pub sql: String,
    #[serde(default)]
    pub chart: Option<Chart>,
}

/// A named parameter, `$name` in the SQL.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamKind,
    #[serde(default)]
    pub required: bool,
    /// ISO date, `today` or `-<n>d` for dates; the value for the others.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Facility,
    Date,
    Integer,
    String,
}

/// How the portal draws a report.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    #[serde(rename = "type")]
    pub kind: ChartKind,
    pub x: String,
    pub y: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    Bar,
    Line,
}

/// Why the reports folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("report {path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// Loads every `*.yaml` of `dir`, sorted by name, and checks each: the name
/// is the file's, `[a-z0-9_]+`; every parameter appears in the SQL; names
/// are unique; defaults parse.
pub fn load_dir(dir: &Path) -> Result<Vec<Report>, ReportError> {
    let read = |path: &Path, source| ReportError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| read(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    let mut reports = Vec::with_capacity(paths.len());
    for path in paths {
        let invalid = |reason: String| ReportError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| read(&path, e))?;
        let report: Report = serde_yaml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if report.name != stem {
            return Err(invalid(format!("name {:?} is not the file's", report.name)));
        }
        if report.name.is_empty()
            || !report
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid("the name is [a-z0-9_]+".into()));
        }
        for param in &report.params {
            if !report.sql.contains(&format!("${}", param.name)) {
                return Err(invalid(format!("${} is not in the SQL", param.name)));
            }
            if let Some(default) = &param.default {
                bind_one(param, default, &Scope::All, today())
                    .map_err(|reason| invalid(format!("default of {}: {reason}", param.name)))?;
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Today's UTC date, which relative defaults count from.
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn bind_one(
    param: &Param,
    text: &str,
    scope: &Scope,
    today: NaiveDate,
) -> Result<ScalarValue, String> {
    match param.kind {
        ParamKind::String => Ok(ScalarValue::Utf8(Some(text.to_string()))),
        ParamKind::Facility => match scope {
            Scope::Facilities(ids) if !ids.contains(text) => {
                Err(format!("facility {text:?} is not one of yours"))
            }
            _ => Ok(ScalarValue::Utf8(Some(text.to_string()))),
        },
        ParamKind::Integer => text
            .trim()
            .parse::<i64>()
            .map(|v| ScalarValue::Int64(Some(v)))
            .map_err(|_| format!("{text:?} is not an integer")),
        ParamKind::Date => {
            let date = if text == "today" {
                Some(today)
            } else if let Some(days) = text.strip_prefix('-').and_then(|t| t.strip_suffix('d')) {
                days.parse::<u64>()
                    .ok()
                    .and_then(|n| today.checked_sub_days(Days::new(n)))
            } else {
                NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
            };
            let date =
                date.ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD, today, -30d)"))?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
            let days = i32::try_from((date - epoch).num_days()).map_err(|_| "date out of range")?;
            Ok(ScalarValue::Date32(Some(days)))
        }
    }
}

fn null_of(kind: ParamKind) -> ScalarValue {
    match kind {
        ParamKind::Facility | ParamKind::String => ScalarValue::Utf8(None),
        ParamKind::Integer => ScalarValue::Int64(None),
        ParamKind::Date => ScalarValue::Date32(None),
    }
}

impl Report {
    /// The values of the report's parameters: given (as text), else the
    /// default, else NULL when optional. Unknown names are refused, and so
    /// is a facility outside `scope`.
    pub fn bind(
        &self,
        given: &BTreeMap<String, String>,
        scope: &Scope,
        today: NaiveDate,
    ) -> Result<HashMap<String, ScalarValue>, String> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            return Err(format!("report {} has no parameter {unknown:?}", self.name));
        }
        let mut values = HashMap::new();
        for param in &self.params {
            let text = given.get(&param.name).or(param.default.as_ref());
            let value = match text {
                Some(text) => bind_one(param, text, scope, today)
                    .map_err(|reason| format!("parameter {}: {reason}", param.name))?,
                None if param.required => {
                    return Err(format!("parameter {} is required", param.name));
                }
                None => null_of(param.kind),
            };
            values.insert(param.name.clone(), value);
        }
        Ok(values)
    }

    /// A file name for the report's CSV: its name and its parameters.
    pub fn file_name(&self, given: &BTreeMap<String, String>) -> String {
        let mut name = self.name.clone();
        for param in &self.params {
            if let Some(value) = given.get(&param.name) {
                let safe: String = value
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(40)
                    .collect();
                name.push_str(&format!("_{}-{safe}", param.name));
            }
        }
        name.push_str(".csv");
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        serde_yaml::from_str(
            "name: r\ntitle: R\nparams:\n  - { name: facility, type: facility }\n  \
             - { name: from, type: date, default: '-30d' }\n  - { name: n, type: integer, required: true }\n\
             sql: SELECT $facility, $from, $n\n",
        )
        .unwrap()
    }

    #[test]
    fn parameters_bind_as_typed_values_within_the_askers_scope() {
        let r = report();
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
        let scope = Scope::Facilities(["F1".to_string()].into());
        let given: BTreeMap<String, String> = [("n".to_string(), "7".to_string())].into();
        let values = r.bind(&given, &scope, today).unwrap();
        assert_eq!(values["facility"], ScalarValue::Utf8(None));
        assert_eq!(values["n"], ScalarValue::Int64(Some(7)));
        let from = NaiveDate::from_ymd_opt(2026, 11, 6).unwrap();
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        assert_eq!(
            values["from"],
            ScalarValue::Date32(Some((from - epoch).num_days() as i32))
        );

        let mut other = given.clone();
        other.insert("facility".into(), "F2".into());
        assert!(
            r.bind(&other, &scope, today)
                .unwrap_err()
                .contains("not one of yours")
        );
        assert!(r.bind(&other, &Scope::All, today).is_ok());
        assert!(
            r.bind(&BTreeMap::new(), &scope, today)
                .unwrap_err()
                .contains("required")
        );
        let mut unknown = given.clone();
        unknown.insert("x".into(), "1".into());
        assert!(
            r.bind(&unknown, &scope, today)
                .unwrap_err()
                .contains("no parameter")
        );
        let mut bad = given.clone();
        bad.insert("from".into(), "yesterday".into());
        assert!(
            r.bind(&bad, &scope, today)
                .unwrap_err()
                .contains("not a date")
        );
    }

    #[test]
    fn the_csv_name_carries_the_report_and_its_parameters() {
        let given: BTreeMap<String, String> = [
            ("facility".to_string(), "F1".to_string()),
            ("from".to_string(), "2026-11-01".to_string()),
        ]
        .into();
        assert_eq!(
            report().file_name(&given),
            "r_facility-F1_from-2026-11-01.csv"
        );
    }

    #[test]
    fn the_reports_folder_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports");
        let reports = load_dir(&dir).unwrap();
        let names: Vec<&str> = reports.iter().map(|r| r.name.as_str()).collect();
        for required in [
            "bed_availability",
            "adt_per_day",
            "length_of_stay",
            "abnormal_lab_rate",
            "feed_status",
        ] {
            assert!(names.contains(&required), "{required} in {names:?}");
        }
    }
}
