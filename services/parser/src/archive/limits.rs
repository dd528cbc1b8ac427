//! Unpacking and reading limits, enforced on the bytes actually read, never on what
//! headers claim.

use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::error::FileError;

/// Guards against zip bombs and oversized input: what a file may unpack to, and how
/// large one record and one value of an entry may be.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most entries one archive (including nested ones) may hold.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Most bytes one entry may unpack to.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Most bytes all entries of a file together may unpack to.
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: u64,
    /// Most an entry may expand relative to its packed size (unpacked / packed).
    #[serde(default = "default_max_compression_ratio")]
    pub max_compression_ratio: u64,
    /// Entries unpacking to fewer bytes than this are exempt from the ratio check
    /// (tiny, very regular files compress extremely well and are harmless).
    #[serde(default = "default_ratio_floor_bytes")]
    pub ratio_floor_bytes: u64,
    /// How many archives may nest (a zip inside a zip is one level).
    #[serde(default = "default_max_nesting")]
    pub max_nesting: u8,
    /// Most bytes one record may span in its entry's text: a CSV or delimited
    /// record (quoted line breaks included), a fixed-width or NDJSON line, an
    /// element of a JSON document's records array (or the whole document when
    /// it is one record), an XML record element from its start tag to its end
    /// tag. A longer record is rejected (`record_too_large`, a dead letter
    /// naming the entry and the record number) and the entry goes on with the
    /// next record; only a CSV header line over the limit rejects the entry.
    ///
    /// The limit bounds memory, not only output: readers find a record's end
    /// without copying it and never buffer more than this of one record, so a
    /// 100 MB line costs a scan of the entry, not a copy of the line.
    ///
    /// Default 1 MiB: real records are a few KB (an ADT row ~200 bytes, a lab
    /// result document ~2 KB), so this leaves hundreds of times that, and a
    /// record this long would mostly not fit the records topics'
    /// `max.message.bytes` (1,000,000) anyway. Raise it for feeds whose
    /// records carry large unmapped content (e.g. whole clinical documents of
    /// which a few elements are read). Not to be confused with
    /// `parser.max_record_bytes`, the cap on the JSON a record is published
    /// as.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Most bytes (UTF-8) one field's value may have as read, before
    /// conversion. A longer value rejects its record (`field_too_large`,
    /// naming the entry, the record number and the field, never the value).
    /// Only values a data set reads are checked.
    ///
    /// Default 64 KiB: identifiers, codes, dates and amounts are tens of bytes
    /// and free-text notes rarely a few KB; a value over 64 KiB is almost
    /// always an unbalanced quote that swallowed the following lines, or a
    /// document or image embedded in a column, which the lake's tables should
    /// not carry inline.
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: usize,
}

fn default_max_entries() -> usize {
    10_000
}
fn default_max_entry_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_max_total_bytes() -> u64 {
    1024 * 1024 * 1024
}
fn default_max_compression_ratio() -> u64 {
    200
}
fn default_ratio_floor_bytes() -> u64 {
    1024 * 1024
}
fn default_max_nesting() -> u8 {
    1
}
fn default_max_record_bytes() -> usize {
    1024 * 1024
}
fn default_max_field_bytes() -> usize {
    64 * 1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: default_max_entries(),
            max_entry_bytes: default_max_entry_bytes(),
            max_total_bytes: default_max_total_bytes(),
            max_compression_ratio: default_max_compression_ratio(),
            ratio_floor_bytes: default_ratio_floor_bytes(),
            max_nesting: default_max_nesting(),
            max_record_bytes: default_max_record_bytes(),
            max_field_bytes: default_max_field_bytes(),
        }
    }
}

/// Why reading an entry stopped early.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// A limit was passed.
    Limit(FileError),
    /// The decoder failed (corrupt data, bad checksum, wrong password).
    Io(std::io::Error),
}

/// Bytes unpacked so far for one file, shared by all its (nested) entries.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    pub total_bytes: u64,
    pub entries: usize,
}

const CHUNK: usize = 64 * 1024;

/// Reads an entry to the end in chunks, checking every limit after each chunk against
/// the bytes really produced. `packed_bytes` is what the entry occupies in its archive.
pub(crate) fn read_limited(
    reader: &mut dyn Read,
    entry: &str,
    packed_bytes: u64,
    limits: &Limits,
    budget: &mut Budget,
) -> Result<Vec<u8>, ReadError> {
    let mut out: Vec<u8> = Vec::new();
    loop {
        let len = out.len();
        out.resize(len + CHUNK, 0);
        let n = match reader.read(&mut out[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        out.truncate(len + n);
        if n == 0 {
            break;
        }
        let size = out.len() as u64;
        if size > limits.max_entry_bytes {
            return Err(ReadError::Limit(FileError::EntryTooLarge {
                entry: entry.into(),
                limit_bytes: limits.max_entry_bytes,
            }));
        }
        if budget.total_bytes + size > limits.max_total_bytes {
            return Err(ReadError::Limit(FileError::ArchiveTooLarge {
                entry: entry.into(),
                limit_bytes: limits.max_total_bytes,
            }));
        }
        if size > limits.ratio_floor_bytes
            && size / packed_bytes.max(1) > limits.max_compression_ratio
        {
            return Err(ReadError::Limit(FileError::CompressionRatio {
                entry: entry.into(),
                limit: limits.max_compression_ratio,
            }));
        }
    }
    budget.total_bytes += out.len() as u64;
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that claims nothing and produces `n` zero bytes.
    struct Zeros(u64);
    impl Read for Zeros {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.0) as usize;
            buf[..n].fill(0);
            self.0 -= n as u64;
            Ok(n)
        }
    }

    fn limits() -> Limits {
        Limits {
            max_entry_bytes: 1000,
            max_total_bytes: 1500,
            max_compression_ratio: 10,
            ratio_floor_bytes: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn reads_within_limits() {
        let mut b = Budget::default();
        let v = read_limited(&mut Zeros(500), "e", 100, &limits(), &mut b).unwrap();
        assert_eq!(v.len(), 500);
        assert_eq!(b.total_bytes, 500);
    }

    #[test]
    fn each_limit_has_its_error() {
        let code = |r: Result<Vec<u8>, ReadError>| match r {
            Err(ReadError::Limit(e)) => e.code().as_str(),
            other => panic!("{other:?}"),
        };
        let l = limits();
        assert_eq!(
            code(read_limited(
                &mut Zeros(1001),
                "e",
                1000,
                &l,
                &mut Budget::default()
            )),
            "entry_too_large"
        );
        let mut b = Budget {
            total_bytes: 1000,
            entries: 0,
        };
        assert_eq!(
            code(read_limited(&mut Zeros(600), "e", 600, &l, &mut b)),
            "archive_too_large"
        );
        assert_eq!(
            code(read_limited(
                &mut Zeros(500),
                "e",
                10,
                &l,
                &mut Budget::default()
            )),
            "compression_ratio"
        );
        // Under the floor, high ratios are fine.
        assert!(read_limited(&mut Zeros(99), "e", 1, &l, &mut Budget::default()).is_ok());
    }
}
