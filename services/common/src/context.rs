//! What every service's `run` receives besides its own section of the
//! configuration.

use std::path::PathBuf;

use crate::admin::Health;
use crate::config::{KafkaConfig, TopicsConfig};

/// Shared settings and handles, built once by the binary (or a test).
#[derive(Clone, Debug)]
pub struct Context {
    /// How to reach Kafka.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Root of the lake: a local path or `s3://bucket/prefix`.
    pub lake_uri: String,
    /// Folder of data set definitions (`schemas/`).
    pub schemas_dir: PathBuf,
    /// The facility registry file.
    pub facilities_file: PathBuf,
    /// Readiness reported on `/readyz`.
    pub health: Health,
}
