//! The Kafka foundation: the client factory, `medlake topics ensure` and
//! transactions, against the real broker.

use std::time::Duration;

use medlake_common::kafka;
use medlake_common::topics;
use medlake_integration_tests::{kafka_config, medlake, read_topic, topics_config, unique};
use rdkafka::Message;
use rdkafka::admin::{AdminOptions, ResourceSpecifier};
use rdkafka::producer::{FutureRecord, Producer};

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_40_mib_message_round_trips() {
    let config = topics_config();
    let admin = kafka::admin(&kafka_config()).unwrap();
    let specs = topics::specs(&config, []);
    topics::ensure(&admin, &specs).await.unwrap();

    let payload: Vec<u8> = (0..40 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let producer = kafka::producer(&kafka_config()).unwrap();
    let topic = config.raw_files();
    let delivery = producer
        .send(
            FutureRecord::to(&topic).key("F1001").payload(&payload),
            Duration::from_secs(60),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert!(delivery.partition >= 0 && delivery.offset >= 0);

    let got = read_topic(&topic, 1, TIMEOUT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key(), Some(&b"F1001"[..]));
    assert_eq!(got[0].payload().unwrap().len(), payload.len());
    assert!(got[0].payload().unwrap() == payload.as_slice());
}

#[tokio::test]
async fn topics_ensure_creates_with_configs_and_is_idempotent() {
    let config = topics_config();
    let first = medlake(&config)
        .args(["topics", "ensure"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout.contains(&format!("created   {}", config.raw_files())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("created   {}", config.files())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("created   {}", config.dlq())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("created   {}.records.", config.prefix)),
        "{stdout}"
    );

    // Read the configs back through the admin API.
    let admin = kafka::admin(&kafka_config()).unwrap();
    let raw = config.raw_files();
    let files = config.files();
    let described = admin
        .describe_configs(
            &[
                ResourceSpecifier::Topic(&raw),
                ResourceSpecifier::Topic(&files),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let raw_config = described[0].as_ref().unwrap();
    let max: u64 = raw_config
        .get("max.message.bytes")
        .and_then(|e| e.value.clone())
        .unwrap()
        .parse()
        .unwrap();
    assert!(max >= 64 * 1024 * 1024, "max.message.bytes = {max}");
    let files_config = described[1].as_ref().unwrap();
    assert_eq!(
        files_config
            .get("cleanup.policy")
            .and_then(|e| e.value.as_deref()),
        Some("compact")
    );
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&raw), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 3);

    // The second run changes nothing.
    let second = medlake(&config)
        .args(["topics", "ensure"])
        .output()
        .unwrap();
    assert!(second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(!stdout.is_empty());
    for line in stdout.lines() {
        assert!(
            line.starts_with("unchanged "),
            "second run changed something: {line}"
        );
    }
}

#[tokio::test]
async fn aborted_transactions_are_invisible_to_read_committed_consumers() {
    let config = topics_config();
    let admin = kafka::admin(&kafka_config()).unwrap();
    topics::ensure(&admin, &topics::specs(&config, []))
        .await
        .unwrap();
    let topic = config.dlq();

    let txn_id = unique("it-txn");
    let producer = tokio::task::spawn_blocking(move || {
        kafka::transactional_producer(&kafka_config(), &txn_id).unwrap()
    })
    .await
    .unwrap();

    producer.begin_transaction().unwrap();
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("aborted"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    producer.abort_transaction(Duration::from_secs(30)).unwrap();

    producer.begin_transaction().unwrap();
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("committed"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();

    // Read until the committed one shows up, then make sure nothing else does.
    let seen = read_topic(&topic, 2, Duration::from_secs(15)).await;
    let payloads: Vec<&[u8]> = seen.iter().filter_map(|m| m.payload()).collect();
    assert_eq!(payloads, vec![&b"committed"[..]]);
}
