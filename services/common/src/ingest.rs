//! How a file enters medlake, shared by every connector: write the original
//! bytes to the raw zone, publish them to `<prefix>.raw.files` with the
//! headers of the raw-file contract ([`crate::raw_file`]), and return only
//! once the broker acked.
//!
//! The key design choice: the raw zone write comes first and the Kafka ack
//! last, so a connector that acknowledges its source (HTTP 202, FTP file
//! moved to `processed/`) only after [`Ingestor::ingest`] returned can never
//! lose a file. A crash in between at worst publishes the same file again;
//! its file id (SHA-256 of the bytes) is the same, and the parser's ledger
//! records the second copy as a duplicate.
//!
//! Files up to [`IngestConfig::inline_limit_bytes`] travel inline in the
//! message; larger ones go with an empty payload and a `medlake.payload_ref`
//! header naming their raw zone path (relative to the lake root), which
//! [`RawZone::get`] reads back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Classify, ErrorKind, kafka_error_kind};
use crate::metrics;
use crate::raw_file::{self, RawHeaders, Source};

/// The folder of the raw zone under the lake root.
pub const RAW_DIR: &str = "_raw";

/// Tuning of [`Ingestor`], embedded in each connector's configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Files up to this size travel inline in the Kafka message; larger ones
    /// are published with an empty payload and a `medlake.payload_ref`
    /// header pointing into the raw zone. Capped below the producer's
    /// message size limit.
    #[serde(default = "default_inline_limit_bytes")]
    pub inline_limit_bytes: usize,
    /// How long a publish may wait for room in the producer's queue, in
    /// milliseconds (delivery itself is bounded by `message.timeout.ms`).
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
}

fn default_inline_limit_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_queue_timeout_ms() -> u64 {
    30_000
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            inline_limit_bytes: default_inline_limit_bytes(),
            queue_timeout_ms: default_queue_timeout_ms(),
        }
    }
}

/// Room left in a message for key and headers when a payload is inline.
const HEADER_ROOM_BYTES: usize = 64 * 1024;

/// A file as received, before it enters medlake.
#[derive(Debug, Clone)]
pub struct RawFile {
    /// The registry id of the facility it belongs to.
    pub facility_id: String,
    /// How it arrived.
    pub source: Source,
    /// Its name at the source (a header only; never a path component).
    pub file_name: String,
    /// The bytes exactly as received.
    pub bytes: Bytes,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

impl RawFile {
    /// Computes the file's id, once: on the blocking thread pool when the
    /// file is large ([`raw_file::file_id`]).
    pub async fn identify(self) -> IdentifiedFile {
        let file_id = raw_file::file_id(&self.bytes).await;
        IdentifiedFile {
            file: self,
            file_id,
        }
    }
}

/// A [`RawFile`] with its file id: what a connector looks up before it
/// ingests (has it taken these bytes recently?) and then hands to
/// [`Ingestor::ingest_identified`], so the bytes are hashed only once.
#[derive(Debug, Clone)]
pub struct IdentifiedFile {
    file: RawFile,
    file_id: String,
}

impl IdentifiedFile {
    /// Hex SHA-256 of the bytes.
    pub fn file_id(&self) -> &str {
        &self.file_id
    }

    /// The file.
    pub fn file(&self) -> &RawFile {
        &self.file
    }
}

/// Proof that a file is in the raw zone and acked by Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Hex SHA-256 of the bytes.
    pub file_id: String,
    /// Raw zone path, relative to the lake root.
    pub raw_path: String,
    /// Partition of `<prefix>.raw.files` the message went to.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// Ingestion failed; the source must not be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot open the lake at {uri}: {reason}")]
    Open { uri: String, reason: String },
    #[error("raw zone write of {path} failed: {source}")]
    RawWrite {
        path: String,
        source: Box<object_store::Error>,
    },
    #[error("raw zone read of {path} failed: {source}")]
    RawRead {
        path: String,
        source: Box<object_store::Error>,
    },
    #[error("cannot create the Kafka producer: {source}")]
    Producer {
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("publishing file {file_id} to {topic} failed: {source}")]
    Publish {
        topic: String,
        file_id: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("facility id {facility_id:?} cannot name a raw zone folder")]
    BadFacility { facility_id: String },
}

impl Classify for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            IngestError::Open { .. } | IngestError::Producer { .. } => ErrorKind::Fatal,
            IngestError::RawWrite { .. } | IngestError::RawRead { .. } => ErrorKind::Retryable,
            IngestError::Publish { source, .. } => match kafka_error_kind(source) {
                // A message too large is the connector's to reject, but the
                // file itself may be fine under a smaller inline limit.
                ErrorKind::BadInput => ErrorKind::BadInput,
                other => other,
            },
            IngestError::BadFacility { .. } => ErrorKind::BadInput,
        }
    }
}

/// The raw zone: `<lake>/_raw/<facility>/<yyyy>/<mm>/<dd>/<file_id>`, on a
/// local directory or any object store.
#[derive(Debug, Clone)]
pub struct RawZone {
    store: Arc<dyn ObjectStore>,
    /// Lake root inside the store (empty for a local directory).
    root: StorePath,
}

impl RawZone {
    /// Opens the lake at `lake_uri`: `s3://bucket/prefix` (credentials and
    /// region from the usual `AWS_*` variables), another object store URL
    /// (`memory://`, `file:///…`), or a local path, created if missing.
    pub fn open(lake_uri: &str) -> Result<Self, IngestError> {
        let open_error = |reason: String| IngestError::Open {
            uri: lake_uri.to_string(),
            reason,
        };
        if let Some(rest) = lake_uri.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| open_error(e.to_string()))?;
            return Ok(Self::from_store(Arc::new(store), StorePath::from(prefix)));
        }
        if lake_uri.contains("://") && !lake_uri.starts_with("file://") {
            let url = url::Url::parse(lake_uri).map_err(|e| open_error(e.to_string()))?;
            let (store, root) = object_store::parse_url_opts(&url, std::env::vars())
                .map_err(|e| open_error(e.to_string()))?;
            return Ok(Self::from_store(Arc::from(store), root));
        }
        let dir = lake_uri.strip_prefix("file://").unwrap_or(lake_uri);
        std::fs::create_dir_all(dir).map_err(|e| open_error(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| open_error(e.to_string()))?;
        Ok(Self::from_store(Arc::new(store), StorePath::default()))
    }

    /// A raw zone on `store` with the lake root at `root`.
    pub fn from_store(store: Arc<dyn ObjectStore>, root: StorePath) -> Self {
        Self { store, root }
    }

    /// Where a file goes, relative to the lake root:
    /// `_raw/<facility>/<yyyy>/<mm>/<dd>/<file_id>` (date of `received_at`, UTC).
    pub fn raw_path(facility_id: &str, received_at: DateTime<Utc>, file_id: &str) -> String {
        format!(
            "{RAW_DIR}/{facility_id}/{:04}/{:02}/{:02}/{file_id}",
            received_at.year(),
            received_at.month(),
            received_at.day()
        )
    }

    fn location(&self, raw_path: &str) -> StorePath {
        StorePath::from_iter(self.root.parts().chain(StorePath::from(raw_path).parts()))
    }

    /// Writes `bytes` at `raw_path` (atomically: readers see all or nothing).
    pub async fn put(&self, raw_path: &str, bytes: Bytes) -> Result<(), IngestError> {
        self.store
            .put(&self.location(raw_path), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|source| IngestError::RawWrite {
                path: raw_path.to_string(),
                source: Box::new(source),
            })
    }

    /// Reads the file at `raw_path` (a `medlake.payload_ref` value).
    pub async fn get(&self, raw_path: &str) -> Result<Bytes, IngestError> {
        let read_error = |source| IngestError::RawRead {
            path: raw_path.to_string(),
            source: Box::new(source),
        };
        self.store
            .get(&self.location(raw_path))
            .await
            .map_err(read_error)?
            .bytes()
            .await
            .map_err(read_error)
    }
}

/// Writes files to the raw zone and publishes them to the raw files topic.
/// Cheap to share: wrap it in an `Arc` and call [`Ingestor::ingest`] from
/// any number of tasks.
pub struct Ingestor {
    raw: RawZone,
    producer: FutureProducer,
    topic: String,
    inline_limit_bytes: usize,
    queue_timeout: Duration,
}

impl Ingestor {
    /// An ingestor for the lake, broker and topics of `ctx`.
    pub fn new(ctx: &Context, config: &IngestConfig) -> Result<Self, IngestError> {
        let raw = RawZone::open(&ctx.lake_uri)?;
        let producer =
            crate::kafka::producer(&ctx.kafka).map_err(|source| IngestError::Producer {
                source: Box::new(source),
            })?;
        Ok(Self::with_parts(
            raw,
            producer,
            ctx.topics.raw_files(),
            config,
        ))
    }

    /// An ingestor from its parts (tests, or a shared producer).
    pub fn with_parts(
        raw: RawZone,
        producer: FutureProducer,
        topic: String,
        config: &IngestConfig,
    ) -> Self {
        let cap = crate::kafka::MAX_MESSAGE_BYTES - HEADER_ROOM_BYTES;
        Self {
            raw,
            producer,
            topic,
            inline_limit_bytes: config.inline_limit_bytes.min(cap),
            queue_timeout: Duration::from_millis(config.queue_timeout_ms),
        }
    }

    /// The raw zone this ingestor writes to.
    pub fn raw_zone(&self) -> &RawZone {
        &self.raw
    }

    /// The topic it publishes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `file` to the raw zone, publishes it and waits for the broker's
    /// ack (`acks=all`). Only after `Ok` may the source be acknowledged.
    pub async fn ingest(&self, file: RawFile) -> Result<Receipt, IngestError> {
        self.ingest_identified(file.identify().await).await
    }

    /// [`Ingestor::ingest`] for a file whose id is computed already.
    pub async fn ingest_identified(&self, file: IdentifiedFile) -> Result<Receipt, IngestError> {
        let IdentifiedFile { file, file_id } = file;
        if !crate::endpoints::is_valid_id(&file.facility_id) {
            return Err(IngestError::BadFacility {
                facility_id: file.facility_id,
            });
        }
        let started = Instant::now();
        let raw_path = RawZone::raw_path(&file.facility_id, file.received_at, &file_id);
        self.raw.put(&raw_path, file.bytes.clone()).await?;

        let inline = file.bytes.len() <= self.inline_limit_bytes;
        let headers = RawHeaders {
            file_id: file_id.clone(),
            facility_id: file.facility_id.clone(),
            source: file.source,
            file_name: file.file_name,
            received_at: file.received_at,
            payload_ref: (!inline).then(|| raw_path.clone()),
        };
        let payload: &[u8] = if inline { &file.bytes } else { &[] };
        let record = FutureRecord::to(&self.topic)
            .key(file.facility_id.as_str())
            .payload(payload)
            .headers(headers.to_kafka());
        let delivery = self
            .producer
            .send(record, Timeout::After(self.queue_timeout))
            .await
            .map_err(|(source, _)| IngestError::Publish {
                topic: self.topic.clone(),
                file_id: file_id.clone(),
                source: Box::new(source),
            })?;

        let source = file.source.as_str();
        metrics::CONNECTOR_FILES_RECEIVED
            .with_label_values(&[source])
            .inc();
        metrics::CONNECTOR_BYTES_RECEIVED
            .with_label_values(&[source])
            .inc_by(file.bytes.len() as u64);
        metrics::CONNECTOR_PUBLISH_SECONDS
            .with_label_values(&[source])
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            file_id,
            facility_id = file.facility_id,
            source,
            bytes = file.bytes.len(),
            inline,
            partition = delivery.partition,
            offset = delivery.offset,
            "File ingested."
        );
        Ok(Receipt {
            file_id,
            raw_path,
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 7, 23, 59, 1).unwrap()
    }

    #[test]
    fn raw_path_follows_the_lake_layout() {
        assert_eq!(
            RawZone::raw_path("F1001", at(), "abc"),
            "_raw/F1001/2024/03/07/abc"
        );
    }

    #[tokio::test]
    async fn raw_zone_creates_the_lake_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("not/yet/there");
        let zone = RawZone::open(lake.to_str().unwrap()).unwrap();
        let path = RawZone::raw_path("F1", at(), "id1");
        zone.put(&path, Bytes::from_static(b"hello")).await.unwrap();
        let on_disk = std::fs::read(lake.join("_raw/F1/2024/03/07/id1")).unwrap();
        assert_eq!(on_disk, b"hello");
        assert_eq!(zone.get(&path).await.unwrap(), Bytes::from_static(b"hello"));
        // Writing the same file again is harmless.
        zone.put(&path, Bytes::from_static(b"hello")).await.unwrap();
        let missing = zone.get("_raw/F1/2024/03/07/nope").await.unwrap_err();
        assert!(matches!(missing, IngestError::RawRead { .. }));
        assert_eq!(missing.kind(), ErrorKind::Retryable);
    }

    #[tokio::test]
    async fn raw_zone_on_an_object_store_url_keeps_its_prefix() {
        let zone = RawZone::open("memory:///lake/root").unwrap();
        zone.put("_raw/F1/2024/03/07/x", Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert_eq!(
            zone.location("_raw/F1/2024/03/07/x").as_ref(),
            "lake/root/_raw/F1/2024/03/07/x"
        );
        assert_eq!(
            zone.get("_raw/F1/2024/03/07/x").await.unwrap().as_ref(),
            b"1"
        );
    }

    #[tokio::test]
    async fn a_file_is_identified_by_the_hash_of_its_bytes() {
        let file = RawFile {
            facility_id: "F1".into(),
            source: Source::Http,
            file_name: "a.zip".into(),
            bytes: Bytes::from_static(b"zip bytes"),
            received_at: at(),
        };
        let identified = file.clone().identify().await;
        assert_eq!(identified.file_id(), raw_file::sha256_hex(b"zip bytes"));
        assert_eq!(identified.file().bytes, file.bytes);
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: IngestConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, IngestConfig::default());
        assert_eq!(c.inline_limit_bytes, 16 * 1024 * 1024);
        assert!(serde_yaml::from_str::<IngestConfig>("inline_limit: 3").is_err());
    }

    #[test]
    fn facility_ids_must_be_safe_folder_names() {
        assert!(crate::endpoints::is_valid_id("F-1_a"));
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(!crate::endpoints::is_valid_id(bad), "{bad}");
        }
    }
}
