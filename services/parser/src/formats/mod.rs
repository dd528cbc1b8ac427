//! Record readers, one per [`Format`] variant, behind one trait: each yields the raw
//! text of every field of the next record, one record at a time, from the entry's
//! text (which is held once; records are never copied as a whole).

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

/// The reader for a data set's format over `text`.
pub(crate) fn reader<'t>(
    dataset: &'t Dataset,
    text: &'t str,
) -> Result<Box<dyn Records + 't>, EntryError> {
    let sources = sources(dataset);
    Ok(match &dataset.format {
        Format::Csv(o) | Format::Delimited(o) => {
            let delimiter = dataset.format.delimiter().unwrap_or(b',');
            Box::new(delimited::DelimitedReader::new(
                text, o, delimiter, &sources,
            )?)
        }
        Format::FixedWidth(o) => Box::new(fixed::FixedReader::new(text, o, &sources)),
        Format::Xml(o) => Box::new(xml::XmlReader::new(text, o, &sources)),
        Format::Json(o) => Box::new(json::JsonReader::document(
            text,
            o.record_path.as_deref(),
            &sources,
        )?),
        Format::Ndjson(_) => Box::new(json::JsonReader::lines(text, &sources)),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// One record's values, or its error code.
    pub type Row = Result<Vec<Option<String>>, ErrorCode>;

    /// Reads every record of `text` with a one-off data set definition.
    pub fn read_all(yaml: &str, text: &str) -> Result<Vec<Row>, ErrorCode> {
        let d = Dataset::from_yaml(yaml, std::path::Path::new("t.yaml"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let mut r = reader(&d, text).map_err(|e| e.code)?;
        let mut out = Vec::new();
        loop {
            let mut values = vec![None; d.fields.len()];
            match r.next(&mut values).map_err(|e| e.code)? {
                Next::Record => out.push(Ok(values)),
                Next::Bad(code, _) => out.push(Err(code)),
                Next::End => return Ok(out),
            }
        }
    }

    /// Shorthand for expected values.
    pub fn row(values: &[Option<&str>]) -> Row {
        Ok(values.iter().map(|v| v.map(str::to_string)).collect())
    }
}
