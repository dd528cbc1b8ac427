//! Two replicas of `medlake sink` for one data-set group, both writing one
//! merge table and one append table on S3 at once: the partitions split
//! between them, a third wave after a rebalance, then one replica SIGKILLed
//! mid-stream. Every batch must land once (no row lost or doubled, no `txn`
//! version twice in the log), the merge table must reach its exact final
//! state, and the commit conflicts the two caused must have been retried and
//! counted in `medlake_sink_commit_conflicts_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use medlake_common::config::TopicsConfig;
use medlake_common::{kafka, topics};
use medlake_integration_tests::records::{ACCOUNTS, EVENTS, events, int64s, lineage, send};
use medlake_integration_tests::{
    ChildGuard, eventually, free_port, kafka_config, medlake, metric_sample, metrics_text,
    topics_config, unique, wait_ready,
};
use medlake_sink::delta::read;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};

use crate::Lakes;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Accounts of the merge table.
const ACCOUNTS_N: i64 = 400;

struct World {
    topics: TopicsConfig,
    group: String,
    lake: String,
    schemas: tempfile::TempDir,
}

impl World {
    fn sink(&self) -> (ChildGuard, String) {
        let admin = format!("127.0.0.1:{}", free_port());
        let mut command: Command = medlake(&self.topics);
        command
            .arg("sink")
            .env("MEDLAKE_LAKE_URI", &self.lake)
            .env("MEDLAKE_SCHEMAS_DIR", self.schemas.path())
            .env("MEDLAKE_ADMIN__LISTEN", &admin)
            .env("MEDLAKE_SINK__DATASETS", "[events, accounts]")
            .env("MEDLAKE_SINK__CONSUMER_GROUP", &self.group)
            .env("MEDLAKE_SINK__MAX_BATCH_ROWS", "100")
            .env("MEDLAKE_SINK__FLUSH_INTERVAL_MS", "200")
            .env("MEDLAKE_SINK__RETRY_BACKOFF_INITIAL_MS", "100")
            .env("MEDLAKE_SINK__DELTA__COMMIT_BACKOFF_INITIAL_MS", "20")
            .env("MEDLAKE_SINK__DELTA__COMPACT_EVERY_COMMITS", "4")
            .env(
                "RUST_LOG",
                std::env::var("MEDLAKE_TEST_LOG")
                    .unwrap_or_else(|_| "warn,deltalake_core=error".into()),
            )
            .stdout(Stdio::null());
        (ChildGuard::spawn(command), admin)
    }

    async fn rows(&self, table: &str) -> Vec<RecordBatch> {
        match read::open(&self.lake, table).await {
            Ok(_) => read::read_all(&self.lake, table).await.expect("read table"),
            Err(_) => Vec::new(),
        }
    }
}

/// Wave `wave` of account events: every account gets `seq = wave`; in the
/// last wave every seventh account is deleted.
fn account_wave(wave: i64, last: bool) -> Vec<(String, Value)> {
    (0..ACCOUNTS_N)
        .map(|account| {
            let op = if last && account % 7 == 0 {
                "delete"
            } else {
                "upsert"
            };
            let mut v = json!({"account_id": account, "seq": wave,
                "balance": account * 100 + wave, "_op": op});
            lineage(&mut v, wave * 10_000 + account);
            (format!("a{account}"), v)
        })
        .collect()
}

/// Every `txn` (app id, version) of `table`'s log on S3, with the commit
/// versions in order; asserts the versions run 0, 1, 2, … without a gap.
async fn txns(lakes: &Lakes, lake: &str, table: &str) -> Vec<(String, i64)> {
    let prefix = lake.trim_start_matches("s3://").split_once('/').unwrap().1;
    let store = lakes.store();
    let log = StorePath::from(format!("{prefix}/{table}/_delta_log"));
    let mut commits: Vec<StorePath> = store
        .list(Some(&log))
        .map_ok(|meta| meta.location)
        .try_filter(|p| futures::future::ready(p.as_ref().ends_with(".json")))
        .try_collect()
        .await
        .expect("list the Delta log");
    commits.sort();
    let versions: Vec<i64> = commits
        .iter()
        .map(|p| {
            let name = p.filename().unwrap();
            name.trim_end_matches(".json").parse().unwrap()
        })
        .collect();
    assert_eq!(
        versions,
        (0..versions.len() as i64).collect::<Vec<_>>(),
        "{table}: commit versions without a gap"
    );
    let mut out = Vec::new();
    for path in &commits {
        let bytes = store.get(path).await.unwrap().bytes().await.unwrap();
        for line in std::str::from_utf8(&bytes).unwrap().lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if let Some(txn) = action.get("txn") {
                out.push((
                    txn["appId"].as_str().unwrap().to_string(),
                    txn["version"].as_i64().unwrap(),
                ));
            }
        }
    }
    out
}

async fn conflicts(admins: &[&str]) -> f64 {
    let mut total = 0.0;
    for admin in admins {
        let text = metrics_text(admin).await;
        for table in ["events", "accounts"] {
            total += metric_sample(
                &text,
                &format!("medlake_sink_commit_conflicts_total{{dataset=\"{table}\"}}"),
            )
            .unwrap_or(0.0);
        }
    }
    total
}

pub async fn commit_once(lakes: &Lakes) {
    let schemas = tempfile::tempdir().unwrap();
    for (name, yaml) in [("events", EVENTS), ("accounts", ACCOUNTS)] {
        std::fs::write(schemas.path().join(format!("{name}.yaml")), yaml).unwrap();
    }
    let topics = TopicsConfig {
        partitions: 4,
        ..topics_config()
    };
    let admin = kafka::admin(&kafka_config()).unwrap();
    topics::ensure(&admin, &topics::specs(&topics, ["events", "accounts"]))
        .await
        .expect("create topics");
    let world = World {
        group: unique("it-s3-sink"),
        lake: lakes.lake("replicas"),
        topics,
        schemas,
    };
    let events_topic = world.topics.records("events");
    let accounts_topic = world.topics.records("accounts");

    // One replica creates the tables; the second joins: the partitions split.
    let (mut first, first_admin) = world.sink();
    wait_ready(&mut first, &first_admin, "sink 1", TIMEOUT).await;
    send(&events_topic, None, &events(0..1_000)).await;
    send(&accounts_topic, None, &account_wave(1, false)).await;
    eventually(TIMEOUT, "the first rows on S3", || async {
        (!world.rows("events").await.is_empty()).then_some(())
    })
    .await;
    let (mut second, second_admin) = world.sink();
    wait_ready(&mut second, &second_admin, "sink 2", TIMEOUT).await;

    // Both replicas write at once.
    for wave in 2..=4 {
        let range = wave * 1_000 - 1_000..wave * 1_000;
        send(&events_topic, None, &events(range)).await;
        send(&accounts_topic, None, &account_wave(wave, false)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let first_conflicts = conflicts(&[&first_admin]).await;

    // One replica dies mid-stream; the other takes its partitions over.
    send(&events_topic, None, &events(4_000..5_000)).await;
    send(&accounts_topic, None, &account_wave(5, false)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.kill();
    send(&events_topic, None, &events(5_000..6_000)).await;
    send(&accounts_topic, None, &account_wave(6, true)).await;

    let expected: BTreeMap<i64, (i64, i64)> = (0..ACCOUNTS_N)
        .filter(|a| a % 7 != 0)
        .map(|a| (a, (6, a * 100 + 6)))
        .collect();
    eventually(
        TIMEOUT,
        "every event and the accounts' final state",
        || async {
            let events = world.rows("events").await;
            let accounts = world.rows("accounts").await;
            let ids = int64s(&accounts, "account_id");
            let state: BTreeMap<i64, (i64, i64)> = ids
                .iter()
                .zip(
                    int64s(&accounts, "seq")
                        .iter()
                        .zip(int64s(&accounts, "balance")),
                )
                .map(|(id, (s, b))| (*id, (*s, b)))
                .collect();
            let n: usize = events.iter().map(RecordBatch::num_rows).sum();
            (n >= 6_000 && state == expected && ids.len() == state.len()).then_some(())
        },
    )
    .await;
    // Nothing more arrives late.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids = int64s(&world.rows("events").await, "event_id");
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an event written twice");
    assert_eq!(distinct, (0..6_000).collect(), "events missing or extra");

    // Every batch committed once: no (app id, version) twice in either log.
    for table in ["events", "accounts"] {
        let txns = txns(lakes, &world.lake, table).await;
        let distinct: BTreeSet<&(String, i64)> = txns.iter().collect();
        assert_eq!(
            distinct.len(),
            txns.len(),
            "{table}: a batch committed twice"
        );
        let apps: BTreeSet<&str> = txns.iter().map(|(app, _)| app.as_str()).collect();
        eprintln!(
            "s3: {table}: {} batch commits from {} partitions' app ids",
            txns.len(),
            apps.len()
        );
    }
    let total = first_conflicts + conflicts(&[&second_admin]).await;
    eprintln!("s3: commit conflicts retried and counted: {total}");
    assert!(
        total >= 1.0,
        "two replicas writing one table on S3 met no commit conflict: \
         nothing proves concurrent commits are refused and retried"
    );
    assert!(
        second.terminate(Duration::from_secs(30)),
        "clean exit on SIGTERM"
    );
}
