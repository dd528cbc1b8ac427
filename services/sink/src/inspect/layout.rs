//! How a table lies in storage, `medlake tables layout`: what a reader pays
//! to open and scan it (files, their size, partitions, the log to replay).

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use super::InspectError;
use crate::delta::read;

/// The storage shape of one table's latest version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableLayout {
    /// Table name.
    pub table: String,
    /// Latest version: the number of commits in its log, less one.
    pub version: i64,
    /// Live data files.
    pub files: u64,
    /// Bytes of the live data files.
    pub bytes: u64,
    /// Partitions holding at least one file (1 for an unpartitioned table).
    pub partitions: u64,
    /// Files of the partition holding the most.
    pub max_files_per_partition: u64,
    /// Seconds to open the table from storage: last checkpoint plus the
    /// commits after it, as every reader (Spark, Trino, the sink) does.
    pub load_s: f64,
}

impl TableLayout {
    /// Average bytes per data file (0 without files).
    pub fn average_file_bytes(&self) -> u64 {
        self.bytes.checked_div(self.files).unwrap_or(0)
    }
}

/// The layout of `<lake_uri>/<table>`; `Ok(None)` when it is not a table yet.
pub async fn layout(lake_uri: &str, table: &str) -> Result<Option<TableLayout>, InspectError> {
    // One open, timed: a table that does not open is not a table yet, as
    // for the other readers of this module.
    let started = Instant::now();
    let Ok(delta) = read::open(lake_uri, table).await else {
        return Ok(None);
    };
    let load_s = started.elapsed().as_secs_f64();
    let snapshot = delta
        .snapshot()
        .map_err(|e| InspectError::table(table, e))?;
    let mut per_partition: HashMap<String, u64> = HashMap::new();
    let mut bytes = 0u64;
    let mut files = 0u64;
    for file in snapshot.log_data().iter() {
        files += 1;
        bytes += file.size().max(0) as u64;
        let path = file.path();
        let partition = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        *per_partition.entry(partition.to_string()).or_default() += 1;
    }
    Ok(Some(TableLayout {
        table: table.to_string(),
        version: delta.version().map_or(-1, |v| v as i64),
        files,
        bytes,
        partitions: per_partition.len() as u64,
        max_files_per_partition: per_partition.values().copied().max().unwrap_or(0),
        load_s,
    }))
}
