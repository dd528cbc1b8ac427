//! How the entries of a data set are read: the format variants and the text encoding.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The layout of an entry. One variant per format, tagged by `type` in the definition;
/// one generic record pipeline reads them all.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated values (RFC 4180 quoting); the delimiter defaults to `,`.
    Csv(DelimitedOptions),
    /// Delimited text (`.txt`), any single-byte delimiter; it defaults to `|`.
    Delimited(DelimitedOptions),
    /// Fixed-width text: each column at a position of the line.
    FixedWidth(FixedWidthOptions),
    /// XML: one record per document, or one per repeated record element.
    Xml(XmlOptions),
    /// A JSON document: an array of records, or an array at `record_path`.
    Json(JsonOptions),
    /// Newline-delimited JSON: one object per line.
    Ndjson(NdjsonOptions),
}

impl Format {
    /// Short name of the variant, as written in `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Format::Csv(_) => "csv",
            Format::Delimited(_) => "delimited",
            Format::FixedWidth(_) => "fixed_width",
            Format::Xml(_) => "xml",
            Format::Json(_) => "json",
            Format::Ndjson(_) => "ndjson",
        }
    }

    /// The delimiter byte of a csv or delimited format.
    pub fn delimiter(&self) -> Option<u8> {
        match self {
            Format::Csv(o) => Some(o.delimiter.map_or(b',', |c| c as u8)),
            Format::Delimited(o) => Some(o.delimiter.map_or(b'|', |c| c as u8)),
            _ => None,
        }
    }
}

/// Options of the `csv` and `delimited` formats.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelimitedOptions {
    /// Single ASCII character between columns (`","`, `"|"`, `"\t"`, `";"`).
    /// Defaults to `,` for csv and `|` for delimited.
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Quote character; quoted values may hold delimiters and line breaks.
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Turn quoting off entirely (quote characters are then plain data).
    #[serde(default = "default_true")]
    pub quoting: bool,
    /// Escape character inside quoted values (e.g. `\`); by default a quote is
    /// escaped by doubling it.
    #[serde(default)]
    pub escape: Option<char>,
    /// The first record is a header naming the columns.
    #[serde(default = "default_true")]
    pub header: bool,
    /// Column names, in order, when there is no header (`header: false`).
    #[serde(default)]
    pub columns: Vec<String>,
    /// Lines starting with this character are ignored.
    #[serde(default)]
    pub comment: Option<char>,
    /// Number of lines skipped before the header or the first record (banners).
    #[serde(default)]
    pub skip_lines: usize,
}

fn default_quote() -> char {
    '"'
}

fn default_true() -> bool {
    true
}

/// Options of the `fixed_width` format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedWidthOptions {
    /// The columns and their positions; fields refer to them by `name`.
    pub columns: Vec<FixedColumn>,
    /// Number of lines skipped at the top (headers, banners).
    #[serde(default)]
    pub skip_lines: usize,
    /// Lines starting with one of these prefixes are ignored (e.g. a `TRL` trailer).
    #[serde(default)]
    pub skip_prefixes: Vec<String>,
}

/// One column of a fixed-width line. Positions count characters, not bytes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedColumn {
    /// Name that fields use as their `source`.
    pub name: String,
    /// 1-based position of the column's first character.
    pub start: usize,
    /// Number of characters. A line shorter than `start + width - 1` yields the part
    /// that is there (possibly nothing: a missing value).
    pub width: usize,
}

/// Options of the `xml` format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlOptions {
    /// Path of the repeated record element below the root (`Results/Result`). Absent:
    /// the whole document is one record (the root element).
    #[serde(default)]
    pub record_element: Option<String>,
    /// Prefix → namespace URI used in paths (`record_element`, field `source`,
    /// `match.xml_root`). A path step without a prefix matches any namespace.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    /// Deepest element nesting accepted; deeper documents are rejected (`xml_too_deep`).
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
}

fn default_max_depth() -> usize {
    64
}

/// Options of the `json` format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Dotted path of the array of records (`data.results`). Absent: the document
    /// itself is an array of records, or one record object.
    #[serde(default)]
    pub record_path: Option<String>,
}

/// Options of the `ndjson` format (none yet; kept so the definition can grow).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NdjsonOptions {}

/// Text encoding of the entries. A UTF-8 byte order mark is always skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    /// UTF-8, with or without BOM; invalid bytes reject the entry (`bad_encoding`).
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same number.
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
    /// Windows-1252 (the usual "ANSI" export of Windows tools).
    #[serde(rename = "windows-1252", alias = "cp1252")]
    Windows1252,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_tagged_by_type() {
        let f: Format = serde_yaml::from_str(
            "type: delimited\ndelimiter: \"\\t\"\nheader: false\ncolumns: [a, b]\n",
        )
        .unwrap();
        assert_eq!(f.delimiter(), Some(b'\t'));
        let f: Format = serde_yaml::from_str("type: csv\n").unwrap();
        assert_eq!(f.delimiter(), Some(b','));
        let f: Format = serde_yaml::from_str("type: ndjson\n").unwrap();
        assert_eq!(f.type_name(), "ndjson");
    }

    #[test]
    fn unknown_option_is_an_error() {
        let err = serde_yaml::from_str::<Format>("type: csv\ndelimeter: \";\"\n").unwrap_err();
        assert!(err.to_string().contains("delimeter"), "{err}");
        assert!(serde_yaml::from_str::<Format>("type: parquet\n").is_err());
    }

    #[test]
    fn encodings_have_aliases() {
        for (s, e) in [
            ("utf-8", Encoding::Utf8),
            ("latin1", Encoding::Latin1),
            ("cp1252", Encoding::Windows1252),
        ] {
            assert_eq!(serde_yaml::from_str::<Encoding>(s).unwrap(), e);
        }
    }
}
