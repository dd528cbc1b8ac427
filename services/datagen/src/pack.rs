//! Packs generated entries the way facilities send them: zips (stored or deflated,
//! unprotected, ZipCrypto, WinZip AES-128/256) and gzip streams. The generator packs
//! every file with it; the parser's tests and its fixture generator
//! (`cargo run -p medlake-parser --example make_fixtures`) build their archives with it
//! too, so what the tests read is what the generator writes.

use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{AesMode, CompressionMethod, DateTime, ZipWriter};

/// How an entry of a built zip is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection<'a> {
    /// No password.
    None,
    /// Legacy ZipCrypto with this password.
    ZipCrypto(&'a str),
    /// WinZip AES-128 with this password.
    Aes128(&'a str),
    /// WinZip AES-256 with this password.
    Aes256(&'a str),
}

/// Builds a zip of `(name, bytes)` entries. `deflate` chooses deflate over stored.
/// Timestamps are fixed so unprotected and ZipCrypto-free archives are reproducible.
pub fn zip(entries: &[(&str, &[u8])], deflate: bool, protection: Protection<'_>) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        CompressionMethod::Deflated
    } else {
        CompressionMethod::Stored
    };
    let base = SimpleFileOptions::default()
        .compression_method(method)
        .last_modified_time(DateTime::from_date_and_time(2024, 3, 1, 0, 0, 0).expect("valid date"));
    for (name, bytes) in entries {
        let options = match protection {
            Protection::None => base,
            Protection::ZipCrypto(p) => {
                use zip::unstable::write::FileOptionsExt;
                base.with_deprecated_encryption(p.as_bytes())
                    .expect("zipcrypto options")
            }
            Protection::Aes128(p) => base.with_aes_encryption(AesMode::Aes128, p),
            Protection::Aes256(p) => base.with_aes_encryption(AesMode::Aes256, p),
        };
        w.start_file(*name, options).expect("start zip entry");
        w.write_all(bytes).expect("write zip entry");
    }
    w.finish().expect("finish zip").into_inner()
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}
