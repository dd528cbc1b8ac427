use medlake_sink::delta::read;

use crate::support::*;

#[tokio::test]
async fn merge_inserts_updates_and_keeps_the_latest_per_key() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    // Within one batch: key 1 seen three times, the largest seq wins even
    // when it is not the last message.
    let out = w
        .write(batch(
            &spec,
            &[
                (0, 0, visit(1, 1, "a")),
                (0, 1, visit(1, 3, "c")),
                (0, 2, visit(1, 2, "b")),
                (0, 3, visit(2, 1, "x")),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(out.rows_written, 2);
    assert_eq!(
        (out.merge.inserted, out.merge.updated, out.merge.deleted),
        (2, 0, 0)
    );

    let out = w
        .write(batch(
            &spec,
            &[(0, 4, visit(1, 4, "d")), (0, 5, visit(3, 1, "y"))],
        ))
        .await
        .unwrap();
    assert_eq!((out.merge.inserted, out.merge.updated), (1, 1));
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(int64s(&all, "visit_id"), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(
        strings(&all, "ward"),
        vec![Some("d".into()), Some("x".into()), Some("y".into())]
    );
    assert_eq!(int64s(&all, "seq"), vec![Some(4), Some(1), Some(1)]);
    // Types survive the round trip.
    assert_eq!(strings(&all, "amount")[0].as_deref(), Some("12.50"));
    assert_eq!(
        strings(&all, "admitted_on")[0].as_deref(),
        Some("2024-02-29")
    );
    assert_eq!(
        strings(&all, "seen_at")[0].as_deref(),
        Some("2024-03-01T08:30:00.123456Z")
    );
}

#[tokio::test]
async fn an_older_event_after_a_newer_one_does_not_win() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    w.write(batch(&spec, &[(0, 0, visit(1, 5, "new"))]))
        .await
        .unwrap();
    let out = w
        .write(batch(&spec, &[(0, 1, visit(1, 4, "old"))]))
        .await
        .unwrap();
    assert!(out.committed, "the offset still advances");
    assert_eq!(
        (out.merge.inserted, out.merge.updated, out.merge.deleted),
        (0, 0, 0)
    );
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(strings(&all, "ward"), vec![Some("new".into())]);
    assert_eq!(int64s(&all, "seq"), vec![Some(5)]);

    // An older delete does not delete either.
    w.write(batch(&spec, &[(0, 2, visit_delete(1, 3))]))
        .await
        .unwrap();
    assert_eq!(read::count_rows(uri(&lake), "visits").await.unwrap(), 1);

    // An equal sequence is not older: it applies (replays converge).
    w.write(batch(&spec, &[(0, 3, visit(1, 5, "same-seq"))]))
        .await
        .unwrap();
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(strings(&all, "ward"), vec![Some("same-seq".into())]);
}

#[tokio::test]
async fn deletes_remove_the_row() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    w.write(batch(
        &spec,
        &[(0, 0, visit(1, 1, "a")), (0, 1, visit(2, 1, "b"))],
    ))
    .await
    .unwrap();
    let out = w
        .write(batch(&spec, &[(0, 2, visit_delete(1, 2))]))
        .await
        .unwrap();
    assert_eq!(out.merge.deleted, 1);
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(int64s(&all, "visit_id"), vec![Some(2)]);

    // Insert then delete in the same batch: the delete is the latest, the
    // key never appears.
    w.write(batch(
        &spec,
        &[(0, 3, visit(7, 1, "a")), (0, 4, visit_delete(7, 2))],
    ))
    .await
    .unwrap();
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(int64s(&all, "visit_id"), vec![Some(2)]);
    // Stored rows keep `_op`; it is always `upsert`.
    assert_eq!(strings(&all, "_op"), vec![Some("upsert".into())]);
}

#[tokio::test]
async fn the_same_merge_batch_twice_changes_nothing() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    let b = batch(&spec, &[(0, 0, visit(1, 1, "a")), (1, 0, visit(2, 1, "b"))]);
    let first = w.write(b.clone()).await.unwrap();
    let again = w.write(b).await.unwrap();
    assert!(!again.committed);
    assert_eq!(again.version, first.version);
    assert_eq!(read::count_rows(uri(&lake), "visits").await.unwrap(), 2);
}

#[tokio::test]
async fn rows_without_a_valid_op_are_rejected_and_the_batch_goes_on() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    let mut bad = visit(9, 1, "z");
    bad["_op"] = serde_json::json!("merge");
    let out = w
        .write(batch(&spec, &[(0, 0, visit(1, 1, "a")), (0, 1, bad)]))
        .await
        .unwrap();
    assert_eq!(out.rejects.len(), 1);
    assert_eq!(out.rejects[0].origin.offset, 1);
    assert_eq!(out.rejects[0].column, "_op");
    assert_eq!(read::count_rows(uri(&lake), "visits").await.unwrap(), 1);
    assert_eq!(w.committed_offsets(TOPIC, &[0]).await.unwrap()[&0], 1);
}
