//! The sink: records topics → Delta tables, exactly once.
//!
//! [`decode`] turns each record's JSON into Arrow with the data set's schema;
//! [`delta`] commits batches (append or MERGE) together with the Kafka
//! offsets they cover, so the table itself says where to resume; [`maintain`]
//! keeps tables healthy (OPTIMIZE, vacuum).

pub mod decode;
pub mod delta;
pub mod maintain;
pub mod service;

pub use service::{SinkConfig, SinkError, run};
