//! Reading a whole topic from its beginning to its current end: how the
//! parser loads the file ledger and `medlake replay` reads the DLQ, and how
//! `medlake tables` reads the ledger back.
//!
//! The reader joins no group and commits nothing: it is assigned every
//! partition at its beginning and asks to be told when it reaches each one's
//! end (`enable.partition.eof`). That end is the last offset a
//! `read_committed` reader may see, so transaction markers and aborted
//! messages at the tail never keep it waiting. After [`TopicReader::read_to_end`]
//! the same reader can [`follow`](TopicReader::follow) the topic as it grows.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::kafka_error_kind;
use crate::{Classify, ErrorKind, Shutdown, kafka};

/// How long a reader waits after a consumer error before reading on
/// (librdkafka reconnects on its own meanwhile).
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// How long opening a reader may wait for the topic's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum TopicReadError {
    #[error("topic {topic} does not exist (run `medlake topics ensure`)")]
    MissingTopic { topic: String },
    #[error("reading topic {topic} failed: {source}")]
    Read { topic: String, source: KafkaError },
    #[error("reading topic {topic} to its end took longer than {timeout_ms} ms")]
    Timeout { topic: String, timeout_ms: u64 },
}

impl Classify for TopicReadError {
    fn kind(&self) -> ErrorKind {
        match self {
            TopicReadError::MissingTopic { .. } => ErrorKind::Fatal,
            TopicReadError::Read { source, .. } => kafka_error_kind(source),
            TopicReadError::Timeout { .. } => ErrorKind::Retryable,
        }
    }
}

/// Client context of a topic reader: reaching the end of a partition is how
/// it knows it has read everything, not an error worth a log line.
pub struct QuietEnd;

impl ClientContext for QuietEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_end_of_partition(&error) {
            tracing::warn!(%error, reason, "Topic reader client error.");
        }
    }
}

impl ConsumerContext for QuietEnd {}

fn is_end_of_partition(error: &KafkaError) -> bool {
    matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF)
}

/// A consumer positioned at the beginning of every partition of one topic.
pub struct TopicReader {
    consumer: StreamConsumer<QuietEnd>,
    topic: String,
    partitions: usize,
}

impl TopicReader {
    /// Opens `topic`; `group_id` is never joined nor committed to. Blocks
    /// while it fetches the topic's metadata.
    pub fn open(
        kafka_config: &KafkaConfig,
        group_id: &str,
        topic: &str,
    ) -> Result<Self, TopicReadError> {
        let mut config = kafka_config.clone();
        config
            .options
            .insert("enable.partition.eof".into(), "true".into());
        let read_error = |source: KafkaError| TopicReadError::Read {
            topic: topic.to_string(),
            source,
        };
        let consumer: StreamConsumer<QuietEnd> =
            kafka::consumer_with_context(&config, group_id, QuietEnd).map_err(read_error)?;
        let partitions = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(read_error)?
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if partitions == 0 {
            return Err(TopicReadError::MissingTopic {
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

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Calls `on` for every message until each partition reported its end,
    /// or fails after `timeout`. Consumer errors are logged and read past.
    pub async fn read_to_end<F>(&self, timeout: Duration, mut on: F) -> Result<(), TopicReadError>
    where
        F: FnMut(&BorrowedMessage<'_>),
    {
        let mut at_end = vec![false; self.partitions];
        let read = async {
            while at_end.iter().any(|done| !done) {
                match self.consumer.recv().await {
                    Ok(message) => on(&message),
                    Err(KafkaError::PartitionEOF(p)) => {
                        if let Some(done) = usize::try_from(p).ok().and_then(|p| at_end.get_mut(p))
                        {
                            *done = true;
                        }
                    }
                    Err(error) => self.pause_after(&error, "Reading failed; retrying.").await,
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| TopicReadError::Timeout {
                topic: self.topic.clone(),
                timeout_ms: timeout.as_millis() as u64,
            })
    }

    /// Calls `on` for every further message until `shutdown` is cancelled.
    pub async fn follow<F>(&self, shutdown: &Shutdown, mut on: F)
    where
        F: FnMut(&BorrowedMessage<'_>),
    {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = self.consumer.recv() => match received {
                    Ok(message) => on(&message),
                    Err(error) if is_end_of_partition(&error) => {}
                    Err(error) => self.pause_after(&error, "Following failed; retrying.").await,
                },
            }
        }
    }

    async fn pause_after(&self, error: &KafkaError, message: &'static str) {
        tracing::warn!(topic = self.topic, %error, "{message}");
        tokio::time::sleep(ERROR_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_of_partition_is_not_an_error_and_errors_classify() {
        assert!(is_end_of_partition(&KafkaError::PartitionEOF(3)));
        let eof = KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF);
        assert!(is_end_of_partition(&eof));
        let down = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown);
        assert!(!is_end_of_partition(&down));

        let missing = TopicReadError::MissingTopic { topic: "t".into() };
        assert_eq!(missing.kind(), ErrorKind::Fatal);
        let read = TopicReadError::Read {
            topic: "t".into(),
            source: down,
        };
        assert_eq!(read.kind(), ErrorKind::Retryable);
        let slow = TopicReadError::Timeout {
            topic: "t".into(),
            timeout_ms: 1,
        };
        assert_eq!(slow.kind(), ErrorKind::Retryable);
    }
}
