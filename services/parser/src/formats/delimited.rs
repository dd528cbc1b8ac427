//! `csv` and `delimited`: the csv crate does quoting (embedded delimiters, quotes and
//! line breaks), CRLF and comments; columns are found by header name or by position.

use medlake_common::dataset::DelimitedOptions;

use super::{EntryError, Next, Records};
use crate::error::ErrorCode;

pub(crate) struct DelimitedReader<'t> {
    reader: csv::Reader<&'t [u8]>,
    /// Column index of each field (`None`: lineage field, or column absent).
    columns: Vec<Option<usize>>,
    record: csv::ByteRecord,
}

fn builder(o: &DelimitedOptions, delimiter: u8) -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .quoting(o.quoting)
        .quote(o.quote as u8)
        .double_quote(o.escape.is_none())
        .escape(o.escape.map(|c| c as u8))
        .comment(o.comment.map(|c| c as u8));
    b
}

/// The text after the first `n` lines.
fn skip_lines(text: &str, n: usize) -> &str {
    let mut rest = text;
    for _ in 0..n {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The header's column names (trimmed, lower-cased), for routing by header signature.
pub(crate) fn header_of(text: &str, o: &DelimitedOptions, delimiter: u8) -> Option<Vec<String>> {
    let mut reader = builder(o, delimiter).from_reader(skip_lines(text, o.skip_lines).as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Some(record.iter().map(norm).collect()),
        _ => None,
    }
}

impl<'t> DelimitedReader<'t> {
    pub fn new(
        text: &'t str,
        o: &DelimitedOptions,
        delimiter: u8,
        sources: &[Option<&str>],
    ) -> Result<Self, EntryError> {
        let mut reader =
            builder(o, delimiter).from_reader(skip_lines(text, o.skip_lines).as_bytes());
        let names: Vec<String> = if o.header {
            let mut header = csv::StringRecord::new();
            match reader.read_record(&mut header) {
                Ok(_) => header.iter().map(norm).collect(),
                Err(e) => {
                    return Err(EntryError::new(
                        ErrorCode::MalformedCsv,
                        format!("unreadable header: {}", kind(&e)),
                    ));
                }
            }
        } else {
            o.columns.iter().map(|c| norm(c)).collect()
        };
        let columns = sources
            .iter()
            .map(|s| s.and_then(|s| names.iter().position(|n| *n == norm(s))))
            .collect();
        Ok(DelimitedReader {
            reader,
            columns,
            record: csv::ByteRecord::new(),
        })
    }
}

/// A csv error described without the data around it.
fn kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { pos, .. } => format!(
            "invalid UTF-8 at line {}",
            pos.as_ref().map_or(0, |p| p.line())
        ),
        csv::ErrorKind::UnequalLengths { pos, .. } => {
            format!(
                "wrong number of columns at line {}",
                pos.as_ref().map_or(0, |p| p.line())
            )
        }
        _ => "unreadable csv".to_string(),
    }
}

impl Records for DelimitedReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => Ok(Next::End),
            Ok(true) => {
                for (slot, col) in values.iter_mut().zip(&self.columns) {
                    *slot = col
                        .and_then(|c| self.record.get(c))
                        .map(|b| String::from_utf8_lossy(b).into_owned());
                }
                Ok(Next::Record)
            }
            // The input is a &str, so only structural errors can happen; they end the entry.
            Err(e) => Err(EntryError::new(ErrorCode::MalformedCsv, kind(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, row};

    const CSV: &str = r#"
name: t
match: { entry: ["*"] }
format: { type: csv }
fields:
  - { name: a, type: string, source: A }
  - { name: b, type: string, source: B }
  - { name: c, type: string, source: Missing }
table: { mode: append }
"#;

    #[test]
    fn quoted_delimiters_newlines_and_crlf() {
        let text = "A,B\r\n\"x, y\",\"line1\r\nline2\"\r\n\"say \"\"hi\"\"\",2\r\n";
        let rows = read_all(CSV, text).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("x, y"), Some("line1\r\nline2"), None]),
                row(&[Some("say \"hi\""), Some("2"), None])
            ]
        );
    }

    #[test]
    fn header_is_matched_case_insensitively_in_any_order() {
        let rows = read_all(CSV, " b ,a\n1,2\n3\n").unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("2"), Some("1"), None]),
                row(&[None, Some("3"), None])
            ]
        );
    }

    #[test]
    fn delimited_without_header_with_escape_and_comments() {
        let yaml = r##"
name: t
match: { entry: ["*"] }
format: { type: delimited, header: false, columns: [X, Y], escape: "\\", comment: "#", skip_lines: 1 }
fields:
  - { name: x, type: string, source: X }
  - { name: y, type: string, source: Y }
table: { mode: append }
"##;
        let rows = read_all(yaml, "BANNER|LINE\n# note\n1|\"a\\\"b\"\n2|c|extra\n").unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), Some("a\"b")]),
                row(&[Some("2"), Some("c")])
            ]
        );
    }

    #[test]
    fn tab_and_semicolon_delimiters_and_no_quoting() {
        let yaml = CSV.replace(
            "{ type: csv }",
            "{ type: delimited, delimiter: \"\\t\", quoting: false }",
        );
        assert_eq!(
            read_all(&yaml, "A\tB\n\"q\tz\n").unwrap(),
            [row(&[Some("\"q"), Some("z"), None])]
        );
        let yaml = CSV.replace("{ type: csv }", "{ type: csv, delimiter: \";\" }");
        assert_eq!(
            read_all(&yaml, "A;B\n1;2,5\n").unwrap(),
            [row(&[Some("1"), Some("2,5"), None])]
        );
    }

    #[test]
    fn empty_entry_has_no_records() {
        assert_eq!(read_all(CSV, "").unwrap(), []);
        assert_eq!(read_all(CSV, "A,B\n").unwrap(), []);
        let _ = ErrorCode::MalformedCsv;
    }
}
