//! What every medlake service shares: layered configuration, Kafka clients,
//! metrics, the admin HTTP server, shutdown, the error taxonomy, secrets, the
//! facility registry and the data set definitions.
//!
//! The key design choice: a service is a library whose `run(ctx, config,
//! shutdown)` is the whole service, and everything it needs from the outside
//! arrives through [`context::Context`]. The `medlake` binary only wires these
//! pieces together, so integration tests can drive a service in-process exactly
//! as production does.

pub mod admin;
pub mod backoff;
pub mod budget;
pub mod config;
pub mod context;
pub mod dead_letter;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod expected;
pub mod facilities;
pub mod ingest;
pub mod kafka;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod raw_file;
pub mod secret;
pub mod shutdown;
pub mod topic_reader;
pub mod topics;

pub use context::Context;
pub use error::{Classify, ErrorKind};
pub use shutdown::Shutdown;
pub mod dataset;
