//! The parser: turns the files facilities send into typed, validated records, driven
//! entirely by data set definitions (`schemas/*.yaml`), never by per-source code.
//!
//! Key design choice: one generic pipeline ([`pipeline::process_file`]) pushes each
//! offline dry run (`medlake parse`) are two sinks of the same pipeline, so what an
//! (passwords, corruption, bombs) are found by a first pass over the archive before
//! any record is emitted, so a rejected file never leaves partial output behind.

pub mod archive;
pub mod error;
pub mod testkit;

pub use error::{ErrorCode, FileError, Reject, Stage};
