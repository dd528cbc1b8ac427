//! Every metric medlake exports, defined in one place.
//!
//! Names follow `medlake_<component>_<noun>_<unit>[_total]` in base units
//! (seconds, bytes); counters end in `_total`. Labels are bounded sets only:
//! `dataset`, `topic`, `partition`, `stage`, `error_code`, `source`, `mode`,
//! `route`, `status`, `endpoint` (a configured endpoint id, never a file
//! name or free text). Never put a record value, a file name or an error
//! message in a label.

use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry `/metrics` serves.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Buckets for durations from a millisecond to a couple of minutes.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    REGISTRY
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("valid metric"))
}

pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

pub fn histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid metric"),
    )
}

pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
}

/// The Prometheus text exposition of every registered metric.
pub fn render() -> String {
    // Touch the process-wide metrics so they appear even before first use.
    LazyLock::force(&BUILD_INFO);
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&REGISTRY.gather(), &mut out)
        .expect("text encoding cannot fail");
    String::from_utf8(out).expect("prometheus text is UTF-8")
}

// ---------------------------------------------------------------- process

/// Constant 1, labelled with the version: shows which build runs where.
pub static BUILD_INFO: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_build_info",
        "Always 1; the version label says which medlake build runs.",
        &["version", "service"],
    )
});

/// Whether the service reports itself ready (1) or not (0).
pub static READY: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_ready",
        "1 when the service is ready to do work, else 0.",
    )
});

/// Errors by component and error kind (retryable, bad_input, fatal).
pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_errors_total",
        "Errors seen, by component and error kind.",
        &["component", "kind"],
    )
});

// ---------------------------------------------------------------- parser

/// Input files finished, by ledger status (`processed`, `partial`,
/// `rejected`, `duplicate`).
pub static PARSER_FILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_parser_files_total",
        "Input files the parser finished, by ledger status.",
        &["status"],
    )
});

/// Archive entries read, by the data set they were routed to (`none` when
/// no data set matched).
pub static PARSER_ENTRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_parser_entries_total",
        "Archive entries read, by data set (none when unrouted).",
        &["dataset"],
    )
});

/// Records produced, by data set.
pub static PARSER_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_parser_records_total",
        "Records produced to the records topics, by data set.",
        &["dataset"],
    )
});

/// Dead letters produced, by data set (`none` for a whole file or an
/// unrouted entry), stage and error code.
pub static PARSER_REJECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_parser_rejects_total",
        "Files, entries and records dead-lettered, by data set, stage and error code.",
        &["dataset", "stage", "error_code"],
    )
});

/// Bytes of input files read (inline or from the raw zone).
pub static PARSER_BYTES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "medlake_parser_bytes_in_total",
        "Bytes of input files the parser read.",
    )
});

/// Time to parse one file and commit its transaction.
pub static PARSER_FILE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "medlake_parser_file_duration_seconds",
        "Time from taking an input file to committing its transaction.",
        DURATION_BUCKETS,
    )
});

/// Kafka transactions, by outcome (`committed`, `aborted`).
pub static PARSER_TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_parser_transactions_total",
        "Kafka transactions of the parser, by status (committed, aborted).",
        &["status"],
    )
});

/// File ids the parser knows as settled (the duplicate check's memory).
pub static PARSER_KNOWN_FILES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "medlake_parser_known_files",
        "File ids held in memory to recognise duplicates.",
    )
});

// ---------------------------------------------------------------- sink

/// Buckets for batch sizes in rows (messages).
pub const SINK_BATCH_ROWS_BUCKETS: &[f64] = &[
    1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 50_000.0, 100_000.0, 500_000.0,
];

/// Buckets for batch sizes in bytes, 1 KiB to 256 MiB.
pub const SINK_BATCH_BYTES_BUCKETS: &[f64] = &[
    1024.0,
    16_384.0,
    131_072.0,
    1_048_576.0,
    8_388_608.0,
    33_554_432.0,
    67_108_864.0,
    134_217_728.0,
    268_435_456.0,
];

/// Messages the sink finished (written as rows or as dead letters), by data
/// set (table).
pub static SINK_MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_messages_total",
        "Messages the sink finished, as rows or dead letters, by data set.",
        &["dataset"],
    )
});

/// Rows handed to Delta, by data set and mode (`append` | `merge`; merge
/// counts events after reduction to the latest per key).
pub static SINK_ROWS_WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_rows_written_total",
        "Rows committed to Delta, by data set and mode.",
        &["dataset", "mode"],
    )
});

/// Messages per batch written, by data set.
pub static SINK_BATCH_ROWS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_sink_batch_rows",
        "Messages per batch written, by data set.",
        &["dataset"],
        SINK_BATCH_ROWS_BUCKETS,
    )
});

/// Bytes (message values as received) per batch written, by data set.
pub static SINK_BATCH_BYTES: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_sink_batch_bytes",
        "Bytes of message values per batch written, by data set.",
        &["dataset"],
        SINK_BATCH_BYTES_BUCKETS,
    )
});

/// Messages between the sink's position and the end of each partition,
/// updated after every batch.
pub static SINK_CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_sink_consumer_lag_messages",
        "Messages not yet written, per data set and partition (high watermark minus next offset).",
        &["dataset", "partition"],
    )
});

/// Time to commit one batch to Delta (including conflict retries), by data set.
pub static SINK_COMMIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_sink_commit_duration_seconds",
        "Time to commit one batch to Delta, conflict retries included, by data set.",
        &["dataset"],
        DURATION_BUCKETS,
    )
});

/// Buckets of the file-to-table latency: seconds, dense around the
/// seconds a file should take and up to the hours a backlog can.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
    300.0, 900.0, 3600.0,
];

/// From a file's arrival at a connector (`medlake.received_at`) to the
/// Delta commit holding its rows, by data set: observed once per file and
/// commit, so a file whose rows span two commits counts twice.
pub static SINK_FILE_TO_TABLE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_sink_file_to_table_seconds",
        "Seconds from a file's arrival at a connector to the Delta commit of its rows, by data set.",
        &["dataset"],
        LATENCY_BUCKETS,
    )
});

/// Commit attempts lost to a concurrent writer (retried by the sink, or
/// checked and rebased by delta-rs), by data set.
pub static SINK_COMMIT_CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_commit_conflicts_total",
        "Commit attempts that lost to another writer's commit (refused and retried, or checked and rebased onto it), by data set.",
        &["dataset"],
    )
});

/// Compactions the sink ran by itself, by data set and outcome.
pub static SINK_COMPACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_compactions_total",
        "Compactions (OPTIMIZE of small files) the sink ran after its commits, by data set and outcome (ok, failed).",
        &["dataset", "outcome"],
    )
});

/// Small files the sink's compactions replaced, by data set.
pub static SINK_COMPACTED_FILES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_compacted_files_total",
        "Small data files the sink's compactions replaced, by data set.",
        &["dataset"],
    )
});

/// Rows a MERGE inserted, updated or deleted, by data set and action.
pub static SINK_MERGE_ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_merge_rows_total",
        "Rows changed by MERGE, by data set and action (inserted, updated, deleted).",
        &["dataset", "action"],
    )
});

/// Data files in each table after the last commit.
pub static SINK_TABLE_FILES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_sink_table_files",
        "Live data files per table after the sink's last commit.",
        &["dataset"],
    )
});

/// Messages the sink could not write and sent to the dead-letter topic, by
/// data set and error code.
pub static SINK_DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_dead_letters_total",
        "Messages dead-lettered by the sink (stage write), by data set and error code.",
        &["dataset", "error_code"],
    )
});

/// Partitions assigned whose consumer group position was ahead of what
/// the table holds (the table was lost, restored or recreated while the
/// group survived), by data set. The sink follows the table, not the group.
pub static SINK_OFFSET_MISMATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_sink_offset_mismatches_total",
        "Partitions assigned whose consumer group position was ahead of the table's, by data set.",
        &["dataset"],
    )
});

/// Partitions the sink refuses to write because Kafka no longer retains
/// the offsets the table needs, by data set.
pub static SINK_PARTITIONS_REFUSED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_sink_partitions_refused",
        "Assigned partitions not written because Kafka no longer retains the offsets the table needs, by data set.",
        &["dataset"],
    )
});

// ---------------------------------------------------------------- connectors

/// Files a connector put in the raw zone and had acked by Kafka, by source
/// (`ftp`, `ftp_pull`, `http`, `http_pull`).
pub static CONNECTOR_FILES_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_connector_files_received_total",
        "Files ingested (raw zone written, Kafka acked), by source.",
        &["source"],
    )
});

/// Bytes of those files, by source.
pub static CONNECTOR_BYTES_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_connector_received_bytes_total",
        "Bytes of the files ingested, by source.",
        &["source"],
    )
});

/// Time from the start of the raw zone write to the broker's ack, by source.
pub static CONNECTOR_PUBLISH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_connector_publish_seconds",
        "Time to write a file to the raw zone and have Kafka ack it, by source.",
        &["source"],
        DURATION_BUCKETS,
    )
});

/// Failed polls of a pull endpoint, by endpoint id and stage (`connect`,
/// `login`, `list`, `download`, `ingest`, `finish`, ...).
pub static CONNECTOR_POLL_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_connector_poll_errors_total",
        "Failed polls of a pull endpoint, by endpoint id and stage.",
        &["endpoint", "stage"],
    )
});

/// Remote files set aside instead of ingested (too large), by endpoint id
/// and reason.
pub static CONNECTOR_FILES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_connector_files_rejected_total",
        "Remote files moved aside instead of ingested, by endpoint id and reason.",
        &["endpoint", "reason"],
    )
});

/// FTP sessions a connector holds open now, by endpoint id (a landing
/// server holds at most its `sessions`, whatever its facility count).
pub static CONNECTOR_FTP_SESSIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_connector_ftp_sessions",
        "FTP sessions held open, by endpoint id.",
        &["endpoint"],
    )
});

/// Folders on a landing server that belong to no registered facility (their
/// files are left alone), by endpoint id, as of the last walk.
pub static CONNECTOR_UNKNOWN_FOLDERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "medlake_connector_unknown_folders",
        "Landing server folders of no registered facility, ignored, by endpoint id.",
        &["endpoint"],
    )
});

/// Push API requests, by route template and HTTP status code.
pub static API_HTTP_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_http_requests_total",
        "Push API requests, by route template and HTTP status code.",
        &["route", "status"],
    )
});

/// Push API request duration (body read, raw zone write, Kafka ack), by route
/// template.
pub static API_HTTP_REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "medlake_api_connector_http_request_duration_seconds",
        "Push API request duration, by route template.",
        &["route"],
        DURATION_BUCKETS,
    )
});

/// Push API connections closed at once because `max_connections` were open.
pub static API_CONNECTIONS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "medlake_api_connector_connections_refused_total",
        "Push API connections closed at once because max_connections were open.",
    )
});

/// Pages fetched from HTTP pull endpoints, by endpoint id.
pub static API_PULL_PAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_pull_pages_total",
        "Pages fetched from HTTP pull endpoints, by endpoint id.",
        &["endpoint"],
    )
});

/// Retried HTTP pull requests (5xx, 429, timeouts), by endpoint id.
pub static API_PULL_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "medlake_api_connector_pull_retries_total",
        "Retried HTTP pull requests (5xx, 429, timeouts, connection errors), by endpoint id.",
        &["endpoint"],
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_follow_the_convention() {
        READY.set(1);
        ERRORS.with_label_values(&["test", "fatal"]).inc();
        let text = render();
        assert!(text.contains("medlake_ready 1"));
        assert!(text.contains("medlake_errors_total{component=\"test\",kind=\"fatal\"} 1"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("medlake_"), "{name}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
}
