//! Read-only SQL over the lake, scoped to a principal's facilities below
//! anything the query can say.
//!
//! # How a query is scoped
//!
//! Each query gets a DataFusion session of its own in which the only
//! tables are views: `SELECT * FROM <delta table> WHERE <facility column>
//! IN (<the principal's facilities>)`. The Delta tables themselves are
//! never registered under any name, so no join, subquery, UNION, CTE or
//! qualified name can reach an unfiltered row: whatever the SQL says, it
//! reads the views, and the filter sits below it in every plan.
//!
//! What else a SQL text could reach is closed:
//! - `information_schema` is off (the session's default), so is reading
//!   files by path (`SELECT * FROM '/lake/…/part-0.parquet'`: URL tables
//!   are off by default and stay off);
//! - DDL (`CREATE EXTERNAL TABLE … LOCATION`, `CREATE VIEW`, `DROP`), DML
//!   (`INSERT`, `COPY … TO`) and statements (`SET`, transactions) are
//!   refused by the planner's [`SQLOptions`];
//! - `EXPLAIN ANALYZE` is refused (it runs the plan and reports it); a
//!   plain `EXPLAIN` shows the plan of the scoped views only.
//!
//! # Limits of one query
//!
//! A time limit (the query is dropped, which cancels its tasks), a memory
//! pool of its own without spilling to disk (a query past it fails as
//! `resources exhausted` instead of taking the process with it or writing
//! rows to the node's disk), and a cap on the rows and bytes returned (the
//! result says it was cut).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::common::tree_node::TreeNodeRecursion;
use deltalake::datafusion::datasource::provider_as_source;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use deltalake::datafusion::execution::memory_pool::GreedyMemoryPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, ident, lit};
use deltalake::datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::catalog::OpenTable;
use crate::customers::Scope;

/// Values of a query's named parameters (`$name`), by name.
pub type Params = std::collections::HashMap<String, ScalarValue>;

/// Bounds of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest a query may run, planning included.
    pub timeout: Duration,
    /// Memory its operators may hold (sorts, joins, aggregates).
    pub memory_bytes: usize,
    /// Rows returned at most; the result is cut after them.
    pub max_rows: usize,
    /// Bytes of Arrow data returned at most; the result is cut after them.
    pub max_bytes: usize,
}

impl QueryLimits {
    /// These limits with a customer's own where it has them.
    pub fn overridden(&self, by: &crate::customers::LimitOverrides) -> Self {
        Self {
            timeout: by
                .query_timeout_ms
                .map_or(self.timeout, Duration::from_millis),
            memory_bytes: by.query_memory_bytes.unwrap_or(self.memory_bytes),
            ..*self
        }
    }
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 * 1024 * 1024,
            max_rows: 100_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a query gave no result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is not a read-only query (DDL, DML, a statement, EXPLAIN
    /// ANALYZE).
    #[error("only read-only queries are allowed: {reason}")]
    Refused { reason: String },
    /// The SQL does not parse or names what does not exist.
    #[error("{message}")]
    Invalid { message: String },
    #[error("the query ran longer than {limit_ms} ms and was stopped")]
    Timeout { limit_ms: u64 },
    #[error("the query needed more than its {limit_bytes} bytes of working memory")]
    Memory { limit_bytes: usize },
    #[error("the query failed: {message}")]
    Failed { message: String },
}

impl QueryError {
    /// A failure of the server's side (the lake, the engine), not of the
    /// query.
    pub fn failed(error: impl std::fmt::Display) -> Self {
        QueryError::Failed {
            message: error.to_string(),
        }
    }

    /// Whether the asker's SQL is at fault (400) rather than the server.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Failed { .. })
    }

    /// The error's `code` in answers and audit rows.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Refused { .. } => "refused",
            QueryError::Invalid { .. } => "invalid",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Memory { .. } => "memory",
            QueryError::Failed { .. } => "failed",
        }
    }

    /// The query error a DataFusion error stands for.
    pub fn from_datafusion(error: DataFusionError, limits: &QueryLimits) -> Self {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(_) => QueryError::Memory {
                limit_bytes: limits.memory_bytes,
            },
            // SQLOptions' refusals: "DDL / DML / Statement not supported".
            DataFusionError::Plan(message) if message.contains(" not supported: ") => {
                QueryError::Refused {
                    reason: message.clone(),
                }
            }
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid {
                message: error.to_string(),
            },
            _ => QueryError::Failed {
                message: error.to_string(),
            },
        }
    }
}

/// What a query returned.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub bytes: usize,
    /// The rows or bytes limit cut the result.
    pub truncated: bool,
    /// (table, version) of every table the session offered.
    pub versions: Vec<(String, u64)>,
    pub elapsed: Duration,
}

/// A session whose only tables are `tables`, each filtered to `scope`.
pub async fn scoped_session(
    tables: &[OpenTable],
    scope: &Scope,
    limits: &QueryLimits,
) -> Result<SessionContext, QueryError> {
    let failed = QueryError::failed;
    let config = SessionConfig::new()
        .with_information_schema(false)
        .with_target_partitions(2);
    // No spilling: a query past its memory fails rather than writing rows
    // (PHI) to the node's disk.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes)))
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(failed)?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for open in tables {
        open.table
            .update_datafusion_session(&ctx.state())
            .map_err(QueryError::failed)?;
        let provider = open
            .table
            .table_provider()
            .await
            .map_err(QueryError::failed)?;
        // The scan carries the table's name, so plans say which tables a
        // query reads; the name is not registered, so no SQL can use it.
        let provider = crate::unestimated::Unestimated::new(provider);
        let scan =
            LogicalPlanBuilder::scan(open.def.name.as_str(), provider_as_source(provider), None)
                .and_then(LogicalPlanBuilder::build)
                .map_err(failed)?;
        let frame = DataFrame::new(ctx.state(), scan);
        let frame = match scope {
            Scope::All => frame,
            Scope::Facilities(ids) => {
                let allowed: Vec<Expr> = ids
                    .iter()
                    .map(|id| lit(ScalarValue::Utf8(Some(id.clone()))))
                    .collect();
                let mut scoped = ident(&open.def.facility_column).in_list(allowed.clone(), false);
                for column in &open.def.lineage_columns {
                    scoped = scoped.and(ident(column).in_list(allowed.clone(), false));
                }
                frame.filter(scoped).map_err(failed)?
            }
        };
        ctx.register_table(open.def.name.as_str(), frame.into_view())
            .map_err(failed)?;
    }
    Ok(ctx)
}

/// The bytes of the rows of `batch` itself: batches of joins share the
/// buffers of their inputs, which `get_array_memory_size` would count in
/// every batch again.
fn returned_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| column.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// A planned query: the plan, and the tables it reads.
pub struct Planned {
    frame: DataFrame,
    /// The tables (views) the plan scans, subqueries included, sorted.
    pub tables: Vec<String>,
}

/// Plans read-only `sql` with `params` in `ctx`.
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
    params: &Params,
    limits: &QueryLimits,
) -> Result<Planned, QueryError> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let frame = ctx
        .sql_with_options(sql, options)
        .await
        .map_err(|e| QueryError::from_datafusion(e, limits))?;
    if let LogicalPlan::Analyze(_) = frame.logical_plan() {
        return Err(QueryError::Refused {
            reason: "EXPLAIN ANALYZE runs the query; use EXPLAIN".into(),
        });
    }
    let frame = if params.is_empty() {
        frame
    } else {
        frame
            .with_param_values(params.clone())
            .map_err(|e| QueryError::from_datafusion(e, limits))?
    };
    let mut tables = std::collections::BTreeSet::new();
    frame
        .logical_plan()
        .apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(|e| QueryError::from_datafusion(e, limits))?;
    Ok(Planned {
        frame,
        tables: tables.into_iter().collect(),
    })
}

/// Plans read-only `sql` in `ctx` and starts it: its batches as they are
/// computed. The caller bounds the time and the size of what it takes.
pub async fn stream(
    ctx: &SessionContext,
    sql: &str,
    params: &Params,
    limits: &QueryLimits,
) -> Result<SendableRecordBatchStream, QueryError> {
    plan(ctx, sql, params, limits).await?.stream(limits).await
}

impl Planned {
    /// Starts the query: its batches as they are computed.
    pub async fn stream(
        self,
        limits: &QueryLimits,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        self.frame
            .execute_stream()
            .await
            .map_err(|e| QueryError::from_datafusion(e, limits))
    }
}

/// Runs read-only `sql` in `ctx` within `limits`.
pub async fn run(
    ctx: &SessionContext,
    sql: &str,
    params: &Params,
    limits: &QueryLimits,
    versions: Vec<(String, u64)>,
) -> Result<QueryResult, QueryError> {
    let planned = plan(ctx, sql, params, limits).await?;
    collect(planned, limits, versions).await
}

/// Runs `planned` to its end within `limits`, keeping what it returns.
pub async fn collect(
    planned: Planned,
    limits: &QueryLimits,
    versions: Vec<(String, u64)>,
) -> Result<QueryResult, QueryError> {
    let started = Instant::now();
    let work = async {
        let mut stream = planned.stream(limits).await?;
        let (mut batches, mut rows, mut bytes, mut truncated) = (Vec::new(), 0, 0, false);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| QueryError::from_datafusion(e, limits))?;
            let room = limits.max_rows - rows;
            let batch = if batch.num_rows() > room {
                truncated = true;
                batch.slice(0, room)
            } else {
                batch
            };
            let size = returned_bytes(&batch);
            if bytes + size > limits.max_bytes {
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            bytes += size;
            batches.push(batch);
            if truncated {
                break;
            }
            if rows == limits.max_rows {
                // Cut only if another row follows.
                while let Some(next) = stream.next().await {
                    let next = next.map_err(|e| QueryError::from_datafusion(e, limits))?;
                    if next.num_rows() > 0 {
                        truncated = true;
                        break;
                    }
                }
                break;
            }
        }
        Ok((batches, rows, bytes, truncated))
    };
    let (batches, rows, bytes, truncated) = tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| QueryError::Timeout {
            limit_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        })??;
    Ok(QueryResult {
        batches,
        rows,
        bytes,
        truncated,
        versions,
        elapsed: started.elapsed(),
    })
}
