//! Zip archives: entries, passwords (ZipCrypto, AES-128/192/256) and decoder errors.

use std::io::Cursor;

use zip::ZipArchive;
use zip::result::ZipError;

use super::{Budget, Limits, OnEntry, ReadError, WalkError, Walker, eocd, read_limited};
use crate::error::FileError;

/// Maps what the zip crate says to a file error. Its messages describe the archive
/// structure only, never entry content.
fn zip_error(entry: Option<&str>, e: ZipError) -> FileError {
    let entry = entry.map(str::to_string);
    match e {
        ZipError::UnsupportedArchive(msg) if msg == ZipError::PASSWORD_REQUIRED => {
            FileError::PasswordRequired {
                entry: entry.unwrap_or_default(),
                facility_id: String::new(),
            }
        }
        ZipError::UnsupportedArchive(msg) => FileError::UnsupportedArchive {
            entry,
            reason: msg.to_string(),
        },
        ZipError::CompressionMethodNotSupported(m) => FileError::UnsupportedArchive {
            entry,
            reason: format!("compression method {m} is not supported"),
        },
        other => FileError::CorruptArchive {
            entry,
            reason: other.to_string(),
        },
    }
}

/// Skipped entries: folders and metadata written by archivers.
fn is_noise(name: &str) -> bool {
    name.ends_with('/')
        || name.starts_with("__MACOSX/")
        || name.rsplit('/').next() == Some(".DS_Store")
}

impl Walker<'_> {
    pub(super) fn zip<E>(
        &mut self,
        prefix: Option<&str>,
        bytes: &[u8],
        depth: u8,
        on_entry: &mut OnEntry<'_, E>,
    ) -> Result<(), WalkError<E>> {
        // Refused before the zip crate builds a record per declared entry.
        if let Some(declared) = eocd::declared_entries(bytes)
            && declared > self.limits.max_entries as u64
        {
            return Err(FileError::TooManyEntries {
                count: usize::try_from(declared).unwrap_or(usize::MAX),
                limit: self.limits.max_entries,
            }
            .into());
        }
        let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(|e| zip_error(prefix, e))?;
        if archive.len() > self.limits.max_entries {
            return Err(FileError::TooManyEntries {
                count: archive.len(),
                limit: self.limits.max_entries,
            }
            .into());
        }
        for i in 0..archive.len() {
            let (name, encrypted, packed, is_dir) = {
                let raw = archive.by_index_raw(i).map_err(|e| zip_error(prefix, e))?;
                let name =
                    super::printable(&String::from_utf8_lossy(raw.name_raw()).replace('\\', "/"));
                (name, raw.encrypted(), raw.compressed_size(), raw.is_dir())
            };
            if is_dir || is_noise(&name) {
                continue;
            }
            let data = if encrypted {
                self.decrypt(&mut archive, i, &name, packed)?
            } else {
                let mut file = archive.by_index(i).map_err(|e| zip_error(Some(&name), e))?;
                self.read(&mut file, &name, packed)?
            };
            self.entry(prefix, &name, data, depth, on_entry)?;
        }
        Ok(())
    }

    /// Tries the facility's passwords, the one that worked last time first (see
    /// [`open_with_any`] for what a failed attempt means).
    fn decrypt(
        &mut self,
        archive: &mut ZipArchive<Cursor<&[u8]>>,
        index: usize,
        name: &str,
        packed: u64,
    ) -> Result<Vec<u8>, FileError> {
        if self.passwords.is_empty() {
            return Err(FileError::PasswordRequired {
                entry: name.into(),
                facility_id: self.facility_id.into(),
            });
        }
        let order: Vec<usize> = self
            .good_password
            .into_iter()
            .chain((0..self.passwords.len()).filter(|i| Some(*i) != self.good_password))
            .collect();
        let (passwords, limits, budget) = (self.passwords, self.limits, &mut self.budget);
        let opened = open_with_any(&order, |p| {
            let password = passwords[p].expose().as_bytes();
            attempt(archive, index, name, packed, password, limits, budget)
        });
        match opened {
            Ok((p, data)) => {
                self.good_password = Some(p);
                Ok(data)
            }
            Err(Some(e)) => Err(e),
            Err(None) => Err(FileError::WrongPassword {
                entry: name.into(),
                tried: self.passwords.len(),
            }),
        }
    }
}

/// What trying one password on an encrypted entry gave.
#[derive(Debug)]
pub(super) enum Attempt {
    /// The entry, decrypted, checked and within the limits.
    Opened(Vec<u8>),
    /// The header check refused the password, or its output failed the decoder or
    /// the checksum.
    Wrong,
    /// Its output passed a size limit before the decoder or checksum could tell.
    Tripped(FileError),
}

/// Decrypts entry `index` with one password, under the limits. Errors are about the
/// archive itself, whatever the password.
pub(super) fn attempt(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    index: usize,
    name: &str,
    packed: u64,
    password: &[u8],
    limits: &Limits,
    budget: &mut Budget,
) -> Result<Attempt, FileError> {
    let mut file = match archive.by_index_decrypt(index, password) {
        Ok(f) => f,
        Err(ZipError::InvalidPassword) => return Ok(Attempt::Wrong),
        Err(e) => return Err(zip_error(Some(name), e)),
    };
    Ok(
        match read_limited(&mut file, name, packed, limits, budget) {
            Ok(data) => Attempt::Opened(data),
            Err(ReadError::Limit(e)) => Attempt::Tripped(e),
            Err(ReadError::Io(_)) => Attempt::Wrong,
        },
    )
}

/// Tries the passwords in `order` until one opens the entry: returns its index and
/// the entry.
///
/// A wrong password can pass the header check (ZipCrypto's check byte matches one
/// wrong password in 256, AES's verifier one in 65,536); what it decrypts is then
/// garbage, which fails the decoder or the checksum, or trips a size limit
/// (`entry_too_large`, `compression_ratio`, `archive_too_large`) before either is
/// reached. Each of these only rules the password out and the next one is tried, so
/// the new password of a rotation still opens the entry. When none does, the error is
/// the first limit an attempt tripped, if any did (the entry may really be that large,
/// which garbage from a wrong password cannot be told from), else `None`: no password
/// is right. A failed attempt adds nothing to the file's byte budget.
pub(super) fn open_with_any(
    order: &[usize],
    mut attempt: impl FnMut(usize) -> Result<Attempt, FileError>,
) -> Result<(usize, Vec<u8>), Option<FileError>> {
    let mut tripped = None;
    for &p in order {
        match attempt(p).map_err(Some)? {
            Attempt::Opened(data) => return Ok((p, data)),
            Attempt::Wrong => {}
            Attempt::Tripped(e) => {
                tripped.get_or_insert(e);
            }
        }
    }
    Err(tripped)
}
