//! The error taxonomy every component maps its errors onto, so a run loop
//! decides in one place whether to retry, dead-letter or stop.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What a run loop should do with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A transient failure (broker unavailable, commit conflict, timeout):
    /// retry with backoff; the input is fine.
    Retryable,
    /// The input itself is bad: dead-letter it and go on with the next one.
    BadInput,
    /// The service cannot go on (bad configuration, fenced producer, lost
    /// storage): stop, and let the supervisor restart it.
    Fatal,
}

impl ErrorKind {
    /// The metric label / log field value: `retryable`, `bad_input`, `fatal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Retryable => "retryable",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Fatal => "fatal",
        }
    }
}

/// Implemented by every component's error enum.
pub trait Classify {
    /// How the run loop should react to this error.
    fn kind(&self) -> ErrorKind;

    /// Whether retrying can help.
    fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retryable
    }
}

/// Classifies a Kafka client error.
pub fn kafka_error_kind(err: &KafkaError) -> ErrorKind {
    let code = match err {
        KafkaError::Transaction(e) => {
            if e.txn_requires_abort() || e.is_retriable() {
                return ErrorKind::Retryable;
            }
            return ErrorKind::Fatal;
        }
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(
            RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => ErrorKind::Fatal,
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            ErrorKind::BadInput
        }
        _ => ErrorKind::Retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_producer_is_fatal_and_timeouts_retry() {
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced);
        assert_eq!(kafka_error_kind(&fenced), ErrorKind::Fatal);
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(kafka_error_kind(&timeout), ErrorKind::Retryable);
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(kafka_error_kind(&too_large), ErrorKind::BadInput);
    }
}
