//! The parser: turns the files facilities send into typed, validated records, driven
//! entirely by data set definitions (`schemas/*.yaml`), never by per-source code.
//!
//! Key design choice: one generic pipeline ([`pipeline::process_file`]) pushes each
//! record, one at a time, into a [`pipeline::RecordSink`]. The Kafka service and the
//! offline dry run (`medlake parse`) are two sinks of the same pipeline, so what an
//! engineer sees offline is exactly what the service publishes. Whole-file failures
//! (passwords, corruption, bombs) are found by a first pass over the archive before
//! any record is emitted, so a rejected file never leaves partial output behind.

pub mod archive;
pub mod convert;
pub mod env;
pub mod error;
mod formats;
pub mod offline;
pub mod pipeline;
pub mod service;
pub mod text;

pub use env::{EnvError, ParseEnv};
pub use error::{ErrorCode, FileError, Reject, Stage};
pub use pipeline::{
    Delivery, FileInput, FileSummary, ProcessError, Record, RecordSink, process_file,
};
pub use service::{ParserConfig, ParserError, run};
