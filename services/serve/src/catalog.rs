//! The tables `serve` reads: every data set and the built-in `_files` and
//! `_dead_letters`, each with the column that says whose facility a row is.
//!
//! Handles are opened once and brought up to the latest commit before each
//! query, so a query sees every commit made before it started, and the
//! versions it read are known (for the cache key and the audit row).

use std::collections::BTreeMap;

use deltalake::DeltaTable;
use tokio::sync::Mutex;

/// The facility column of the data set tables (added by the parser).
pub const DATASET_FACILITY_COLUMN: &str = "_facility_id";
/// The facility column of `_files` and `_dead_letters`.
pub const BUILTIN_FACILITY_COLUMN: &str = "facility_id";

/// One table a query may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    /// Rows are filtered to the principal's facilities on this column.
    pub facility_column: String,
}

/// A table at the version a query reads.
#[derive(Debug, Clone)]
pub struct OpenTable {
    pub def: TableDef,
    pub table: DeltaTable,
    pub version: u64,
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("table {table}: {source}")]
pub struct CatalogError {
    pub table: String,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// The lake's tables, their handles kept between queries.
#[derive(Debug)]
pub struct Catalog {
    lake_uri: String,
    defs: Vec<TableDef>,
    open: Mutex<BTreeMap<String, DeltaTable>>,
}

impl Catalog {
    /// The data sets `datasets` and the built-in tables under `lake_uri`.
    pub fn new(lake_uri: &str, datasets: impl IntoIterator<Item = String>) -> Self {
        let mut defs: Vec<TableDef> = datasets
            .into_iter()
            .map(|name| TableDef {
                name,
                facility_column: DATASET_FACILITY_COLUMN.to_string(),
            })
            .collect();
        for builtin in ["_files", "_dead_letters"] {
            defs.push(TableDef {
                name: builtin.to_string(),
                facility_column: BUILTIN_FACILITY_COLUMN.to_string(),
            });
        }
        Self {
            lake_uri: lake_uri.to_string(),
            defs,
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every table that exists now, at its latest version. A table not
    /// written yet is left out (a query naming it is told it does not
    /// exist), so a new data set appears with its first commit.
    pub async fn latest(&self) -> Result<Vec<OpenTable>, CatalogError> {
        let mut open = self.open.lock().await;
        let mut out = Vec::with_capacity(self.defs.len());
        for def in &self.defs {
            let error = |source: Box<dyn std::error::Error + Send + Sync>| CatalogError {
                table: def.name.clone(),
                source,
            };
            let table = match open.get_mut(&def.name) {
                Some(table) => {
                    table
                        .update_incremental(None)
                        .await
                        .map_err(|e| error(Box::new(e)))?;
                    table.clone()
                }
                None => {
                    let url = medlake_sink::delta::create::table_url(&self.lake_uri, &def.name)
                        .map_err(|e| error(Box::new(e)))?;
                    // An unloaded handle when the table does not exist yet.
                    let table = DeltaTable::try_from_url(url)
                        .await
                        .map_err(|e| error(Box::new(e)))?;
                    if table.version().is_none() {
                        continue;
                    }
                    open.insert(def.name.clone(), table.clone());
                    table
                }
            };
            let version = table.version().unwrap_or_default();
            out.push(OpenTable {
                def: def.clone(),
                table,
                version,
            });
        }
        Ok(out)
    }
}
