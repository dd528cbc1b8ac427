//! What the Delta layer needs to know about a data set: its columns, how rows
//! land (append or merge) and how the table is partitioned.
//!
//! [`TableSpec`] is the only type the writer reads. It is built from a data set
//! definition in one place ([`TableSpec::from_dataset`]), and directly for the
//! built-in `_dead_letters` and `_files` tables.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::error::DeltaError;

/// Name of the CDC operation column on merge data sets (`upsert` | `delete`).
pub const OP_COLUMN: &str = "_op";
/// Value of [`OP_COLUMN`] for an insert-or-update event.
pub const OP_UPSERT: &str = "upsert";
/// Value of [`OP_COLUMN`] for a delete event.
pub const OP_DELETE: &str = "delete";

/// How a batch lands in its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableMode {
    /// Every row is appended.
    Append,
    /// Rows are merged by primary key; the latest `sequence_by` wins.
    Merge {
        /// Columns that identify a row.
        primary_key: Vec<String>,
        /// Column that orders events of one key (larger is newer).
        sequence_by: String,
    },
}

impl TableMode {
    /// Short label used in metrics and logs (`append` | `merge`).
    pub fn label(&self) -> &'static str {
        match self {
            TableMode::Append => "append",
            TableMode::Merge { .. } => "merge",
        }
    }
}

/// The Delta view of a data set.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Data set name: also the table directory under the lake.
    pub name: String,
    /// Columns of the table, in order (user fields, then lineage).
    pub schema: SchemaRef,
    /// Append or merge.
    pub mode: TableMode,
    /// Partition columns (a subset of `schema`).
    pub partition_by: Vec<String>,
}

impl TableSpec {
    /// Builds and validates a spec. Merge specs get an `_op` column when the
    /// schema lacks one.
    pub fn new(
        name: impl Into<String>,
        schema: SchemaRef,
        mode: TableMode,
        partition_by: Vec<String>,
    ) -> Result<Self, DeltaError> {
        let name = name.into();
        let schema = match &mode {
            TableMode::Merge { .. } if schema.field_with_name(OP_COLUMN).is_err() => {
                let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
                fields.push(Arc::new(Field::new(OP_COLUMN, DataType::Utf8, false)));
                Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
            }
            _ => schema,
        };
        let spec = Self {
            name,
            schema,
            mode,
            partition_by,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Builds the spec of a data set definition. This is the one place that
    /// knows the shape of `medlake_common::dataset::Dataset`.
    pub fn from_dataset(dataset: &medlake_common::dataset::Dataset) -> Result<Self, DeltaError> {
        use medlake_common::dataset::Table;
        let (mode, partition_by) = match &dataset.table {
            Table::Append { partition_by } => (TableMode::Append, partition_by.clone()),
            Table::Merge {
                primary_key,
                sequence_by,
                partition_by,
                ..
            } => (
                TableMode::Merge {
                    primary_key: primary_key.clone(),
                    sequence_by: sequence_by.clone(),
                },
                partition_by.clone(),
            ),
        };
        Self::new(
            dataset.name.clone(),
            dataset.arrow_schema(),
            mode,
            partition_by,
        )
    }

    /// Checks that every named column exists and that merge columns can be
    /// compared.
    fn validate(&self) -> Result<(), DeltaError> {
        let must_exist = |column: &str| -> Result<&Field, DeltaError> {
            self.schema
                .field_with_name(column)
                .map_err(|_| DeltaError::InvalidSpec {
                    table: self.name.clone(),
                    column: column.to_string(),
                    reason: "column is not in the schema",
                })
        };
        for column in &self.partition_by {
            must_exist(column)?;
        }
        if let TableMode::Merge {
            primary_key,
            sequence_by,
        } = &self.mode
        {
            if primary_key.is_empty() {
                return Err(DeltaError::InvalidSpec {
                    table: self.name.clone(),
                    column: String::new(),
                    reason: "a merge table needs a primary key",
                });
            }
            for column in primary_key.iter().chain([sequence_by]) {
                let field = must_exist(column)?;
                if matches!(field.data_type(), DataType::Boolean) && column == sequence_by {
                    return Err(DeltaError::InvalidSpec {
                        table: self.name.clone(),
                        column: column.clone(),
                        reason: "sequence_by must be an orderable type",
                    });
                }
            }
            let op = must_exist(OP_COLUMN)?;
            if op.data_type() != &DataType::Utf8 {
                return Err(DeltaError::InvalidSpec {
                    table: self.name.clone(),
                    column: OP_COLUMN.to_string(),
                    reason: "the operation column must be a string",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
        ]))
    }

    #[test]
    fn merge_spec_gets_an_op_column() {
        let spec = TableSpec::new(
            "t",
            schema(),
            TableMode::Merge {
                primary_key: vec!["id".into()],
                sequence_by: "seq".into(),
            },
            vec![],
        )
        .unwrap();
        assert!(spec.schema.field_with_name(OP_COLUMN).is_ok());
        assert_eq!(spec.mode.label(), "merge");
    }

    #[test]
    fn unknown_partition_column_is_named() {
        let err = TableSpec::new("t", schema(), TableMode::Append, vec!["day".into()]).unwrap_err();
        assert!(err.to_string().contains("day"), "{err}");
    }

    #[test]
    fn merge_without_key_is_refused() {
        let err = TableSpec::new(
            "t",
            schema(),
            TableMode::Merge {
                primary_key: vec![],
                sequence_by: "seq".into(),
            },
            vec![],
        )
        .unwrap_err();
        assert!(err.to_string().contains("primary key"), "{err}");
    }
}
