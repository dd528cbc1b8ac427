//! Reading a table back: what tests, tools and the interop check compare
//! against.

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use futures::TryStreamExt;

use super::error::DeltaError;

/// Opens the existing table `<lake_uri>/<table>`.
pub async fn open(lake_uri: &str, table: &str) -> Result<DeltaTable, DeltaError> {
    let url = super::create::table_url(lake_uri, table)?;
    deltalake::open_table(url)
        .await
        .map_err(|e| DeltaError::delta(table, "open table", e))
}

/// Every row of the table's latest version.
pub async fn read_all(lake_uri: &str, table: &str) -> Result<Vec<RecordBatch>, DeltaError> {
    let delta = open(lake_uri, table).await?;
    let (_, stream) = delta
        .scan_table()
        .await
        .map_err(|e| DeltaError::delta(table, "scan table", e))?;
    stream
        .try_collect()
        .await
        .map_err(|e| DeltaError::delta(table, "read rows", e.into()))
}

/// Number of rows in the table's latest version.
pub async fn count_rows(lake_uri: &str, table: &str) -> Result<usize, DeltaError> {
    Ok(read_all(lake_uri, table)
        .await?
        .iter()
        .map(RecordBatch::num_rows)
        .sum())
}
