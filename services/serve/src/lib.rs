//! `medlake serve`: the customers' portal and SQL API over the lake, each
//! customer seeing only its own facilities.
//!
//! - [`customers`]: who may read which facilities (the customer registry).
//! - [`catalog`]: the lake's tables and the facility column of each.
//! - [`engine`]: read-only SQL over views that filter every table to the
//!   asker's facilities, within a time, memory and size limit.

pub mod catalog;
pub mod customers;
pub mod engine;
