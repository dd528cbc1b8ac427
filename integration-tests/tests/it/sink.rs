//! `medlake sink` as a real child process against the real broker, read
//! back with medlake's own Delta reader: exactly N rows for N records, the
//! exact final state of a merge table, also across SIGKILLs at random points
//! and with two instances sharing a topic; bad records as dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::array::Array;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use medlake_common::config::TopicsConfig;
use medlake_common::dead_letter::{ErrorCode, header};
use medlake_common::ledger::{FileStatus, LedgerEntry};
use medlake_common::{kafka, topics};
use medlake_integration_tests::records::{ACCOUNTS, EVENTS, events, int64s, lineage, send};
use medlake_integration_tests::{
    ChildGuard, eventually, kafka_config, medlake, read_topic, topics_config, unique,
};
use medlake_sink::delta::read;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Seed of the random kill points: `MEDLAKE_TEST_SEED` or a fixed default,
/// printed so a failure can be replayed.
fn seed() -> u64 {
    let seed = std::env::var("MEDLAKE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_240_301);
    eprintln!("kill points seeded with MEDLAKE_TEST_SEED={seed}");
    seed
}

/// One test's world: unique topics and group, a temp lake and definitions.
struct World {
    topics: TopicsConfig,
    group: String,
    lake: TempDir,
    schemas: TempDir,
}

impl World {
    async fn new(definitions: &[(&str, &str)]) -> Self {
        let schemas = tempfile::tempdir().unwrap();
        for (name, yaml) in definitions {
            std::fs::write(schemas.path().join(format!("{name}.yaml")), yaml).unwrap();
        }
        let topics = topics_config();
        let admin = kafka::admin(&kafka_config()).unwrap();
        let specs = topics::specs(&topics, definitions.iter().map(|(name, _)| *name));
        topics::ensure(&admin, &specs)
            .await
            .expect("create topics (is the broker up? `make kafka-up`)");
        Self {
            topics,
            group: unique("it-sink"),
            lake: tempfile::tempdir().unwrap(),
            schemas,
        }
    }

    fn lake_uri(&self) -> &str {
        self.lake.path().to_str().unwrap()
    }

    /// `medlake sink` writing `datasets`, with small batches so a run makes
    /// many commits.
    fn sink(&self, datasets: &str) -> ChildGuard {
        self.sink_with_admin(datasets, "127.0.0.1:0".parse().unwrap())
    }

    /// Like [`World::sink`], with the admin server on `admin`.
    fn sink_with_admin(&self, datasets: &str, admin: SocketAddr) -> ChildGuard {
        ChildGuard::spawn(self.sink_command(datasets, admin))
    }

    /// The `medlake sink` command line of [`World::sink_with_admin`].
    fn sink_command(&self, datasets: &str, admin: SocketAddr) -> Command {
        let mut command = medlake(&self.topics);
        command
            .arg("sink")
            .env("MEDLAKE_LAKE_URI", self.lake_uri())
            .env("MEDLAKE_SCHEMAS_DIR", self.schemas.path())
            .env("MEDLAKE_ADMIN__LISTEN", admin.to_string())
            .env("MEDLAKE_SINK__DATASETS", datasets)
            .env("MEDLAKE_SINK__CONSUMER_GROUP", &self.group)
            .env("MEDLAKE_SINK__MAX_BATCH_ROWS", "150")
            .env("MEDLAKE_SINK__FLUSH_INTERVAL_MS", "300")
            .env("MEDLAKE_SINK__RETRY_BACKOFF_INITIAL_MS", "100")
            .env("MEDLAKE_SINK__DELTA__COMMIT_BACKOFF_INITIAL_MS", "20")
            // The sink compacts its tables by itself, here often enough to
            // race the SIGKILLs of the exactly-once tests.
            .env("MEDLAKE_SINK__DELTA__COMPACT_EVERY_COMMITS", "4")
            .env(
                "RUST_LOG",
                std::env::var("MEDLAKE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null());
        command
    }

    async fn produce(&self, topic: &str, records: &[(String, Value)]) {
        send(topic, None, records).await;
    }

    /// Like [`World::produce`], every record to one partition.
    async fn produce_to(&self, topic: &str, partition: i32, records: &[(String, Value)]) {
        send(topic, Some(partition), records).await;
    }

    /// The `commitInfo` of every commit in `table`'s log, oldest first.
    fn commit_infos(&self, table: &str) -> Vec<Value> {
        let log = self.lake.path().join(table).join("_delta_log");
        let mut commits: Vec<_> = std::fs::read_dir(&log)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        commits.sort();
        commits
            .iter()
            .flat_map(|path| {
                let text = std::fs::read_to_string(path).unwrap();
                text.lines()
                    .filter_map(|line| {
                        let mut action: Value = serde_json::from_str(line).ok()?;
                        action.get_mut("commitInfo").map(Value::take)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every row of `table`; empty while the table does not exist.
    async fn rows(&self, table: &str) -> Vec<RecordBatch> {
        if !self.lake.path().join(table).join("_delta_log").exists() {
            return Vec::new();
        }
        read::read_all(self.lake_uri(), table)
            .await
            .expect("read table")
    }

    /// Commits in `table`'s log (0 before the table exists).
    fn commits(&self, table: &str) -> usize {
        std::fs::read_dir(self.lake.path().join(table).join("_delta_log"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Starts a sink, waits until it committed a batch of its own, then
    /// SIGKILLs it after a random pause: mid-stream, while it writes, or
    /// between its Delta and Kafka commits.
    async fn run_and_kill(&self, table: &str, rng: &mut StdRng) {
        // The first commits create the table; wait for one past them.
        let before = self.commits(table).max(1);
        let mut sink = self.sink(&format!("[{table}]"));
        eventually(TIMEOUT, "a commit by the restarted sink", || async {
            (self.commits(table) > before).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1_500))).await;
        sink.kill();
    }

    /// Commits `offset(low, high)` as the group's Kafka offset of every
    /// partition of `topic` (no sink may be running).
    fn set_group_offsets(&self, topic: &str, offset: impl Fn(i64, i64) -> i64) {
        let consumer = kafka::consumer(&kafka_config(), &self.group).unwrap();
        let mut tpl = TopicPartitionList::new();
        for partition in 0..self.topics.partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .unwrap();
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset(low, high)))
                .unwrap();
        }
        consumer.commit(&tpl, CommitMode::Sync).unwrap();
    }

    /// Waits until `table` holds at least `n` rows; returns them.
    async fn wait_rows(&self, table: &str, n: usize) -> Vec<RecordBatch> {
        eventually(TIMEOUT, &format!("{n} rows in {table}"), || async {
            let rows = self.rows(table).await;
            (count(&rows) >= n).then_some(rows)
        })
        .await
    }
}

fn count(rows: &[RecordBatch]) -> usize {
    rows.iter().map(RecordBatch::num_rows).sum()
}

/// A text column as strings, whatever string layout the reader returned.
fn strings(rows: &[RecordBatch], column: &str) -> Vec<String> {
    rows.iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).expect("column");
            let c = arrow::compute::cast(c, &DataType::Utf8).expect("text column");
            let c = c.as_string::<i32>();
            (0..c.len())
                .map(|i| c.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Asserts the append table holds each of `0..n` exactly once.
fn assert_exactly(rows: &[RecordBatch], n: i64) {
    let ids = int64s(rows, "event_id");
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "duplicate rows in the table");
    assert_eq!(
        distinct,
        (0..n).collect::<BTreeSet<_>>(),
        "rows missing or extra"
    );
}

/// Waits for `n` rows in `events`, checks each of `0..n` is there once,
/// and that no late duplicate arrives.
async fn assert_events_exactly(world: &World, n: i64) {
    assert_exactly(&world.wait_rows("events", n as usize).await, n);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly(&world.rows("events").await, n);
}

/// A local address no one listens on (for the admin server of a child).
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// SIGTERM, and the sink must exit cleanly after writing its batches.
fn stop(mut sink: ChildGuard) {
    assert!(
        sink.terminate(Duration::from_secs(30)),
        "clean exit on SIGTERM"
    );
}

#[tokio::test]
async fn append_writes_every_record_once_across_sigkills() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    let mut rng = StdRng::seed_from_u64(seed());
    let (kills, per_round) = (4, 1_000);
    for round in 0..kills {
        world
            .produce(&topic, &events(round * per_round..(round + 1) * per_round))
            .await;
        world.run_and_kill("events", &mut rng).await;
    }
    let n = kills * per_round;
    let sink = world.sink("[events]");
    assert_events_exactly(&world, n).await;
    // One more round for the last sink alone: at most 150 rows a batch,
    // so at least 7 commits, and a compaction after its fourth.
    world.produce(&topic, &events(n..n + per_round)).await;
    assert_events_exactly(&world, n + per_round).await;
    stop(sink);
    assert_compacted_by_itself(&world, "events");
}

/// The sink compacted `table` without any command: its log holds an
/// OPTIMIZE commit.
fn assert_compacted_by_itself(world: &World, table: &str) {
    let operations: Vec<String> = world
        .commit_infos(table)
        .iter()
        .map(|c| c["operation"].as_str().unwrap_or_default().to_string())
        .collect();
    let optimizations = operations.iter().filter(|o| *o == "OPTIMIZE").count();
    assert!(optimizations > 0, "no compaction in {operations:?}");
}

#[tokio::test]
async fn the_table_not_the_group_offsets_says_where_to_resume() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    world.produce(&topic, &events(0..500)).await;
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 500).await;
    stop(sink);

    // Kafka's offsets ahead of the table: the sink seeks back.
    world.produce(&topic, &events(500..1_000)).await;
    world.set_group_offsets(&topic, |_, high| high);
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 1_000).await;
    stop(sink);

    // Kafka's offsets lost: the sink seeks forward, nothing is written twice.
    world.produce(&topic, &events(1_000..1_200)).await;
    world.set_group_offsets(&topic, |low, _| low);
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 1_200).await;
    stop(sink);
}

/// A sample of the `events` table's sink metrics on the admin server at
/// `admin`, e.g. `medlake_sink_partitions_refused`.
async fn events_metric(admin: SocketAddr, metric: &str) -> Option<f64> {
    let text = medlake_integration_tests::metrics_text(&admin.to_string()).await;
    medlake_integration_tests::metric_sample(&text, &format!(r#"{metric}{{dataset="events"}}"#))
}

/// The start notes the table's commits recorded, by partition.
fn start_notes(world: &World, table: &str) -> BTreeMap<String, Value> {
    world
        .commit_infos(table)
        .into_iter()
        .filter_map(|info| info.get("medlake.partition_starts").cloned())
        .flat_map(|notes| notes.as_object().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_lost_table_is_written_again_exactly_once() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    world.produce(&topic, &events(0..600)).await;
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 600).await;
    stop(sink);

    // The table is lost; the consumer group (its committed offsets at the
    // end of the topic) survives. The recreated table gets every row again.
    std::fs::remove_dir_all(world.lake.path().join("events")).unwrap();
    let admin = free_address();
    let sink = world.sink_with_admin("[events]", admin);
    assert_events_exactly(&world, 600).await;
    let mismatches = events_metric(admin, "medlake_sink_offset_mismatches_total").await;
    assert!(
        mismatches.is_some_and(|n| n >= 1.0),
        "the group ahead of the empty table was counted: {mismatches:?}"
    );
    stop(sink);
    // Why the partitions started where they did is in the table's history.
    let notes = start_notes(&world, "events");
    assert!(!notes.is_empty(), "the first commits record the start");
    for note in notes.values() {
        assert_eq!(note["reason"], "untracked", "{note}");
        assert_eq!(note["policy"], "earliest", "{note}");
        assert_eq!(note["start_offset"], 0, "{note}");
    }
}

#[tokio::test]
async fn a_group_ahead_of_an_empty_table_still_gets_every_row() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    world.produce(&topic, &events(0..500)).await;
    // The group says everything was read; the table holds nothing.
    world.set_group_offsets(&topic, |_, high| high);
    let admin = free_address();
    let sink = world.sink_with_admin("[events]", admin);
    assert_events_exactly(&world, 500).await;
    let mismatches = events_metric(admin, "medlake_sink_offset_mismatches_total").await;
    assert!(
        mismatches.is_some_and(|n| n >= 1.0),
        "the warning metric moved: {mismatches:?}"
    );
    stop(sink);
}

#[tokio::test]
async fn a_partition_whose_offsets_aged_out_is_refused_and_the_others_flow() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    world.produce_to(&topic, 0, &events(0..100)).await;
    world.produce_to(&topic, 1, &events(100..200)).await;
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 200).await;
    stop(sink);

    // While the sink is away, partition 0 gets rows that retention deletes
    // before the sink reads them.
    world.produce_to(&topic, 0, &events(200..300)).await;
    world.produce_to(&topic, 1, &events(300..400)).await;
    let admin_client = kafka::admin(&kafka_config()).unwrap();
    let mut gone = TopicPartitionList::new();
    gone.add_partition_offset(&topic, 0, Offset::End).unwrap();
    let result = admin_client
        .delete_records(&gone, &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete records");
    let low = match result.find_partition(&topic, 0).unwrap().offset() {
        Offset::Offset(low) => low,
        other => panic!("low watermark after delete: {other:?}"),
    };
    assert_eq!(low, 200, "partition 0 holds nothing before offset 200");

    let admin = free_address();
    let mut command = world.sink_command("[events]", admin);
    command.stderr(Stdio::piped());
    let mut sink = ChildGuard::spawn(command);
    // Partition 1 keeps flowing, before and after the refusal.
    let rows = world.wait_rows("events", 300).await;
    world.produce_to(&topic, 1, &events(400..450)).await;
    let rows_after = world.wait_rows("events", 350).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: BTreeSet<i64> = int64s(&world.rows("events").await, "event_id")
        .into_iter()
        .collect();
    let expected: BTreeSet<i64> = (0..200).chain(300..450).collect();
    assert_eq!(ids, expected, "partition 1 written, partition 0 refused");
    assert!(count(&rows) >= 300 && count(&rows_after) == 350);
    assert_eq!(
        events_metric(admin, "medlake_sink_partitions_refused").await,
        Some(1.0),
        "one partition refused"
    );
    assert!(sink.terminate(Duration::from_secs(30)), "clean exit");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut sink.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("Kafka no longer retains offsets the table needs")
            && stderr.contains("missing_from=100")
            && stderr.contains("missing_to=199"),
        "the refusal names the missing range: {stderr}"
    );

    // Once the operator accepts the gap explicitly, partition 0 resumes at
    // the earliest retained offset, and the table records the gap.
    let mut command = world.sink_command("[events]", free_address());
    command.env("MEDLAKE_SINK__RESUME_PAST_OFFSET_GAPS", "true");
    let sink = ChildGuard::spawn(command);
    world.produce_to(&topic, 0, &events(450..480)).await;
    world.wait_rows("events", 380).await;
    stop(sink);
    let note = &start_notes(&world, "events")["0"];
    assert_eq!(note["reason"], "offset_gap", "{note}");
    assert_eq!(note["needed_offset"], 100, "{note}");
    assert_eq!(note["start_offset"], 200, "{note}");
}

#[tokio::test]
async fn merge_reaches_the_exact_final_state_across_sigkills() {
    let world = World::new(&[("accounts", ACCOUNTS)]).await;
    let topic = world.topics.records("accounts");
    let mut rng = StdRng::seed_from_u64(seed() ^ 0x5eed);
    let keys = 200i64;
    // Per key: upserts with seq 1..=4 in a shuffled order (older events
    // arrive after newer ones), and for every fifth key a delete with the
    // highest seq, last.
    let mut expected: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    let mut stream: Vec<(String, Value)> = Vec::new();
    let mut index = 0;
    let mut event = |account: i64, seq: i64, op: &str| {
        index += 1;
        let mut v =
            json!({"account_id": account, "seq": seq, "balance": account * 100 + seq, "_op": op});
        lineage(&mut v, index);
        (format!("a{account}"), v)
    };
    let mut per_key: Vec<Vec<(String, Value)>> = Vec::new();
    for account in 0..keys {
        let mut seqs = [1, 2, 3, 4];
        seqs.shuffle(&mut rng);
        let mut events: Vec<_> = seqs.iter().map(|s| event(account, *s, "upsert")).collect();
        if account % 5 == 0 {
            events.push(event(account, 5, "delete"));
        } else {
            expected.insert(account, (4, account * 100 + 4));
        }
        per_key.push(events);
    }
    // Interleave keys round by round, so each batch mixes keys and events.
    for round in 0..5 {
        for events in &per_key {
            if let Some(e) = events.get(round) {
                stream.push(e.clone());
            }
        }
    }
    let chunks: Vec<_> = stream.chunks(stream.len().div_ceil(3)).collect();
    for chunk in &chunks {
        world.produce(&topic, chunk).await;
        world.run_and_kill("accounts", &mut rng).await;
    }
    let sink = world.sink("[accounts]");
    let state = eventually(TIMEOUT, "the merge's final state", || async {
        let rows = world.rows("accounts").await;
        let ids = int64s(&rows, "account_id");
        let seqs = int64s(&rows, "seq");
        let balances = int64s(&rows, "balance");
        let state: BTreeMap<i64, (i64, i64)> = ids
            .iter()
            .zip(seqs.iter().zip(&balances))
            .map(|(id, (s, b))| (*id, (*s, *b)))
            .collect();
        (ids.len() == state.len() && state == expected).then_some(state)
    })
    .await;
    assert_eq!(state.len(), expected.len());
    stop(sink);
}

#[tokio::test]
async fn two_sinks_share_a_topic_through_a_rebalance() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    let mut first = world.sink("[events]");
    world.produce(&topic, &events(0..1_000)).await;
    world.wait_rows("events", 1).await;
    let second = world.sink("[events]");
    world.produce(&topic, &events(1_000..2_000)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    world.produce(&topic, &events(2_000..2_500)).await;
    first.kill();
    world.produce(&topic, &events(2_500..3_000)).await;
    assert_events_exactly(&world, 3_000).await;
    stop(second);
}

#[tokio::test]
async fn a_bad_record_becomes_one_write_dead_letter_and_the_rest_is_written() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    let mut records = events(0..10);
    let mut bad = json!({"event_id": "not-a-number", "note": "x"});
    lineage(&mut bad, 99);
    records.insert(4, ("f-bad".into(), bad));
    world.produce(&topic, &records).await;
    let admin = free_address();
    let sink = world.sink_with_admin("[events]", admin);
    assert_events_exactly(&world, 10).await;

    let letters = read_topic(&world.topics.dlq(), 1, TIMEOUT).await;
    assert_eq!(letters.len(), 1, "one dead letter");
    let letter = &letters[0];
    let get = |name: &str| {
        letter
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == name))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(get(header::STAGE).as_deref(), Some("write"));
    assert_eq!(get(header::CODE).as_deref(), Some("write_failed"));
    assert_eq!(get(header::ORIGIN_TOPIC).as_deref(), Some(topic.as_str()));
    assert_eq!(get("medlake.file_id").as_deref(), Some("f-1"));
    let message = get(header::MESSAGE).unwrap();
    assert!(message.contains("event_id"), "{message}");
    assert!(
        !message.contains("not-a-number"),
        "no values in errors: {message}"
    );
    let value: Value = serde_json::from_slice(letter.payload().unwrap()).unwrap();
    assert_eq!(
        value["event_id"], "not-a-number",
        "the record itself, for replay"
    );
    medlake_integration_tests::assert_no_more(&world.topics.dlq(), 1, Duration::from_secs(3)).await;

    // What monitoring sees: rows by data set and mode, the dead letter, batch
    // sizes, the lag of every partition drained to zero, readiness.
    let url = format!("http://{admin}");
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert!(ready.status().is_success(), "ready while consuming");
    eventually(TIMEOUT, "sink metrics", || async {
        let text = reqwest::get(format!("{url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let has = |line: &str| text.lines().any(|l| l == line);
        let lag_zero = (0..world.topics.partitions).all(|p| {
            has(&format!(
                "medlake_sink_consumer_lag_messages{{dataset=\"events\",partition=\"{p}\"}} 0"
            ))
        });
        (has("medlake_sink_rows_written_total{dataset=\"events\",mode=\"append\"} 10")
            && has(
                "medlake_sink_dead_letters_total{dataset=\"events\",error_code=\"write_failed\"} 1",
            )
            && has("medlake_sink_batch_rows_sum{dataset=\"events\"} 11")
            && has("medlake_sink_messages_total{dataset=\"events\"} 11")
            && text.contains("medlake_sink_commit_duration_seconds_count{dataset=\"events\"}")
            && lag_zero)
            .then_some(())
    })
    .await;
    stop(sink);
}

#[tokio::test]
async fn dead_letters_and_the_ledger_land_in_their_tables() {
    let world = World::new(&[("events", EVENTS)]).await;
    let producer = kafka::producer(&kafka_config()).unwrap();
    let headers = kafka::headers([
        (header::STAGE, b"unzip".as_slice()),
        (header::CODE, ErrorCode::WrongPassword.as_str().as_bytes()),
        (header::MESSAGE, b"no password opens the archive".as_slice()),
        (header::ORIGIN_TOPIC, world.topics.raw_files().as_bytes()),
        (header::ORIGIN_PARTITION, b"1".as_slice()),
        (header::ORIGIN_OFFSET, b"7".as_slice()),
        ("medlake.file_id", b"abc123".as_slice()),
        ("medlake.facility_id", b"F1".as_slice()),
    ]);
    producer
        .send(
            FutureRecord::to(&world.topics.dlq())
                .key("abc123")
                .payload(b"zip bytes".as_slice())
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let entry = LedgerEntry {
        file_id: "abc123".into(),
        facility_id: "F1".into(),
        file_name: "labs.zip".into(),
        source: "ftp".into(),
        received_at: "2024-03-01T10:00:00Z".into(),
        processed_at: "2024-03-01T10:00:01.000001Z".into(),
        status: FileStatus::Rejected,
        bytes: 2048,
        entries: 0,
        records: BTreeMap::new(),
        rejects: BTreeMap::from([(ErrorCode::WrongPassword, 1)]),
    };
    let entry: Value = serde_json::from_slice(&entry.to_json()).unwrap();
    world
        .produce(&world.topics.files(), &[("abc123".into(), entry)])
        .await;

    let sink = world.sink("[_dead_letters, _files]");
    let letters = world.wait_rows("_dead_letters", 1).await;
    assert_eq!(count(&letters), 1);
    let text = |name: &str| strings(&letters, name)[0].clone();
    assert_eq!(text("error_stage"), "unzip");
    assert_eq!(text("error_code"), ErrorCode::WrongPassword.as_str());
    assert_eq!(text("file_id"), "abc123");
    let ledger = world.wait_rows("_files", 1).await;
    assert_eq!(count(&ledger), 1);
    assert_eq!(strings(&ledger, "status"), vec!["rejected"]);
    assert!(
        !Path::new(&world.lake.path().join("events")).exists(),
        "only the listed tables"
    );
    stop(sink);
}

/// Runs `medlake sink` until it exits (at most [`TIMEOUT`]); returns whether
/// it succeeded and what it wrote to stderr.
fn run_to_exit(mut command: Command) -> (bool, String) {
    command.stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(command);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.success(), stderr)
}

#[tokio::test]
async fn fatal_errors_stop_the_sink_with_a_clear_message() {
    let world = World::new(&[("events", EVENTS)]).await;
    let topic = world.topics.records("events");
    world.produce(&topic, &events(0..5)).await;
    let sink = world.sink("[events]");
    assert_events_exactly(&world, 5).await;
    stop(sink);

    // A definition that changes a column's type cannot follow the table.
    let changed = EVENTS.replace(
        "{ name: note, type: string }",
        "{ name: note, type: int64 }",
    );
    std::fs::write(world.schemas.path().join("events.yaml"), changed).unwrap();
    let (ok, stderr) = run_to_exit(world.sink_command("[events]", free_address()));
    assert!(!ok, "exit status is a failure");
    assert!(stderr.contains("'note'"), "names the column: {stderr}");
    assert_exactly(&world.rows("events").await, 5);

    // A table that is neither a data set nor built in.
    let (ok, stderr) = run_to_exit(world.sink_command("[labz]", free_address()));
    assert!(!ok, "exit status is a failure");
    assert!(stderr.contains("'labz'"), "names the data set: {stderr}");
}
