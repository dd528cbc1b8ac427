//! Delta tables on local disk: append, merge, exactly-once offsets, schema
//! evolution, table shape, concurrent writers, maintenance.

mod append;
mod builtin;
mod concurrency;
mod evolution;
mod maintain;
mod merge;
mod support;
mod table_shape;
