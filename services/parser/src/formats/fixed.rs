//! `fixed_width`: columns at character positions; short lines yield what is there.
//! A line longer than `max_record_bytes` is skipped as `record_too_large`.

use medlake_common::dataset::FixedWidthOptions;

use super::{EntryError, Line, Lines, Next, Records};
use crate::error::ErrorCode;

pub(crate) struct FixedReader<'t> {
    lines: Lines<'t>,
    /// (start index 0-based, width) of each field's column.
    spans: Vec<Option<(usize, usize)>>,
    skip_prefixes: Vec<String>,
}

impl<'t> FixedReader<'t> {
    pub fn new(
        text: &'t str,
        o: &FixedWidthOptions,
        sources: &[Option<&str>],
        max_record_bytes: usize,
    ) -> Self {
        let mut lines = Lines::new(text, max_record_bytes);
        for _ in 0..o.skip_lines {
            lines.next();
        }
        let spans = sources
            .iter()
            .map(|s| {
                s.and_then(|s| o.columns.iter().find(|c| c.name == s))
                    .map(|c| (c.start.saturating_sub(1), c.width))
            })
            .collect();
        FixedReader {
            lines,
            spans,
            skip_prefixes: o.skip_prefixes.clone(),
        }
    }
}

impl Records for FixedReader<'_> {
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError> {
        let line = loop {
            match self.lines.next() {
                None => return Ok(Next::End),
                Some(Line::TooLarge) => {
                    return Ok(Next::Bad(ErrorCode::RecordTooLarge, self.lines.too_large()));
                }
                Some(Line::Text(l))
                    if l.trim().is_empty()
                        || self.skip_prefixes.iter().any(|p| l.starts_with(p.as_str())) =>
                {
                    continue;
                }
                Some(Line::Text(l)) => break l,
            }
        };
        for (slot, span) in values.iter_mut().zip(&self.spans) {
            *slot = span.and_then(|(start, width)| {
                let value: String = line.chars().skip(start).take(width).collect();
                (!value.is_empty()).then_some(value)
            });
        }
        Ok(Next::Record)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorCode;
    use crate::formats::test_support::{read_all, read_all_capped, row};

    const FW: &str = r#"
name: t
match: { entry: ["*"] }
format:
  type: fixed_width
  skip_lines: 1
  skip_prefixes: [TRL]
  columns: [{ name: A, start: 1, width: 3 }, { name: B, start: 4, width: 5 }, { name: C, start: 9, width: 2 }]
fields:
  - { name: a, type: string, source: A }
  - { name: b, type: string, source: B }
  - { name: c, type: string, source: C }
table: { mode: append }
"#;

    #[test]
    fn columns_by_position_with_short_lines_crlf_and_trailer() {
        let text = "HEADER\r\n001Café 42\r\n002abc\r\n\r\n03\r\nTRL000003\r\n";
        let rows = read_all(FW, text).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("001"), Some("Café "), Some("42")]),
                row(&[Some("002"), Some("abc"), None]),
                row(&[Some("03"), None, None]),
            ]
        );
    }

    #[test]
    fn a_line_over_the_limit_is_skipped_and_the_next_one_read() {
        let text = format!(
            "HEADER\r\n001abcde42\r\n{}\r\n002fghij43\r\n",
            "9".repeat(30)
        );
        let (rows, messages) = read_all_capped(FW, &text, 12).unwrap();
        assert_eq!(
            rows,
            [
                row(&[Some("001"), Some("abcde"), Some("42")]),
                Err(ErrorCode::RecordTooLarge),
                row(&[Some("002"), Some("fghij"), Some("43")]),
            ]
        );
        assert_eq!(
            messages,
            ["the record at line 3 is longer than max_record_bytes (12)"]
        );
    }
}
