//! The `ftp_connector` section of the configuration. The endpoints
//! themselves are in the facility registry (`ftp:` of each facility).

use medlake_common::ingest::IngestConfig;
use serde::{Deserialize, Serialize};

/// Settings of `medlake ftp-connector`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FtpConnectorConfig {
    /// Raw zone and publish tuning (inline size limit, queue timeout).
    #[serde(default)]
    pub ingest: IngestConfig,
    /// First delay before retrying a failing endpoint, in milliseconds.
    #[serde(default = "default_retry_backoff_initial_ms")]
    pub retry_backoff_initial_ms: u64,
    /// Longest delay between retries of a failing endpoint, in milliseconds.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Number of connector replicas sharing the endpoints. Each endpoint is
    /// polled by exactly one replica, chosen by a hash of its id.
    #[serde(default = "default_shard_count")]
    pub shard_count: u32,
    /// This replica's number, `0..shard_count` (a StatefulSet ordinal).
    #[serde(default)]
    pub shard_index: u32,
    /// Bytes all downloads of this process hold in memory at once, whatever
    /// the number of endpoints and landing sessions (see
    /// [`medlake_common::budget`]). A download waits for its file's size to
    /// be free; a file larger than the whole budget runs alone. The memory
    /// figure of the pod limit: up to twice the budget (a file sent inline
    /// is also copied into the Kafka producer until the broker acks it) and
    /// ~100 MiB for the process.
    #[serde(default = "default_download_budget_bytes")]
    pub download_budget_bytes: u64,
}

fn default_retry_backoff_initial_ms() -> u64 {
    1_000
}
fn default_retry_backoff_max_ms() -> u64 {
    300_000
}
fn default_shard_count() -> u32 {
    1
}
fn default_download_budget_bytes() -> u64 {
    384 * 1024 * 1024
}

impl Default for FtpConnectorConfig {
    fn default() -> Self {
        Self {
            ingest: IngestConfig::default(),
            retry_backoff_initial_ms: default_retry_backoff_initial_ms(),
            retry_backoff_max_ms: default_retry_backoff_max_ms(),
            shard_count: default_shard_count(),
            shard_index: 0,
            download_budget_bytes: default_download_budget_bytes(),
        }
    }
}

impl FtpConnectorConfig {
    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.shard_count == 0 || self.shard_index >= self.shard_count {
            return Err(format!(
                "shard_index {} must be below shard_count {} (and shard_count positive)",
                self.shard_index, self.shard_count
            ));
        }
        if self.retry_backoff_initial_ms == 0 {
            return Err("retry_backoff_initial_ms must be positive".to_string());
        }
        if self.download_budget_bytes < 1024 * 1024 {
            return Err(format!(
                "download_budget_bytes {} is below 1 MiB",
                self.download_budget_bytes
            ));
        }
        Ok(())
    }

    /// Whether this replica polls the endpoint with id `endpoint_id`.
    pub fn owns(&self, endpoint_id: &str) -> bool {
        let digest = medlake_common::raw_file::sha256_hex(endpoint_id.as_bytes());
        let hash = u64::from_str_radix(&digest[..16], 16).unwrap_or(0);
        hash % u64::from(self.shard_count) == u64::from(self.shard_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: FtpConnectorConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, FtpConnectorConfig::default());
        c.validate().unwrap();
        let c: FtpConnectorConfig =
            serde_yaml::from_str("ingest: { inline_limit_bytes: 10 }\nretry_backoff_max_ms: 5\n")
                .unwrap();
        assert_eq!(c.ingest.inline_limit_bytes, 10);
        assert!(serde_yaml::from_str::<FtpConnectorConfig>("backoff_ms: 1").is_err());
    }

    #[test]
    fn shards_split_endpoints_without_overlap() {
        let shards: Vec<FtpConnectorConfig> = (0..3)
            .map(|i| FtpConnectorConfig {
                shard_count: 3,
                shard_index: i,
                ..FtpConnectorConfig::default()
            })
            .collect();
        let mut per_shard = [0; 3];
        for n in 0..300 {
            let id = format!("endpoint-{n}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            per_shard[owners[0]] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 50), "{per_shard:?}");
        assert!(FtpConnectorConfig::default().owns("anything"));
        let bad = FtpConnectorConfig {
            shard_index: 3,
            shard_count: 3,
            ..FtpConnectorConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
