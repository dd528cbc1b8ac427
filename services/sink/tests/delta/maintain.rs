use medlake_common::Shutdown;
use medlake_sink::delta::read;
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
