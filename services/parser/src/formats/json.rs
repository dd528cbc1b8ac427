//! `json` (an array of records, possibly at a dotted `record_path`) and `ndjson` (one
//! object per line). Fields are dotted paths; scalars become their text, nested
//! objects and arrays their compact JSON.
//!
//! A document is never parsed into one tree: serde_json checks it and walks to the
//! records without building anything (everything off the path is skipped, the records
//! are taken as borrowed raw text), then each record is found by a scan of that text
//! and parsed on its own, and only when it is within `max_record_bytes`. So a 200 MB
//! document costs two scans, and memory for one record at a time.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{EntryError, Line, Lines, Next, Records, too_large};
use crate::error::ErrorCode;

pub(crate) enum JsonReader<'t> {
    Document {
        records: Elements<'t>,
        paths: Vec<Option<Vec<String>>>,
    },
    Lines {
        lines: Lines<'t>,
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

/// Parses one record (already within the limit) and fills `values`.
fn parse(raw: &str, paths: &[Option<Vec<String>>], values: &mut [Option<String>]) -> Next {
    match serde_json::from_str::<Value>(raw) {
        Ok(record) => fill(&record, paths, values),
        Err(e) => Next::Bad(ErrorCode::MalformedJson, malformed(&e)),
    }
}

/// serde_json errors say what was expected and where, never the data.
fn malformed(e: &serde_json::Error) -> String {
    format!("not valid JSON at line {} column {}", e.line(), e.column())
}

/// A map key, borrowed unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Walks a document to the value at `path` (object keys, or array indexes), skipping
/// everything else; that value is returned as its raw text, checked but not parsed.
/// Like [`lookup`] on a parsed document: the last of repeated keys wins.
struct At<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.path.is_empty() {
            return <&RawValue as de::Deserialize>::deserialize(d).map(Some);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == self.path[0].as_str() {
                found = map.next_value_seed(At {
                    path: &self.path[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wanted = self.path[0].parse::<usize>().ok();
        let mut found = None;
        for i in 0.. {
            let more = if Some(i) == wanted {
                let element = seq.next_element_seed(At {
                    path: &self.path[1..],
                })?;
                found = element.flatten();
                element.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                break;
            }
        }
        Ok(found)
    }

    // Scalars have nothing below them.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// The records of a document, cut out of its (already checked) text one at a time:
/// the elements of an array, or one object.
pub(crate) struct Elements<'t> {
    text: &'t str,
    /// Where the next element is looked for; `None` once all are read.
    pos: Option<usize>,
    /// The records are one object, not an array.
    single: bool,
    max_record_bytes: usize,
}

fn skip_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the valid JSON value starting at `start`: only strings and nesting are
/// tracked, which is enough on text serde_json has checked.
fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 0 {
                    return (i + 1).min(bytes.len());
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' | b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return i,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

impl<'t> Elements<'t> {
    /// The next record's raw text and where it starts in the entry's text.
    fn next(&mut self) -> Option<(usize, &'t str)> {
        let bytes = self.text.as_bytes();
        let pos = self.pos?;
        if self.single {
            self.pos = None;
            return Some((pos, &self.text[pos..]));
        }
        let start = skip_whitespace(bytes, pos);
        if start >= bytes.len() || bytes[start] == b']' {
            self.pos = None;
            return None;
        }
        let end = value_end(bytes, start);
        let after = skip_whitespace(bytes, end);
        self.pos = Some(if bytes.get(after) == Some(&b',') {
            after + 1
        } else {
            after
        });
        Some((start, &self.text[start..end]))
    }
}

impl<'t> JsonReader<'t> {
    pub fn document(
        text: &'t str,
        record_path: Option<&str>,
        sources: &[Option<&str>],
        max_record_bytes: usize,
    ) -> Result<Self, EntryError> {
        let bad = |e: serde_json::Error| EntryError::new(ErrorCode::MalformedJson, malformed(&e));
        let steps: Vec<String> = record_path
            .map(|p| p.split('.').map(str::to_string).collect())
            .unwrap_or_default();
        let mut de = serde_json::Deserializer::from_str(text);
        let found = At { path: &steps }.deserialize(&mut de).map_err(bad)?;
        de.end().map_err(bad)?;
        let raw = found
            .ok_or_else(|| {
                EntryError::new(
                    ErrorCode::MalformedJson,
                    format!("no value at record_path `{}`", record_path.unwrap_or("")),
                )
            })?
            .get();
        // `raw` is a slice of `text`: where it starts, for messages.
        let offset = raw.as_ptr() as usize - text.as_ptr() as usize;
        let (pos, single) = match raw.as_bytes().first() {
            Some(b'[') => (offset + 1, false),
            Some(b'{') => (offset, true),
            _ => {
                return Err(EntryError::new(
                    ErrorCode::MalformedJson,
                    "records are neither an array nor an object",
                ));
            }
        };
        Ok(JsonReader::Document {
            records: Elements {
                text: &text[..offset + raw.len()],
                pos: Some(pos),
                single,
                max_record_bytes,
            },
            paths: paths(sources),
        })
    }

    pub fn lines(text: &'t str, sources: &[Option<&str>], max_record_bytes: usize) -> Self {
        JsonReader::Lines {
            lines: Lines::new(text, max_record_bytes),
            paths: paths(sources),
        }
    }
}

impl Records for JsonReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        match self {
            JsonReader::Document { records, paths } => Ok(match records.next() {
                None => Next::End,
                Some((at, raw)) if raw.len() > records.max_record_bytes => Next::Bad(
                    ErrorCode::RecordTooLarge,
                    format!(
                        "the record {}",
                        too_large("byte", at, records.max_record_bytes)
                    ),
                ),
                Some((_, raw)) => parse(raw, paths, values),
            }),
            JsonReader::Lines { lines, paths } => loop {
                return Ok(match lines.next() {
                    None => Next::End,
                    Some(Line::TooLarge) => Next::Bad(ErrorCode::RecordTooLarge, lines.too_large()),
                    Some(Line::Text(line)) if line.trim().is_empty() => continue,
                    Some(Line::Text(line)) => parse(line, paths, values),
                });
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, read_all_capped, row};

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
    fn paths_skip_other_keys_go_through_arrays_and_take_the_last_repeated_key() {
        let yaml = JSON.replace("data.items", "batches.1.items");
        let doc = r#" {"meta": {"items": [{"id": 0}], "s": "a\"]}"},
            "batches": [ {"items": [{"id": 1}]}, {"items": [{"id": 2}]} ], "n": [1.5, null, true],
            "batches": [ {"items": []}, {"items": [ {"id": "3, \"x\"]", "address": {"city": "B\\"}}, {"id": 4} ]} ] }  "#;
        assert_eq!(
            read_all(&yaml, doc).unwrap(),
            [
                row(&[Some("3, \"x\"]"), Some("B\\"), None]),
                row(&[Some("4"), None, None])
            ]
        );
        assert_eq!(
            read_all(&yaml, r#"{"batches": [{"items": []}]}"#),
            Err(ErrorCode::MalformedJson)
        );
        assert_eq!(
            read_all(&yaml, r#"{"batches": [1, {"items": "x"}]}"#),
            Err(ErrorCode::MalformedJson)
        );
        // Trailing garbage after the document.
        assert_eq!(
            read_all(&yaml, r#"{"batches": [1, {"items": []}]} x"#),
            Err(ErrorCode::MalformedJson)
        );
    }

    #[test]
    fn a_document_that_is_one_object_and_an_array_of_scalars() {
        let yaml = JSON.replace("{ type: json, record_path: data.items }", "{ type: json }");
        assert_eq!(
            read_all(&yaml, r#" {"id": "a", "address": {"city": "C"}} "#).unwrap(),
            [row(&[Some("a"), Some("C"), None])]
        );
        assert_eq!(
            read_all(&yaml, r#"[1, "s", {"n": [1, {"a": 2}]}, []]"#).unwrap(),
            [
                Err(ErrorCode::MalformedJson),
                Err(ErrorCode::MalformedJson),
                row(&[None, None, Some(r#"[1,{"a":2}]"#)]),
                Err(ErrorCode::MalformedJson),
            ]
        );
        assert_eq!(read_all(&yaml, "[]").unwrap(), []);
        assert_eq!(read_all(&yaml, "5"), Err(ErrorCode::MalformedJson));
    }

    #[test]
    fn an_element_over_the_limit_is_skipped_and_the_next_one_read() {
        let long = format!(r#"{{"id": "{}", "n": [{{"x": "]}}"}}]}}"#, "y".repeat(100));
        let doc = format!(r#"{{"data": {{"items": [{{"id": 1}}, {long}, {{"id": 2}}]}}}}"#);
        let (rows, messages) = read_all_capped(JSON, &doc, 64).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), None, None]),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("2"), None, None]),
            ]
        );
        let at = doc.find(&long).unwrap();
        assert_eq!(
            messages,
            [format!(
                "the record at byte {at} is longer than max_record_bytes (64)"
            )]
        );
        // A document that is one record over the limit is one reject.
        let yaml = JSON.replace("{ type: json, record_path: data.items }", "{ type: json }");
        let (rows, _) = read_all_capped(&yaml, &long, 64).unwrap();
        assert_eq!(rows, [Err(ErrorCode::RecordTooLarge)]);
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

    #[test]
    fn ndjson_line_over_the_limit_is_skipped() {
        let yaml = JSON.replace(
            "{ type: json, record_path: data.items }",
            "{ type: ndjson }",
        );
        let text = format!(
            "{{\"id\":1}}\n{{\"id\":\"{}\"}}\n{{\"id\":2}}\n",
            "y".repeat(40)
        );
        let (rows, messages) = read_all_capped(&yaml, &text, 20).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), None, None]),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("2"), None, None])
            ]
        );
        assert_eq!(
            messages,
            ["the record at line 2 is longer than max_record_bytes (20)"]
        );
    }
}
