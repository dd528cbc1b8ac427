//! Why the parser service stops, or a file must be retried: one enum, each
//! variant classified once for the run loop.

use medlake_common::dataset::DatasetError;
use medlake_common::dead_letter::Origin;
use medlake_common::error::kafka_error_kind;
use medlake_common::facilities::RegistryError;
use medlake_common::ingest::IngestError;
use medlake_common::topic_reader::TopicReadError;
use medlake_common::{Classify, ErrorKind};
use rdkafka::error::KafkaError;

/// Why the parser service stopped (or a file must be retried).
#[derive(Debug, thiserror::Error)]
pub enum ParserError {
    #[error("data set definitions: {source}")]
    Datasets { source: Box<DatasetError> },
    #[error("facility registry: {source}")]
    Facilities { source: Box<RegistryError> },
    #[error("parser configuration: {reason}")]
    Config { reason: String },
    #[error("lake: {source}")]
    Lake { source: Box<IngestError> },
    #[error("topic {topic} does not exist (run `medlake topics ensure`)")]
    MissingTopic { topic: String },
    #[error("reading topic {topic} failed: {source}")]
    ReadTopic { topic: String, source: KafkaError },
    #[error("reading topic {topic} to its end took longer than {timeout_ms} ms")]
    ReadTimeout { topic: String, timeout_ms: u64 },
    #[error("publishing to {topic} failed: {source}")]
    Publish { topic: String, source: KafkaError },
    #[error("creating the transactional producer {transactional_id} failed: {source}")]
    Producer {
        transactional_id: String,
        source: KafkaError,
    },
    #[error("creating or subscribing the consumer on {topic} failed: {source}")]
    Consumer { topic: String, source: KafkaError },
    #[error("transaction step `{step}` for {}/{}@{} failed: {source}", at.topic, at.partition, at.offset)]
    Transaction {
        step: &'static str,
        at: Box<Origin>,
        source: KafkaError,
    },
    #[error("reading {path} from the raw zone failed: {source}")]
    RawZone {
        path: String,
        source: Box<IngestError>,
    },
    #[error("a parser task failed: {reason}")]
    Task { reason: String },
    #[error("keeping the parse attempts of {topic}[{partition}] failed at `{step}`: {source}")]
    Attempts {
        step: &'static str,
        topic: String,
        partition: i32,
        source: KafkaError,
    },
}

impl Classify for ParserError {
    fn kind(&self) -> ErrorKind {
        match self {
            ParserError::Producer { source, .. }
            | ParserError::Transaction { source, .. }
            | ParserError::ReadTopic { source, .. }
            | ParserError::Publish { source, .. }
            | ParserError::Consumer { source, .. } => match kafka_error_kind(source) {
                // A message the broker refuses is not retried forever: the
                // transaction is aborted and the run loop stops.
                ErrorKind::BadInput => ErrorKind::Fatal,
                kind => kind,
            },
            // A fetch or commit of the group's offsets fails while the
            // coordinator moves or a rebalance runs: both pass.
            ParserError::RawZone { .. } | ParserError::Attempts { .. } => ErrorKind::Retryable,
            ParserError::Datasets { .. }
            | ParserError::Facilities { .. }
            | ParserError::Config { .. }
            | ParserError::Lake { .. }
            | ParserError::MissingTopic { .. }
            | ParserError::ReadTimeout { .. }
            | ParserError::Task { .. } => ErrorKind::Fatal,
        }
    }
}

impl From<TopicReadError> for ParserError {
    fn from(error: TopicReadError) -> Self {
        match error {
            TopicReadError::MissingTopic { topic } => ParserError::MissingTopic { topic },
            TopicReadError::Read { topic, source } => ParserError::ReadTopic { topic, source },
            TopicReadError::Timeout { topic, timeout_ms } => {
                ParserError::ReadTimeout { topic, timeout_ms }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;

    #[test]
    fn fenced_is_fatal_and_broker_trouble_retries() {
        let step = |code| ParserError::Transaction {
            step: "commit",
            at: Box::new(Origin {
                topic: "t".into(),
                partition: 0,
                offset: 1,
            }),
            source: KafkaError::MessageProduction(code),
        };
        assert_eq!(
            step(RDKafkaErrorCode::ProducerFenced).kind(),
            ErrorKind::Fatal
        );
        assert_eq!(
            step(RDKafkaErrorCode::BrokerTransportFailure).kind(),
            ErrorKind::Retryable
        );
        assert_eq!(
            step(RDKafkaErrorCode::MessageSizeTooLarge).kind(),
            ErrorKind::Fatal
        );
        let missing = ParserError::MissingTopic { topic: "x".into() };
        assert_eq!(missing.kind(), ErrorKind::Fatal);
    }
}
