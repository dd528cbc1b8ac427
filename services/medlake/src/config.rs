//! The configuration file of every medlake command: shared settings at the
//! top level and one section per service. See `config/medlake.yaml` for a
//! commented example and `medlake_common::config` for how environment
//! variables override it.

use std::path::{Path, PathBuf};

use medlake_common::admin::Health;
use medlake_common::config::{AdminConfig, ConfigError, KafkaConfig, LogConfig, TopicsConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to reach Kafka (`KAFKA_BROKERS` overrides `kafka.brokers`).
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Topic names and how they are created.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Root of the lake: a local path or `s3://bucket/prefix`.
    #[serde(default = "default_lake_uri")]
    pub lake_uri: String,
    /// The admin HTTP server.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Folder of data set definitions.
    #[serde(default = "default_schemas_dir")]
    pub schemas_dir: PathBuf,
    /// The facility registry file.
    #[serde(default = "default_facilities_file")]
    pub facilities_file: PathBuf,
    /// `medlake parser`: raw files into records, one transaction per batch of waiting files.
    #[serde(default)]
    pub parser: medlake_parser::ParserConfig,
    /// `medlake ftp-connector`: backoff, sharding and ingest tuning (the
    /// endpoints are in the facility registry).
    #[serde(default)]
    pub ftp_connector: medlake_ftp_connector::FtpConnectorConfig,
    /// `medlake sink`: which tables, batching, Delta commits.
    #[serde(default)]
    pub sink: medlake_sink::SinkConfig,
    /// `medlake maintain`: compaction, Z-order, vacuum and their schedule.
    #[serde(default)]
    pub maintain: medlake_sink::maintain::MaintainConfig,
    /// `medlake api-connector`: push API and HTTP pull endpoints.
    #[serde(default)]
    pub api_connector: medlake_api_connector::ApiConnectorConfig,
    /// `medlake serve`: the customers' SQL API.
    #[serde(default)]
    pub serve: medlake_serve::ServeConfig,
}

/// The top-level keys environment variables may set.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "kafka",
    "topics",
    "lake_uri",
    "admin",
    "log",
    "schemas_dir",
    "facilities_file",
    "parser",
    "ftp_connector",
    "sink",
    "api_connector",
    "maintain",
    "serve",
];

fn default_lake_uri() -> String {
    "./lake".to_string()
}
fn default_schemas_dir() -> PathBuf {
    PathBuf::from("schemas")
}
fn default_facilities_file() -> PathBuf {
    PathBuf::from("config/facilities.yaml")
}

impl Config {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        medlake_common::config::load(file, TOP_LEVEL_KEYS)
    }

    /// The shared part every service receives.
    pub fn context(&self) -> medlake_common::Context {
        medlake_common::Context {
            kafka: self.kafka.clone(),
            topics: self.topics.clone(),
            lake_uri: self.lake_uri.clone(),
            schemas_dir: self.schemas_dir.clone(),
            facilities_file: self.facilities_file.clone(),
            health: Health::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every key path (`sink.delta.checkpoint_interval`) of a mapping, nested
    /// mappings included.
    fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = value {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                key_paths(child, &path, out);
                out.insert(path);
            }
        }
    }

    /// `config/medlake.yaml` is the configuration's reference: every key the
    /// configuration has (its defaults, serialized) is written there, so a new
    /// field without an entry fails here.
    #[test]
    fn the_example_config_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/medlake.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let mut documented = BTreeSet::new();
        key_paths(&example, "", &mut documented);

        let defaults = serde_json::to_value(Config::load(None).unwrap()).unwrap();
        let mut keys = BTreeSet::new();
        key_paths(&defaults, "", &mut keys);
        assert!(keys.len() > 50, "{keys:?}");
        let missing: Vec<_> = keys.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "keys without an entry in config/medlake.yaml: {missing:?}"
        );
    }

    /// Every example in `config/` parses: facility registries as registries,
    /// everything else as a configuration file.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let (mut configs, mut registries) = (0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".yaml") {
                continue;
            }
            if name.contains("facilities") {
                medlake_common::facilities::Registry::load(&path)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                registries += 1;
            } else if name.contains("customers") {
                medlake_serve::customers::CustomerRegistry::load(&path)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                registries += 1;
            } else {
                Config::load(Some(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
                configs += 1;
            }
        }
        assert!(
            configs >= 1 && registries >= 1,
            "examples missing in {}",
            dir.display()
        );
    }
}
