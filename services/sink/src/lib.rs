//! The sink: records topics → Delta tables, exactly once.
//!
//! [`decode`] turns each record's JSON into Arrow with the data set's schema;
//! [`delta`] commits batches (append or MERGE) together with the Kafka
//! offsets they cover, so the table itself says where to resume; [`maintain`]
//! keeps tables healthy (OPTIMIZE, vacuum); [`inspect`] reads a lake back (rows
//! per table, ledger, dead letters) and reconciles it with what it must hold.
//!
//! The key design choice: **the Delta table is the only offset store.**
//! Every commit carries one `txn` action per Kafka partition (app id
//! `<group>-<topic>-<partition>`, version = last offset), the consumer seeks
//! to what the table says, and the writer drops rows the table already
//! holds, so restarts, rebalances and duplicate deliveries never write a row
//! twice. Decisions written down in [`delta`] and its modules: deletes on
//! MERGE tables are hard deletes (a late upsert *older* than a delete that
//! arrives in a later batch re-inserts the row; see [`delta::merge`]); `_op`
//! is stored like any lineage column; a definition may only add nullable
//! columns, anything else is refused naming the column
//! ([`delta::create`]).

pub mod decode;
pub mod delta;
pub mod inspect;
pub mod maintain;
pub mod service;

pub use service::{SinkConfig, SinkError, run};
