use std::collections::HashMap;

use medlake_sink::delta::{TableWriter, WriterOptions, read};

use crate::support::*;

#[tokio::test]
async fn append_writes_rows_and_records_offsets_per_partition() {
    let lake = lake();
    let spec = spec(LABS);
    let mut w = writer(&lake, &spec).await;
    let out = w
        .write(batch(
            &spec,
            &[
                (0, 10, lab(1, "icu")),
                (1, 4, lab(2, "er")),
                (0, 11, lab(3, "icu")),
            ],
        ))
        .await
        .unwrap();
    assert!(out.committed);
    assert_eq!(out.rows_written, 3);
    assert_eq!(read::count_rows(uri(&lake), "labs").await.unwrap(), 3);
    let offsets = w.committed_offsets(TOPIC, &[0, 1, 2]).await.unwrap();
    assert_eq!(offsets, HashMap::from([(0, 11), (1, 4)]));

    // A fresh writer (a restarted sink) reads the same offsets from the table.
    let mut again = writer(&lake, &spec).await;
    assert_eq!(
        again.committed_offsets(TOPIC, &[0, 1]).await.unwrap(),
        offsets
    );
    // Another consumer group has its own offsets.
    let mut other = TableWriter::open_or_create(uri(&lake), &spec, &WriterOptions::new("other"))
        .await
        .unwrap();
    assert!(
        other
            .committed_offsets(TOPIC, &[0, 1])
            .await
            .unwrap()
            .is_empty()
    );

    // Partition directories follow `partition_by`.
    assert!(lake.path().join("labs").join("ward=icu").is_dir());
}

#[tokio::test]
async fn the_same_batch_twice_changes_nothing() {
    let lake = lake();
    let spec = spec(LABS);
    let mut w = writer(&lake, &spec).await;
    let b = batch(&spec, &[(0, 0, lab(1, "icu")), (0, 1, lab(2, "icu"))]);
    let first = w.write(b.clone()).await.unwrap();
    let second = w.write(b).await.unwrap();
    assert!(!second.committed);
    assert_eq!(second.version, first.version);
    assert_eq!(read::count_rows(uri(&lake), "labs").await.unwrap(), 2);

    // A redelivery that overlaps: only the new offsets land.
    let overlap = batch(&spec, &[(0, 1, lab(2, "icu")), (0, 2, lab(3, "icu"))]);
    let third = w.write(overlap).await.unwrap();
    assert_eq!(third.rows_written, 1);
    let all = rows(&lake, "labs", "lab_id").await;
    assert_eq!(int64s(&all, "lab_id"), vec![Some(1), Some(2), Some(3)]);
}

#[tokio::test]
async fn a_batch_without_rows_still_records_its_offsets() {
    let lake = lake();
    let spec = spec(LABS);
    let mut w = writer(&lake, &spec).await;
    let before = w.version();
    let empty = batch(&spec, &[]).consumed(2, 41);
    let out = w.write(empty).await.unwrap();
    assert!(out.committed);
    assert_eq!(out.rows_written, 0);
    assert_eq!(out.version, before + 1);
    assert_eq!(w.committed_offsets(TOPIC, &[2]).await.unwrap()[&2], 41);
    assert_eq!(read::count_rows(uri(&lake), "labs").await.unwrap(), 0);
}

#[tokio::test]
async fn an_inconsistent_batch_is_refused() {
    let lake = lake();
    let spec = spec(LABS);
    let mut w = writer(&lake, &spec).await;
    let mut b = batch(&spec, &[(0, 5, lab(1, "icu"))]);
    b.offsets[0].last_offset = 3;
    let err = w.write(b).await.unwrap_err();
    assert!(
        err.to_string().contains("past the batch's last offset"),
        "{err}"
    );
}
