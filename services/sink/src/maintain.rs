//! Table health: `medlake maintain` compacts small files (OPTIMIZE, with an
//! optional Z-order) and vacuums files older than a retention, once or on a
//! schedule.
//!
//! Maintenance commits carry no `txn` action, so it never disturbs the
//! sink's offsets; a sink commit racing an OPTIMIZE is refused by Delta's
//! conflict checker and retried by the sink's writer. Vacuum keeps Delta's
//! safety check: a retention shorter than the table's
//! `delta.deletedFileRetentionDuration` (7 days by default) is refused
//! unless `enforce_retention` is turned off, because a reader of an older
//! version could still need those files.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::DeltaTable;
use deltalake::operations::optimize::OptimizeType;
use medlake_common::Shutdown;
use serde::{Deserialize, Serialize};

use crate::delta::{DeltaError, REWRITE_LEASE, RewriteLock};

/// How long `maintain` waits for another writer's OPTIMIZE of a table.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The `maintain` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainConfig {
    /// Size OPTIMIZE compacts small files into.
    #[serde(default = "default_target_file_size_bytes")]
    pub target_file_size_bytes: u64,
    /// Z-order columns per data set; data sets not listed are only compacted.
    #[serde(default)]
    pub zorder_by: BTreeMap<String, Vec<String>>,
    /// Files no longer in the table and older than this are deleted by vacuum.
    #[serde(default = "default_vacuum_retention_hours")]
    pub vacuum_retention_hours: u64,
    /// Refuse a retention shorter than the table's
    /// `delta.deletedFileRetentionDuration` (Delta's safety check).
    #[serde(default = "default_enforce_retention")]
    pub enforce_retention: bool,
    /// Run again every this many minutes; absent: run once and exit.
    #[serde(default)]
    pub every_minutes: Option<u64>,
}

fn default_target_file_size_bytes() -> u64 {
    128 * 1024 * 1024
}

fn default_vacuum_retention_hours() -> u64 {
    168
}

fn default_enforce_retention() -> bool {
    true
}

impl Default for MaintainConfig {
    fn default() -> Self {
        Self {
            target_file_size_bytes: default_target_file_size_bytes(),
            zorder_by: BTreeMap::new(),
            vacuum_retention_hours: default_vacuum_retention_hours(),
            enforce_retention: default_enforce_retention(),
            every_minutes: None,
        }
    }
}

/// What maintenance did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// Table name.
    pub table: String,
    /// Files OPTIMIZE wrote.
    pub files_added: u64,
    /// Files OPTIMIZE replaced.
    pub files_removed: u64,
    /// Files vacuum deleted.
    pub files_vacuumed: u64,
    /// Data files in the table afterwards.
    pub live_files: u64,
    /// Table version afterwards.
    pub version: i64,
}

/// Maintains one table. `Ok(None)` when the table does not exist yet.
pub async fn maintain_table(
    lake_uri: &str,
    table_name: &str,
    config: &MaintainConfig,
) -> Result<Option<TableReport>, DeltaError> {
    let delta = |operation, e| DeltaError::delta(table_name, operation, e);
    let local = !lake_uri.contains("://");
    if local
        && !std::path::Path::new(lake_uri)
            .join(table_name)
            .join("_delta_log")
            .is_dir()
    {
        return Ok(None);
    }
    let url = crate::delta::create::table_url(lake_uri, table_name)?;
    let table = DeltaTable::try_from_url(url)
        .await
        .map_err(|e| delta("open table", e))?;
    if table.version().is_none() {
        return Ok(None);
    }
    let optimize_type = match config.zorder_by.get(table_name) {
        Some(columns) if !columns.is_empty() => OptimizeType::ZOrder(columns.clone()),
        _ => OptimizeType::Compact,
    };
    let target = NonZeroU64::new(config.target_file_size_bytes.max(1)).expect("at least one");
    // One OPTIMIZE of a table at a time (see `delta::rewrite_lock`): wait
    // for a sink's compaction to finish, then plan on the table as it is.
    let waited = std::time::Instant::now();
    let lock = loop {
        if let Some(lock) =
            RewriteLock::try_acquire(&table, table_name, "medlake maintain", REWRITE_LEASE).await?
        {
            break lock;
        }
        if waited.elapsed() > LOCK_WAIT {
            return Err(DeltaError::LockBusy {
                table: table_name.to_string(),
                waited_s: waited.elapsed().as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let optimized = async {
        let mut table = table;
        table
            .update_incremental(None)
            .await
            .map_err(|e| delta("refresh table", e))?;
        table
            .optimize()
            .with_type(optimize_type)
            .with_target_size(target)
            .await
            .map_err(|e| delta("optimize", e))
    }
    .await;
    let released = lock.release().await;
    let (table, optimized) = optimized?;
    released?;
    let retention = chrono::Duration::hours(config.vacuum_retention_hours as i64);
    let (table, vacuumed) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(config.enforce_retention)
        .await
        .map_err(|e| delta("vacuum", e))?;
    let live_files = table
        .snapshot()
        .map(|s| s.log_data().num_files() as u64)
        .unwrap_or(0);
    medlake_common::metrics::SINK_TABLE_FILES
        .with_label_values(&[table_name])
        .set(live_files as i64);
    let report = TableReport {
        table: table_name.to_string(),
        files_added: optimized.num_files_added,
        files_removed: optimized.num_files_removed,
        files_vacuumed: vacuumed.files_deleted.len() as u64,
        live_files,
        version: table.version().map_or(-1, |v| v as i64),
    };
    tracing::info!(
        table = table_name,
        files_added = report.files_added,
        files_removed = report.files_removed,
        files_vacuumed = report.files_vacuumed,
        live_files,
        "Table maintained."
    );
    Ok(Some(report))
}

/// Maintains every table of `tables` once, or every `every_minutes` until
/// `shutdown`. A failing table is logged and does not stop the others; the
/// first error of a one-shot run is returned after all tables were tried.
pub async fn run(
    lake_uri: &str,
    tables: &[String],
    config: &MaintainConfig,
    shutdown: Shutdown,
) -> Result<Vec<TableReport>, DeltaError> {
    loop {
        let mut reports = Vec::new();
        let mut first_error = None;
        for table in tables {
            if shutdown.is_cancelled() {
                break;
            }
            match maintain_table(lake_uri, table, config).await {
                Ok(Some(report)) => reports.push(report),
                Ok(None) => tracing::debug!(table = table.as_str(), "No table yet; skipped."),
                Err(error) => {
                    tracing::error!(table = table.as_str(), %error, "Maintenance failed.");
                    first_error.get_or_insert(error);
                }
            }
        }
        let Some(minutes) = config.every_minutes else {
            return match first_error {
                Some(error) => Err(error),
                None => Ok(reports),
            };
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(reports),
            _ = tokio::time::sleep(Duration::from_secs(minutes.max(1) * 60)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_refuses_unknown_keys() {
        let config: MaintainConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, MaintainConfig::default());
        assert!(serde_json::from_str::<MaintainConfig>(r#"{"retention": 1}"#).is_err());
    }

    #[tokio::test]
    async fn a_missing_table_is_skipped() {
        let lake = tempfile::tempdir().unwrap();
        let report = maintain_table(
            lake.path().to_str().unwrap(),
            "nope",
            &MaintainConfig::default(),
        )
        .await
        .unwrap();
        assert!(report.is_none());
        assert!(
            !lake.path().join("nope").exists(),
            "no directory is created"
        );
    }
}
