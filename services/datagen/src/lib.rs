//! Test and demo data for medlake: files shaped like what the ~8,000 facilities send,
//! plus a manifest of what each file must become. [`Manifest::expectation`] hands that
//! to the sink's lake reader (`medlake_sink::inspect`) to reconcile a lake against;
//! the generator itself depends on no other medlake crate than `medlake-common`.
//!
//! What it writes follows the requirements: 99 % of archives 20 KB–1.5 MB and a tail to
//! 40 MB; CSV (ADT events, the patients change feed), pipe-delimited and fixed-width TXT
//! (bed census, Windows-1252 / Latin-1) and zips of 20–300 single-record XML files (lab
//! results); zip and gzip; ZipCrypto and AES passwords taken from the facility registry,
//! exactly where the parser will look for them. `--bad N` adds corrupt zips, wrong
//! passwords, entries no data set matches and rows with bad values.
//!
//! Key design choice: the generator does not predict the parser, it *constructs* the
//! truth. Every row is written from one evolving state per facility (patients,
//! encounters, census units), so the expected record counts, rejects per error code and
//! the final row count of each MERGE table (updates collapse, deletes remove) are known
//! exactly and go into `manifest.json`. Deletes only touch keys created in the same
//! file, so the final table state does not depend on the order files arrive in. The
//! generator knows the five sample data sets of `schemas/`; a new feed needs a new
//! writer here, but never a change to the services.
//!
//! Deterministic for a seed: two runs write the same files, except the random salt of
//! encrypted zips (and so their SHA-256).

pub mod error;
pub mod facilities;
mod fake;
pub mod feeds;
mod generate;
pub mod manifest;
pub mod pack;
pub mod plan;

pub use error::GenError;
pub use feeds::Feed;
pub use generate::{DEFAULT_FACILITIES, GenOptions, generate};
pub use manifest::{BadKind, FileEntry, Manifest, Totals};
pub use plan::Volume;
