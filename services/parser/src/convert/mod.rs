//! Field conversion and checks: raw text in, a typed JSON value out, or an error code.
//! Order: trim, default, required, allowed values, regex, type conversion, pii hash.

mod temporal;

use std::io::Write;

use chrono_tz::Tz;
use hmac::{Hmac, Mac};
use medlake_common::dataset::{Field, FieldType, Pii};
use regex::Regex;
use sha2::Sha256;

pub use temporal::{format_date, format_timestamp, parse_date, parse_timestamp};

use crate::error::ErrorCode;

/// A converted value, ready to be written as JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Missing optional value.
    Null,
    /// Text (strings, and decimals, dates and timestamps in their canonical text form).
    Text(String),
    /// Integer.
    Int(i64),
    /// Finite float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

impl Value {
    /// Writes the value as JSON.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail; serde_json escapes strings.
        let _ = match self {
            Value::Null => out.write_all(b"null").map_err(serde_json::Error::io),
            Value::Text(s) => serde_json::to_writer(&mut *out, s),
            Value::Int(i) => write!(out, "{i}").map_err(serde_json::Error::io),
            Value::Float(f) => serde_json::to_writer(&mut *out, f),
            Value::Bool(b) => write!(out, "{b}").map_err(serde_json::Error::io),
        };
    }

    /// The value as text, for delete rules.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Text(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
        }
    }
}

/// A field with its checks compiled once.
#[derive(Debug, Clone)]
pub struct FieldPlan {
    pub field: Field,
    regex: Option<Regex>,
    tz: Tz,
    /// HMAC key for `pii: hash`.
    pii_key: Option<Vec<u8>>,
}

/// Why a value was refused: code and a message without the value.
pub type FieldError = (ErrorCode, String);

impl FieldPlan {
    /// Compiles a validated field. `pii_key` is required for `pii: hash` fields.
    pub fn new(field: &Field, pii_key: Option<&[u8]>) -> Result<FieldPlan, String> {
        let regex = match &field.regex {
            Some(r) => {
                Some(Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("bad regex: {e}"))?)
            }
            None => None,
        };
        let tz = match &field.timezone {
            Some(tz) => tz.parse().map_err(|_| format!("unknown time zone {tz}"))?,
            None => Tz::UTC,
        };
        let pii_key = match field.pii {
            Some(Pii::Hash) => Some(
                pii_key
                    .ok_or("`pii: hash` needs a key and none is configured")?
                    .to_vec(),
            ),
            _ => None,
        };
        Ok(FieldPlan {
            field: field.clone(),
            regex,
            tz,
            pii_key,
        })
    }

    /// Converts one raw value. `relax_required` skips the required check (deletes).
    pub fn convert(&self, raw: Option<&str>, relax_required: bool) -> Result<Value, FieldError> {
        let f = &self.field;
        let trimmed = raw
            .map(|r| if f.trim { r.trim() } else { r })
            .filter(|r| !r.is_empty());
        let Some(text) = trimmed.or(f.default.as_deref()) else {
            if f.required && !relax_required {
                return Err((
                    ErrorCode::MissingRequired,
                    "required value is missing".into(),
                ));
            }
            return Ok(Value::Null);
        };
        if !f.allowed.is_empty() && !f.allowed.iter().any(|a| a == text) {
            return Err((
                ErrorCode::NotAllowed,
                format!("value is not one of the {} allowed values", f.allowed.len()),
            ));
        }
        if let Some(re) = &self.regex
            && !re.is_match(text)
        {
            return Err((
                ErrorCode::RegexMismatch,
                "value does not match the field's pattern".into(),
            ));
        }
        let value = convert_type(f.kind, text, f, self.tz)?;
        Ok(match (&self.pii_key, value) {
            (Some(key), Value::Text(s)) => Value::Text(hmac_hex(key, &s)),
            (_, v) => v,
        })
    }
}

fn convert_type(kind: FieldType, text: &str, f: &Field, tz: Tz) -> Result<Value, FieldError> {
    let bad = |code: ErrorCode, what: &str| Err((code, format!("value is not {what}")));
    match kind {
        FieldType::String => Ok(Value::Text(text.to_string())),
        FieldType::Int32 => match text.parse::<i32>() {
            Ok(i) => Ok(Value::Int(i.into())),
            Err(_) => bad(ErrorCode::BadInt, "a 32-bit integer"),
        },
        FieldType::Int64 => match text.parse::<i64>() {
            Ok(i) => Ok(Value::Int(i)),
            Err(_) => bad(ErrorCode::BadInt, "a 64-bit integer"),
        },
        FieldType::Float64 => match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            _ => bad(ErrorCode::BadFloat, "a finite number"),
        },
        FieldType::Decimal { precision, scale } => match decimal(text, precision, scale as u8) {
            Some(s) => Ok(Value::Text(s)),
            None => Err((
                ErrorCode::BadDecimal,
                format!("value is not a decimal({precision},{scale})"),
            )),
        },
        FieldType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" => Ok(Value::Bool(true)),
            "false" | "f" | "no" | "n" | "0" => Ok(Value::Bool(false)),
            _ => bad(
                ErrorCode::BadBool,
                "a boolean (true/false, yes/no, y/n, t/f, 1/0)",
            ),
        },
        FieldType::Date => match parse_date(text, &f.formats) {
            Some(d) => Ok(Value::Text(format_date(&d))),
            None => bad(ErrorCode::BadDate, "a date in any of the field's formats"),
        },
        FieldType::Timestamp => match parse_timestamp(text, &f.formats, tz) {
            Some(t) => Ok(Value::Text(format_timestamp(&t))),
            None => bad(
                ErrorCode::BadTimestamp,
                "a timestamp in any of the field's formats",
            ),
        },
    }
}

/// Canonical decimal text with exactly `scale` fraction digits, or `None` when the value
/// is not a plain decimal or does not fit (extra fraction digits must be zeros: no
/// silent rounding).
fn decimal(text: &str, precision: u8, scale: u8) -> Option<String> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    let scale = scale as usize;
    let (kept, extra) = frac.split_at(frac.len().min(scale));
    if extra.bytes().any(|b| b != b'0') || int.len() > precision as usize - scale {
        return None;
    }
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && kept.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Some(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{kept:0<scale$}")
    })
}

/// Keyed pseudonym: lower-case hex HMAC-SHA256.
pub fn hmac_hex(key: &[u8], value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests;
