//! Creating a table from its definition, and following definition changes.
//!
//! Tables are created with the oldest protocol that holds our types
//! (reader 1, writer 2): no deletion vectors, no column mapping, no
//! `timestamp_ntz`, no variant. Spark (delta-spark 3.x) and Trino read them.
//!
//! A definition may only *add nullable columns*. They are added with an
//! explicit `ADD COLUMNS` commit when the writer opens the table, so old rows
//! read as null. Anything else (type change, nullability change, dropped
//! column, new required column, other partitioning) is refused with an error
//! naming the column: such a change needs a new data set or a manual
//! migration, never a silent rewrite.

use std::collections::HashMap;

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{StructField, StructType};
use deltalake::logstore::LogStore;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use url::Url;

use super::config::DeltaConfig;
use super::error::DeltaError;
use super::spec::TableSpec;

/// Table property that sets the checkpoint interval.
const CHECKPOINT_INTERVAL: &str = "delta.checkpointInterval";

/// URL of the table of `spec` under `lake_uri` (a local path, `file://` or
/// object store URL). Local directories are created.
pub fn table_url(lake_uri: &str, table: &str) -> Result<Url, DeltaError> {
    let location = if lake_uri.contains("://") {
        format!("{}/{table}", lake_uri.trim_end_matches('/'))
    } else {
        std::path::Path::new(lake_uri)
            .join(table)
            .to_string_lossy()
            .into_owned()
    };
    deltalake::ensure_table_uri(&location).map_err(|err| DeltaError::InvalidLocation {
        uri: location,
        reason: err.to_string(),
    })
}

/// Table properties set on every table medlake creates.
pub(crate) fn table_properties(config: &DeltaConfig) -> HashMap<String, Option<String>> {
    HashMap::from([
        (
            TableProperty::CheckpointInterval.as_ref().to_string(),
            Some(config.checkpoint_interval.max(1).to_string()),
        ),
        (
            TableProperty::EnableDeletionVectors.as_ref().to_string(),
            Some("false".to_string()),
        ),
    ])
}

/// Delta schema of a spec.
pub(crate) fn kernel_schema(spec: &TableSpec) -> Result<StructType, DeltaError> {
    spec.schema
        .as_ref()
        .try_into_kernel()
        .map_err(|source| DeltaError::arrow(&spec.name, "convert schema", source))
}

/// Opens the table at `url`, creating it from `spec` when it does not exist,
/// then brings it in line with `spec` (new columns, checkpoint interval).
pub(crate) async fn open_or_create(
    url: Url,
    spec: &TableSpec,
    config: &DeltaConfig,
) -> Result<DeltaTable, DeltaError> {
    let name = spec.name.as_str();
    let mut table = DeltaTableBuilder::from_url(url)
        .and_then(DeltaTableBuilder::build)
        .map_err(|e| DeltaError::delta(name, "open table", e))?;
    // Loading a location without a log makes the Delta kernel log an ERROR
    // ("No files in log segment") although nothing is wrong: look first.
    let exists = table
        .log_store()
        .is_delta_table_location()
        .await
        .map_err(|e| DeltaError::delta(name, "open table", e))?;
    if exists {
        table
            .load()
            .await
            .map_err(|e| DeltaError::delta(name, "open table", e))?;
    }
    let table = if !exists {
        let schema = kernel_schema(spec)?;
        table
            .create()
            .with_table_name(name)
            .with_columns(schema.fields().cloned())
            .with_partition_columns(spec.partition_by.clone())
            .with_configuration(table_properties(config))
            // Another instance may create it at the same moment: keep theirs.
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(|e| DeltaError::delta(name, "create table", e))?
    } else {
        table
    };
    let table = evolve(table, spec).await?;
    sync_checkpoint_interval(table, spec, config).await
}

/// Adds the spec's new nullable columns; refuses any other difference.
async fn evolve(table: DeltaTable, spec: &TableSpec) -> Result<DeltaTable, DeltaError> {
    let name = spec.name.as_str();
    let state = table
        .snapshot()
        .map_err(|e| DeltaError::delta(name, "read table state", e))?;
    let current = state.schema();
    let partitions = state.metadata().partition_columns().to_vec();
    let wanted = kernel_schema(spec)?;
    let added = schema_additions(name, &current, &partitions, &wanted, &spec.partition_by)?;
    if added.is_empty() {
        return Ok(table);
    }
    tracing::info!(
        table = name,
        columns = added.len(),
        "Adding new columns to the table."
    );
    table
        .add_columns()
        .with_fields(added)
        .await
        .map_err(|e| DeltaError::delta(name, "add columns", e))
}

/// Columns of `wanted` missing from `current`, after checking that every
/// other difference is allowed.
pub(crate) fn schema_additions(
    table: &str,
    current: &StructType,
    current_partitions: &[String],
    wanted: &StructType,
    wanted_partitions: &[String],
) -> Result<Vec<StructField>, DeltaError> {
    let refuse = |column: &str, change: String| DeltaError::IncompatibleSchema {
        table: table.to_string(),
        column: column.to_string(),
        change,
    };
    for field in current.fields() {
        let Some(new) = wanted.field(field.name()) else {
            return Err(refuse(
                field.name(),
                "dropped from the definition".to_string(),
            ));
        };
        if new.data_type() != field.data_type() {
            return Err(refuse(
                field.name(),
                format!("type {} -> {}", field.data_type(), new.data_type()),
            ));
        }
        if new.is_nullable() != field.is_nullable() {
            let change = if new.is_nullable() {
                "required -> optional"
            } else {
                "optional -> required"
            };
            return Err(refuse(field.name(), change.to_string()));
        }
    }
    if current_partitions != wanted_partitions {
        let column = wanted_partitions
            .iter()
            .chain(current_partitions)
            .find(|c| !current_partitions.contains(c) || !wanted_partitions.contains(c))
            .cloned()
            .unwrap_or_default();
        return Err(refuse(
            &column,
            format!("partitioning {current_partitions:?} -> {wanted_partitions:?}"),
        ));
    }
    let mut added = Vec::new();
    for field in wanted.fields() {
        if current.field(field.name()).is_some() {
            continue;
        }
        if !field.is_nullable() {
            return Err(refuse(
                field.name(),
                "new column is required; only nullable columns can be added".to_string(),
            ));
        }
        added.push(field.clone());
    }
    Ok(added)
}

/// Keeps `delta.checkpointInterval` equal to the configured value.
async fn sync_checkpoint_interval(
    table: DeltaTable,
    spec: &TableSpec,
    config: &DeltaConfig,
) -> Result<DeltaTable, DeltaError> {
    let name = spec.name.as_str();
    let wanted = config.checkpoint_interval.max(1).to_string();
    let current = table
        .snapshot()
        .map_err(|e| DeltaError::delta(name, "read table state", e))?
        .metadata()
        .configuration()
        .get(CHECKPOINT_INTERVAL)
        .cloned();
    if current.as_deref() == Some(wanted.as_str()) {
        return Ok(table);
    }
    table
        .set_tbl_properties()
        .with_properties(HashMap::from([(CHECKPOINT_INTERVAL.to_string(), wanted)]))
        .await
        .map_err(|e| DeltaError::delta(name, "set checkpoint interval", e))
}

#[cfg(test)]
mod tests {
    use deltalake::kernel::{DataType, PrimitiveType};

    use super::*;

    fn schema(fields: &[(&str, PrimitiveType, bool)]) -> StructType {
        StructType::try_new(fields.iter().map(|(n, t, nullable)| {
            StructField::new(*n, DataType::Primitive(t.clone()), *nullable)
        }))
        .unwrap()
    }

    #[test]
    fn nullable_additions_are_returned() {
        let current = schema(&[("id", PrimitiveType::Long, false)]);
        let wanted = schema(&[
            ("id", PrimitiveType::Long, false),
            ("note", PrimitiveType::String, true),
        ]);
        let added = schema_additions("t", &current, &[], &wanted, &[]).unwrap();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].name(), "note");
    }

    #[test]
    fn refusals_name_the_column() {
        let current = schema(&[
            ("id", PrimitiveType::Long, false),
            ("v", PrimitiveType::Long, true),
        ]);
        let cases = [
            schema(&[
                ("id", PrimitiveType::Long, false),
                ("v", PrimitiveType::String, true),
            ]),
            schema(&[("id", PrimitiveType::Long, false)]),
            schema(&[
                ("id", PrimitiveType::Long, false),
                ("v", PrimitiveType::Long, false),
            ]),
        ];
        for wanted in cases {
            let err = schema_additions("t", &current, &[], &wanted, &[]).unwrap_err();
            assert!(err.to_string().contains("'v'"), "{err}");
        }
        let wanted = schema(&[
            ("id", PrimitiveType::Long, false),
            ("v", PrimitiveType::Long, true),
            ("must", PrimitiveType::Long, false),
        ]);
        let err = schema_additions("t", &current, &[], &wanted, &[]).unwrap_err();
        assert!(err.to_string().contains("'must'"), "{err}");
    }

    #[test]
    fn repartitioning_is_refused() {
        let current = schema(&[
            ("id", PrimitiveType::Long, false),
            ("day", PrimitiveType::Date, true),
        ]);
        let err = schema_additions("t", &current, &[], &current, &["day".to_string()]).unwrap_err();
        assert!(err.to_string().contains("'day'"), "{err}");
    }

    #[test]
    fn table_url_joins_the_lake_and_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let url = table_url(dir.path().to_str().unwrap(), "labs").unwrap();
        assert!(url.as_str().ends_with("/labs/"), "{url}");
        assert!(dir.path().join("labs").is_dir());
    }
}
