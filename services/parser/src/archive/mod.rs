//! Opening what facilities send: zip (stored/deflate, ZipCrypto or AES passwords), gzip,
//! or a plain file, with one level of nesting (a zip inside a zip, a zip in a gzip).
//!
//! [`walk`] yields the entries one at a time, each read completely into memory once
//! (bounded by [`Limits::max_entry_bytes`]). Limits are checked on the bytes really
//! produced by the decoder, so lying headers do not help a zip bomb. Every failure is a
//! [`FileError`] with its own code; nothing here panics on bad input.

mod eocd;
mod limits;
mod zip;

use std::io::Read;

use medlake_common::secret::Secret;

pub use limits::Limits;
pub(crate) use limits::{Budget, ReadError, read_limited};

use crate::error::FileError;

/// What kind of container some bytes are, by their magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A zip archive (`PK\x03\x04`, or `PK\x05\x06` for an empty one).
    Zip,
    /// A gzip stream (`\x1f\x8b`).
    Gzip,
    /// Anything else: the bytes are the entry.
    Plain,
}

/// Recognises a container by its first bytes.
pub fn kind(bytes: &[u8]) -> Kind {
    if bytes.starts_with(b"PK\x03\x04")
        || bytes.starts_with(b"PK\x05\x06")
        || bytes.starts_with(b"PK\x07\x08")
    {
        Kind::Zip
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        Kind::Gzip
    } else {
        Kind::Plain
    }
}

/// Why a walk stopped: the archive is bad, or the callback said stop.
#[derive(Debug)]
pub enum WalkError<E> {
    /// The file cannot be opened; nothing of it should be used.
    File(FileError),
    /// The entry callback failed.
    Callback(E),
}

impl<E> From<FileError> for WalkError<E> {
    fn from(e: FileError) -> Self {
        WalkError::File(e)
    }
}

/// The callback of [`walk`]: entry name and bytes.
pub type OnEntry<'a, E> = dyn FnMut(&str, Vec<u8>) -> Result<(), E> + 'a;

/// Totals of one walk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Entries handed to the callback.
    pub entries: usize,
    /// Bytes they unpacked to.
    pub unpacked_bytes: u64,
}

/// What one walk needs besides the bytes.
pub(crate) struct Walker<'a> {
    pub facility_id: &'a str,
    pub passwords: &'a [Secret],
    pub limits: &'a Limits,
    /// Index of the password that opened an entry before: tried first.
    pub good_password: Option<usize>,
    pub budget: Budget,
}

/// Calls `on_entry(name, bytes)` for every file in `bytes` (named `file_name`), in
/// archive order. Directories and macOS metadata (`__MACOSX/`, `.DS_Store`) are skipped;
/// an archive with nothing else is [`FileError::EmptyArchive`].
pub fn walk<E>(
    file_name: &str,
    bytes: &[u8],
    facility_id: &str,
    passwords: &[Secret],
    limits: &Limits,
    on_entry: &mut OnEntry<'_, E>,
) -> Result<WalkStats, WalkError<E>> {
    let mut w = Walker {
        facility_id,
        passwords,
        limits,
        good_password: None,
        budget: Budget::default(),
    };
    match kind(bytes) {
        Kind::Plain => {
            w.count_entry()?;
            if bytes.len() as u64 > limits.max_entry_bytes {
                return Err(FileError::EntryTooLarge {
                    entry: file_name.into(),
                    limit_bytes: limits.max_entry_bytes,
                }
                .into());
            }
            w.budget.total_bytes += bytes.len() as u64;
            on_entry(file_name, bytes.to_vec()).map_err(WalkError::Callback)?;
        }
        _ => {
            w.container(None, file_name, bytes, 0, on_entry)?;
            if w.budget.entries == 0 {
                return Err(FileError::EmptyArchive.into());
            }
        }
    }
    Ok(WalkStats {
        entries: w.budget.entries,
        unpacked_bytes: w.budget.total_bytes,
    })
}

impl Walker<'_> {
    fn count_entry(&mut self) -> Result<(), FileError> {
        self.budget.entries += 1;
        if self.budget.entries > self.limits.max_entries {
            return Err(FileError::TooManyEntries {
                count: self.budget.entries,
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// Opens a zip or gzip found at nesting `depth` (0 = the received file).
    fn container<E>(
        &mut self,
        prefix: Option<&str>,
        name: &str,
        bytes: &[u8],
        depth: u8,
        on_entry: &mut OnEntry<'_, E>,
    ) -> Result<(), WalkError<E>> {
        match kind(bytes) {
            Kind::Zip => self.zip(prefix, bytes, depth, on_entry),
            Kind::Gzip => {
                let inner_name = strip_gz(name);
                let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
                let data = self.read(&mut decoder, &inner_name, bytes.len() as u64)?;
                self.entry(prefix, &inner_name, data, depth, on_entry)
            }
            Kind::Plain => unreachable_plain(name),
        }
    }

    /// Handles one unpacked entry: a nested container, or a file for the callback.
    fn entry<E>(
        &mut self,
        prefix: Option<&str>,
        name: &str,
        data: Vec<u8>,
        depth: u8,
        on_entry: &mut OnEntry<'_, E>,
    ) -> Result<(), WalkError<E>> {
        let full = match prefix {
            Some(p) => format!("{p}/{name}"),
            None => name.to_string(),
        };
        if kind(&data) == Kind::Plain {
            self.count_entry()?;
            return on_entry(&full, data).map_err(WalkError::Callback);
        }
        if depth >= self.limits.max_nesting {
            return Err(FileError::NestingTooDeep {
                entry: full,
                limit: self.limits.max_nesting,
            }
            .into());
        }
        // A gzip's content keeps the gzip's place in the name; a zip's entries go below it.
        let parent = prefix.map(str::to_string);
        let nested_prefix = if kind(&data) == Kind::Zip {
            Some(full.as_str())
        } else {
            parent.as_deref()
        };
        self.container(nested_prefix, name, &data, depth + 1, on_entry)
    }

    /// Reads a decoder to the end under the limits; decoder failures are corruption.
    fn read(
        &mut self,
        reader: &mut dyn Read,
        entry: &str,
        packed: u64,
    ) -> Result<Vec<u8>, FileError> {
        read_limited(reader, entry, packed, self.limits, &mut self.budget).map_err(|e| match e {
            ReadError::Limit(e) => e,
            ReadError::Io(e) => FileError::CorruptArchive {
                entry: Some(entry.into()),
                reason: e.to_string(),
            },
        })
    }
}

/// Only containers reach [`Walker::container`].
fn unreachable_plain<E>(name: &str) -> Result<(), WalkError<E>> {
    Err(FileError::UnsupportedArchive {
        entry: Some(name.into()),
        reason: "not an archive".into(),
    }
    .into())
}

/// An entry name as the lake and the logs may show it: control characters
/// (terminal escapes, line breaks that would forge log lines, NUL) become
/// `\x1b`-style text. Other names are unchanged.
pub(crate) fn printable(name: &str) -> String {
    if !name.chars().any(char::is_control) {
        return name.to_string();
    }
    name.chars()
        .map(|c| {
            // Unicode's control characters are all below U+00A0.
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `x.csv.gz` → `x.csv`; `x.tgz` → `x.tar`; anything else keeps its name.
fn strip_gz(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if let Some(stem) = lower
        .strip_suffix(".gz")
        .or_else(|| lower.strip_suffix(".gzip"))
    {
        return name[..stem.len()].to_string();
    }
    if lower.ends_with(".tgz") {
        return format!("{}.tar", &name[..name.len() - 4]);
    }
    name.to_string()
}

#[cfg(test)]
mod tests;
