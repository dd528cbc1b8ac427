use medlake_common::Shutdown;
use medlake_sink::delta::{TableWriter, WriterOptions, read};
use medlake_sink::inspect as layout;
use medlake_sink::maintain::{MaintainConfig, maintain_table, run};

use crate::support::*;

#[tokio::test]
async fn maintain_compacts_small_files_and_vacuums_them() {
    let lake = lake();
    let spec = spec(VISITS);
    let mut w = writer(&lake, &spec).await;
    for offset in 0..6 {
        w.write(batch(&spec, &[(0, offset, visit(offset, 1, "a"))]))
            .await
            .unwrap();
    }
    assert_eq!(w.live_files(), 6);
    let data_files = || {
        std::fs::read_dir(lake.path().join("visits"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "parquet")
            })
            .count()
    };
    assert_eq!(data_files(), 6);

    // The retention safety check is on by default: zero hours is refused.
    let strict = MaintainConfig {
        vacuum_retention_hours: 0,
        ..MaintainConfig::default()
    };
    let err = maintain_table(uri(&lake), "visits", &strict)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("vacuum"), "{err}");
    // Compaction ran; the replaced files are still on disk.
    w.refresh().await.unwrap();
    assert_eq!(w.live_files(), 1);
    assert_eq!(data_files(), 7);

    let config = MaintainConfig {
        vacuum_retention_hours: 0,
        enforce_retention: false,
        zorder_by: [(
            "visits".to_string(),
            vec!["ward".to_string(), "visit_id".to_string()],
        )]
        .into_iter()
        .collect(),
        ..MaintainConfig::default()
    };
    let report = maintain_table(uri(&lake), "visits", &config)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.live_files, 1);
    assert_eq!(
        report.files_removed, 1,
        "z-order rewrites the compacted file"
    );
    assert_eq!(report.files_vacuumed, 7, "{report:?}");
    assert_eq!(data_files(), 1);
    assert_eq!(read::count_rows(uri(&lake), "visits").await.unwrap(), 6);

    // The sink goes on writing after maintenance; offsets are untouched.
    assert_eq!(w.committed_offsets(TOPIC, &[0]).await.unwrap()[&0], 5);
    w.write(batch(&spec, &[(0, 6, visit(1, 2, "b"))]))
        .await
        .unwrap();
    assert_eq!(read::count_rows(uri(&lake), "visits").await.unwrap(), 6);

    // The one-shot runner goes over every table and skips missing ones.
    let reports = run(
        uri(&lake),
        &["visits".to_string(), "missing".to_string()],
        &config,
        Shutdown::new(),
    )
    .await
    .unwrap();
    assert_eq!(reports.len(), 1);
}

#[tokio::test]
async fn the_writer_compacts_its_table_every_n_commits_without_a_command() {
    let lake = lake();
    let spec = spec(LABS);
    let mut options = WriterOptions::new(GROUP);
    options.config.compact_every_commits = 3;
    let mut w = TableWriter::open_or_create(uri(&lake), &spec, &options)
        .await
        .unwrap();
    // Each batch writes one small file into each of the two ward partitions.
    for offset in 0..3 {
        let id = offset * 2;
        w.write(batch(
            &spec,
            &[(0, id, lab(id, "a")), (1, id, lab(id + 1, "b"))],
        ))
        .await
        .unwrap();
        if offset < 2 {
            assert_eq!(w.compact_if_due().await.unwrap(), None, "not due yet");
        }
    }
    assert_eq!(w.live_files(), 6);
    let shape =
        |l: layout::TableLayout| (l.version, l.files, l.partitions, l.max_files_per_partition);
    let before = layout::layout(uri(&lake), "labs").await.unwrap().unwrap();
    assert!(before.bytes > 0 && before.load_s > 0.0, "{before:?}");
    assert_eq!(shape(before), (3, 6, 2, 3));
    let compaction = w
        .compact_if_due()
        .await
        .unwrap()
        .expect("due after 3 commits");
    assert_eq!(
        (
            compaction.files_removed,
            compaction.files_added,
            compaction.live_files
        ),
        (6, 2, 2),
        "one file per partition"
    );
    assert_eq!(compaction.version, 4);
    assert_eq!(w.live_files(), 2);
    let after = layout::layout(uri(&lake), "labs").await.unwrap().unwrap();
    assert_eq!(shape(after), (4, 2, 2, 1));
    assert!(
        layout::layout(uri(&lake), "missing")
            .await
            .unwrap()
            .is_none()
    );
    // Not due again until three more commits.
    assert_eq!(w.compact_if_due().await.unwrap(), None);

    // Same rows, offsets untouched, and the writer goes on.
    assert_eq!(
        int64s(&rows(&lake, "labs", "lab_id").await, "lab_id"),
        (0..6).map(Some).collect::<Vec<_>>()
    );
    let offsets = w.committed_offsets(TOPIC, &[0, 1]).await.unwrap();
    assert_eq!((offsets[&0], offsets[&1]), (4, 4));
    w.write(batch(&spec, &[(0, 6, lab(6, "a"))])).await.unwrap();
    assert_eq!(read::count_rows(uri(&lake), "labs").await.unwrap(), 7);

    // Never, when turned off.
    let mut off = WriterOptions::new(GROUP);
    off.config.compact_every_commits = 0;
    let mut w = TableWriter::open_or_create(uri(&lake), &spec, &off)
        .await
        .unwrap();
    for offset in 7..10 {
        w.write(batch(&spec, &[(0, offset, lab(offset, "a"))]))
            .await
            .unwrap();
    }
    assert_eq!(w.compact_if_due().await.unwrap(), None);
}
