//! The admin HTTP server every service runs: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (the service can do work:
//! connected, assigned, its table open). Kubernetes probes and Prometheus
//! scrape it; nothing here touches data.
//!
//! It has no authentication, so it must stay inside the cluster (the chart
//! gives it Services of its own, never the push API's). Even so it holds
//! the line against a client that misbehaves: HTTP/1.1 only, headers within
//! [`HEADER_READ_TIMEOUT`] and [`MAX_HEADER_BYTES`] (a silent or slow
//! connection is closed), at most [`MAX_CONNECTIONS`] at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::metrics;
use crate::shutdown::Shutdown;

/// Readiness, shared between a service and its admin server.
#[derive(Clone, Debug, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the service ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        metrics::READY.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin server: {source}")]
pub struct AdminError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// How long a connection may take to send a request's headers, new or kept
/// alive: Prometheus and the kubelet send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Header bytes one connection may buffer (hyper's smallest buffer).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// Admin connections open at once; one more is closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves HTTP/1.1 on one connection until it closes: headers within
/// `header_read_timeout` on every request, at most `max_header_bytes`
/// buffered (hyper's floor is 8 KiB); on `stop` the request in progress
/// finishes first. The one connection loop of every medlake server.
pub async fn serve_http1<S>(
    stream: S,
    app: Router,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    stop: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(max_header_bytes.max(MAX_HEADER_BYTES));
    let service = TowerToHyperService::new(app);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Bounds of a plain HTTP/1.1 server ([`serve_plain`]).
#[derive(Debug, Clone, Copy)]
pub struct PlainLimits {
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `app` over plain HTTP/1.1 on `listener` until `stop`, each
/// connection by [`serve_http1`], at most `limits.max_connections` at once.
pub async fn serve_plain(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: PlainLimits,
    stop: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("Connection refused: the server holds as many as it may.");
            continue;
        };
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            serve_http1(
                stream,
                app,
                limits.header_read_timeout,
                limits.max_header_bytes,
                stop,
            )
            .await;
        });
    }
    tracing::trace!("Stopped accepting connections.");
}

/// Binds `addr` and serves the admin endpoints until `shutdown`. Returns the
/// bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: Shutdown,
) -> Result<SocketAddr, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError { addr, source })?;
    let app = router(health);
    tokio::spawn(serve_plain(
        listener,
        app,
        PlainLimits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_header_bytes: MAX_HEADER_BYTES,
        },
        shutdown,
    ));
    tracing::info!(addr = %bound, "Admin server listening.");
    Ok(bound)
}

/// The admin routes, for embedding in another server.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(),
    )
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let health = Health::new();
        let shutdown = Shutdown::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            health.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"));
        assert!(metrics.contains("medlake_ready 1"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn silent_and_flooding_clients_are_closed() {
        let shutdown = Shutdown::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            Health::new(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();

        // A connection that never sends its headers is closed.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT + Duration::from_secs(5),
            silent.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "a silent connection stays open");
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_millis(500));

        // Headers past the buffer get an error, not an ever-growing buffer.
        let mut flood = tokio::net::TcpStream::connect(addr).await.unwrap();
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n",
            "a".repeat(64 * 1024)
        );
        let _ = flood.write_all(huge.as_bytes()).await;
        let mut response = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), flood.read_to_string(&mut response))
            .await
            .expect("the flooding connection is answered and closed");
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 431"),
            "{response}"
        );

        // Connections past the cap are closed at once; the server still works.
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "past the cap: closed"
        );
        drop(held);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        shutdown.cancel();
    }
}
