//! The Kafka client factory. Every producer and consumer of medlake comes
//! from here, so delivery settings are decided once:
//!
//! - producers are idempotent with `acks=all` (a message acked is on every
//!   in-sync replica, and a retry never duplicates it);
//! - transactional producers add a `transactional.id` (the parser's
//!   read-process-write loop);
//! - consumers never auto-commit and read only committed messages;
//! - message size limits fit the raw files topic (64 MiB and more).
//!
//! `kafka.options` from the configuration are applied last, so TLS, SASL and
//! tuning need no code change.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{ConsumerContext, DefaultConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};

use crate::config::KafkaConfig;

/// The largest message medlake produces or fetches: 100 MiB, above the
/// 64 MiB the raw files topic must take.
pub const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// How long `init_transactions` may take (it waits for a previous instance's
/// transaction with the same id to be fenced and aborted).
pub const INIT_TRANSACTIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// The base client configuration: brokers, then the pass-through options.
fn base(config: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    for (k, v) in defaults {
        client.set(*k, *v);
    }
    for (k, v) in &config.options {
        client.set(k, v);
    }
    client
}

fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let max = MAX_MESSAGE_BYTES.to_string();
    base(
        config,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.max.bytes", max.as_str()),
            ("compression.type", "lz4"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "120000"),
        ],
    )
}

/// An idempotent producer with `acks=all`.
pub fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaError> {
    producer_config(config).create()
}

/// A transactional producer, already initialised (previous instances with the
/// same `transactional_id` are fenced and their open transaction aborted).
///
/// `init_transactions` blocks, so call this from `spawn_blocking` or before
/// the async loop starts.
pub fn transactional_producer(
    config: &KafkaConfig,
    transactional_id: &str,
) -> Result<FutureProducer, KafkaError> {
    let mut client = producer_config(config);
    client
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", "120000");
    // One transaction follows another at once: the coordinator answers the
    // next AddPartitions/AddOffsets with CONCURRENT_TRANSACTIONS while it
    // still writes the previous commit's markers, and librdkafka retries
    // after retry.backoff.ms (100 ms by default, a floor under every file).
    if !config.options.contains_key("retry.backoff.ms") {
        client.set("retry.backoff.ms", "10");
    }
    let producer: FutureProducer = client.create()?;
    producer.init_transactions(INIT_TRANSACTIONS_TIMEOUT)?;
    Ok(producer)
}

/// What a consumer prefetches. librdkafka's defaults (up to 100,000
/// messages per partition, 64 MiB queued) made the prefetch the largest
/// part of the sink's memory (1.2 of 2.4 GB on a seed-day backlog over 21
/// partitions). The fetch sizes are soft limits: a message larger than
/// them (a raw file of up to [`MAX_MESSAGE_BYTES`]) is still fetched whole.
const CONSUMER_PREFETCH: [(&str, &str); 4] = [
    ("queued.min.messages", "10000"),
    ("queued.max.messages.kbytes", "32768"),
    ("fetch.max.bytes", "16777216"),
    ("max.partition.fetch.bytes", "8388608"),
];

fn consumer_config(config: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut defaults = vec![
        ("group.id", group_id),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("isolation.level", "read_committed"),
        ("receive.message.max.bytes", "210000000"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
    ];
    defaults.extend(CONSUMER_PREFETCH);
    base(config, &defaults)
}

/// A consumer with manual commits that reads only committed messages.
pub fn consumer(config: &KafkaConfig, group_id: &str) -> Result<StreamConsumer, KafkaError> {
    consumer_with_context(config, group_id, DefaultConsumerContext)
}

/// Like [`consumer`], with a context that sees rebalances (the sink seeks to
/// the offsets its Delta table recorded when partitions are assigned).
pub fn consumer_with_context<C: ConsumerContext + 'static>(
    config: &KafkaConfig,
    group_id: &str,
    context: C,
) -> Result<StreamConsumer<C>, KafkaError> {
    consumer_config(config, group_id).create_with_context(context)
}

/// An admin client (topic creation and inspection).
pub fn admin(config: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
    base(config, &[]).create()
}

/// Builds the headers of a message from name/value pairs.
pub fn headers<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> rdkafka::message::OwnedHeaders {
    pairs
        .into_iter()
        .fold(rdkafka::message::OwnedHeaders::new(), |h, (key, value)| {
            h.insert(rdkafka::message::Header {
                key,
                value: Some(value),
            })
        })
}

/// The value of header `name` as UTF-8, if present.
pub fn header_str<'a, M: rdkafka::Message>(message: &'a M, name: &str) -> Option<&'a str> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_prefetch_a_bounded_amount_unless_told_otherwise() {
        let mut config = KafkaConfig::default();
        let c = consumer_config(&config, "g");
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("32768"));
        assert_eq!(c.get("fetch.max.bytes"), Some("16777216"));
        // A raw file larger than the fetch sizes is still received whole.
        let receive: usize = c.get("receive.message.max.bytes").unwrap().parse().unwrap();
        assert!(receive > MAX_MESSAGE_BYTES);
        config
            .options
            .insert("queued.max.messages.kbytes".into(), "1024".into());
        let c = consumer_config(&config, "g");
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("1024"));
    }

    #[test]
    fn pass_through_options_override_defaults() {
        let mut config = KafkaConfig::default();
        config
            .options
            .insert("security.protocol".into(), "SASL_SSL".into());
        config.options.insert("acks".into(), "all".into());
        config
            .options
            .insert("compression.type".into(), "zstd".into());
        let client = producer_config(&config);
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("compression.type"), Some("zstd"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        let consumer = consumer_config(&config, "g");
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("group.id"), Some("g"));
    }
}
