//! The `serve` section of the configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::QueryLimits;

/// Configuration of `medlake serve`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address of the portal and the SQL API.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The customer registry (customers, their facilities, their users'
    /// token digests).
    #[serde(default = "default_customers_file")]
    pub customers_file: PathBuf,
    /// Folder of report definitions (one YAML file per report).
    #[serde(default = "default_reports_dir")]
    pub reports_dir: PathBuf,
    /// Longest a query may run, in milliseconds.
    #[serde(default = "default_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// Working memory of one query (sorts, joins, aggregates), in bytes; a
    /// query past it fails, nothing spills to disk.
    #[serde(default = "default_query_memory_bytes")]
    pub query_memory_bytes: usize,
    /// Rows one answer returns at most (it says when it was cut).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Bytes of rows one answer returns at most.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
    /// Rows one CSV download returns at most (written as they come, never
    /// held whole).
    #[serde(default = "default_max_csv_rows")]
    pub max_csv_rows: usize,
    /// Queries one customer may run at once; one more is answered 429 with
    /// Retry-After.
    #[serde(default = "default_max_queries_per_customer")]
    pub max_queries_per_customer: usize,
    /// Bytes of answers kept for identical questions (0: no cache). An
    /// answer is found again only while no table it read has a new commit.
    #[serde(default = "default_cache_bytes")]
    pub cache_bytes: usize,
    /// How often queued `_audit` rows are appended (one Delta commit), in
    /// milliseconds; also at 1,000 rows and at shutdown.
    #[serde(default = "default_audit_flush_ms")]
    pub audit_flush_ms: u64,
    /// Queries all customers together may run at once (503 past it).
    /// Memory: this × `query_memory_bytes` + this × `max_result_bytes`.
    #[serde(default = "default_max_queries")]
    pub max_queries: usize,
    /// How long a query waits for one of `max_queries` before it is
    /// answered 503, in milliseconds (0: not at all). Waiting costs no
    /// memory: only queries holding a slot run.
    #[serde(default = "default_queue_wait_ms")]
    pub queue_wait_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8090))
}
fn default_customers_file() -> PathBuf {
    PathBuf::from("config/customers.yaml")
}
fn default_reports_dir() -> PathBuf {
    PathBuf::from("reports")
}
fn default_query_timeout_ms() -> u64 {
    30_000
}
fn default_query_memory_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_max_rows() -> usize {
    100_000
}
fn default_max_result_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_max_csv_rows() -> usize {
    10_000_000
}
fn default_max_queries_per_customer() -> usize {
    4
}
fn default_cache_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_audit_flush_ms() -> u64 {
    5_000
}
fn default_max_queries() -> usize {
    8
}
fn default_queue_wait_ms() -> u64 {
    5_000
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            customers_file: default_customers_file(),
            reports_dir: default_reports_dir(),
            query_timeout_ms: default_query_timeout_ms(),
            query_memory_bytes: default_query_memory_bytes(),
            max_rows: default_max_rows(),
            max_result_bytes: default_max_result_bytes(),
            max_csv_rows: default_max_csv_rows(),
            max_queries_per_customer: default_max_queries_per_customer(),
            cache_bytes: default_cache_bytes(),
            audit_flush_ms: default_audit_flush_ms(),
            max_queries: default_max_queries(),
            queue_wait_ms: default_queue_wait_ms(),
        }
    }
}

impl ServeConfig {
    /// The bounds of one query.
    pub fn limits(&self) -> QueryLimits {
        QueryLimits {
            timeout: Duration::from_millis(self.query_timeout_ms),
            memory_bytes: self.query_memory_bytes,
            max_rows: self.max_rows,
            max_bytes: self.max_result_bytes,
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("query_timeout_ms", self.query_timeout_ms as usize),
            ("query_memory_bytes", self.query_memory_bytes),
            ("max_rows", self.max_rows),
            ("max_result_bytes", self.max_result_bytes),
            ("max_csv_rows", self.max_csv_rows),
            ("max_queries_per_customer", self.max_queries_per_customer),
            ("max_queries", self.max_queries),
            ("audit_flush_ms", self.audit_flush_ms as usize),
        ] {
            if value == 0 {
                return Err(format!("serve.{name} must be positive"));
            }
        }
        Ok(())
    }
}
