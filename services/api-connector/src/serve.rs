//! The push API's HTTP server, with the limits a public endpoint needs:
//!
//! - **TLS** ([`crate::tls`]) unless plain HTTP was chosen: the handshake
//!   must finish within `header_read_timeout_ms` (a client that opens a
//!   connection and never sends its ClientHello is closed), and a
//!   connection in its handshake holds one of the `max_connections`.
//!   Anything that is not TLS (plain HTTP sent to the HTTPS port) fails
//!   the handshake and is closed.
//! - **HTTP/1.1 only.** Uploads gain nothing from HTTP/2's multiplexing,
//!   and protocol detection (reading a preface before any timer runs) would
//!   let a connection that sends nothing stay open.
//! - **Headers** must arrive within `header_read_timeout_ms`, on a new
//!   connection and between the requests of a kept-alive one, so a client
//!   that sends a byte a second (slowloris), or opens a connection and sends
//!   nothing, is closed instead of holding a slot forever. The same timer
//!   closes idle keep-alive connections.
//! - **Headers are small**: at most `max_header_bytes` are buffered per
//!   connection, so unfinished headers cannot fill memory.
//! - **Bodies keep moving**: each chunk must arrive within
//!   `body_chunk_timeout_ms`; a stalled upload fails and frees its slot.
//! - **Connections are capped** at `max_connections`; one more is closed at
//!   once (`medlake_api_connector_connections_refused_total`), so the worst case of
//!   every connection buffering its headers is bounded:
//!   `max_connections × max_header_bytes`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use medlake_common::{Shutdown, admin, metrics};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::metrics::TLS_HANDSHAKES_FAILED;

/// How connections are spoken to.
#[derive(Clone)]
pub enum Transport {
    /// Plain HTTP (`api_connector.tls: none`).
    Plain,
    /// HTTPS: a TLS handshake first.
    Tls(TlsAcceptor),
}

/// The server's limits (from [`crate::config::ApiConnectorConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub body_chunk_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop`, then lets open requests finish
/// (up to `drain`).
pub async fn serve(
    listener: TcpListener,
    transport: Transport,
    app: Router,
    limits: ServerLimits,
    stop: Shutdown,
    drain: Duration,
) -> std::io::Result<()> {
    let app = app.layer(RequestBodyTimeoutLayer::new(limits.body_chunk_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        // Reap finished connections as we go.
        while connections.try_join_next().is_some() {}
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors and the like: the listener is fine.
            Err(error) => {
                tracing::warn!(%error, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::API_CONNECTIONS_REFUSED.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone();
        let stop = stop.clone();
        let transport = transport.clone();
        connections.spawn(async move {
            let _slot = slot;
            match transport {
                Transport::Plain => admin::serve_http1(stream, service, limits.header_read_timeout, limits.max_header_bytes, stop).await,
                Transport::Tls(acceptor) => {
                    let secured = tokio::select! {
                        secured = handshake(acceptor, stream, limits.header_read_timeout) => secured,
                        () = stop.cancelled() => None,
                    };
                    if let Some(stream) = secured {
                        admin::serve_http1(stream, service, limits.header_read_timeout, limits.max_header_bytes, stop).await;
                    }
                }
            }
        });
    }
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "Connections still open after the drain time; closing them."
        );
        connections.abort_all();
    }
    Ok(())
}

/// The TLS handshake of a new connection, within `timeout`; `None` (and
/// counted) when it fails or takes longer.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed; connection closed.");
            TLS_HANDSHAKES_FAILED.with_label_values(&["error"]).inc();
            None
        }
        Err(_) => {
            TLS_HANDSHAKES_FAILED.with_label_values(&["timeout"]).inc();
            None
        }
    }
}
