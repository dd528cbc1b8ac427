//! Parsing a definition with precise messages, and the checks serde cannot express.

use std::collections::HashSet;
use std::path::Path;

use chrono::format::{Item, StrftimeItems};

use super::{Dataset, Field, FieldType, Format, Origin, Pii, Problem, Table};

/// Named date/timestamp formats, besides strftime patterns.
pub const NAMED_FORMATS: [&str; 3] = ["rfc3339", "epoch_seconds", "epoch_millis"];

/// Deserializes a definition. When the whole document fails, each field is tried
/// alone so the message can name the field that is wrong.
pub(super) fn parse(text: &str, file: &Path) -> Result<Dataset, Vec<Problem>> {
    let err = match serde_yaml::from_str::<Dataset>(text) {
        Ok(d) => return Ok(d),
        Err(e) => e,
    };
    let problem = |field: Option<String>, message: String| Problem {
        file: file.to_path_buf(),
        field,
        message,
    };
    if let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(text)
        && let Some(fields) = value.get("fields").and_then(|f| f.as_sequence())
    {
        let bad: Vec<Problem> = fields
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let e = serde_yaml::from_value::<Field>(f.clone()).err()?;
                let name = f
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("#{}", i + 1), str::to_string);
                Some(problem(Some(name), e.to_string()))
            })
            .collect();
        if !bad.is_empty() {
            return Err(bad);
        }
    }
    Err(vec![problem(None, err.to_string())])
}

fn is_snake_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// Every check beyond the YAML shape. Returns all problems found.
pub(super) fn check(d: &Dataset) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |field: Option<&str>, message: String| {
        out.push(Problem {
            file: d.source_file.clone(),
            field: field.map(str::to_string),
            message,
        })
    };
    if !is_snake_name(&d.name) {
        add(
            None,
            format!("name `{}` must be snake_case ([a-z][a-z0-9_]*)", d.name),
        );
    }
    if !(0.0..=1.0).contains(&d.max_reject_ratio) {
        add(None, "max_reject_ratio must be between 0 and 1".into());
    }
    if d.fields.is_empty() {
        add(None, "a data set needs at least one field".into());
    }
    let mut seen = HashSet::new();
    for f in &d.fields {
        if !seen.insert(f.name.as_str()) {
            add(Some(&f.name), "duplicate field name".into());
        }
        for msg in check_field(f) {
            add(Some(&f.name), msg);
        }
    }
    for (field, msg) in check_format(d) {
        add(field.as_deref(), msg);
    }
    for (field, msg) in check_match(d) {
        add(field.as_deref(), msg);
    }
    for (field, msg) in check_table(d) {
        add(field.as_deref(), msg);
    }
    out
}

fn check_field(f: &Field) -> Vec<String> {
    let mut out = Vec::new();
    if !is_snake_name(&f.name) {
        out.push(
            "name must be snake_case ([a-z][a-z0-9_]*); names starting with `_` are lineage".into(),
        );
    }
    let temporal = matches!(f.kind, FieldType::Date | FieldType::Timestamp);
    if !temporal && !f.formats.is_empty() {
        out.push(format!(
            "`formats` only applies to date and timestamp fields, not {}",
            f.kind
        ));
    }
    if f.kind != FieldType::Timestamp && f.timezone.is_some() {
        out.push(format!(
            "`timezone` only applies to timestamp fields, not {}",
            f.kind
        ));
    }
    if let Some(tz) = &f.timezone
        && tz.parse::<chrono_tz::Tz>().is_err()
    {
        out.push(format!(
            "unknown time zone `{tz}` (use an IANA name like America/Chicago)"
        ));
    }
    for fmt in &f.formats {
        if NAMED_FORMATS.contains(&fmt.as_str()) {
            continue;
        }
        if fmt.is_empty() || StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
            out.push(format!(
                "bad date/time format `{fmt}` (a strftime pattern or one of {NAMED_FORMATS:?})"
            ));
        }
    }
    if let Some(re) = &f.regex
        && let Err(e) = regex::Regex::new(re)
    {
        out.push(format!("bad regex: {e}"));
    }
    if f.pii == Some(Pii::Hash) && f.kind != FieldType::String {
        out.push(format!(
            "`pii: hash` needs a string field (the hash is hex text), not {}",
            f.kind
        ));
    }
    if f.from.is_some() && f.source.is_some() {
        out.push("`source` and `from` are exclusive".into());
    }
    match f.from {
        Some(Origin::IngestDate) if f.kind != FieldType::Date => {
            out.push("a field `from: ingest_date` must be a date".into())
        }
        Some(Origin::FacilityId | Origin::EntryName | Origin::FileName)
            if f.kind != FieldType::String =>
        {
            out.push("a field with `from` must be a string".into())
        }
        _ => {}
    }
    out
}

/// Names a field reads from the record (those without `from`).
fn record_sources(d: &Dataset) -> impl Iterator<Item = (&str, &str)> {
    d.fields
        .iter()
        .filter(|f| f.from.is_none())
        .map(|f| (f.name.as_str(), f.source_name()))
}

fn check_format(d: &Dataset) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    match &d.format {
        Format::Csv(o) | Format::Delimited(o) => {
            for (key, c) in [
                ("delimiter", o.delimiter),
                ("quote", Some(o.quote)),
                ("escape", o.escape),
                ("comment", o.comment),
            ] {
                if let Some(c) = c
                    && !c.is_ascii()
                {
                    out.push((
                        None,
                        format!("format.{key} must be a single ASCII character"),
                    ));
                }
            }
            if o.delimiter.is_some_and(|c| c == o.quote) {
                out.push((
                    None,
                    "format.delimiter and format.quote are the same character".into(),
                ));
            }
            if o.header && !o.columns.is_empty() {
                out.push((
                    None,
                    "format.columns is only used with `header: false`".into(),
                ));
            }
            if !o.header {
                if o.columns.is_empty() {
                    out.push((
                        None,
                        "`header: false` needs format.columns (the column names in order)".into(),
                    ));
                } else {
                    for (name, src) in record_sources(d) {
                        if !o.columns.iter().any(|c| c == src) {
                            out.push((
                                Some(name.into()),
                                format!("source `{src}` is not one of format.columns"),
                            ));
                        }
                    }
                }
            }
        }
        Format::FixedWidth(o) => {
            if o.columns.is_empty() {
                out.push((None, "fixed_width needs format.columns".into()));
            }
            let mut names = HashSet::new();
            for c in &o.columns {
                if !names.insert(c.name.as_str()) {
                    out.push((
                        None,
                        format!("format.columns: duplicate column `{}`", c.name),
                    ));
                }
                if c.start == 0 || c.width == 0 {
                    out.push((
                        None,
                        format!(
                            "format.columns: column `{}` needs start >= 1 and width >= 1",
                            c.name
                        ),
                    ));
                }
            }
            for (name, src) in record_sources(d) {
                if !names.contains(src) {
                    out.push((
                        Some(name.into()),
                        format!("source `{src}` is not one of format.columns"),
                    ));
                }
            }
        }
        Format::Xml(o) => {
            if o.max_depth == 0 {
                out.push((None, "format.max_depth must be at least 1".into()));
            }
            let mut paths: Vec<(Option<String>, &str)> = record_sources(d)
                .map(|(n, s)| (Some(n.to_string()), s))
                .collect();
            if let Some(r) = &o.record_element {
                if r.contains('@') {
                    out.push((None, "format.record_element cannot be an attribute".into()));
                }
                paths.push((None, r));
            }
            if let Some(r) = &d.matching.xml_root {
                paths.push((None, r));
            }
            for (field, path) in paths {
                for step in path.split('/') {
                    let name = step.strip_prefix('@').unwrap_or(step);
                    if name.is_empty() {
                        out.push((field.clone(), format!("path `{path}` has an empty step")));
                    } else if let Some((prefix, _)) = name.split_once(':')
                        && !o.namespaces.contains_key(prefix)
                    {
                        out.push((
                            field.clone(),
                            format!(
                                "namespace prefix `{prefix}` is not declared in format.namespaces"
                            ),
                        ));
                    }
                }
                if path.split('/').rev().skip(1).any(|s| s.starts_with('@')) {
                    out.push((
                        field,
                        format!("path `{path}`: only the last step can be an attribute"),
                    ));
                }
            }
        }
        Format::Json(_) | Format::Ndjson(_) => {}
    }
    out
}

fn check_match(d: &Dataset) -> Vec<(Option<String>, String)> {
    let m = &d.matching;
    let mut out = Vec::new();
    if m.entry.is_empty() && m.xml_root.is_none() && m.header_contains.is_empty() {
        out.push((
            None,
            "match needs at least one of `entry`, `xml_root`, `header_contains`".into(),
        ));
    }
    for g in &m.entry {
        if let Err(e) = globset::Glob::new(g) {
            out.push((None, format!("match.entry: bad glob `{g}`: {e}")));
        }
    }
    if m.xml_root.is_some() && !matches!(d.format, Format::Xml(_)) {
        out.push((None, "match.xml_root needs `format.type: xml`".into()));
    }
    let has_header = matches!(&d.format, Format::Csv(o) | Format::Delimited(o) if o.header);
    if !m.header_contains.is_empty() && !has_header {
        out.push((
            None,
            "match.header_contains needs a csv/delimited format with a header".into(),
        ));
    }
    out
}

fn need(d: &Dataset, name: &str, role: &str, required: bool) -> Option<(Option<String>, String)> {
    match d.field(name) {
        None => Some((None, format!("table.{role}: `{name}` is not a field"))),
        Some(f) if f.pii == Some(Pii::Drop) => Some((
            Some(name.into()),
            format!("used in table.{role} but has `pii: drop`"),
        )),
        Some(f) if required && !f.required => Some((
            Some(name.into()),
            format!("used in table.{role}, so it must be `required: true`"),
        )),
        Some(_) => None,
    }
}

fn check_table(d: &Dataset) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    match &d.table {
        Table::Append { partition_by } => out.extend(
            partition_by
                .iter()
                .filter_map(|p| need(d, p, "partition_by", false)),
        ),
        Table::Merge {
            primary_key,
            sequence_by,
            delete_when,
            partition_by,
        } => {
            if primary_key.is_empty() {
                out.push((None, "table.primary_key needs at least one field".into()));
            }
            out.extend(
                primary_key
                    .iter()
                    .filter_map(|k| need(d, k, "primary_key", true)),
            );
            out.extend(need(d, sequence_by, "sequence_by", true));
            if let Some(rule) = delete_when {
                out.extend(need(d, &rule.field, "delete_when", false));
                if rule.values.is_empty() {
                    out.push((None, "table.delete_when.in needs at least one value".into()));
                }
            }
            out.extend(
                partition_by
                    .iter()
                    .filter_map(|p| need(d, p, "partition_by", false)),
            );
            if let Some(f) = d.field(sequence_by)
                && matches!(
                    f.kind,
                    FieldType::Bool | FieldType::Float64 | FieldType::String
                )
            {
                out.push((
                    Some(sequence_by.clone()),
                    format!(
                        "sequence_by must be an integer, decimal, date or timestamp, not {}",
                        f.kind
                    ),
                ));
            }
        }
    }
    out
}
