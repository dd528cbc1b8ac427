//! Every report of `reports/` plans and runs on the tables exactly as the
//! sink creates them (every data set of `schemas/`, `_files`,
//! `_dead_letters`), for an analyst and for a customer, with its defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use medlake_common::dataset;
use medlake_serve::catalog::Catalog;
use medlake_serve::customers::Scope;
use medlake_serve::engine::{QueryLimits, run, scoped_session};
use medlake_serve::reports;
use medlake_sink::delta::{TableSpec, TableWriter, WriterOptions, builtin};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn every_report_runs_on_the_tables_the_sink_creates() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().to_str().unwrap();
    let datasets = dataset::load_dir(&repo().join("schemas")).unwrap();
    let options = WriterOptions::new("serve-test");
    let mut specs: Vec<TableSpec> = datasets
        .iter()
        .map(|d| TableSpec::from_dataset(d).unwrap())
        .collect();
    specs.push(builtin::files_spec());
    specs.push(builtin::dead_letters_spec());
    for spec in &specs {
        TableWriter::open_or_create(lake, spec, &options)
            .await
            .unwrap();
    }
    let catalog = Catalog::from_datasets(lake, &datasets);
    let reports = reports::load_dir(&repo().join("reports")).unwrap();
    assert!(reports.len() >= 5);
    let limits = QueryLimits::default();
    for scope in [Scope::All, Scope::Facilities(["F1".to_string()].into())] {
        for report in &reports {
            let params = report
                .bind(&BTreeMap::new(), &scope, reports::today())
                .unwrap_or_else(|e| panic!("{}: {e}", report.name));
            let tables = catalog.latest().await.unwrap();
            let ctx = scoped_session(&tables, &scope, &limits).await.unwrap();
            let result = run(&ctx, &report.sql, &params, &limits, Vec::new())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", report.name));
            assert_eq!(result.rows, 0, "{}: rows from empty tables", report.name);
            if let Some(chart) = &report.chart {
                let columns: Vec<String> = result
                    .batches
                    .first()
                    .map(|b| {
                        b.schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect()
                    })
                    .unwrap_or_default();
                if !columns.is_empty() {
                    for column in std::iter::once(&chart.x).chain(&chart.y) {
                        assert!(
                            columns.contains(column),
                            "{}: chart column {column}",
                            report.name
                        );
                    }
                }
            }
        }
    }
}
