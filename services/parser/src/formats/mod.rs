//! Record readers, one per [`Format`] variant, behind one trait: each yields the raw
//! text of every field of the next record, one record at a time, from the entry's
//! text (which is held once; records are never copied as a whole).
//!
//! Every reader finds where a record ends before copying anything of it, so a record
//! longer than `max_record_bytes` ([`crate::archive::Limits`]) costs a scan, never a
//! copy: it is reported as [`ErrorCode::RecordTooLarge`] and reading goes on with the
//! next record (the next line, the next array element, the next record element).

mod delimited;
mod fixed;
mod json;
mod xml;

use medlake_common::dataset::{Dataset, Format};

use crate::error::ErrorCode;

pub(crate) use delimited::header_of;
pub(crate) use xml::{XmlPath, root_of};

/// What a reader produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// `values` holds the next record (one slot per field, `None` = absent).
    Record,
    /// The next record could not be read; the reader can go on.
    Bad(ErrorCode, String),
    /// No more records.
    End,
}

/// The entry cannot be read at all (e.g. XML not well formed): it is rejected whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryError {
    pub code: ErrorCode,
    pub message: String,
}

impl EntryError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EntryError {
            code,
            message: message.into(),
        }
    }
}

/// Reads records out of an entry's text.
pub(crate) trait Records {
    /// Advances to the next record, filling `values` (already sized and cleared).
    fn next(&mut self, values: &mut [Option<String>]) -> Result<Next, EntryError>;
}

/// Where each field reads from: `None` for fields whose value comes from lineage.
pub(crate) fn sources(dataset: &Dataset) -> Vec<Option<&str>> {
    dataset
        .fields
        .iter()
        .map(|f| {
            if f.from.is_some() {
                None
            } else {
                Some(f.source_name())
            }
        })
        .collect()
}

/// How a record over the limit is described: where it starts, and the limit.
pub(crate) fn too_large(unit: &str, at: impl std::fmt::Display, limit: usize) -> String {
    format!("at {unit} {at} is longer than max_record_bytes ({limit})")
}

/// The lines of a text with their 1-based numbers, as [`str::lines`] cuts them
/// (`\n` or `\r\n`), each checked against the record limit before it is handed out.
pub(crate) struct Lines<'t> {
    lines: std::str::SplitInclusive<'t, char>,
    number: u64,
    max_record_bytes: usize,
}

/// One line of [`Lines`].
pub(crate) enum Line<'t> {
    /// The line without its line break.
    Text(&'t str),
    /// The line (line break included) is longer than the limit.
    TooLarge,
}

impl<'t> Lines<'t> {
    pub fn new(text: &'t str, max_record_bytes: usize) -> Self {
        Lines {
            lines: text.split_inclusive('\n'),
            number: 0,
            max_record_bytes,
        }
    }

    /// The message of a line over the limit.
    pub fn too_large(&self) -> String {
        format!(
            "the record {}",
            too_large("line", self.number, self.max_record_bytes)
        )
    }
}

impl<'t> Iterator for Lines<'t> {
    type Item = Line<'t>;

    fn next(&mut self) -> Option<Line<'t>> {
        let raw = self.lines.next()?;
        self.number += 1;
        if raw.len() > self.max_record_bytes {
            return Some(Line::TooLarge);
        }
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        Some(Line::Text(line.strip_suffix('\r').unwrap_or(line)))
    }
}

/// The reader for a data set's format over `text`; no record longer than
/// `max_record_bytes` is copied.
pub(crate) fn reader<'t>(
    dataset: &'t Dataset,
    text: &'t str,
    max_record_bytes: usize,
) -> Result<Box<dyn Records + 't>, EntryError> {
    let sources = sources(dataset);
    Ok(match &dataset.format {
        Format::Csv(o) | Format::Delimited(o) => {
            let delimiter = dataset.format.delimiter().unwrap_or(b',');
            Box::new(delimited::DelimitedReader::new(
                text,
                o,
                delimiter,
                &sources,
                max_record_bytes,
            )?)
        }
        Format::FixedWidth(o) => {
            Box::new(fixed::FixedReader::new(text, o, &sources, max_record_bytes))
        }
        Format::Xml(o) => Box::new(xml::XmlReader::new(text, o, &sources, max_record_bytes)),
        Format::Json(o) => Box::new(json::JsonReader::document(
            text,
            o.record_path.as_deref(),
            &sources,
            max_record_bytes,
        )?),
        Format::Ndjson(_) => Box::new(json::JsonReader::lines(text, &sources, max_record_bytes)),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// One record's values, or its error code.
    pub type Row = Result<Vec<Option<String>>, ErrorCode>;

    /// Reads every record of `text` with a one-off data set definition.
    pub fn read_all(yaml: &str, text: &str) -> Result<Vec<Row>, ErrorCode> {
        let max = crate::archive::Limits::default().max_record_bytes;
        read_all_capped(yaml, text, max).map(|(rows, _)| rows)
    }

    /// Reads every record of `text` with a record limit; also returns the messages
    /// of the records that could not be read.
    pub fn read_all_capped(
        yaml: &str,
        text: &str,
        max_record_bytes: usize,
    ) -> Result<(Vec<Row>, Vec<String>), ErrorCode> {
        let d = Dataset::from_yaml(yaml, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let mut r = reader(&d, text, max_record_bytes).map_err(|e| e.code)?;
        let (mut rows, mut messages) = (Vec::new(), Vec::new());
        loop {
            let mut values = vec![None; d.fields.len()];
            match r.next(&mut values).map_err(|e| e.code)? {
                Next::Record => rows.push(Ok(values)),
                Next::Bad(code, message) => {
                    rows.push(Err(code));
                    messages.push(message);
                }
                Next::End => return Ok((rows, messages)),
            }
        }
    }

    /// Shorthand for expected values.
    pub fn row(values: &[Option<&str>]) -> Row {
        Ok(values.iter().map(|v| v.map(str::to_string)).collect())
    }
}
