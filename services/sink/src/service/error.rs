//! Errors of the sink service, each classified for the run loop.

use std::path::PathBuf;

use medlake_common::dataset::DatasetError;
use medlake_common::error::kafka_error_kind;
use medlake_common::{Classify, ErrorKind};
use rdkafka::error::KafkaError;

use crate::decode::DecodeError;
use crate::delta::DeltaError;

/// Why the sink stopped, or why one attempt at a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The data set definitions cannot be loaded.
    #[error("cannot load the data set definitions: {source}")]
    Datasets {
        /// Underlying error (lists every problem).
        #[source]
        source: DatasetError,
    },

    /// `sink.datasets` names a table that does not exist.
    #[error(
        "sink.datasets names '{name}', which is neither a data set in {} nor a built-in table (_dead_letters, _files)",
        .dir.display()
    )]
    UnknownDataset {
        /// The name as configured.
        name: String,
        /// Where data sets were looked for.
        dir: PathBuf,
    },

    /// Creating, opening or writing a table failed.
    #[error("table {table}: {source}")]
    Table {
        /// Table (data set) name.
        table: String,
        /// Underlying error (boxed: Delta's errors are large).
        #[source]
        source: Box<DeltaError>,
    },

    /// The JSON decoder cannot be built for a table's schema.
    #[error(transparent)]
    Decoder(#[from] DecodeError),

    /// A Kafka client call failed.
    #[error("kafka: {operation}: {source}")]
    Kafka {
        /// What was being done.
        operation: &'static str,
        /// Underlying error.
        #[source]
        source: KafkaError,
    },

    /// A dead letter was not acknowledged by the broker.
    #[error(
        "dead letter for {origin_topic} partition {partition} offset {offset} not delivered: {source}"
    )]
    DeadLetter {
        /// Topic of the refused record.
        origin_topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// Underlying error.
        #[source]
        source: KafkaError,
    },
}

impl SinkError {
    /// Wraps a Delta layer error of `table`.
    pub(crate) fn table(table: &str, source: DeltaError) -> Self {
        SinkError::Table {
            table: table.to_string(),
            source: Box::new(source),
        }
    }

    /// Wraps a Kafka client error.
    pub(crate) fn kafka(operation: &'static str, source: KafkaError) -> Self {
        SinkError::Kafka { operation, source }
    }
}

impl Classify for SinkError {
    fn kind(&self) -> ErrorKind {
        match self {
            SinkError::Datasets { .. }
            | SinkError::UnknownDataset { .. }
            | SinkError::Decoder(_) => ErrorKind::Fatal,
            SinkError::Table { source, .. } => source.kind(),
            SinkError::Kafka { source, .. } => kafka_error_kind(source),
            SinkError::DeadLetter { source, .. } => match kafka_error_kind(source) {
                // A dead letter too large for the broker cannot be retried;
                // anything else (broker away, timeout) can.
                ErrorKind::BadInput => ErrorKind::Fatal,
                kind => kind,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::types::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn configuration_errors_are_fatal_and_name_the_data_set() {
        let err = SinkError::UnknownDataset {
            name: "labz".into(),
            dir: PathBuf::from("schemas"),
        };
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.to_string().contains("'labz'"), "{err}");
    }

    #[test]
    fn broker_timeouts_retry() {
        let err = SinkError::DeadLetter {
            origin_topic: "t".into(),
            partition: 0,
            offset: 1,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert_eq!(err.kind(), ErrorKind::Retryable);
    }

    #[test]
    fn incompatible_schema_is_fatal() {
        let err = SinkError::table(
            "labs",
            DeltaError::IncompatibleSchema {
                table: "labs".into(),
                column: "value".into(),
                change: "type Int64 -> Utf8".into(),
            },
        );
        assert_eq!(err.kind(), ErrorKind::Fatal);
    }
}
