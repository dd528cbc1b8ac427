//! The pull side: every `http_pull` endpoint of the facility registry is
//! polled by its own task, so a failing endpoint backs off without holding
//! up the others.
//!
//! A polling round loads the endpoint's persisted cursor, then repeats:
//! GET the page for the cursor, ingest its files in order (raw zone + Kafka
//! ack, source `http_pull`), and only then store the page's `next_cursor`.
//! The round ends at an empty page (or a page that does not move the
//! cursor); the next starts after `poll_interval_ms`. A round that fails at
//! any point stores nothing, so the next one starts again from the last
//! stored cursor: files are delivered at least once, with the same file
//! ids, and the parser's ledger turns repeats into recorded duplicates.
//! Files already ingested by this process are not published again.
//!
//! A page that breaks the contract (bad JSON, a file without content) is
//! never skipped: the endpoint stalls on it, visibly (a logged error and
//! `medlake_connector_poll_errors_total{stage="contract"}`), until the
//! source is fixed.

pub mod cursor;
mod fetch;
pub mod guard;
pub mod page;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use medlake_common::endpoints::http::HttpPullEndpoint;
use medlake_common::events::{Event, PollFailed};
use medlake_common::ingest::{IngestError, Ingestor, RawFile};
use medlake_common::raw_file::Source;
use medlake_common::secret::SecretError;
use medlake_common::{Classify, ErrorKind, Shutdown, metrics};
use reqwest::header::{HeaderName, HeaderValue};

use cursor::{CursorError, CursorStore};
pub use fetch::{FetchError, Fetched, Fetcher};
pub use medlake_common::backoff::Backoff;
use page::{Content, Page, PageError};

use crate::recent::RecentFiles;

/// A polling round failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("auth secret: {source}")]
    Secret { source: SecretError },
    #[error("auth header name or value is not a valid HTTP header")]
    BadAuthHeader,
    #[error("{source}")]
    Cursor { source: CursorError },
    #[error("{stage}: {source}")]
    Fetch {
        stage: &'static str,
        source: FetchError,
    },
    #[error("{source}")]
    Contract { source: PageError },
    #[error("{source}")]
    Ingest { source: Box<IngestError> },
    #[error("shutting down")]
    Cancelled,
}

impl PullError {
    /// The `stage` label of the poll error metric.
    pub fn stage(&self) -> &'static str {
        match self {
            PullError::Secret { .. } | PullError::BadAuthHeader => "auth",
            PullError::Cursor { .. } => "cursor",
            PullError::Fetch { stage, .. } => stage,
            PullError::Contract { .. } => "contract",
            PullError::Ingest { .. } => "ingest",
            PullError::Cancelled => "shutdown",
        }
    }
}

impl Classify for PullError {
    fn kind(&self) -> ErrorKind {
        match self {
            PullError::Secret { .. } | PullError::BadAuthHeader => ErrorKind::Fatal,
            PullError::Cursor {
                source: CursorError::Corrupt { .. },
            } => ErrorKind::Fatal,
            PullError::Cursor { .. } | PullError::Cancelled => ErrorKind::Retryable,
            PullError::Fetch { source, .. } if source.is_retryable() => ErrorKind::Retryable,
            PullError::Fetch { .. } | PullError::Contract { .. } => ErrorKind::BadInput,
            PullError::Ingest { source } => source.kind(),
        }
    }
}

/// Polls one endpoint of one facility.
pub struct EndpointPuller {
    facility_id: String,
    endpoint: HttpPullEndpoint,
    /// The endpoint's page URL, parsed.
    base_url: url::Url,
    /// `<facility>/<endpoint>`: log field and metric label.
    label: String,
    fetcher: Fetcher,
    cursors: CursorStore,
    ingestor: Arc<Ingestor>,
    recent: Arc<RecentFiles>,
}

impl EndpointPuller {
    /// A poller for `endpoint`; fails when its URL does not parse.
    pub fn new(
        facility_id: &str,
        endpoint: HttpPullEndpoint,
        fetcher: Fetcher,
        ingestor: Arc<Ingestor>,
        recent: Arc<RecentFiles>,
    ) -> Result<Self, url::ParseError> {
        Ok(Self {
            base_url: url::Url::parse(&endpoint.url)?,
            label: format!("{facility_id}/{}", endpoint.id),
            facility_id: facility_id.to_string(),
            endpoint,
            fetcher,
            cursors: CursorStore::new(ingestor.raw_zone().clone()),
            ingestor,
            recent,
        })
    }

    /// Polls until `shutdown`. Errors are logged and counted; the endpoint is
    /// tried again at the next interval.
    pub async fn run(self, shutdown: Shutdown) {
        let interval = Duration::from_millis(self.endpoint.poll_interval_ms);
        let endpoint = self.label.as_str();
        tracing::info!(
            endpoint,
            poll_interval_ms = self.endpoint.poll_interval_ms,
            "Polling HTTP endpoint."
        );
        let mut failures = 0;
        loop {
            match self.round(&shutdown).await {
                Ok(files) => {
                    failures = 0;
                    if files == 0 {
                        tracing::debug!(endpoint, "Nothing new.");
                    } else {
                        tracing::info!(endpoint, files, "Pulled files.");
                    }
                }
                Err(PullError::Cancelled) => break,
                Err(error) => {
                    failures += 1;
                    PollFailed {
                        component: "api_connector",
                        endpoint,
                        stage: error.stage(),
                        failures,
                        retry_in: Some(interval),
                        error: &error,
                    }
                    .emit();
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        tracing::info!(endpoint, "Stopped polling.");
    }

    /// One round: pages until one brings nothing new. Returns the number of
    /// files ingested.
    pub async fn round(&self, shutdown: &Shutdown) -> Result<usize, PullError> {
        let auth = self.auth_header()?;
        let mut cursor = self
            .cursors
            .load(&self.facility_id, &self.endpoint.id)
            .await
            .map_err(|source| PullError::Cursor { source })?;
        let mut ingested = 0;
        loop {
            let page_url = self.page_url(cursor.as_deref());
            let body = self
                .fetch(&page_url, auth.as_ref(), "page", shutdown)
                .await?;
            metrics::API_PULL_PAGES
                .with_label_values(&[self.label.as_str()])
                .inc();
            let page = Page::parse(&body).map_err(|source| PullError::Contract { source })?;
            for (index, file) in page.files.iter().enumerate() {
                if shutdown.is_cancelled() {
                    return Err(PullError::Cancelled);
                }
                // A downloaded file holds its share of the download budget
                // until it is published.
                let (bytes, _held) = match file
                    .content(index, &page_url)
                    .map_err(|source| PullError::Contract { source })?
                {
                    Content::Inline(bytes) => (bytes, None),
                    Content::Download(url) => {
                        let fetched = self
                            .fetch(&url, auth.as_ref(), "download", shutdown)
                            .await?;
                        (fetched.bytes, Some(fetched.held))
                    }
                };
                if self.ingest(&file.name, bytes).await? {
                    ingested += 1;
                }
            }
            let moved = page
                .next_cursor
                .filter(|next| cursor.as_deref() != Some(next.as_str()));
            let Some(next) = moved else {
                return Ok(ingested);
            };
            self.cursors
                .save(&self.facility_id, &self.endpoint.id, &next)
                .await
                .map_err(|source| PullError::Cursor { source })?;
            tracing::debug!(endpoint = self.label, "Cursor stored.");
            let was_empty = page.files.is_empty();
            cursor = Some(next);
            if was_empty {
                return Ok(ingested);
            }
        }
    }

    async fn fetch(
        &self,
        url: &url::Url,
        auth: Option<&(HeaderName, HeaderValue)>,
        stage: &'static str,
        shutdown: &Shutdown,
    ) -> Result<Fetched, PullError> {
        // The secret goes only to the endpoint's own origin; files listed on
        // another host (pre-signed storage URLs) are fetched without it.
        let auth = auth.filter(|_| self.same_origin(url));
        self.fetcher
            .get(url, auth, &self.label, shutdown)
            .await
            .map_err(|source| match source {
                FetchError::Cancelled => PullError::Cancelled,
                source => PullError::Fetch { stage, source },
            })
    }

    /// Ingests a pulled file; false when this process already ingested it.
    async fn ingest(&self, file_name: &str, bytes: Bytes) -> Result<bool, PullError> {
        let file = RawFile {
            facility_id: self.facility_id.clone(),
            source: Source::HttpPull,
            file_name: file_name.to_string(),
            bytes,
            received_at: Utc::now(),
        }
        .identify()
        .await;
        if self.recent.get(&self.facility_id, file.file_id()).is_some() {
            tracing::debug!(
                endpoint = self.label,
                file_id = file.file_id(),
                "Already ingested; not published again."
            );
            return Ok(false);
        }
        let receipt = self
            .ingestor
            .ingest_identified(file)
            .await
            .map_err(|source| PullError::Ingest {
                source: Box::new(source),
            })?;
        self.recent
            .insert(&self.facility_id, &receipt.file_id, &receipt.raw_path);
        Ok(true)
    }

    /// The page URL for `cursor`.
    pub fn page_url(&self, cursor: Option<&str>) -> url::Url {
        let mut url = self.base_url.clone();
        if let Some(cursor) = cursor {
            url.query_pairs_mut()
                .append_pair(&self.endpoint.cursor_param, cursor);
        }
        url
    }

    fn same_origin(&self, url: &url::Url) -> bool {
        self.base_url.origin() == url.origin()
    }

    /// The auth header, its secret read now (so a rotated secret is picked
    /// up at the next round). Marked sensitive: never printed by `Debug`.
    fn auth_header(&self) -> Result<Option<(HeaderName, HeaderValue)>, PullError> {
        let Some(auth) = &self.endpoint.auth else {
            return Ok(None);
        };
        let secret = auth
            .secret
            .resolve()
            .map_err(|source| PullError::Secret { source })?;
        let name = HeaderName::from_bytes(auth.header_name.as_bytes())
            .map_err(|_| PullError::BadAuthHeader)?;
        let mut value = HeaderValue::from_str(&format!("{}{}", auth.value_prefix, secret.expose()))
            .map_err(|_| PullError::BadAuthHeader)?;
        value.set_sensitive(true);
        Ok(Some((name, value)))
    }
}

#[cfg(test)]
mod tests {
    use medlake_common::budget::ByteBudget;
    use medlake_common::config::KafkaConfig;
    use medlake_common::ingest::{IngestConfig, RawZone};
    use medlake_common::secret::SecretRef;

    use super::*;
    use crate::config::PullConfig;

    fn puller(dir: &std::path::Path, endpoint: HttpPullEndpoint) -> EndpointPuller {
        // Creating a producer does not connect; nothing is published here.
        let producer = medlake_common::kafka::producer(&KafkaConfig::default()).unwrap();
        let zone = RawZone::open(dir.to_str().unwrap()).unwrap();
        let ingestor = Ingestor::with_parts(zone, producer, "t".into(), &IngestConfig::default());
        EndpointPuller::new(
            "F1",
            endpoint,
            Fetcher::new(&PullConfig::default(), true, ByteBudget::new(1 << 20)).unwrap(),
            Arc::new(ingestor),
            Arc::new(RecentFiles::new(10)),
        )
        .unwrap()
    }

    fn endpoint(auth: Option<medlake_common::endpoints::http::HttpAuth>) -> HttpPullEndpoint {
        HttpPullEndpoint {
            id: "api".into(),
            url: "http://customer.example/v1/exports?format=json".into(),
            poll_interval_ms: 1000,
            cursor_param: "since".into(),
            auth,
            allow_private_network: true,
        }
    }

    #[tokio::test]
    async fn cursor_goes_in_its_query_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let p = puller(dir.path(), endpoint(None));
        assert_eq!(
            p.page_url(None).as_str(),
            "http://customer.example/v1/exports?format=json"
        );
        assert_eq!(
            p.page_url(Some("2024-05-01T00:00:00Z&x")).as_str(),
            "http://customer.example/v1/exports?format=json&since=2024-05-01T00%3A00%3A00Z%26x"
        );
        assert!(p.same_origin(&url::Url::parse("http://customer.example/dl/1").unwrap()));
        assert!(!p.same_origin(&url::Url::parse("https://customer.example/dl/1").unwrap()));
        assert!(!p.same_origin(&url::Url::parse("http://cdn.example/dl/1").unwrap()));
    }

    #[tokio::test]
    async fn auth_header_is_read_from_its_secret_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("token");
        std::fs::write(&secret_file, "s3cr3t-t0ken\n").unwrap();
        let auth = medlake_common::endpoints::http::HttpAuth {
            header_name: "Authorization".into(),
            value_prefix: "Bearer ".into(),
            secret: SecretRef {
                env: None,
                file: Some(secret_file),
            },
        };
        let p = puller(dir.path(), endpoint(Some(auth)));
        let (name, value) = p.auth_header().unwrap().unwrap();
        assert_eq!(name.as_str(), "authorization");
        assert_eq!(value.to_str().unwrap(), "Bearer s3cr3t-t0ken");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cr3t"));
        assert!(!format!("{:?}", p.endpoint).contains("s3cr3t"));
    }

    #[tokio::test]
    async fn a_missing_secret_fails_the_round_without_naming_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let auth = medlake_common::endpoints::http::HttpAuth {
            header_name: "X-Token".into(),
            value_prefix: String::new(),
            secret: SecretRef::env("MEDLAKE_TEST_SURELY_UNSET_TOKEN"),
        };
        let p = puller(dir.path(), endpoint(Some(auth)));
        let err = p.round(&Shutdown::new()).await.unwrap_err();
        assert_eq!(err.stage(), "auth");
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.to_string().contains("MEDLAKE_TEST_SURELY_UNSET_TOKEN"));
    }
}
