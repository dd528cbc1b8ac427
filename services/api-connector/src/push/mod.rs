//! The push API: facilities upload files with `PUT /v1/files/{name}`
//! (`PUT /v1/facilities/{facility_id}/files/{name}` names the facility in the
//! path) or a multipart `POST /v1/files` (one part with a file name).
//!
//! Order of checks: the key (401), the facility it belongs to against any
//! facility the request names in `X-Facility-Id` or the path (403), the file
//! name (400), an upload slot for the facility ([`slots`]: 429 when the
//! facility has its share in progress, 503 when all facilities together
//! have the slots or memory), the body against `max_body_bytes` while it
//! streams in (413), an empty body (422). Only then is the file written to
//! the raw zone and published, and `202` answered once Kafka acked it.

mod body;
mod multipart;
mod reply;
pub mod slots;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{post, put};
use bytes::Bytes;
use chrono::Utc;
use medlake_common::events::{Event, WorkFailed};
use medlake_common::ingest::{Ingestor, RawFile};
use medlake_common::raw_file::Source;
use medlake_common::{Classify, ErrorKind, metrics};

use crate::auth::{KeyIndex, presented_key};
use crate::recent::RecentFiles;
pub use body::{BodyError, NameError, read_limited, validate_file_name};
pub use multipart::MAX_PART_HEADER_BYTES;
pub use reply::{Accepted, ApiError};
use slots::{UploadSlot, UploadSlots};

/// Header a client may set to say which facility it pushes for.
pub const FACILITY_HEADER: &str = "x-facility-id";

/// What the push handlers share.
pub struct PushState {
    /// API key digests → facility.
    pub keys: KeyIndex,
    /// Recently accepted files, for idempotent re-sends.
    pub recent: Arc<RecentFiles>,
    /// Raw zone + Kafka.
    pub ingestor: Arc<Ingestor>,
    /// Largest accepted file.
    pub max_body_bytes: usize,
    /// Room for uploads in progress (body read, raw zone, Kafka).
    pub slots: Arc<UploadSlots>,
}

/// The push routes, with request metrics.
pub fn router(state: Arc<PushState>) -> Router {
    Router::new()
        .route("/v1/files/{name}", put(put_file))
        .route(
            "/v1/facilities/{facility_id}/files/{name}",
            put(put_facility_file),
        )
        .route("/v1/files", post(post_multipart))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn(track))
}

/// Counts every request by route template and status, and times it.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::API_HTTP_REQUESTS
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .inc();
    metrics::API_HTTP_REQUEST_SECONDS
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn put_file(
    State(state): State<Arc<PushState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let facility_id = authenticate(&state.keys, &headers, None)?;
    receive_body(&state, facility_id, name, &headers, body).await
}

async fn put_facility_file(
    State(state): State<Arc<PushState>>,
    Path((claimed, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let facility_id = authenticate(&state.keys, &headers, Some(&claimed))?;
    receive_body(&state, facility_id, name, &headers, body).await
}

async fn receive_body(
    state: &PushState,
    facility_id: String,
    name: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    validate_file_name(&name).map_err(|reason| ApiError::BadName { reason })?;
    let mut slot = state.slots.acquire(&facility_id)?;
    let content_length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = read_limited(body, content_length, state.max_body_bytes, &mut slot).await?;
    accept(state, slot, facility_id, name, bytes).await
}

async fn post_multipart(
    State(state): State<Arc<PushState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let facility_id = authenticate(&state.keys, &headers, None)?;
    let mut slot = state.slots.acquire(&facility_id)?;
    let (name, bytes) =
        multipart::read_file(&headers, body, state.max_body_bytes, &mut slot).await?;
    accept(&state, slot, facility_id, name, bytes).await
}

/// The facility the request's key belongs to; 403 when the request claims
/// another one (in the path or `X-Facility-Id`).
fn authenticate(
    keys: &KeyIndex,
    headers: &HeaderMap,
    claimed_in_path: Option<&str>,
) -> Result<String, ApiError> {
    let key = presented_key(headers).ok_or(ApiError::MissingKey)?;
    let facility_id = keys.facility_of(key).ok_or(ApiError::UnknownKey)?;
    let claimed_in_header = headers.get(FACILITY_HEADER).map(|v| v.as_bytes());
    let claims_other = claimed_in_path.is_some_and(|c| c != facility_id)
        || claimed_in_header.is_some_and(|c| c != facility_id.as_bytes());
    if claims_other {
        tracing::warn!(
            facility_id,
            "A key was used to push for another facility; refused."
        );
        return Err(ApiError::OtherFacility);
    }
    Ok(facility_id.to_string())
}

/// Writes and publishes the file unless it was accepted recently; `slot`
/// is held until then.
async fn accept(
    state: &PushState,
    _slot: UploadSlot,
    facility_id: String,
    file_name: String,
    bytes: Bytes,
) -> Result<Accepted, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Empty);
    }
    let file = RawFile {
        facility_id: facility_id.clone(),
        source: Source::Http,
        file_name,
        bytes,
        received_at: Utc::now(),
    }
    .identify()
    .await;
    let file_id = file.file_id().to_string();
    if let Some(raw_path) = state.recent.get(&facility_id, &file_id) {
        tracing::info!(
            facility_id,
            file_id,
            "File re-sent; answered as a duplicate."
        );
        return Ok(Accepted {
            file_id,
            facility_id,
            raw_path,
            duplicate: true,
        });
    }
    let receipt = state
        .ingestor
        .ingest_identified(file)
        .await
        .map_err(|error| {
            // The sender retries on 503; nothing is kept here.
            WorkFailed {
                component: "api_connector",
                work: "pushed file",
                origin: None,
                dataset: None,
                file: Some((&facility_id, &file_id)),
                attempt: 1,
                retry_in: None,
                error: &error,
            }
            .emit();
            match error.kind() {
                ErrorKind::Retryable => ApiError::Unavailable,
                ErrorKind::BadInput | ErrorKind::Fatal => ApiError::Internal,
            }
        })?;
    state
        .recent
        .insert(&facility_id, &receipt.file_id, &receipt.raw_path);
    Ok(Accepted {
        file_id: receipt.file_id,
        facility_id,
        raw_path: receipt.raw_path,
        duplicate: false,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path as FsPath;

    use axum::http::HeaderValue;
    use medlake_common::facilities::Registry;
    use medlake_common::raw_file::sha256_hex;

    use super::*;

    fn keys() -> KeyIndex {
        let yaml = format!(
            "facilities:\n  - id: A\n    api_key_sha256: {}\n  - id: B\n    api_key_sha256: {}\n",
            sha256_hex(b"ka"),
            sha256_hex(b"kb")
        );
        KeyIndex::from_registry(&Registry::parse(&yaml, FsPath::new("f")).unwrap())
            .unwrap()
            .0
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Serves the push API in-process. Its producer points at a closed port:
    /// these tests never get as far as publishing.
    async fn serve(max_body_bytes: usize, uploads: usize) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let kafka = medlake_common::config::KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            ..Default::default()
        };
        let ingestor = Ingestor::with_parts(
            medlake_common::ingest::RawZone::open(dir.path().to_str().unwrap()).unwrap(),
            medlake_common::kafka::producer(&kafka).unwrap(),
            "t".into(),
            &medlake_common::ingest::IngestConfig::default(),
        );
        let state = Arc::new(PushState {
            keys: keys(),
            recent: Arc::new(RecentFiles::new(10)),
            ingestor: Arc::new(ingestor),
            max_body_bytes,
            slots: UploadSlots::new(slots::UploadLimits {
                max_uploads: uploads,
                max_per_facility: uploads,
                max_memory_bytes: 1 << 20,
                inline_limit_bytes: 1 << 10,
            }),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
        (format!("http://{addr}"), dir)
    }

    #[tokio::test]
    async fn uploads_beyond_the_concurrency_limit_are_told_to_retry() {
        let (base, _dir) = serve(10, 1).await;
        let client = reqwest::Client::new();
        let url = format!("{base}/v1/files/a.csv");
        // A first upload that stays open, holding the only permit.
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        tx.try_send(Ok(vec![1; 5])).unwrap();
        let first = tokio::spawn(
            client
                .put(&url)
                .bearer_auth("ka")
                .body(reqwest::Body::wrap_stream(rx))
                .send(),
        );
        // (Empty bodies: should one win the permit before the first upload
        // does, it is answered 422 at once and the loop tries again.)
        let second = loop {
            let r = client
                .put(&url)
                .bearer_auth("kb")
                .body("")
                .send()
                .await
                .unwrap();
            if r.status() == 503 {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(second.headers().contains_key("retry-after"));
        let json: serde_json::Value = second.json().await.unwrap();
        assert_eq!(json["error"]["code"], "busy");

        // The first one passes the limit: 413, and its permit is returned.
        tx.try_send(Ok(vec![2; 10])).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), 413);
        let third = client
            .put(&url)
            .bearer_auth("kb")
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(third.status(), 422);
        let unknown = client.get(format!("{base}/nope")).send().await.unwrap();
        assert_eq!(unknown.status(), 404);
        let json: serde_json::Value = unknown.json().await.unwrap();
        assert_eq!(json["error"]["code"], "not_found");
    }

    #[test]
    fn a_key_pushes_for_its_own_facility_only() {
        let keys = keys();
        let ok = authenticate(&keys, &headers(&[("authorization", "Bearer ka")]), None);
        assert_eq!(ok.unwrap(), "A");
        let ok = authenticate(
            &keys,
            &headers(&[("x-api-key", "kb"), ("x-facility-id", "B")]),
            Some("B"),
        );
        assert_eq!(ok.unwrap(), "B");

        let missing = authenticate(&keys, &headers(&[]), None).unwrap_err();
        assert!(matches!(missing, ApiError::MissingKey));
        let wrong = authenticate(&keys, &headers(&[("x-api-key", "kc")]), None).unwrap_err();
        assert!(matches!(wrong, ApiError::UnknownKey));
        let header_claim = authenticate(
            &keys,
            &headers(&[("x-api-key", "ka"), ("x-facility-id", "B")]),
            None,
        )
        .unwrap_err();
        assert!(matches!(header_claim, ApiError::OtherFacility));
        let path_claim =
            authenticate(&keys, &headers(&[("x-api-key", "ka")]), Some("B")).unwrap_err();
        assert!(matches!(path_claim, ApiError::OtherFacility));
    }
}
