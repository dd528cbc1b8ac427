//! Reading a whole topic from the beginning to its current end, as the
//! ledger loader and `medlake replay` do: a consumer that joins no group,
//! is assigned every partition and is told when it reaches each one's end.

use std::time::Duration;

use medlake_common::config::KafkaConfig;
use medlake_common::kafka;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use super::ParserError;

/// Client context of a topic reader: reaching the end of a partition is how
/// it knows it has read everything, not an error worth a log line.
pub struct QuietEnd;

impl ClientContext for QuietEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !end_of_partition {
            tracing::warn!(%error, reason, "Topic reader client error.");
        }
    }
}

impl ConsumerContext for QuietEnd {}

/// A consumer positioned at the beginning of every partition of one topic.
pub struct TopicReader {
    pub consumer: StreamConsumer<QuietEnd>,
    pub topic: String,
    partitions: usize,
}

impl TopicReader {
    /// Opens `topic`; `group_id` is never joined nor committed to.
    pub fn open(
        kafka_config: &KafkaConfig,
        group_id: &str,
        topic: &str,
    ) -> Result<Self, ParserError> {
        let mut config = kafka_config.clone();
        config
            .options
            .insert("enable.partition.eof".into(), "true".into());
        let read_error = |source: KafkaError| ParserError::ReadTopic {
            topic: topic.to_string(),
            source,
        };
        let consumer: StreamConsumer<QuietEnd> =
            kafka::consumer_with_context(&config, group_id, QuietEnd).map_err(read_error)?;
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(read_error)?
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        if partitions == 0 {
            return Err(ParserError::MissingTopic {
                topic: topic.to_string(),
            });
        }
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions as i32 {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(read_error)?;
        }
        consumer.assign(&assignment).map_err(read_error)?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            partitions,
        })
    }

    /// Calls `on` for every message until each partition reported its end,
    /// or fails after `timeout`.
    pub async fn read_to_end<F>(&self, timeout: Duration, mut on: F) -> Result<(), ParserError>
    where
        F: FnMut(&BorrowedMessage<'_>),
    {
        let mut at_end = vec![false; self.partitions];
        let read = async {
            while at_end.iter().any(|done| !done) {
                match self.consumer.recv().await {
                    Ok(message) => on(&message),
                    Err(KafkaError::PartitionEOF(p)) => {
                        if let Some(done) = at_end.get_mut(p as usize) {
                            *done = true;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(topic = self.topic, %error, "Reading failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ParserError::ReadTimeout {
                topic: self.topic.clone(),
                timeout_ms: timeout.as_millis() as u64,
            })
    }
}
