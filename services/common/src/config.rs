//! Layered configuration: built-in defaults (serde defaults on each struct),
//! then the YAML file, then the environment.
//!
//! Environment overrides: `KAFKA_BROKERS` sets `kafka.brokers`;
//! `MEDLAKE_<KEY>` sets a top-level key (`MEDLAKE_LAKE_URI` → `lake_uri`) and
//! `MEDLAKE_<SECTION>__<KEY>` a nested one (`MEDLAKE_SINK__FLUSH_INTERVAL_MS`
//! → `sink.flush_interval_ms`). Only variables whose first segment is a known
//! top-level key are read, so secrets kept in other `MEDLAKE_*` variables do
//! not collide with configuration; within a known section an unknown key is an
//! error, as it is in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// Loads `T` from defaults, the optional YAML `file` and the environment.
/// `top_level_keys` lists the keys of `T` that environment variables may set.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    top_level_keys: &'static [&'static str],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile {
                path: path.to_path_buf(),
            });
        }
        figment = figment.merge(Yaml::file_exact(path));
    }
    figment = figment
        .merge(Env::prefixed("MEDLAKE_").split("__").filter(move |key| {
            let first = key.as_str().split('.').next().unwrap_or_default();
            top_level_keys.iter().any(|k| k.eq_ignore_ascii_case(first))
        }))
        .merge(
            Env::raw()
                .only(&["KAFKA_BROKERS"])
                .map(|_| "kafka.brokers".into()),
        );
    figment
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// How to reach Kafka.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated (`host:port,host:port`).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// librdkafka options passed through unchanged, for TLS, SASL and tuning
    /// (`security.protocol: SASL_SSL`, `sasl.mechanisms: SCRAM-SHA-512`, …).
    /// They override medlake's own settings. Values are never printed, nor
    /// serialized (they may hold SASL passwords).
    #[serde(default, serialize_with = "redacted_values")]
    pub options: BTreeMap<String, String>,
}

/// Serializes a map's keys with every value replaced by `"<redacted>"`.
fn redacted_values<S: serde::Serializer>(
    map: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|k| (k, "<redacted>")))
}

fn default_brokers() -> String {
    "localhost:9092".to_string()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            options: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Topic names and how `medlake topics ensure` creates them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Prefix of every topic name: `<prefix>.raw.files`, `<prefix>.records.<dataset>`,
    /// `<prefix>.dlq`, `<prefix>.files`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Partitions of each topic created by `topics ensure`. The number of
    /// consumers that can share a topic is at most this.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of each topic created by `topics ensure`.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// `max.message.bytes` of the raw files topic: the largest file sent inline.
    #[serde(default = "default_raw_max_message_bytes")]
    pub raw_max_message_bytes: u64,
}

fn default_prefix() -> String {
    "medlake".to_string()
}
fn default_partitions() -> i32 {
    6
}
fn default_replication_factor() -> i32 {
    1
}
fn default_raw_max_message_bytes() -> u64 {
    100 * 1024 * 1024
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: default_prefix(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            raw_max_message_bytes: default_raw_max_message_bytes(),
        }
    }
}

impl TopicsConfig {
    /// Raw file payloads from the connectors.
    pub fn raw_files(&self) -> String {
        format!("{}.raw.files", self.prefix)
    }
    /// Records of one data set.
    pub fn records(&self, dataset: &str) -> String {
        format!("{}.records.{dataset}", self.prefix)
    }
    /// Dead letters.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }
    /// The per-file ledger (compacted).
    pub fn files(&self) -> String {
        format!("{}.files", self.prefix)
    }
}

/// The admin HTTP server: `/metrics`, `/healthz`, `/readyz`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on; port 0 picks a free port.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9400))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
        }
    }
}

/// Log output.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
    /// Default filter (`info`, `medlake_parser=debug,info`); `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `info`, with the Delta and query engine libraries at `warn`: at `info`
/// they log every table snapshot they build.
fn default_log_level() -> String {
    "info,buoyant_kernel=warn,deltalake_core=warn,deltalake=warn,datafusion=warn".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default = "lake")]
        lake_uri: String,
        #[serde(default)]
        topics: TopicsConfig,
    }
    fn lake() -> String {
        "./lake".into()
    }
    const KEYS: &[&str] = &["kafka", "lake_uri", "topics"];

    #[test]
    fn layers_defaults_file_and_env() {
        figment::Jail::expect_with(|jail| {
            // `make test` exports KAFKA_BROKERS: start from an empty environment.
            jail.clear_env();
            jail.create_file("m.yaml", "lake_uri: /data/lake\ntopics:\n  partitions: 3\n")?;
            let c: Sample = load(Some(Path::new("m.yaml")), KEYS).unwrap();
            assert_eq!(c.kafka.brokers, "localhost:9092");
            assert_eq!(c.lake_uri, "/data/lake");
            assert_eq!(c.topics.partitions, 3);
            assert_eq!(c.topics.prefix, "medlake");

            jail.set_env("KAFKA_BROKERS", "k1:9092,k2:9092");
            jail.set_env("MEDLAKE_LAKE_URI", "s3://bucket/lake");
            jail.set_env("MEDLAKE_TOPICS__PREFIX", "t1");
            jail.set_env("MEDLAKE_FACILITY_1001_ZIP_PASSWORD", "not config");
            let c: Sample = load(Some(Path::new("m.yaml")), KEYS).unwrap();
            assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
            assert_eq!(c.lake_uri, "s3://bucket/lake");
            assert_eq!(c.topics.prefix, "t1");
            assert_eq!(c.topics.partitions, 3);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.yaml", "topics:\n  partitons: 3\n")?;
            let err = load::<Sample>(Some(Path::new("m.yaml")), KEYS).unwrap_err();
            assert!(err.to_string().contains("partitons"), "{err}");

            jail.create_file("ok.yaml", "")?;
            jail.set_env("MEDLAKE_TOPICS__NOPE", "1");
            let err = load::<Sample>(Some(Path::new("ok.yaml")), KEYS).unwrap_err();
            assert!(err.to_string().contains("nope"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/medlake.yaml")), KEYS).unwrap_err();
        assert!(matches!(err, ConfigError::MissingFile { .. }));
    }

    #[test]
    fn kafka_options_are_not_printed() {
        let mut k = KafkaConfig::default();
        k.options.insert("sasl.password".into(), "hunter2".into());
        let printed = format!("{k:?}");
        assert!(printed.contains("sasl.password"));
        assert!(!printed.contains("hunter2"));
    }
}
