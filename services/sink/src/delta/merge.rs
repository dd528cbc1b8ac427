//! MERGE of a CDC batch into its table.
//!
//! 1. `latest_per_key` reduces the batch to one event per primary key: the
//!    largest `sequence_by`; on a tie, the larger Kafka offset.
//! 2. `merge` runs one Delta MERGE on the primary key:
//!    - matched, `_op = delete`, source sequence ≥ target sequence → delete;
//!    - matched, `_op = upsert`, source sequence ≥ target sequence → update
//!      every column;
//!    - not matched, `_op = upsert` → insert;
//!    - anything else (an older event) leaves the row as it is.
//!
//! Deletes are hard deletes: the row leaves the table, so Spark and Trino
//! need no filter. The price: an upsert *older* than the delete that arrives
//! in a *later* batch finds no row and is inserted again. The parser emits a
//! key's events in file order through one partition, so this needs a file
//! replayed out of order after its key was deleted; it is accepted and
//! documented rather than paid for with tombstone rows every reader would
//! have to filter.

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow::array::{Array, RecordBatch, StringArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::row::{RowConverter, SortField};
use deltalake::DeltaTable;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::logical_expr::{Expr, lit};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;

use super::error::DeltaError;
use super::spec::{OP_COLUMN, OP_DELETE, OP_UPSERT, TableSpec};
use super::txn::RowOrigin;

const SOURCE: &str = "source";
const TARGET: &str = "target";

/// A row the writer could not take, with the reason (never its values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowReject {
    /// Where the row came from.
    pub origin: RowOrigin,
    /// Column at fault.
    pub column: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Counts of one MERGE.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeCounts {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
}

/// The batch reduced to the latest event per key, and the rows refused.
pub(crate) fn latest_per_key(
    spec: &TableSpec,
    primary_key: &[String],
    sequence_by: &str,
    batch: &RecordBatch,
    origins: &[RowOrigin],
) -> Result<(RecordBatch, Vec<RowReject>), DeltaError> {
    let table = spec.name.as_str();
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| DeltaError::InvalidBatch {
                table: table.to_string(),
                reason: format!("column '{name}' is missing"),
            })
    };
    let key_columns = primary_key
        .iter()
        .map(|k| column(k))
        .collect::<Result<Vec<_>, _>>()?;
    let seq_column = column(sequence_by)?;
    let op_column = column(OP_COLUMN)?;
    let ops = op_column
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DeltaError::InvalidBatch {
            table: table.to_string(),
            reason: format!("column '{OP_COLUMN}' is not a string"),
        })?;

    let converter = |columns: &[arrow::array::ArrayRef]| {
        RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )
        .and_then(|conv| conv.convert_columns(columns))
        .map_err(|e| DeltaError::arrow(table, "encode keys", e))
    };
    let keys = converter(&key_columns)?;
    let seqs = converter(std::slice::from_ref(&seq_column))?;

    let mut rejects = Vec::new();
    let mut best: HashMap<arrow::row::Row<'_>, usize> = HashMap::new();
    for row in 0..batch.num_rows() {
        let reject = |column: &str, reason| RowReject {
            origin: origins[row],
            column: column.to_string(),
            reason,
        };
        if let Some(k) = primary_key
            .iter()
            .zip(&key_columns)
            .find(|(_, c)| c.is_null(row))
        {
            rejects.push(reject(k.0, "primary key is null"));
            continue;
        }
        if seq_column.is_null(row) {
            rejects.push(reject(sequence_by, "sequence is null"));
            continue;
        }
        if ops.is_null(row) || !matches!(ops.value(row), OP_UPSERT | OP_DELETE) {
            rejects.push(reject(OP_COLUMN, "operation is neither upsert nor delete"));
            continue;
        }
        let newer = |other: usize| match seqs.row(row).cmp(&seqs.row(other)) {
            Ordering::Equal => origins[row].offset >= origins[other].offset,
            ord => ord == Ordering::Greater,
        };
        best.entry(keys.row(row))
            .and_modify(|current| {
                if newer(*current) {
                    *current = row;
                }
            })
            .or_insert(row);
    }
    let mut chosen: Vec<u32> = best.into_values().map(|r| r as u32).collect();
    chosen.sort_unstable();
    let reduced = take_record_batch(batch, &UInt32Array::from(chosen))
        .map_err(|e| DeltaError::arrow(table, "reduce batch", e))?;
    Ok((reduced, rejects))
}

fn source(name: &str) -> Expr {
    Expr::Column(Column::new(Some(SOURCE), name))
}

fn target(name: &str) -> Expr {
    Expr::Column(Column::new(Some(TARGET), name))
}

/// Runs the MERGE of an already reduced batch.
pub(crate) async fn merge(
    table: DeltaTable,
    spec: &TableSpec,
    primary_key: &[String],
    sequence_by: &str,
    reduced: RecordBatch,
    commit: CommitProperties,
) -> Result<(DeltaTable, MergeCounts), DeltaError> {
    let name = spec.name.as_str();
    let columns: Vec<String> = reduced
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let source_frame = SessionContext::new()
        .read_batch(reduced)
        .map_err(|e| DeltaError::delta(name, "read merge source", e.into()))?;
    let on = primary_key
        .iter()
        .map(|k| target(k).eq(source(k)))
        .reduce(Expr::and)
        .ok_or_else(|| DeltaError::InvalidSpec {
            table: name.to_string(),
            column: String::new(),
            reason: "a merge table needs a primary key",
        })?;
    let not_older = source(sequence_by)
        .gt_eq(target(sequence_by))
        .or(target(sequence_by).is_null());
    let is_op = |op: &str| source(OP_COLUMN).eq(lit(op.to_string()));

    let delta = |e| DeltaError::delta(name, "merge", e);
    // No rebase by delta-rs onto a table that moved since the MERGE read it:
    // its checker would let a MERGE commit over an OPTIMIZE that replaced
    // the files the MERGE rewrote (OPTIMIZE removes with `dataChange:
    // false`, which it ignores), leaving both the compacted rows and the
    // merged ones. The lost race is a conflict; the writer re-runs the MERGE
    // on the new table.
    let commit = commit.with_max_retries(0);
    let (table, metrics) = table
        .merge(source_frame, on)
        .with_source_alias(SOURCE)
        .with_target_alias(TARGET)
        .with_commit_properties(commit)
        .when_matched_delete(|delete| delete.predicate(is_op(OP_DELETE).and(not_older.clone())))
        .map_err(delta)?
        .when_matched_update(|update| {
            columns.iter().fold(
                update.predicate(is_op(OP_UPSERT).and(not_older.clone())),
                |u, c| u.update(Column::new_unqualified(c), source(c)),
            )
        })
        .map_err(delta)?
        .when_not_matched_insert(|insert| {
            columns
                .iter()
                .fold(insert.predicate(is_op(OP_UPSERT)), |i, c| {
                    i.set(Column::new_unqualified(c), source(c))
                })
        })
        .map_err(delta)?
        .await
        .map_err(delta)?;
    Ok((
        table,
        MergeCounts {
            inserted: metrics.num_target_rows_inserted as u64,
            updated: metrics.num_target_rows_updated as u64,
            deleted: metrics.num_target_rows_deleted as u64,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::delta::spec::TableMode;

    fn spec() -> TableSpec {
        TableSpec::new(
            "t",
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("seq", DataType::Int64, true),
                Field::new(OP_COLUMN, DataType::Utf8, true),
            ])),
            TableMode::Merge {
                primary_key: vec!["id".into()],
                sequence_by: "seq".into(),
            },
            vec![],
        )
        .unwrap()
    }

    fn rows(rows: &[(Option<i64>, i64, &str)]) -> RecordBatch {
        RecordBatch::try_new(
            spec().schema,
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn origins(n: usize) -> Vec<RowOrigin> {
        (0..n)
            .map(|i| RowOrigin {
                partition: 0,
                offset: i as i64,
            })
            .collect()
    }

    #[test]
    fn latest_sequence_wins_and_ties_go_to_the_later_offset() {
        let batch = rows(&[
            (Some(1), 5, "upsert"),
            (Some(1), 3, "delete"),
            (Some(2), 1, "upsert"),
            (Some(2), 1, "delete"),
        ]);
        let (reduced, rejects) =
            latest_per_key(&spec(), &["id".into()], "seq", &batch, &origins(4)).unwrap();
        assert!(rejects.is_empty());
        assert_eq!(
            reduced,
            rows(&[(Some(1), 5, "upsert"), (Some(2), 1, "delete")])
        );
    }

    #[test]
    fn null_keys_and_unknown_ops_are_refused() {
        let batch = rows(&[
            (None, 5, "upsert"),
            (Some(1), 3, "merge"),
            (Some(2), 1, "upsert"),
        ]);
        let (reduced, rejects) =
            latest_per_key(&spec(), &["id".into()], "seq", &batch, &origins(3)).unwrap();
        assert_eq!(reduced.num_rows(), 1);
        let columns: Vec<_> = rejects.iter().map(|r| r.column.as_str()).collect();
        assert_eq!(columns, vec!["id", OP_COLUMN]);
        assert_eq!(rejects[1].origin.offset, 1);
    }
}
