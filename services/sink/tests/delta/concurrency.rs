//! Two writers on one table (two sink instances around a rebalance).

use medlake_sink::delta::{REWRITE_LEASE, RewriteLock, TableWriter, WriterOptions, read};

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

/// Two replicas compacting one table at once: the later OPTIMIZE must not
/// commit a second copy of the rows the earlier one compacted (delta-rs
/// alone lets it through: OPTIMIZE's removes are `dataChange: false`, which
/// its conflict checker ignores). The rewrite lock makes them take turns,
/// and each plans on the table as the other left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_compacting_at_once_keep_every_row_once() {
    let lake = lake();
    let spec = spec(LABS);
    let mut options = WriterOptions::new(GROUP);
    options.config.compact_every_commits = 1;
    let open = || TableWriter::open_or_create(uri(&lake), &spec, &options);
    let mut a = open().await.unwrap();
    let mut b = open().await.unwrap();
    let mut next_id = 0;
    let mut write_both = async |a: &mut TableWriter, b: &mut TableWriter| {
        for (writer, partition) in [(a, 0), (b, 1)] {
            next_id += 1;
            let record = (partition, next_id, lab(next_id, "icu"));
            writer.write(batch(&spec, &[record])).await.unwrap();
        }
    };
    write_both(&mut a, &mut b).await;
    write_both(&mut a, &mut b).await;

    // While one holds the lock, the other does not compact.
    let held = RewriteLock::try_acquire(a.table(), "labs", "test", REWRITE_LEASE)
        .await
        .unwrap()
        .expect("the lock is free");
    assert!(
        RewriteLock::try_acquire(b.table(), "labs", "test", REWRITE_LEASE)
            .await
            .unwrap()
            .is_none(),
        "a held lock is refused"
    );
    assert_eq!(b.compact_if_due().await.unwrap(), None, "busy: not now");
    held.release().await.unwrap();

    // Both planned on the same four files; the second to get the lock
    // finds them compacted already.
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!((a.live_files(), b.live_files()), (4, 4));
    let first = a.compact_if_due().await.unwrap().expect("due");
    assert_eq!((first.files_removed, first.files_added), (4, 1));
    let second = b.compact_if_due().await.unwrap().expect("due");
    assert_eq!(second.files_removed, 0, "nothing left to compact");

    // And truly at once, several rounds.
    for _ in 0..3 {
        write_both(&mut a, &mut b).await;
        write_both(&mut a, &mut b).await;
        let (ra, rb) = tokio::join!(a.compact_if_due(), b.compact_if_due());
        ra.unwrap();
        rb.unwrap();
    }
    let all = rows(&lake, "labs", "lab_id").await;
    assert_eq!(
        int64s(&all, "lab_id"),
        (1..=next_id).map(Some).collect::<Vec<_>>(),
        "every row once"
    );
}
