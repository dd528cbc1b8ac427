//! Zip archives: entries, passwords (ZipCrypto, AES-128/192/256) and decoder errors.

use std::io::Cursor;

use zip::ZipArchive;
use zip::result::ZipError;

use super::{OnEntry, ReadError, WalkError, Walker, read_limited};
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

    /// Tries the facility's passwords, the one that worked last time first. A password
    /// that passes the header check but fails the checksum (ZipCrypto's check byte
    /// matches one wrong password in 256) counts as wrong.
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
        let order = self
            .good_password
            .into_iter()
            .chain((0..self.passwords.len()).filter(|i| Some(*i) != self.good_password));
        for p in order {
            let password = self.passwords[p].expose().as_bytes();
            let mut file = match archive.by_index_decrypt(index, password) {
                Ok(f) => f,
                Err(ZipError::InvalidPassword) => continue,
                Err(e) => return Err(zip_error(Some(name), e)),
            };
            match read_limited(&mut file, name, packed, self.limits, &mut self.budget) {
                Ok(data) => {
                    self.good_password = Some(p);
                    return Ok(data);
                }
                Err(ReadError::Limit(e)) => return Err(e),
                Err(ReadError::Io(_)) => continue,
            }
        }
        Err(FileError::WrongPassword {
            entry: name.into(),
            tried: self.passwords.len(),
        })
    }
}
