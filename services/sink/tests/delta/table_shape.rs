//! What Spark and Trino see: protocol, properties, column types, checkpoints.

use medlake_sink::delta::{DeltaConfig, TableWriter, WriterOptions};
use serde_json::Value;

use crate::support::*;

/// Every action of every commit file of a table, in order.
fn log_actions(table_dir: &std::path::Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn protocol_and_properties_stay_readable_by_spark_and_trino() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    w.write(batch(&spec, &[(0, 0, visit(1, 1, "a"))]))
        .await
        .unwrap();
    w.write(batch(&spec, &[(0, 1, visit(1, 2, "b"))]))
        .await
        .unwrap();

    let actions = log_actions(&lake.path().join("visits"));
    let protocols: Vec<&Value> = actions.iter().filter_map(|a| a.get("protocol")).collect();
    assert!(!protocols.is_empty());
    for p in protocols {
        assert_eq!(p["minReaderVersion"], 1, "{p}");
        assert_eq!(p["minWriterVersion"], 2, "{p}");
        assert!(
            p.get("readerFeatures").is_none() && p.get("writerFeatures").is_none(),
            "{p}"
        );
    }
    let metadata = actions
        .iter()
        .rev()
        .find_map(|a| a.get("metaData"))
        .unwrap();
    let config = &metadata["configuration"];
    assert_eq!(config["delta.enableDeletionVectors"], "false");
    assert_eq!(config["delta.checkpointInterval"], "10");
    assert!(config.get("delta.columnMapping.mode").is_none());

    let schema: Value = serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    let type_of = |name: &str| {
        schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["type"]
            .clone()
    };
    assert_eq!(
        type_of("seen_at"),
        "timestamp",
        "UTC micros, not timestamp_ntz"
    );
    assert_eq!(type_of("_ingested_at"), "timestamp");
    assert_eq!(type_of("amount"), "decimal(10,2)");
    assert_eq!(type_of("admitted_on"), "date");

    // Every data commit carries the offsets of its partition.
    let txns: Vec<&Value> = actions.iter().filter_map(|a| a.get("txn")).collect();
    assert_eq!(txns.len(), 2);
    assert_eq!(txns[1]["appId"], format!("{GROUP}-{TOPIC}-0"));
    assert_eq!(txns[1]["version"], 1);
}

#[tokio::test]
async fn a_checkpoint_is_written_every_n_commits() {
    let lake = lake();
    let spec = spec(LABS);
    let options = WriterOptions {
        consumer_group: GROUP.into(),
        config: DeltaConfig {
            checkpoint_interval: 3,
            ..DeltaConfig::default()
        },
    };
    let mut w = TableWriter::open_or_create(uri(&lake), &spec, &options)
        .await
        .unwrap();
    let log = lake.path().join("labs").join("_delta_log");
    let checkpoints = || {
        let mut found: Vec<String> = std::fs::read_dir(&log)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".checkpoint."))
            .collect();
        found.sort();
        found
    };
    assert!(checkpoints().is_empty());
    for offset in 0..6 {
        w.write(batch(&spec, &[(0, offset, lab(offset, "icu"))]))
            .await
            .unwrap();
    }
    // Versions 0..=6 exist; with interval 3 checkpoints are at 2 and 5.
    assert_eq!(w.version(), 6);
    let found = checkpoints();
    assert_eq!(
        found,
        vec![
            "00000000000000000002.checkpoint.parquet",
            "00000000000000000005.checkpoint.parquet"
        ]
    );
    assert!(log.join("_last_checkpoint").is_file());

    // A reopened writer (reads from the checkpoint) still sees the offsets.
    let mut again = TableWriter::open_or_create(uri(&lake), &spec, &options)
        .await
        .unwrap();
    assert_eq!(again.committed_offsets(TOPIC, &[0]).await.unwrap()[&0], 5);

    // Changing the configured interval updates the table property.
    let options = WriterOptions {
        config: DeltaConfig {
            checkpoint_interval: 50,
            ..DeltaConfig::default()
        },
        ..options
    };
    let w = TableWriter::open_or_create(uri(&lake), &spec, &options)
        .await
        .unwrap();
    let config = w
        .table()
        .snapshot()
        .unwrap()
        .metadata()
        .configuration()
        .clone();
    assert_eq!(config["delta.checkpointInterval"], "50");
}
