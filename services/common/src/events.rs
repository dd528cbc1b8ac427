//! Events that log and count together.
//!
//! An event is a struct that names what happened; [`Event::emit`] writes its
//! one log line *and* moves its counters, in one place (Vector's
//! `internal_events`). A counter is never bumped without its line, nor the
//! reverse, and the level follows the error's kind: fatal errors log at
//! ERROR, the rest at WARN. Events are emitted once per failure of a file,
//! batch or poll, never per record.
//!
//! Fields are identifiers only (component, endpoint, topic, partition,
//! offset, stage); error texts are built to carry no field values (PHI).

use std::fmt::Display;
use std::time::Duration;

use crate::error::{Classify, ErrorKind};
use crate::metrics::{CONNECTOR_POLL_ERRORS, ERRORS};

/// Something that happened, with its log line and its counters.
pub trait Event {
    /// Logs the event and counts it.
    fn emit(self);
}

fn count(component: &'static str, kind: ErrorKind) {
    ERRORS.with_label_values(&[component, kind.as_str()]).inc();
}

fn millis(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A poll of a connector endpoint failed (FTP folder, HTTP pull).
/// Counts `medlake_connector_poll_errors_total{endpoint, stage}` and
/// `medlake_errors_total{component, kind}`.
pub struct PollFailed<'a, E: Classify + Display> {
    /// `ftp_connector` or `api_connector`.
    pub component: &'static str,
    /// The endpoint's id.
    pub endpoint: &'a str,
    /// Where the poll failed (`connect`, `list`, `fetch`, ...).
    pub stage: &'static str,
    /// Consecutive failures of this endpoint so far.
    pub failures: u32,
    /// When it is tried again; `None` for the next regular poll.
    pub retry_in: Option<Duration>,
    pub error: &'a E,
}

impl<E: Classify + Display> Event for PollFailed<'_, E> {
    fn emit(self) {
        let kind = self.error.kind();
        CONNECTOR_POLL_ERRORS
            .with_label_values(&[self.endpoint, self.stage])
            .inc();
        count(self.component, kind);
        let (component, endpoint, stage, failures, error) = (
            self.component,
            self.endpoint,
            self.stage,
            self.failures,
            self.error,
        );
        let retry_in_ms = millis(self.retry_in);
        if kind == ErrorKind::Fatal {
            tracing::error!(component, endpoint, stage, %error, "Endpoint failed fatally.");
        } else {
            tracing::warn!(component, endpoint, stage, failures, retry_in_ms, %error,
                "Poll failed; trying again.");
        }
    }
}

/// Consuming from Kafka failed (broker away, topic missing); the consumer
/// pauses and goes on, so it counts as retryable.
pub struct ConsumeFailed<'a, E: Display> {
    /// `parser` or `sink`.
    pub component: &'static str,
    pub pause: Duration,
    pub error: &'a E,
}

impl<E: Display> Event for ConsumeFailed<'_, E> {
    fn emit(self) {
        count(self.component, ErrorKind::Retryable);
        let (component, error) = (self.component, self.error);
        let pause_ms = millis(Some(self.pause));
        tracing::warn!(component, pause_ms, %error, "Consumer error; retrying.");
    }
}

/// One unit of work (a raw file, a batch, a pushed file) failed. Fatal
/// errors stop the component; others are retried after `retry_in`, or
/// answered (the push API) when it is `None`.
pub struct WorkFailed<'a, E: Classify + Display> {
    /// `parser`, `sink` or `api_connector`.
    pub component: &'static str,
    /// What failed, for the log line: `raw file`, `batch`, `push`.
    pub work: &'static str,
    /// Where the work came from, when it came from Kafka.
    pub origin: Option<(&'a str, i32, i64)>,
    /// The data set (table), when there is one.
    pub dataset: Option<&'a str>,
    /// The file and its facility, when the work is one file.
    pub file: Option<(&'a str, &'a str)>,
    /// Failures of this unit so far.
    pub attempt: u32,
    pub retry_in: Option<Duration>,
    pub error: &'a E,
}

impl<E: Classify + Display> Event for WorkFailed<'_, E> {
    fn emit(self) {
        let kind = self.error.kind();
        count(self.component, kind);
        let (component, work, dataset, attempt, error) = (
            self.component,
            self.work,
            self.dataset,
            self.attempt,
            self.error,
        );
        let (topic, partition, offset) = match self.origin {
            Some((topic, partition, offset)) => (Some(topic), Some(partition), Some(offset)),
            None => (None, None, None),
        };
        let (facility_id, file_id) = match self.file {
            Some((facility, file)) => (Some(facility), Some(file)),
            None => (None, None),
        };
        let retry_in_ms = millis(self.retry_in);
        if kind == ErrorKind::Fatal {
            tracing::error!(component, work, dataset, facility_id, file_id, topic, partition,
                offset, %error, "Failed fatally.");
        } else {
            tracing::warn!(component, work, dataset, facility_id, file_id, topic, partition,
                offset, attempt, retry_in_ms, kind = kind.as_str(), %error,
                "Failed; will be retried.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Boom(ErrorKind);

    impl Display for Boom {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("boom")
        }
    }

    impl Classify for Boom {
        fn kind(&self) -> ErrorKind {
            self.0
        }
    }

    fn errors(component: &str, kind: &str) -> u64 {
        ERRORS.with_label_values(&[component, kind]).get()
    }

    #[test]
    fn every_event_moves_its_counters() {
        let before = errors("events_test", "retryable");
        let polls = CONNECTOR_POLL_ERRORS
            .with_label_values(&["e1", "list"])
            .get();
        PollFailed {
            component: "events_test",
            endpoint: "e1",
            stage: "list",
            failures: 1,
            retry_in: Some(Duration::from_millis(5)),
            error: &Boom(ErrorKind::Retryable),
        }
        .emit();
        ConsumeFailed {
            component: "events_test",
            pause: Duration::from_millis(1),
            error: &Boom(ErrorKind::Retryable),
        }
        .emit();
        WorkFailed {
            component: "events_test",
            work: "batch",
            origin: Some(("t", 0, 7)),
            dataset: Some("d"),
            file: None,
            attempt: 1,
            retry_in: None,
            error: &Boom(ErrorKind::Fatal),
        }
        .emit();
        assert_eq!(errors("events_test", "retryable"), before + 2);
        assert_eq!(errors("events_test", "fatal"), 1);
        assert_eq!(
            CONNECTOR_POLL_ERRORS
                .with_label_values(&["e1", "list"])
                .get(),
            polls + 1
        );
    }
}
