//! Table scans that give the planner no statistics.
//!
//! The Delta scan hands the planner each column's min and max from the
//! table's log. DataFusion's filter selectivity analysis over those bounds
//! can end in an internal error ("Selectivity is out of limit: 1.038…")
//! when a date or time range ends exactly on a column's bound: an analyst's
//! `adt_per_day` over the whole seed day failed so, at planning. `serve`'s
//! queries are scans, filters and aggregates over one day's tables, for
//! which those estimates buy little; without them every query plans. File
//! pruning is unaffected: the Delta scan still prunes files with the
//! filters pushed into it.

use std::fmt;
use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::{Session, TableProvider};
use deltalake::datafusion::common::Statistics;
use deltalake::datafusion::common::tree_node::TreeNodeRecursion;
use deltalake::datafusion::error::Result;
use deltalake::datafusion::execution::{SendableRecordBatchStream, TaskContext};
use deltalake::datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use deltalake::datafusion::physical_expr::PhysicalExpr;
use deltalake::datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, StatisticsArgs,
};

/// `inner`, whose scans report unknown statistics.
#[derive(Debug)]
pub struct Unestimated {
    inner: Arc<dyn TableProvider>,
}

impl Unestimated {
    pub fn new(inner: Arc<dyn TableProvider>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

#[async_trait::async_trait]
impl TableProvider for Unestimated {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(UnestimatedExec { input }))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }
}

/// `input` as it is, with unknown statistics.
#[derive(Debug)]
struct UnestimatedExec {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for UnestimatedExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "UnestimatedExec")
    }
}

impl ExecutionPlan for UnestimatedExec {
    fn name(&self) -> &str {
        "UnestimatedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(Self { input })),
            _ => deltalake::datafusion::common::internal_err!("UnestimatedExec has one input"),
        }
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn child_stats_requests(&self, _partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::Skip]
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(Arc::new(Statistics::new_unknown(&self.schema())))
    }
}
