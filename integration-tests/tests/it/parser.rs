//! `medlake parser` as a real child process against the real broker: one zip
//! per data set in, the expected records out exactly once (also across a
//! SIGKILL), duplicates recorded once, bad archives dead-lettered with their
//! code while the next good file still flows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use medlake_common::config::TopicsConfig;
use medlake_common::ingest::{IngestConfig, Ingestor, RawFile, RawZone};
use medlake_common::ledger::{FileStatus, LedgerEntry};
use medlake_common::raw_file::Source;
use medlake_common::{dataset, kafka, topics};
use medlake_datagen::pack::{self, Protection};
use medlake_integration_tests::{
    ChildGuard, assert_no_more, eventually, free_port, kafka_config, medlake, metric_sample,
    metrics_text, read_topic, repo_root, topics_config, unique,
};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(90);
const QUIET: Duration = Duration::from_secs(4);
const F2_PASSWORD_ENV: &str = "IT_PARSER_F2_ZIP_PASSWORD";
const F2_PASSWORD: &str = "s3cret-zip";
/// Facility F3's password variable is not set for the parser at first.
const F3_PASSWORD_ENV: &str = "IT_PARSER_F3_ZIP_PASSWORD";
const F3_PASSWORD: &str = "late-s3cret";

/// One parser test's world: unique topics, a lake, a facility registry.
pub(crate) struct World {
    pub(crate) topics: TopicsConfig,
    lake: tempfile::TempDir,
    facilities: PathBuf,
    group: String,
    transactional_id: String,
    ingestor: Ingestor,
}

impl World {
    pub(crate) async fn new() -> Self {
        let topics = topics_config();
        let names: Vec<String> = dataset::load_dir(&repo_root().join("schemas"))
            .expect("schemas load")
            .into_iter()
            .map(|d| d.name)
            .collect();
        let admin = kafka::admin(&kafka_config()).unwrap();
        topics::ensure(
            &admin,
            &topics::specs(&topics, names.iter().map(String::as_str)),
        )
        .await
        .expect("create topics (is the broker up? `make kafka-up`)");
        let lake = tempfile::tempdir().unwrap();
        let facilities = lake.path().join("facilities.yaml");
        std::fs::write(
            &facilities,
            format!(
                "facilities:\n  - id: F1\n  - id: F2\n    zip_passwords: [{{ env: {F2_PASSWORD_ENV} }}]\n  - id: F3\n    zip_passwords: [{{ env: {F3_PASSWORD_ENV} }}]\n"
            ),
        )
        .unwrap();
        let raw = RawZone::open(lake.path().to_str().unwrap()).unwrap();
        let producer = kafka::producer(&kafka_config()).unwrap();
        let ingestor =
            Ingestor::with_parts(raw, producer, topics.raw_files(), &IngestConfig::default());
        Self {
            topics,
            lake,
            facilities,
            group: unique("it-parser"),
            transactional_id: unique("it-parser-txn"),
            ingestor,
        }
    }

    /// `medlake parser` with this world's configuration in its environment.
    pub(crate) fn parser(&self) -> Command {
        let mut command = medlake(&self.topics);
        command
            .arg("parser")
            .env("MEDLAKE_ADMIN__LISTEN", "127.0.0.1:0")
            .env("MEDLAKE_LAKE_URI", self.lake.path())
            .env("MEDLAKE_SCHEMAS_DIR", repo_root().join("schemas"))
            .env("MEDLAKE_FACILITIES_FILE", &self.facilities)
            .env("MEDLAKE_PARSER__GROUP_ID", &self.group)
            .env("MEDLAKE_PARSER__TRANSACTIONAL_ID", &self.transactional_id)
            .env("MEDLAKE_PARSER__PII_KEY__ENV", "IT_PARSER_PII_KEY")
            .env("IT_PARSER_PII_KEY", "pii-test-key")
            .env(F2_PASSWORD_ENV, F2_PASSWORD);
        command
    }

    /// Publishes a file the way the connectors do (raw zone, then Kafka).
    pub(crate) async fn publish(&self, facility: &str, name: &str, bytes: Vec<u8>) -> String {
        let receipt = self
            .ingestor
            .ingest(RawFile {
                facility_id: facility.to_string(),
                source: Source::Ftp,
                file_name: name.to_string(),
                bytes: Bytes::from(bytes),
                received_at: Utc::now(),
            })
            .await
            .expect("publish raw file");
        receipt.file_id
    }
}

// ------------------------------------------------------------------ fixtures

/// ADT rows; `tag` must be upper case (encounter ids match `[A-Z0-9-]{4,32}`).
pub(crate) fn adt_csv(tag: &str, rows: usize) -> Vec<u8> {
    let mut csv = String::from(
        "EncounterID,MRN,EventType,EventSeq,EventTime,Ward,Bed,AdmitSource,AttendingNPI,Notes\r\n",
    );
    for i in 0..rows {
        csv.push_str(&format!(
            "ENC-{tag}-{i:05},MRN{i:06},A01,{i},2024-03-01 08:{:02}:00,W1,B{i},ER,1234567890,\"call, later\"\r\n",
            i % 60
        ));
    }
    csv.into_bytes()
}

/// ADT rows of `bytes` bytes or a little more, with 128 hex digits of noise
/// each (compressing about 2:1), and their count. `tag` keeps ids apart.
fn noisy_adt_csv(tag: u64, bytes: usize) -> (Vec<u8>, u64) {
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ tag;
    let mut csv = String::from(
        "EncounterID,MRN,EventType,EventSeq,EventTime,Ward,Bed,AdmitSource,AttendingNPI,Notes\n",
    );
    let mut i = 0;
    while csv.len() < bytes {
        let mut noise = String::with_capacity(128);
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            noise.push_str(&format!("{state:016x}"));
        }
        csv.push_str(&format!(
            "ENC-{tag}-{i:07},MRN{},A08,{i},2024-03-01 08:00:00,W{},B1,ER,1234567890,{noise}\n",
            &noise[..12],
            i % 9,
        ));
        i += 1;
    }
    (csv.into_bytes(), i)
}

fn census_txt(rows: usize) -> Vec<u8> {
    let mut txt =
        String::from("UNIT|UNIT_NAME|CENSUS_TS|TOTAL|OCCUPIED|BLOCKED|OCC_RATIO|ICU_FLAG\r\n");
    for i in 0..rows {
        txt.push_str(&format!(
            "U{i}|Unit {i}|2024030108{:02}|20|15|1|0.75|\r\n",
            i % 60
        ));
    }
    txt.into_bytes()
}

fn lab_xml(i: usize) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<lab:LabResult xmlns:lab="urn:medlake:lab:v1" xmlns:pt="urn:medlake:patient:v1" id="R{i}">
  <pt:Patient><pt:MRN>MRN{i:06}</pt:MRN></pt:Patient>
  <lab:Order number="O{i}"/>
  <lab:Test><lab:Code>2345-7</lab:Code><lab:Name>Glucose</lab:Name></lab:Test>
  <lab:Value unit="mg/dL">98.5</lab:Value>
  <lab:Flag>N</lab:Flag>
  <lab:Collected>2024-03-01T08:00:00Z</lab:Collected>
</lab:LabResult>
"#
    )
    .into_bytes()
}

fn patients_csv(rows: usize) -> Vec<u8> {
    let mut csv = String::from(
        "MRN,ChangeType,UpdatedAt,LastName,FirstName,DOB,Sex,Zip3,Deceased,WeightKg\n",
    );
    for i in 0..rows {
        csv.push_str(&format!(
            "MRN{i:06},I,2024-03-01 08:00:00.000,Doe,Jane,01/02/1980,F,606,,70.50\n"
        ));
    }
    csv.into_bytes()
}

/// One zip per data set: (facility, file name, bytes, data set, records).
fn one_zip_per_dataset() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str, usize)> {
    let adt = adt_csv("A", 7);
    let census = census_txt(5);
    let patients = patients_csv(6);
    let labs: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("labs/r{i:03}.xml"), lab_xml(i)))
        .collect();
    let lab_entries: Vec<(&str, &[u8])> = labs
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    vec![
        (
            "F1",
            "adt.zip",
            pack::zip(&[("adt_20240301.csv", &adt)], true, Protection::None),
            "adt_events",
            7,
        ),
        (
            "F2",
            "census.zip",
            pack::zip(
                &[("census_0800.txt", &census)],
                true,
                Protection::Aes256(F2_PASSWORD),
            ),
            "bed_census",
            5,
        ),
        (
            "F1",
            "labs.zip",
            pack::zip(&lab_entries, true, Protection::None),
            "lab_results",
            20,
        ),
        (
            "F2",
            "patients.zip",
            pack::zip(
                &[("extract/patients_1.csv", &patients)],
                true,
                Protection::ZipCrypto(F2_PASSWORD),
            ),
            "patients",
            6,
        ),
    ]
}

// ------------------------------------------------------------------ reading

pub(crate) fn json(message: &OwnedMessage) -> Value {
    serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON value")
}

pub(crate) fn header<'a>(message: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    kafka::header_str(message, name)
}

/// Ledger entries by file id (a file id appearing twice is kept twice).
async fn ledger(topics: &TopicsConfig, expected: usize) -> Vec<LedgerEntry> {
    ledger_within(topics, expected, TIMEOUT).await
}

/// [`ledger`], waiting up to `timeout` (large files).
pub(crate) async fn ledger_within(
    topics: &TopicsConfig,
    expected: usize,
    timeout: Duration,
) -> Vec<LedgerEntry> {
    read_topic(&topics.files(), expected, timeout)
        .await
        .iter()
        .map(|m| LedgerEntry::from_json(m.payload().unwrap()).expect("ledger JSON"))
        .collect()
}

/// (file id, entry, record index) of every record.
/// Reads `topic` and asserts it holds the records of `expected` (file id,
/// entry, record index), each exactly once, and nothing else.
async fn assert_exactly_once(topic: &str, expected: &BTreeSet<(String, String, i64)>) {
    let records = read_topic(topic, expected.len(), TIMEOUT).await;
    let got = lineage(&records);
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), distinct.len(), "no record twice");
    assert_eq!(&distinct, expected, "every record once");
    assert_no_more(topic, expected.len(), QUIET).await;
}

fn lineage(records: &[OwnedMessage]) -> Vec<(String, String, i64)> {
    records
        .iter()
        .map(|m| {
            let v = json(m);
            (
                v["_file_id"].as_str().unwrap().to_string(),
                v["_entry"].as_str().unwrap().to_string(),
                v["_record_index"].as_i64().unwrap(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn parser_publishes_each_data_set_exactly_once() {
    let world = World::new().await;
    let fixtures = one_zip_per_dataset();
    let mut file_ids = BTreeMap::new();
    for (facility, name, bytes, dataset, records) in &fixtures {
        let id = world.publish(facility, name, bytes.clone()).await;
        file_ids.insert(*dataset, (id, *records));
    }
    let _parser = ChildGuard::spawn(world.parser());

    for (dataset, (file_id, expected)) in &file_ids {
        let topic = world.topics.records(dataset);
        let records = read_topic(&topic, *expected, TIMEOUT).await;
        assert_eq!(records.len(), *expected, "{dataset}: records");
        let seen: BTreeSet<_> = lineage(&records).into_iter().collect();
        assert_eq!(seen.len(), *expected, "{dataset}: distinct lineage");
        for record in &records {
            let v = json(record);
            assert_eq!(v["_file_id"], file_id.as_str(), "{dataset}");
            assert!(
                v["_ingested_at"].as_str().unwrap().ends_with('Z'),
                "{dataset}"
            );
            let key = std::str::from_utf8(record.key().unwrap()).unwrap();
            assert!(!key.is_empty(), "{dataset}: record key");
        }
        assert_no_more(&topic, *expected, QUIET).await;
    }
    // Pseudonymized, dropped and merge lineage fields.
    let patients = read_topic(&world.topics.records("patients"), 6, TIMEOUT).await;
    let p = json(&patients[0]);
    assert_ne!(p["mrn"], "MRN000000", "MRN is hashed");
    assert!(p.get("last_name").is_none(), "pii: drop removes the field");
    assert_eq!(p["_op"], "upsert");

    let entries = ledger(&world.topics, file_ids.len()).await;
    assert_eq!(entries.len(), file_ids.len());
    for (dataset, (file_id, expected)) in &file_ids {
        let entry = entries
            .iter()
            .find(|e| &e.file_id == file_id)
            .expect("ledger entry");
        assert_eq!(entry.status, FileStatus::Processed, "{dataset}: {entry:?}");
        assert_eq!(
            entry.records.get(*dataset),
            Some(&(*expected as u64)),
            "{dataset}"
        );
        assert!(entry.rejects.is_empty(), "{dataset}: {entry:?}");
    }
    assert_no_more(&world.topics.files(), file_ids.len(), QUIET).await;
    assert_no_more(&world.topics.dlq(), 0, QUIET).await;
}

#[tokio::test]
async fn a_republished_file_is_a_duplicate_and_adds_no_records() {
    let world = World::new().await;
    let bytes = pack::zip(&[("adt_dup.csv", &adt_csv("D", 4))], true, Protection::None);
    let first = world.publish("F1", "adt.zip", bytes.clone()).await;
    let mut parser = ChildGuard::spawn(world.parser());
    let topic = world.topics.records("adt_events");
    assert_eq!(read_topic(&topic, 4, TIMEOUT).await.len(), 4);

    // Once while the parser runs, once after a restart (ledger read back).
    let second = world.publish("F1", "adt-again.zip", bytes.clone()).await;
    assert_eq!(first, second, "same bytes, same file id");
    let entries = ledger(&world.topics, 2).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].status, FileStatus::Duplicate);
    assert_eq!(entries[1].file_name, "adt-again.zip");
    assert!(entries[1].records.is_empty());

    assert!(
        parser.terminate(Duration::from_secs(30)),
        "clean exit on SIGTERM"
    );
    world.publish("F1", "adt-third.zip", bytes).await;
    let _parser = ChildGuard::spawn(world.parser());
    let entries = ledger(&world.topics, 3).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].status, FileStatus::Duplicate);
    assert_no_more(&topic, 4, QUIET).await;
}

#[tokio::test]
async fn bad_archives_are_dead_lettered_and_the_next_file_flows() {
    let world = World::new().await;
    let good = pack::zip(&[("adt_ok.csv", &adt_csv("G", 3))], true, Protection::None);
    let mut corrupt = pack::zip(&[("adt_x.csv", &adt_csv("C", 50))], true, Protection::None);
    corrupt.truncate(corrupt.len() / 2);
    let wrong_password = pack::zip(
        &[("adt_w.csv", &adt_csv("W", 3))],
        true,
        Protection::Aes256("not-the-password"),
    );
    let no_password = pack::zip(
        &[("adt_n.csv", &adt_csv("N", 3))],
        true,
        Protection::ZipCrypto("whatever"),
    );
    let zeros = vec![b'0'; 64 * 1024 * 1024];
    let bomb = pack::zip(&[("adt_bomb.csv", &zeros)], true, Protection::None);
    drop(zeros);

    let cases = [
        ("F2", "corrupt.zip", corrupt, "corrupt_archive"),
        ("F2", "wrong.zip", wrong_password, "wrong_password"),
        ("F1", "nopass.zip", no_password, "password_required"),
        ("F2", "bomb.zip", bomb, "compression_ratio"),
    ];
    let mut expected = HashMap::new();
    for (facility, name, bytes, code) in cases {
        let id = world.publish(facility, name, bytes).await;
        expected.insert(id, code);
    }
    let good_id = world.publish("F2", "good.zip", good).await;
    let _parser = ChildGuard::spawn(world.parser());

    let records = read_topic(&world.topics.records("adt_events"), 3, TIMEOUT).await;
    assert_eq!(records.len(), 3, "the good file after the bad ones flows");
    assert!(lineage(&records).iter().all(|(id, _, _)| *id == good_id));

    let dead = read_topic(&world.topics.dlq(), expected.len(), TIMEOUT).await;
    assert_eq!(dead.len(), expected.len());
    for letter in &dead {
        let file_id = header(letter, "medlake.file_id").expect("raw headers copied");
        let code = expected[file_id];
        assert_eq!(
            header(letter, "medlake.error.code"),
            Some(code),
            "{file_id}"
        );
        assert_eq!(header(letter, "medlake.error.stage"), Some("unzip"));
        assert_eq!(
            header(letter, "medlake.origin.topic"),
            Some(world.topics.raw_files().as_str())
        );
        assert!(header(letter, "medlake.origin.offset").is_some());
        assert_eq!(letter.key(), Some(file_id.as_bytes()));
        let inline = letter.payload().is_some_and(|p| !p.is_empty());
        assert!(
            inline || header(letter, "medlake.payload_ref").is_some(),
            "{code}: bytes or a reference"
        );
    }
    assert_no_more(&world.topics.dlq(), expected.len(), QUIET).await;

    let entries = ledger(&world.topics, expected.len() + 1).await;
    for entry in &entries {
        if entry.file_id == good_id {
            assert_eq!(entry.status, FileStatus::Processed);
        } else {
            assert_eq!(entry.status, FileStatus::Rejected, "{entry:?}");
            let code = expected[&entry.file_id];
            assert_eq!(
                entry.rejects.keys().map(|c| c.as_str()).collect::<Vec<_>>(),
                [code]
            );
        }
    }
}

#[tokio::test]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let world = World::new().await;
    const FILES: usize = 60;
    const ROWS: usize = 1000;
    let mut expected = BTreeSet::new();
    for f in 0..FILES {
        let entry = format!("adt_{f:03}.csv");
        let bytes = pack::zip(
            &[(&entry, &adt_csv(&format!("K{f}"), ROWS))],
            true,
            Protection::None,
        );
        let facility = if f % 2 == 0 { "F1" } else { "F2" };
        let id = world
            .publish(facility, &format!("kill-{f}.zip"), bytes)
            .await;
        for i in 1..=ROWS as i64 {
            expected.insert((id.clone(), entry.clone(), i));
        }
    }

    // Watch the ledger by assignment (no group join delay) and kill the
    // parser as soon as a few files are committed.
    let ledger_consumer: StreamConsumer =
        kafka::consumer(&kafka_config(), &unique("it-ledger-watch")).unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..world.topics.partitions {
        assignment
            .add_partition_offset(&world.topics.files(), p, Offset::Beginning)
            .unwrap();
    }
    ledger_consumer.assign(&assignment).unwrap();
    let mut parser = ChildGuard::spawn(world.parser());
    let deadline = Instant::now() + TIMEOUT;
    let mut seen = 0;
    while seen < 3 {
        assert!(
            Instant::now() < deadline,
            "no ledger entries before the kill"
        );
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(1), ledger_consumer.recv()).await
        {
            seen += 1;
        }
    }
    parser.kill();
    let before_restart = read_topic(&world.topics.files(), FILES, Duration::from_secs(5)).await;
    assert!(before_restart.len() < FILES, "the kill came mid-stream");
    eprintln!(
        "killed after {} of {FILES} files were committed",
        before_restart.len()
    );
    let _parser = ChildGuard::spawn(world.parser());

    let entries = ledger(&world.topics, FILES).await;
    let ids: BTreeSet<_> = entries.iter().map(|e| e.file_id.clone()).collect();
    assert_eq!(entries.len(), FILES, "one ledger entry per file");
    assert_eq!(ids.len(), FILES);
    assert!(entries.iter().all(|e| e.status == FileStatus::Processed));

    assert_exactly_once(&world.topics.records("adt_events"), &expected).await;
    assert_no_more(&world.topics.files(), FILES, QUIET).await;
}

/// A backlog of small files (the seed's shape: a few rows each) goes through
/// in transactions of several files; SIGKILLs between and inside them lose
/// and duplicate nothing, and a bad file in a batch rejects only itself.
#[tokio::test]
async fn multi_file_transactions_survive_sigkill_exactly_once() {
    let world = World::new().await;
    const FILES: usize = 240;
    const ROWS: usize = 5;
    let mut expected = BTreeSet::new();
    let mut bad = Vec::new();
    for f in 0..FILES {
        let facility = if f % 2 == 0 { "F1" } else { "F2" };
        if f % 40 == 7 {
            let id = world
                .publish(
                    facility,
                    &format!("bad-{f}.zip"),
                    format!("PK\x03\x04 not a zip {f}").into_bytes(),
                )
                .await;
            bad.push(id);
            continue;
        }
        let entry = format!("adt_{f:03}.csv");
        let bytes = pack::zip(
            &[(&entry, &adt_csv(&format!("M{f}"), ROWS))],
            true,
            Protection::None,
        );
        let id = world
            .publish(facility, &format!("small-{f}.zip"), bytes)
            .await;
        for i in 1..=ROWS as i64 {
            expected.insert((id.clone(), entry.clone(), i));
        }
    }

    let spawn = || {
        let admin = format!("127.0.0.1:{}", free_port());
        let mut command = world.parser();
        command
            .env("MEDLAKE_ADMIN__LISTEN", &admin)
            .env("MEDLAKE_PARSER__MAX_FILES_PER_TRANSACTION", "16");
        (ChildGuard::spawn(command), admin)
    };
    // Two kills, each once the ledger grew, then a parser that finishes.
    for round in 1..=2 {
        let (mut parser, admin) = spawn();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let text = metrics_text(&admin).await;
            let files = metric_sample(&text, "medlake_parser_files_total{status=\"processed\"}");
            if files.unwrap_or(0.0) >= 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: nothing committed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        parser.kill();
    }
    let (_parser, admin) = spawn();

    let entries = ledger(&world.topics, FILES).await;
    let ids: BTreeSet<_> = entries.iter().map(|e| e.file_id.clone()).collect();
    assert_eq!(entries.len(), FILES, "one ledger entry per file");
    assert_eq!(ids.len(), FILES);
    for entry in &entries {
        let want = if bad.contains(&entry.file_id) {
            FileStatus::Rejected
        } else {
            FileStatus::Processed
        };
        assert_eq!(entry.status, want, "{}", entry.file_name);
    }
    assert_exactly_once(&world.topics.records("adt_events"), &expected).await;
    let dead = read_topic(&world.topics.dlq(), bad.len(), TIMEOUT).await;
    assert_eq!(dead.len(), bad.len(), "one dead letter per bad file");
    assert_no_more(&world.topics.dlq(), bad.len(), QUIET).await;

    // The last parser's files went in fewer transactions than files.
    let text = metrics_text(&admin).await;
    let files: f64 = ["processed", "rejected"]
        .iter()
        .filter_map(|s| {
            metric_sample(
                &text,
                &format!("medlake_parser_files_total{{status=\"{s}\"}}"),
            )
        })
        .sum();
    let transactions = metric_sample(
        &text,
        "medlake_parser_transactions_total{status=\"committed\"}",
    )
    .unwrap_or(0.0);
    assert!(
        files >= 16.0 && transactions > 0.0 && transactions * 2.0 <= files,
        "{files} files in {transactions} transactions"
    );
}

#[tokio::test]
async fn a_bad_row_and_an_unknown_entry_reject_only_themselves() {
    let world = World::new().await;
    let mut csv = adt_csv("B", 10);
    csv.extend_from_slice(
        b"ENC-B-99999,MRN9,A01,SECRET-VALUE,2024-03-01 08:00:00,W1,B1,ER,1234567890,\r\n",
    );
    let zip = pack::zip(
        &[("adt_bad_row.csv", &csv), ("notes/readme.txt", b"hello")],
        true,
        Protection::None,
    );
    let file_id = world.publish("F1", "mixed.zip", zip).await;
    let _parser = ChildGuard::spawn(world.parser());

    let records = read_topic(&world.topics.records("adt_events"), 10, TIMEOUT).await;
    assert_eq!(records.len(), 10, "the good rows of the entry are kept");
    let dead = read_topic(&world.topics.dlq(), 2, TIMEOUT).await;
    assert_eq!(dead.len(), 2);
    let row = dead
        .iter()
        .find(|d| header(d, "medlake.error.stage") == Some("validate"))
        .expect("a record dead letter");
    assert_eq!(header(row, "medlake.error.entry"), Some("adt_bad_row.csv"));
    assert_eq!(header(row, "medlake.error.index"), Some("11"));
    assert_eq!(header(row, "medlake.error.field"), Some("event_seq"));
    assert_eq!(header(row, "medlake.error.code"), Some("bad_int"));
    assert_eq!(header(row, "medlake.file_id"), Some(file_id.as_str()));
    let summary = json(row);
    assert_eq!(summary["index"], 11);
    let text = format!("{summary}{:?}", header(row, "medlake.error.message"));
    assert!(
        !text.contains("SECRET-VALUE"),
        "no field value in a dead letter: {text}"
    );
    let entry = dead
        .iter()
        .find(|d| header(d, "medlake.error.stage") == Some("route"))
        .expect("an entry dead letter");
    assert_eq!(header(entry, "medlake.error.code"), Some("no_dataset"));
    assert_eq!(
        header(entry, "medlake.error.entry"),
        Some("notes/readme.txt")
    );

    let entries = ledger(&world.topics, 1).await;
    assert_eq!(entries[0].status, FileStatus::Partial);
    assert_eq!(entries[0].entries, 2);
    assert_eq!(entries[0].records.get("adt_events"), Some(&10));
    assert_eq!(entries[0].rejects_total(), 2);
}

#[tokio::test]
async fn a_dead_lettered_file_is_replayed_once_its_cause_is_fixed() {
    let world = World::new().await;
    let bytes = pack::zip(
        &[("adt_late.csv", &adt_csv("R", 5))],
        true,
        Protection::Aes128(F3_PASSWORD),
    );
    let file_id = world.publish("F3", "late.zip", bytes).await;
    let mut parser = ChildGuard::spawn(world.parser());
    let dead = read_topic(&world.topics.dlq(), 1, TIMEOUT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "medlake.error.code"),
        Some("password_unavailable")
    );
    assert!(parser.terminate(Duration::from_secs(30)), "clean exit");

    // The secret is deployed, then the dead letter replayed.
    let mut fixed = world.parser();
    fixed.env(F3_PASSWORD_ENV, F3_PASSWORD);
    let _parser = ChildGuard::spawn(fixed);
    let out = medlake(&world.topics)
        .args(["replay", "--code", "password_unavailable"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("replayed 1 file(s)"), "{stdout}");

    let records = read_topic(&world.topics.records("adt_events"), 5, TIMEOUT).await;
    assert_eq!(records.len(), 5);
    assert!(lineage(&records).iter().all(|(id, _, _)| *id == file_id));
    let entries = ledger(&world.topics, 2).await;
    let statuses: Vec<_> = entries.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [FileStatus::Rejected, FileStatus::Processed]);
}

/// The committed offset and metadata of `partition` of `topic` for `group`,
/// read without joining the group.
fn committed_note(group: &str, topic: &str, partition: i32) -> Option<(i64, String)> {
    let consumer: StreamConsumer = kafka::consumer(&kafka_config(), group).unwrap();
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .ok()?;
    let element = committed.elements().into_iter().next()?;
    match element.offset() {
        Offset::Offset(offset) => Some((offset, element.metadata().to_string())),
        _ => None,
    }
}

/// A file the parser dies on (SIGKILL while it parses it stands in for the
/// out-of-memory kill) is dead-lettered as `poison_file` after
/// `max_parse_attempts` deaths; the files before and after it in its
/// partition, parsed in the same transaction at first, land once each.
#[tokio::test]
async fn a_file_the_parser_keeps_dying_on_is_set_aside_as_poison() {
    let world = World::new().await;
    let small = |tag: &str| {
        pack::zip(
            &[(&format!("adt_{tag}.csv"), &adt_csv(tag, 4))],
            true,
            Protection::None,
        )
    };
    // Seconds of parsing in a debug build: time to be killed in.
    let (big, _) = noisy_adt_csv(7, 24 * 1024 * 1024);
    let poison = pack::zip(&[("adt_poison.csv", &big)], true, Protection::None);
    drop(big);
    let before_id = world.publish("F1", "before.zip", small("BEFORE")).await;
    let poison_id = world.publish("F1", "poison.zip", poison).await;
    let after_id = world.publish("F1", "after.zip", small("AFTER")).await;

    let raw = read_topic(&world.topics.raw_files(), 3, TIMEOUT).await;
    let at = |id: &str| {
        let m = raw
            .iter()
            .find(|m| header(m, "medlake.file_id") == Some(id))
            .expect("raw message");
        (m.partition(), m.offset())
    };
    let (partition, poison_offset) = at(&poison_id);
    let topic = world.topics.raw_files();

    // Three deaths: the first in the transaction of all three files, the
    // next two with the poison file alone (the note counts them).
    for death in 1..=3u32 {
        let mut parser = ChildGuard::spawn(world.parser());
        let prefix = format!("medlake.parse-attempts:{death}@");
        eventually(TIMEOUT, "an attempt on the poison file noted", || async {
            let (offset, metadata) = committed_note(&world.group, &topic, partition)?;
            let through: i64 = metadata.strip_prefix(&prefix)?.parse().ok()?;
            let covers = offset <= poison_offset && through >= poison_offset;
            (covers && (death == 1 || offset == poison_offset)).then_some(())
        })
        .await;
        parser.kill();
    }
    let settled = read_topic(&world.topics.files(), 3, Duration::from_secs(2)).await;
    assert!(
        settled
            .iter()
            .all(|m| header(m, "medlake.file_id") != Some(poison_id.as_str())),
        "the poison file committed before a kill: the test needs a slower file"
    );

    let _parser = ChildGuard::spawn(world.parser());
    let entries = ledger(&world.topics, 3).await;
    let status: BTreeMap<_, _> = entries
        .iter()
        .map(|e| (e.file_id.clone(), e.status))
        .collect();
    assert_eq!(entries.len(), 3, "one ledger entry per file: {entries:?}");
    assert_eq!(status[&before_id], FileStatus::Processed);
    assert_eq!(status[&after_id], FileStatus::Processed);
    assert_eq!(status[&poison_id], FileStatus::Rejected);
    let poisoned = entries.iter().find(|e| e.file_id == poison_id).unwrap();
    assert_eq!(
        poisoned
            .rejects
            .keys()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["poison_file"]
    );

    let dead = read_topic(&world.topics.dlq(), 1, TIMEOUT).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(header(letter, "medlake.file_id"), Some(poison_id.as_str()));
    assert_eq!(header(letter, "medlake.error.code"), Some("poison_file"));
    assert_eq!(
        header(letter, "medlake.origin.offset"),
        Some(poison_offset.to_string().as_str())
    );
    let message = header(letter, "medlake.error.message").unwrap();
    assert!(message.contains("died 3 times"), "{message}");
    let inline = letter.payload().is_some_and(|p| !p.is_empty());
    assert!(inline || header(letter, "medlake.payload_ref").is_some());
    assert_no_more(&world.topics.dlq(), 1, QUIET).await;

    let expected: BTreeSet<_> = [(&before_id, "adt_BEFORE.csv"), (&after_id, "adt_AFTER.csv")]
        .into_iter()
        .flat_map(|(id, entry)| (1..=4).map(move |i| (id.clone(), entry.to_string(), i)))
        .collect();
    assert_exactly_once(&world.topics.records("adt_events"), &expected).await;

    // The partition moved on: the note is gone with the poison file.
    let (offset, metadata) = committed_note(&world.group, &topic, partition).unwrap();
    assert!(offset > poison_offset);
    assert!(
        !metadata.starts_with("medlake.parse-attempts:"),
        "{metadata}"
    );
}

/// Peak RSS of one parser process on a ~40 MB zip (reported, not asserted).
#[tokio::test]
async fn parser_rss_on_a_40_mb_zip() {
    let world = World::new().await;
    // Hex noise compresses about 2:1 (the rest of a row far better), so 4
    // entries of 27 MB of rows with 128 hex digits each make a ~40 MB zip.
    let mut entries = Vec::new();
    let mut rows_total = 0u64;
    for e in 0..4 {
        let (csv, rows) = noisy_adt_csv(e, 27 * 1024 * 1024);
        rows_total += rows;
        entries.push((format!("adt_big_{e}.csv"), csv));
    }
    let refs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let zip = pack::zip(&refs, true, Protection::None);
    let zip_mb = zip.len() as f64 / 1e6;
    drop(entries);
    let file_id = world.publish("F1", "big.zip", zip).await;

    let parser = ChildGuard::spawn(world.parser());
    let entries = ledger_within(&world.topics, 1, Duration::from_secs(600)).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].file_id, file_id);
    assert_eq!(entries[0].status, FileStatus::Processed, "{:?}", entries[0]);
    assert_eq!(entries[0].records.get("adt_events"), Some(&rows_total));
    let hwm_kb = vm_hwm_kb(parser.0.id());
    eprintln!(
        "parser peak RSS (VmHWM) on a {zip_mb:.1} MB zip with {rows_total} records: {} MiB",
        hwm_kb / 1024
    );
    assert!(hwm_kb > 0);
}

pub(crate) fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("child status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}
