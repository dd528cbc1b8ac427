//! `json` (an array of records, possibly at a dotted `record_path`) and `ndjson` (one
//! object per line). Fields are dotted paths; scalars become their text, nested
//! objects and arrays their compact JSON.

use serde_json::Value;

use super::{EntryError, Next, Records};
use crate::error::ErrorCode;

pub(crate) enum JsonReader<'t> {
    Document {
        records: std::vec::IntoIter<Value>,
        paths: Vec<Option<Vec<String>>>,
    },
    Lines {
        lines: std::str::Lines<'t>,
        paths: Vec<Option<Vec<String>>>,
    },
}

fn paths(sources: &[Option<&str>]) -> Vec<Option<Vec<String>>> {
    sources
        .iter()
        .map(|s| s.map(|s| s.split('.').map(str::to_string).collect()))
        .collect()
}

fn lookup<'v>(mut value: &'v Value, path: &[String]) -> Option<&'v Value> {
    for step in path {
        value = match value {
            Value::Object(map) => map.get(step)?,
            Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

fn fill(record: &Value, paths: &[Option<Vec<String>>], values: &mut [Option<String>]) -> Next {
    if !record.is_object() {
        return Next::Bad(
            ErrorCode::MalformedJson,
            "record is not a JSON object".into(),
        );
    }
    for (slot, path) in values.iter_mut().zip(paths) {
        *slot = path.as_ref().and_then(|p| lookup(record, p)).and_then(text);
    }
    Next::Record
}

/// serde_json errors say what was expected and where, never the data.
fn malformed(e: &serde_json::Error) -> String {
    format!("not valid JSON at line {} column {}", e.line(), e.column())
}

impl<'t> JsonReader<'t> {
    pub fn document(
        text: &'t str,
        record_path: Option<&str>,
        sources: &[Option<&str>],
    ) -> Result<Self, EntryError> {
        let mut doc: Value = serde_json::from_str(text)
            .map_err(|e| EntryError::new(ErrorCode::MalformedJson, malformed(&e)))?;
        if let Some(path) = record_path {
            let steps: Vec<String> = path.split('.').map(str::to_string).collect();
            doc = lookup(&doc, &steps).cloned().ok_or_else(|| {
                EntryError::new(
                    ErrorCode::MalformedJson,
                    format!("no value at record_path `{path}`"),
                )
            })?;
        }
        let records = match doc {
            Value::Array(items) => items,
            object @ Value::Object(_) => vec![object],
            _ => {
                return Err(EntryError::new(
                    ErrorCode::MalformedJson,
                    "records are neither an array nor an object",
                ));
            }
        };
        Ok(JsonReader::Document {
            records: records.into_iter(),
            paths: paths(sources),
        })
    }

    pub fn lines(text: &'t str, sources: &[Option<&str>]) -> Self {
        JsonReader::Lines {
            lines: text.lines(),
            paths: paths(sources),
        }
    }
}

impl Records for JsonReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        match self {
            JsonReader::Document { records, paths } => Ok(records
                .next()
                .map_or(Next::End, |r| fill(&r, paths, values))),
            JsonReader::Lines { lines, paths } => loop {
                let Some(line) = lines.next() else {
                    return Ok(Next::End);
                };
                if line.trim().is_empty() {
                    continue;
                }
                return Ok(match serde_json::from_str::<Value>(line) {
                    Ok(record) => fill(&record, paths, values),
                    Err(e) => Next::Bad(ErrorCode::MalformedJson, malformed(&e)),
                });
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, row};

    const JSON: &str = r#"
name: t
match: { entry: ["*"] }
format: { type: json, record_path: data.items }
fields:
  - { name: id, type: string }
  - { name: city, type: string, source: address.city }
  - { name: n, type: string }
table: { mode: append }
"#;

    #[test]
    fn json_array_at_a_path() {
        let doc = r#"{"data":{"items":[{"id":1,"address":{"city":"Zürich"},"n":true},{"id":"x","n":null},[1]]}}"#;
        let rows = read_all(JSON, doc).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), Some("Zürich"), Some("true")]),
                row(&[Some("x"), None, None]),
                Err(ErrorCode::MalformedJson)
            ]
        );
        assert_eq!(read_all(JSON, "{\"data\":"), Err(ErrorCode::MalformedJson));
        assert_eq!(
            read_all(JSON, "{\"data\":{}}"),
            Err(ErrorCode::MalformedJson)
        );
    }

    #[test]
    fn ndjson_lines_with_a_bad_line() {
        let yaml = JSON.replace(
            "{ type: json, record_path: data.items }",
            "{ type: ndjson }",
        );
        let rows = read_all(&yaml, "{\"id\":1}\r\n\n{broken\n{\"id\":2,\"n\":1.5}\n").unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), None, None]),
                Err(ErrorCode::MalformedJson),
                row(&[Some("2"), None, Some("1.5")])
            ]
        );
    }
}
