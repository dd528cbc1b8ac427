//! Typed fields of a data set: name, type, where the value comes from and how it is checked.

use std::fmt;

use serde::Deserialize;

/// One typed column of a data set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Column name in the table and key in the record JSON (snake_case).
    pub name: String,
    /// Type of the value: `string`, `int32`, `int64`, `float64`, `decimal(p,s)`, `bool`,
    /// `date` or `timestamp`.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// A record without a value for this field (after `default`) is rejected
    /// with `missing_required`.
    #[serde(default)]
    pub required: bool,
    /// Where the value is read from: the column name (csv, delimited, fixed-width),
    /// the element path relative to the record element (xml: `Patient/Name`, an attribute
    /// `Order/@id`, prefixes from the format's `namespaces`) or a dotted path (json).
    /// Defaults to the field name.
    #[serde(default)]
    pub source: Option<String>,
    /// Take the value from the file's lineage instead of the record
    /// (`facility_id`, `entry_name`, `file_name` as strings; `ingest_date` as a
    /// date); `source` is then not used.
    #[serde(default)]
    pub from: Option<Origin>,
    /// Accepted input formats for `date` and `timestamp`, tried in order: chrono strftime
    /// patterns (`%m/%d/%Y %H:%M`) or the names `rfc3339`, `epoch_seconds`, `epoch_millis`.
    /// Empty means the ISO 8601 defaults.
    #[serde(default)]
    pub formats: Vec<String>,
    /// IANA time zone (`America/Chicago`) of timestamps that carry no offset; stored as UTC.
    /// Defaults to UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// When not empty, the (trimmed) value must be one of these, else `not_allowed`.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Regular expression the whole (trimmed) value must match, else `regex_mismatch`.
    #[serde(default)]
    pub regex: Option<String>,
    /// Value used when the source is missing or empty, written as in the source.
    #[serde(default)]
    pub default: Option<String>,
    /// Personal data handling: `hash` replaces the value by its keyed HMAC-SHA256 (hex),
    /// `drop` removes the column entirely.
    #[serde(default)]
    pub pii: Option<Pii>,
    /// Strip leading and trailing whitespace before conversion; an empty value is missing.
    #[serde(default = "default_trim")]
    pub trim: bool,
    /// Free text for people reading the definition.
    #[serde(default)]
    pub description: Option<String>,
}

fn default_trim() -> bool {
    true
}

impl Field {
    /// The name used to look the value up in the record: `source` or the field name.
    pub fn source_name(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }

    /// Whether the column is written to the table (fields with `pii: drop` are not).
    pub fn is_output(&self) -> bool {
        self.pii != Some(Pii::Drop)
    }
}

/// Lineage value a field can take instead of a record value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The facility that sent the file.
    FacilityId,
    /// The entry's path inside the archive.
    EntryName,
    /// The name of the received file.
    FileName,
    /// The UTC day the file was received (`_ingested_at`'s date): a `date`
    /// field, the usual partition column of append tables.
    IngestDate,
}

/// How personal data in a field is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    /// Keyed HMAC-SHA256 of the value, lower-case hex: stable pseudonym, joinable, not reversible.
    Hash,
    /// The column is not stored.
    Drop,
}

/// The type of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float (finite values only).
    Float64,
    /// Exact decimal with `precision` digits, `scale` of them after the point.
    Decimal {
        /// Total number of digits (1..=38).
        precision: u8,
        /// Digits after the decimal point (0..=precision).
        scale: i8,
    },
    /// true / false.
    Bool,
    /// Calendar date.
    Date,
    /// Instant, stored as UTC microseconds.
    Timestamp,
}

/// Type names accepted in definitions, for error messages.
pub const TYPE_NAMES: &str = "string, int32, int64, float64, decimal(p,s), bool, date, timestamp";

impl TryFrom<String> for FieldType {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let t = s.trim().to_ascii_lowercase();
        let kind = match t.as_str() {
            "string" => FieldType::String,
            "int32" => FieldType::Int32,
            "int64" => FieldType::Int64,
            "float64" => FieldType::Float64,
            "bool" => FieldType::Bool,
            "date" => FieldType::Date,
            "timestamp" => FieldType::Timestamp,
            _ => {
                return parse_decimal(&t)
                    .ok_or_else(|| format!("unknown type `{s}`; expected one of {TYPE_NAMES}"));
            }
        };
        Ok(kind)
    }
}

fn parse_decimal(t: &str) -> Option<FieldType> {
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    let precision: u8 = p.trim().parse().ok()?;
    let scale: i8 = s.trim().parse().ok()?;
    if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
        return None;
    }
    Some(FieldType::Decimal { precision, scale })
}

impl From<FieldType> for String {
    fn from(t: FieldType) -> String {
        t.to_string()
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldType::String => f.write_str("string"),
            FieldType::Int32 => f.write_str("int32"),
            FieldType::Int64 => f.write_str("int64"),
            FieldType::Float64 => f.write_str("float64"),
            FieldType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            FieldType::Bool => f.write_str("bool"),
            FieldType::Date => f.write_str("date"),
            FieldType::Timestamp => f.write_str("timestamp"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_type_name() {
        for (s, want) in [
            ("string", FieldType::String),
            ("int32", FieldType::Int32),
            ("INT64", FieldType::Int64),
            ("float64", FieldType::Float64),
            (
                "decimal(10, 2)",
                FieldType::Decimal {
                    precision: 10,
                    scale: 2,
                },
            ),
            ("bool", FieldType::Bool),
            ("date", FieldType::Date),
            ("timestamp", FieldType::Timestamp),
        ] {
            assert_eq!(FieldType::try_from(s.to_string()).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn rejects_unknown_and_bad_decimal() {
        for s in [
            "varchar",
            "decimal(0,0)",
            "decimal(39,2)",
            "decimal(5,6)",
            "decimal(5)",
        ] {
            let err = FieldType::try_from(s.to_string()).unwrap_err();
            assert!(err.contains("unknown type"), "{err}");
        }
    }

    #[test]
    fn display_round_trips() {
        let t = FieldType::Decimal {
            precision: 12,
            scale: 3,
        };
        assert_eq!(FieldType::try_from(t.to_string()).unwrap(), t);
    }
}
