//! HTTP GET with a size limit and retries: 5xx, 429, timeouts and
//! connection errors are retried with [`Backoff`]; other answers are final.
//!
//! Redirects are followed only within the same origin, so a secret header
//! never travels to another host behind the endpoint's back. Internal
//! addresses are refused unless the endpoint allows them ([`super::guard`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use medlake_common::budget::{ByteBudget, Held};
use medlake_common::{Shutdown, metrics};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::redirect;

use super::guard::{GuardedResolver, is_refused, refused_literal};
use crate::config::PullConfig;
use medlake_common::backoff::Backoff;

/// A GET failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the server answered HTTP {status}")]
    Status { status: u16 },
    #[error("request failed: {source}")]
    Transport { source: reqwest::Error },
    #[error("the response is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "{host} is a loopback, private or link-local address, which pull endpoints may not reach (allow_private_network: true allows it)"
    )]
    Refused { host: String },
    #[error("shutting down")]
    Cancelled,
}

impl FetchError {
    /// Whether trying again may help: 5xx, 429, timeouts, connection errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status } => *status >= 500 || *status == 429,
            FetchError::Transport { .. } => true,
            FetchError::TooLarge { .. } | FetchError::Refused { .. } | FetchError::Cancelled => {
                false
            }
        }
    }

    fn transport(source: reqwest::Error) -> Self {
        // Download URLs may name files; keep them out of errors and logs.
        FetchError::Transport {
            source: source.without_url(),
        }
    }
}

/// GETs pages and files for every pull endpoint.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    backoff: Backoff,
    max_attempts: u32,
    max_bytes: usize,
    /// The bytes all pull endpoints' bodies hold at once (shared by every
    /// clone and by the fetchers built with the same budget).
    budget: ByteBudget,
    /// Whether internal addresses may be reached (see [`super::guard`]).
    allow_private: bool,
}

impl Fetcher {
    /// A fetcher for endpoints that may reach internal addresses only when
    /// `allow_private` (`allow_private_network` in the registry), whose
    /// bodies hold their size of `budget` while they live.
    pub fn new(
        config: &PullConfig,
        allow_private: bool,
        budget: ByteBudget,
    ) -> Result<Self, reqwest::Error> {
        let same_origin = redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().map(url::Url::origin);
            if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else if first.is_some_and(|o| o == attempt.url().origin()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let mut builder = reqwest::Client::builder();
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_millis(config.request_timeout_ms.min(10_000)))
            .redirect(same_origin)
            .user_agent(concat!("medlake/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            backoff: Backoff::from_ms(config.retry_backoff_initial_ms, config.retry_backoff_max_ms),
            max_attempts: config.max_attempts.max(1),
            max_bytes: config.max_file_bytes,
            budget,
            allow_private,
        })
    }

    /// GETs `url` (with `auth` when given), retrying what can be retried.
    /// `endpoint` is the metric label.
    pub async fn get(
        &self,
        url: &url::Url,
        auth: Option<&(HeaderName, HeaderValue)>,
        endpoint: &str,
        shutdown: &Shutdown,
    ) -> Result<Fetched, FetchError> {
        let mut attempt = 0;
        loop {
            let result = tokio::select! {
                result = self.get_once(url, auth) => result,
                () = shutdown.cancelled() => return Err(FetchError::Cancelled),
            };
            match result {
                Err(error) if error.is_retryable() && attempt + 1 < self.max_attempts => {
                    metrics::API_PULL_RETRIES
                        .with_label_values(&[endpoint])
                        .inc();
                    let delay = self.backoff.full_jitter(attempt);
                    tracing::debug!(
                        endpoint,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        %error,
                        "Pull request failed; retrying."
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => return Err(FetchError::Cancelled),
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn get_once(
        &self,
        url: &url::Url,
        auth: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<Fetched, FetchError> {
        if !self.allow_private {
            refuse_internal(url).await?;
        }
        let mut request = self.client.get(url.clone());
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        let mut response = request.send().await.map_err(FetchError::transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
            });
        }
        let limit = self.max_bytes;
        let announced = response.content_length();
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge { limit });
        }
        // The announced size, or the limit when the body is chunked (the
        // client refuses a body longer than its Content-Length).
        let held = self.budget.hold(announced.unwrap_or(limit as u64)).await;
        let capacity = usize::try_from(announced.unwrap_or(0)).unwrap_or(0);
        let mut buffer = BytesMut::with_capacity(capacity);
        while let Some(chunk) = response.chunk().await.map_err(FetchError::transport)? {
            if buffer.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            bytes: buffer.freeze(),
            held,
        })
    }
}

/// A body and its share of the download budget, given back when both are
/// dropped: keep `held` until the bytes are published.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Bytes,
    pub held: Held,
}

impl std::ops::Deref for Fetched {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Refuses `url` when its host is, or resolves only to, an internal
/// address: a final answer, where the resolver's refusal at connect time
/// would look like a network error and be retried.
async fn refuse_internal(url: &url::Url) -> Result<(), FetchError> {
    let refused = || FetchError::Refused {
        host: url.host_str().unwrap_or_default().to_string(),
    };
    if refused_literal(url).is_some() {
        return Err(refused());
    }
    if let Some(url::Host::Domain(name)) = url.host() {
        // A name that does not resolve is the connection's error to report.
        if let Ok(addrs) = tokio::net::lookup_host((name, 0)).await {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| is_refused(a.ip())) {
                return Err(refused());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::StatusCode;

    use super::*;

    /// A local server: `/flaky` fails `failures` times with 503 then answers
    /// "ok"; `/big` answers 100 bytes; `/missing` is 404; `/slow` sleeps;
    /// `/auth` echoes the header. Returns its base URL and the hit counter.
    async fn server(failures: u32) -> (url::Url, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let app = axum::Router::new()
            .route(
                "/flaky",
                axum::routing::get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < failures {
                            Err(StatusCode::SERVICE_UNAVAILABLE)
                        } else {
                            Ok("ok")
                        }
                    }
                }),
            )
            .route("/big", axum::routing::get(|| async { vec![b'x'; 100] }))
            .route(
                "/missing",
                axum::routing::get(|| async { StatusCode::NOT_FOUND }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/auth",
                axum::routing::get(|h: axum::http::HeaderMap| async move {
                    h.get("x-token")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url::Url::parse(&format!("http://{addr}/")).unwrap(), hits)
    }

    fn fetcher(max_attempts: u32, max_file_bytes: usize) -> Fetcher {
        let config = PullConfig {
            request_timeout_ms: 300,
            max_attempts,
            retry_backoff_initial_ms: 1,
            retry_backoff_max_ms: 5,
            max_file_bytes,
            ..PullConfig::default()
        };
        Fetcher::new(&config, true, ByteBudget::new(1 << 20)).unwrap()
    }

    #[tokio::test]
    async fn internal_addresses_are_refused_at_once_unless_allowed() {
        let (base, hits) = server(0).await;
        let guarded =
            Fetcher::new(&PullConfig::default(), false, ByteBudget::new(1 << 20)).unwrap();
        let shutdown = Shutdown::new();
        for url in [
            base.join("flaky").unwrap(),
            url::Url::parse("http://169.254.169.254/latest/meta-data/").unwrap(),
            url::Url::parse(&format!("http://localhost:{}/flaky", base.port().unwrap())).unwrap(),
        ] {
            let error = guarded
                .get(&url, None, "t/ssrf", &shutdown)
                .await
                .unwrap_err();
            assert!(
                matches!(error, FetchError::Refused { .. }),
                "{url}: {error}"
            );
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "no request reached the server"
        );
        fetcher(1, 100)
            .get(&base.join("flaky").unwrap(), None, "t/ok", &shutdown)
            .await
            .unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1, "allowed: reached");
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let (base, hits) = server(2).await;
        let shutdown = Shutdown::new();
        let body = fetcher(3, 1000)
            .get(&base.join("flaky").unwrap(), None, "t/flaky", &shutdown)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn attempts_are_bounded_and_client_errors_not_retried() {
        let (base, hits) = server(10).await;
        let shutdown = Shutdown::new();
        let f = fetcher(3, 1000);
        let err = f
            .get(&base.join("flaky").unwrap(), None, "t/flaky", &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Status { status: 503 }), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        let err = f
            .get(&base.join("missing").unwrap(), None, "t/m", &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Status { status: 404 }), "{err}");
    }

    #[tokio::test]
    async fn size_limit_and_timeouts() {
        let (base, _) = server(0).await;
        let shutdown = Shutdown::new();
        let err = fetcher(1, 99)
            .get(&base.join("big").unwrap(), None, "t/big", &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::TooLarge { limit: 99 }), "{err}");
        let exact = fetcher(1, 100)
            .get(&base.join("big").unwrap(), None, "t/big", &shutdown)
            .await
            .unwrap();
        assert_eq!(exact.len(), 100);
        let err = fetcher(2, 100)
            .get(&base.join("slow").unwrap(), None, "t/slow", &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Transport { .. }), "{err}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_body_holds_its_share_of_the_budget_until_dropped() {
        let (base, _) = server(0).await;
        let shutdown = Shutdown::new();
        let budget = ByteBudget::new(1024);
        let config = PullConfig {
            max_attempts: 1,
            ..PullConfig::default()
        };
        let f = Fetcher::new(&config, true, budget.clone()).unwrap();
        let big = base.join("big").unwrap();
        let first = f.get(&big, None, "t/b", &shutdown).await.unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(budget.available_bytes(), 0, "100 bytes hold one KiB");

        let second = tokio::spawn({
            let (f, big, shutdown) = (f.clone(), big.clone(), shutdown.clone());
            async move { f.get(&big, None, "t/b", &shutdown).await.map(|b| b.len()) }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "waits while the first body lives");
        drop(first);
        assert_eq!(second.await.unwrap().unwrap(), 100);
        assert_eq!(budget.available_bytes(), 1024);
    }

    #[tokio::test]
    async fn sends_the_auth_header_and_stops_on_shutdown() {
        let (base, _) = server(1000).await;
        let shutdown = Shutdown::new();
        let auth = (
            HeaderName::from_static("x-token"),
            HeaderValue::from_static("t0k"),
        );
        let body = fetcher(1, 100)
            .get(&base.join("auth").unwrap(), Some(&auth), "t/a", &shutdown)
            .await
            .unwrap();
        assert_eq!(&body[..], b"t0k");
        shutdown.cancel();
        let err = fetcher(100, 100)
            .get(&base.join("flaky").unwrap(), None, "t/f", &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::Cancelled));
    }

    #[test]
    fn retries_server_errors_and_throttling_only() {
        let status = |s| FetchError::Status { status: s };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!FetchError::TooLarge { limit: 1 }.is_retryable());
        assert!(!FetchError::Cancelled.is_retryable());
    }
}
