//! `csv` and `delimited`: csv-core does quoting (embedded delimiters, quotes and line
//! breaks), CRLF and comments; columns are found by header name or by position.
//!
//! Records are parsed by csv-core straight from the entry's text into one buffer
//! reused for every record, which never grows past `max_record_bytes`. A longer
//! record is parsed on to its end with its bytes dropped as they come (so quoting
//! stays in step and the next record starts where it should) and reported as
//! `record_too_large`. The csv crate's reader is not used: its record buffer grows
//! to the length of the record, so one 100 MB line would cost 100 MB more.

use medlake_common::dataset::DelimitedOptions;

use super::{EntryError, Next, Records, too_large};
use crate::error::ErrorCode;

/// Field ends beyond the kept ones are written here and dropped.
const SPARE_ENDS: usize = 16;

/// The record buffer's first size (or the record limit, if smaller).
const FIRST_BUFFER_BYTES: usize = 4096;

/// What reading one record gave.
#[derive(Debug, PartialEq, Eq)]
enum Raw {
    /// A record is in the buffer.
    Record,
    /// A record longer than the limit was skipped; it starts at this line.
    TooLarge { line: u64 },
    /// No more records.
    End,
}

/// Raw records of delimited text, with at most `max_record_bytes` of one in memory.
struct RecordReader<'t> {
    core: csv_core::Reader,
    input: &'t [u8],
    pos: usize,
    max_record_bytes: usize,
    /// Fields whose ends are kept: the ones after the last column read are not needed.
    keep_fields: usize,
    /// The record's unescaped bytes, then the end of each field in them.
    out: Vec<u8>,
    ends: Vec<usize>,
    /// Fields of the record in the buffer (at most `keep_fields`).
    fields: usize,
}

impl<'t> RecordReader<'t> {
    /// `first_line` is the line number of `input`'s first line in the entry.
    fn new(
        input: &'t str,
        o: &DelimitedOptions,
        delimiter: u8,
        first_line: u64,
        max_record_bytes: usize,
    ) -> Self {
        let mut core = csv_core::ReaderBuilder::new()
            .delimiter(delimiter)
            .quoting(o.quoting)
            .quote(o.quote as u8)
            .double_quote(o.escape.is_none())
            .escape(o.escape.map(|c| c as u8))
            .comment(o.comment.map(|c| c as u8))
            .build();
        core.set_line(first_line);
        RecordReader {
            core,
            input: input.as_bytes(),
            pos: 0,
            max_record_bytes,
            keep_fields: usize::MAX,
            out: vec![0; FIRST_BUFFER_BYTES.min(max_record_bytes).max(1)],
            ends: vec![0; SPARE_ENDS],
            fields: 0,
        }
    }

    /// The line the next record starts on (blank lines before it are not part of it).
    fn next_line(&self) -> u64 {
        let blank = self.input[self.pos..]
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .filter(|b| **b == b'\n')
            .count();
        self.core.line() + blank as u64
    }

    /// Reads the next record. While a record is within the limit, csv-core sees
    /// only the bytes up to the limit; once it needs more, the record is too large
    /// and the rest of it is parsed into the same buffer, over and over.
    fn read(&mut self) -> Raw {
        let start = self.pos;
        let line = self.next_line();
        let limit_end = self
            .input
            .len()
            .min(start.saturating_add(self.max_record_bytes));
        let (mut nout, mut nend) = (0, 0);
        let mut too_large = false;
        loop {
            let end = if too_large {
                self.input.len()
            } else {
                limit_end
            };
            if !too_large && self.pos == end && end < self.input.len() {
                too_large = true;
                continue;
            }
            let (result, nin, o, e) = self.core.read_record(
                &self.input[self.pos..end],
                &mut self.out[nout..],
                &mut self.ends[nend..],
            );
            self.pos += nin;
            nout += o;
            nend += e;
            match result {
                // Either the limit is reached (next turn) or the input ended (the
                // next call, with no input, finishes the record).
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    if too_large || self.out.len() >= self.max_record_bytes {
                        too_large = true;
                        nout = 0;
                    } else {
                        let len = (self.out.len() * 2).min(self.max_record_bytes);
                        self.out.resize(len, 0);
                    }
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    if too_large {
                        nend = 0;
                    } else if nend >= self.keep_fields && self.ends.len() > self.keep_fields {
                        nend = self.keep_fields;
                    } else {
                        let len = (self.ends.len() * 2)
                            .min(self.keep_fields.saturating_add(SPARE_ENDS))
                            .max(self.ends.len() + 1);
                        self.ends.resize(len, 0);
                    }
                }
                csv_core::ReadRecordResult::Record if too_large => {
                    return Raw::TooLarge { line };
                }
                csv_core::ReadRecordResult::Record => {
                    self.fields = nend.min(self.keep_fields);
                    return Raw::Record;
                }
                csv_core::ReadRecordResult::End => return Raw::End,
            }
        }
    }

    /// Field `i` of the record in the buffer.
    fn field(&self, i: usize) -> Option<&[u8]> {
        if i >= self.fields {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.out[start..self.ends[i]])
    }

    /// The fields of the record in the buffer, as text.
    fn strings(&self) -> Vec<String> {
        (0..self.fields)
            .filter_map(|i| self.field(i))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

pub(crate) struct DelimitedReader<'t> {
    records: RecordReader<'t>,
    /// Column index of each field (`None`: lineage field, or column absent).
    columns: Vec<Option<usize>>,
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
/// `text` is the start of an entry, already bounded by the caller.
pub(crate) fn header_of(text: &str, o: &DelimitedOptions, delimiter: u8) -> Option<Vec<String>> {
    let mut reader = RecordReader::new(skip_lines(text, o.skip_lines), o, delimiter, 1, usize::MAX);
    match reader.read() {
        Raw::Record => Some(reader.strings().iter().map(|s| norm(s)).collect()),
        _ => None,
    }
}

impl<'t> DelimitedReader<'t> {
    pub fn new(
        text: &'t str,
        o: &DelimitedOptions,
        delimiter: u8,
        sources: &[Option<&str>],
        max_record_bytes: usize,
    ) -> Result<Self, EntryError> {
        let first_line = 1 + o.skip_lines as u64;
        let mut records = RecordReader::new(
            skip_lines(text, o.skip_lines),
            o,
            delimiter,
            first_line,
            max_record_bytes,
        );
        let names: Vec<String> = if o.header {
            match records.read() {
                Raw::Record => records.strings().iter().map(|s| norm(s)).collect(),
                Raw::End => Vec::new(),
                // Without its header no column of the entry can be found.
                Raw::TooLarge { line } => {
                    return Err(EntryError::new(
                        ErrorCode::RecordTooLarge,
                        format!("the header {}", too_large("line", line, max_record_bytes)),
                    ));
                }
            }
        } else {
            o.columns.iter().map(|c| norm(c)).collect()
        };
        let columns: Vec<Option<usize>> = sources
            .iter()
            .map(|s| s.and_then(|s| names.iter().position(|n| *n == norm(s))))
            .collect();
        records.keep_fields = columns.iter().flatten().max().map_or(0, |c| c + 1);
        Ok(DelimitedReader { records, columns })
    }
}

impl Records for DelimitedReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        match self.records.read() {
            Raw::End => Ok(Next::End),
            Raw::TooLarge { line } => Ok(Next::Bad(
                ErrorCode::RecordTooLarge,
                format!(
                    "the record {}",
                    too_large("line", line, self.records.max_record_bytes)
                ),
            )),
            Raw::Record => {
                for (slot, col) in values.iter_mut().zip(&self.columns) {
                    *slot = col
                        .and_then(|c| self.records.field(c))
                        .map(|b| String::from_utf8_lossy(b).into_owned());
                }
                Ok(Next::Record)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use medlake_common::dataset::DelimitedOptions;

    use super::{Raw, RecordReader, SPARE_ENDS};
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, read_all_capped, row};

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
        assert_eq!(read_all(CSV, "\r\n\n").unwrap(), []);
    }

    #[test]
    fn a_record_over_the_limit_is_skipped_and_the_next_one_read() {
        // Each line is 8 bytes with its line break; the limit is 16.
        let long_quoted = format!("\"{}\n{}\",x\n", "y".repeat(10), "z".repeat(10));
        let text = format!("A,B\n1,2345\n{}3,4\n{},2\n5,6", long_quoted, "9".repeat(40));
        let (rows, messages) = read_all_capped(CSV, &text, 16).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("1"), Some("2345"), None]),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("3"), Some("4"), None]),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("5"), Some("6"), None]),
            ]
        );
        assert_eq!(
            messages,
            [
                "the record at line 3 is longer than max_record_bytes (16)",
                "the record at line 6 is longer than max_record_bytes (16)"
            ]
        );
    }

    #[test]
    fn a_record_exactly_at_the_limit_is_read() {
        // "1,234567\r\n" is 10 bytes; at EOF without a line break, 8.
        let (rows, _) = read_all_capped(CSV, "A,B\n1,234567\r\n1,234567", 10).unwrap();
        assert_eq!(rows, vec![row(&[Some("1"), Some("234567"), None]); 2]);
        let (rows, _) = read_all_capped(CSV, "A,B\n1,23456789\r\n", 10).unwrap();
        assert_eq!(rows, [Err(ErrorCode::RecordTooLarge)]);
    }

    #[test]
    fn a_header_over_the_limit_rejects_the_entry() {
        let text = format!("A,B,{}\n1,2\n", "C".repeat(100));
        assert_eq!(
            read_all_capped(CSV, &text, 64).map(|(rows, _)| rows),
            Err(ErrorCode::RecordTooLarge)
        );
    }

    #[test]
    fn a_long_record_never_grows_the_buffers_past_the_limit() {
        let o: DelimitedOptions = serde_yaml::from_str("{}").unwrap();
        // 8 MB in one quoted field, then 1M empty fields, then a short record.
        let text = format!(
            "\"{}\"{}\n1,2\n",
            "x".repeat(8_000_000),
            ",".repeat(1_000_000)
        );
        let mut reader = RecordReader::new(&text, &o, b',', 1, 4096);
        reader.keep_fields = 2;
        assert_eq!(reader.read(), Raw::TooLarge { line: 1 });
        assert_eq!(reader.read(), Raw::Record);
        assert_eq!(
            (reader.field(0), reader.field(1)),
            (Some(&b"1"[..]), Some(&b"2"[..]))
        );
        assert_eq!(reader.read(), Raw::End);
        assert!(reader.out.len() <= 4096, "{}", reader.out.len());
        assert!(reader.ends.len() <= SPARE_ENDS * 2, "{}", reader.ends.len());
        // Within the limit, fields past the kept ones do not grow the field ends.
        let wide = format!("1,2{}\n", ",".repeat(1000));
        let mut reader = RecordReader::new(&wide, &o, b',', 1, 1 << 20);
        reader.keep_fields = 2;
        assert_eq!(reader.read(), Raw::Record);
        assert_eq!(reader.field(1), Some(&b"2"[..]));
        assert_eq!(reader.field(2), None);
        assert!(reader.ends.len() <= SPARE_ENDS * 2, "{}", reader.ends.len());
    }

    #[test]
    fn columns_after_the_last_one_read_are_not_kept() {
        // Thousands of fields after the two read: the record still reads right.
        let text = format!("A,B\n1,2{}\n3,4\n", ",".repeat(5000));
        assert_eq!(
            read_all(CSV, &text).unwrap(),
            [
                row(&[Some("1"), Some("2"), None]),
                row(&[Some("3"), Some("4"), None])
            ]
        );
    }
}
