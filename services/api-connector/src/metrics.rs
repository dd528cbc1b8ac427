//! The push API's own metrics (TLS and upload slots), registered in the
//! registry `/metrics` serves ([`medlake_common::metrics::REGISTRY`]) and
//! named like every medlake metric. Labels are fixed sets: `outcome`,
//! `reason`.

use std::sync::LazyLock;

use medlake_common::metrics::{counter_vec, gauge};
use prometheus::{IntCounterVec, IntGauge};

/// Certificate files read after a change: `loaded` (now served) or
/// `refused` (the previous certificate stays).
pub static TLS_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_tls_reloads_total",
        "Changed TLS certificate files read by the push API, by outcome (loaded, refused).",
        &["outcome"],
    )
});

/// Unix time at which the served certificate expires (its `notAfter`).
pub static TLS_CERT_EXPIRY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_api_connector_tls_certificate_expiry_timestamp_seconds",
        "Unix time at which the push API's served TLS certificate expires.",
    )
});

/// Unix time at which the served certificate was loaded.
pub static TLS_CERT_LOADED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_api_connector_tls_certificate_loaded_timestamp_seconds",
        "Unix time at which the push API's served TLS certificate was loaded.",
    )
});

/// Connections closed before TLS was set up: `timeout` (no handshake
/// within the header read timeout) or `error` (not TLS, no common cipher).
pub static TLS_HANDSHAKES_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_tls_handshakes_failed_total",
        "Push API connections closed before the TLS handshake finished, by reason (timeout, error).",
        &["reason"],
    )
});

/// Uploads in progress (body read, raw zone write, Kafka ack).
pub static UPLOADS_IN_PROGRESS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_api_connector_uploads_in_progress",
        "Push API uploads in progress, all facilities together.",
    )
});

/// Bytes of the upload memory budget held by uploads in progress.
pub static UPLOAD_MEMORY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_api_connector_upload_memory_bytes",
        "Bytes of the push API's upload memory budget held by uploads in progress.",
    )
});

/// Uploads refused for want of room: `facility_share` (429: the facility
/// has its share in progress), `slots` or `memory` (503: all facilities
/// together are at `max_concurrent_uploads` or `max_upload_memory_bytes`).
pub static UPLOADS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_uploads_refused_total",
        "Push API uploads refused for want of room, by reason (facility_share, slots, memory).",
        &["reason"],
    )
});
