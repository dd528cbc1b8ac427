//! Two writers on one table (two sink instances around a rebalance).

use medlake_sink::delta::read;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_from_two_writers_lands_once() {
    let lake = lake();
    let spec = spec(LABS);
    let mut a = writer(&lake, &spec).await;
    let mut b = writer(&lake, &spec).await;
    for round in 0..5 {
        let rows: Vec<_> = (0..10)
            .map(|i| (0, round * 10 + i, lab(round * 10 + i, "icu")))
            .collect();
        let batch = batch(&spec, &rows);
        let (ra, rb) = tokio::join!(a.write(batch.clone()), b.write(batch));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(
            ra.committed ^ rb.committed,
            "round {round}: exactly one commits"
        );
    }
    assert_eq!(read::count_rows(uri(&lake), "labs").await.unwrap(), 50);
    let all = rows(&lake, "labs", "lab_id").await;
    assert_eq!(
        int64s(&all, "lab_id"),
        (0..50).map(Some).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_merges_on_different_partitions_both_land() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut a = writer(&lake, &spec).await;
    let mut b = writer(&lake, &spec).await;
    for round in 0..4 {
        let on_a: Vec<_> = (0..5)
            .map(|i| (0, round * 5 + i, visit(i, round, "a")))
            .collect();
        let on_b: Vec<_> = (0..5)
            .map(|i| (1, round * 5 + i, visit(100 + i, round, "b")))
            .collect();
        let (ra, rb) = tokio::join!(a.write(batch(&spec, &on_a)), b.write(batch(&spec, &on_b)));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.committed && rb.committed);
    }
    let all = rows(&lake, "visits", "visit_id").await;
    assert_eq!(all.num_rows(), 10);
    assert!(int64s(&all, "seq").iter().all(|s| *s == Some(3)));
    let offsets = a.committed_offsets(TOPIC, &[0, 1]).await.unwrap();
    assert_eq!((offsets[&0], offsets[&1]), (19, 19));
}
