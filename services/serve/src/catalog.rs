//! The tables `serve` reads: every data set and the built-in `_files` and
//! `_dead_letters`, each with the column that says whose facility a row is.
//!
//! Handles are opened once and brought up to the latest commit before each
//! query, so a query sees every commit made before it started, and the
//! versions it read are known (for the cache key and the audit row).
//!
//! One refresh serves every query that arrived before it started: under
//! load, queries waiting for the catalog share the next refresh instead of
//! each listing every table's log in turn. The tables are refreshed side by
//! side.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::DeltaTable;
use tokio::sync::Mutex;
use tokio::time::Instant;

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
    /// Columns holding the same sending facility by lineage (a data set's
    /// `from: facility_id` fields), filtered the same way as well: the
    /// filter is then on the partition column of tables partitioned by
    /// facility, and a customer's query opens its partitions only.
    pub lineage_columns: Vec<String>,
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
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: BTreeMap<String, DeltaTable>,
    /// The last refresh: when it started, and the tables it found.
    last: Option<(Instant, Arc<Vec<OpenTable>>)>,
}

impl Catalog {
    /// The data sets `datasets` and the built-in tables under `lake_uri`.
    pub fn new(lake_uri: &str, datasets: impl IntoIterator<Item = String>) -> Self {
        let mut defs: Vec<TableDef> = datasets
            .into_iter()
            .map(|name| TableDef {
                name,
                facility_column: DATASET_FACILITY_COLUMN.to_string(),
                lineage_columns: Vec::new(),
            })
            .collect();
        for builtin in ["_files", "_dead_letters"] {
            defs.push(TableDef {
                name: builtin.to_string(),
                facility_column: BUILTIN_FACILITY_COLUMN.to_string(),
                lineage_columns: Vec::new(),
            });
        }
        Self {
            lake_uri: lake_uri.to_string(),
            defs,
            state: Mutex::new(State::default()),
        }
    }

    /// The data sets `datasets` and the built-in tables under `lake_uri`,
    /// with each data set's lineage facility columns.
    pub fn from_datasets(lake_uri: &str, datasets: &[medlake_common::dataset::Dataset]) -> Self {
        let mut catalog = Self::new(lake_uri, datasets.iter().map(|d| d.name.clone()));
        for (def, dataset) in catalog.defs.iter_mut().zip(datasets) {
            def.lineage_columns = dataset
                .fields
                .iter()
                .filter(|f| {
                    f.from == Some(medlake_common::dataset::Origin::FacilityId) && f.is_output()
                })
                .map(|f| f.name.clone())
                .collect();
        }
        catalog
    }

    /// The tables a query may name.
    pub fn defs(&self) -> &[TableDef] {
        &self.defs
    }

    /// Every table that exists now, at its latest version: the tables as a
    /// refresh that started after this call found them. A table not
    /// written yet is left out (a query naming it is told it does not
    /// exist), so a new data set appears with its first commit.
    pub async fn latest(&self) -> Result<Arc<Vec<OpenTable>>, CatalogError> {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        if let Some((started, tables)) = &state.last
            && *started >= asked
        {
            return Ok(tables.clone());
        }
        let started = Instant::now();
        let refreshed = futures::future::join_all(self.defs.iter().map(|def| {
            let handle = state.open.get(&def.name).cloned();
            self.refresh(def, handle)
        }))
        .await;
        let mut out = Vec::with_capacity(self.defs.len());
        for (def, refreshed) in self.defs.iter().zip(refreshed) {
            if let Some(table) = refreshed? {
                state.open.insert(def.name.clone(), table.clone());
                out.push(OpenTable {
                    def: def.clone(),
                    version: table.version().unwrap_or_default(),
                    table,
                });
            }
        }
        let out = Arc::new(out);
        state.last = Some((started, out.clone()));
        Ok(out)
    }

    /// `def`'s table brought to its latest commit (`None`: not written yet).
    async fn refresh(
        &self,
        def: &TableDef,
        handle: Option<DeltaTable>,
    ) -> Result<Option<DeltaTable>, CatalogError> {
        let error = |source: Box<dyn std::error::Error + Send + Sync>| CatalogError {
            table: def.name.clone(),
            source,
        };
        if let Some(mut table) = handle {
            table
                .update_incremental(None)
                .await
                .map_err(|e| error(Box::new(e)))?;
            return Ok(Some(table));
        }
        let url = medlake_sink::delta::create::table_url(&self.lake_uri, &def.name)
            .map_err(|e| error(Box::new(e)))?;
        // An unloaded handle when the table does not exist yet.
        let table = DeltaTable::try_from_url(url)
            .await
            .map_err(|e| error(Box::new(e)))?;
        Ok(table.version().is_some().then_some(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_also_scoped_on_their_lineage_facility_column() {
        let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas");
        let datasets = medlake_common::dataset::load_dir(std::path::Path::new(schemas)).unwrap();
        let catalog = Catalog::from_datasets("/lake", &datasets);
        let def = |name: &str| catalog.defs().iter().find(|d| d.name == name).unwrap();
        // adt_events is partitioned by facility_id, a `from: facility_id` field.
        assert_eq!(def("adt_events").facility_column, "_facility_id");
        assert_eq!(def("adt_events").lineage_columns, ["facility_id"]);
        assert_eq!(def("_files").facility_column, "facility_id");
        assert!(def("_files").lineage_columns.is_empty());
        assert_eq!(catalog.defs().len(), datasets.len() + 2);
    }
}
