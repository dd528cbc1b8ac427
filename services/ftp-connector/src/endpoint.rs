//! Polling one FTP folder: list, take the settled files one by one
//! (download, ingest, move or delete). [`Folder`] is what one folder
//! remembers between listings; [`Worker`] is the task of a customer's
//! server, which polls its one folder with its own session, sleeps and
//! repeats. A failure drops the session, counts a poll error and backs off;
//! it never touches the other endpoints, which run in their own tasks. The
//! landing server's folders are walked by a pool instead (`landing.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use medlake_common::backoff::Backoff;
use medlake_common::budget::ByteBudget;
use medlake_common::endpoints::ftp::{After, FtpEndpoint};
use medlake_common::events::{Event, PollFailed};
use medlake_common::ingest::{Ingestor, RawFile};
use medlake_common::logging::file_name_ref;
use medlake_common::{Classify, ErrorKind, Shutdown, metrics};

use crate::error::PollError;
use crate::session::{DOWNLOAD_SLACK_BYTES, Session};
use crate::stability::{RemoteFile, StabilityTracker};

/// One folder and the facility whose files it holds, with what the last
/// listing showed.
pub struct Folder {
    facility_id: String,
    endpoint: FtpEndpoint,
    ingestor: Arc<Ingestor>,
    /// The process's download memory, shared by every folder.
    budget: ByteBudget,
    tracker: StabilityTracker,
}

/// One endpoint polled by its own task and session.
pub struct Worker {
    folder: Folder,
    backoff: Backoff,
    session: Option<Session>,
}

/// What a poll did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    pub listed: usize,
    pub ingested: usize,
    pub rejected: usize,
    /// The session was left mid-transfer and must not be used again.
    pub session_spent: bool,
}

impl Folder {
    pub fn new(
        facility_id: String,
        endpoint: FtpEndpoint,
        ingestor: Arc<Ingestor>,
        budget: ByteBudget,
    ) -> Self {
        // The glob was checked when the registry was validated.
        let matcher = globset::Glob::new(&endpoint.glob)
            .map(|g| g.compile_matcher())
            .unwrap_or_else(|_| globset::Glob::new("*").expect("valid").compile_matcher());
        let tracker = StabilityTracker::new(endpoint.stability.clone(), matcher);
        Self {
            facility_id,
            endpoint,
            ingestor,
            budget,
            tracker,
        }
    }

    pub fn facility_id(&self) -> &str {
        &self.facility_id
    }

    pub fn endpoint(&self) -> &FtpEndpoint {
        &self.endpoint
    }

    /// Files its last listing saw that have not settled yet: worth listing
    /// again soon rather than a whole walk later.
    pub fn waiting(&self) -> usize {
        self.tracker.unsettled()
    }

    /// One listing of the session's current folder and the files it
    /// settled.
    pub async fn poll(
        &mut self,
        session: &mut Session,
        shutdown: &Shutdown,
    ) -> Result<PollOutcome, PollError> {
        let listing = session.list().await?;
        let mut outcome = PollOutcome {
            listed: listing.len(),
            ..PollOutcome::default()
        };
        let settled = self.tracker.observe(listing);
        for file in settled {
            if shutdown.is_cancelled() {
                break;
            }
            match self.take(session, &file, shutdown).await? {
                Taken::Ingested => outcome.ingested += 1,
                Taken::Rejected => outcome.rejected += 1,
                Taken::Skipped => {}
                Taken::SessionSpent => {
                    outcome.session_spent = true;
                    break;
                }
            }
        }
        Ok(outcome)
    }
}

impl Worker {
    pub fn new(folder: Folder, backoff: Backoff) -> Self {
        Self {
            folder,
            backoff,
            session: None,
        }
    }

    /// Polls until `shutdown`; returns an error only when the service must
    /// stop (a fatal ingestion error).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), PollError> {
        let endpoint = self.folder.endpoint.clone();
        let id = endpoint.id.as_str();
        let interval = Duration::from_millis(endpoint.poll_interval_ms);
        tracing::info!(
            endpoint = id,
            facility_id = self.folder.facility_id,
            host = endpoint.host,
            port = endpoint.port,
            ftps = endpoint.ftps,
            "Polling FTP endpoint."
        );
        loop {
            let delay = match self.poll(&shutdown).await {
                Ok(outcome) => {
                    if self.backoff.failures() > 0 {
                        tracing::info!(endpoint = id, "FTP endpoint recovered.");
                    }
                    self.backoff.reset();
                    tracing::debug!(
                        endpoint = id,
                        listed = outcome.listed,
                        ingested = outcome.ingested,
                        rejected = outcome.rejected,
                        "Polled."
                    );
                    interval
                }
                Err(error) => {
                    // Dropped without QUIT: after an error the connection
                    // state is unknown.
                    self.session = None;
                    match failed(id, &error, &mut self.backoff) {
                        Some(delay) => delay,
                        None => return Err(error),
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        if let Some(session) = self.session.take() {
            session.close().await;
        }
        tracing::info!(endpoint = id, "Stopped polling FTP endpoint.");
        Ok(())
    }

    /// One poll with a live session: the kept one if the server still
    /// answers (it may close idle sessions), else a new one.
    pub async fn poll(&mut self, shutdown: &Shutdown) -> Result<PollOutcome, PollError> {
        let mut session = match self.session.take() {
            Some(mut session) => {
                if session.alive().await {
                    session
                } else {
                    Session::open(&self.folder.endpoint).await?
                }
            }
            None => Session::open(&self.folder.endpoint).await?,
        };
        let outcome = self.folder.poll(&mut session, shutdown).await?;
        if !outcome.session_spent {
            self.session = Some(session);
        }
        Ok(outcome)
    }
}

/// Emits the poll failure of `endpoint` and returns the delay before the
/// next try, or `None` when the error is fatal for the service.
pub fn failed(endpoint: &str, error: &PollError, backoff: &mut Backoff) -> Option<Duration> {
    let fatal = error.kind() == ErrorKind::Fatal;
    let delay = (!fatal).then(|| backoff.next_delay());
    PollFailed {
        component: "ftp_connector",
        endpoint,
        stage: error.stage(),
        failures: backoff.failures(),
        retry_in: delay,
        error,
    }
    .emit();
    delay
}

impl Folder {
    /// Downloads, ingests and finishes one settled file.
    async fn take(
        &mut self,
        session: &mut Session,
        file: &RemoteFile,
        shutdown: &Shutdown,
    ) -> Result<Taken, PollError> {
        let endpoint = self.endpoint.clone();
        let id = endpoint.id.as_str();
        if self.tracker.needs_age() {
            let modified = session.modified(&file.name).await?;
            if !self.tracker.old_enough(modified, Utc::now()) {
                return Ok(Taken::Skipped);
            }
        }
        if file.size > endpoint.max_file_bytes {
            self.reject(session, file, "too_large").await?;
            return Ok(Taken::Rejected);
        }
        tracing::debug!(
            endpoint = id,
            file = %file_name_ref(&file.name),
            bytes = file.size,
            "Downloading."
        );
        // The listed size is held until the file is published; a file that
        // grows while it is read holds more only if the budget has room.
        let mut held = tokio::select! {
            () = shutdown.cancelled() => return Ok(Taken::Skipped),
            held = self.budget.hold(file.size + DOWNLOAD_SLACK_BYTES) => held,
        };
        let bytes = tokio::select! {
            // Abandoning a download is safe: nothing was acknowledged yet.
            () = shutdown.cancelled() => return Ok(Taken::Skipped),
            bytes = session.download(&file.name, file.size, endpoint.max_file_bytes, &mut held) => bytes,
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(PollError::TooLarge { .. }) => {
                // Grew past the limit since it was listed: leave it for the
                // next listing, which sees its real size.
                self.tracker
                    .changed(&file.name, endpoint.max_file_bytes + 1);
                return Ok(Taken::SessionSpent);
            }
            Err(PollError::Grew { read_bytes, .. }) => {
                // Still being written, and no room to read on: the next
                // listing sees its new size and waits for it to settle.
                self.tracker.changed(&file.name, read_bytes);
                return Ok(Taken::SessionSpent);
            }
            Err(error) => return Err(error),
        };
        if bytes.len() as u64 != file.size {
            tracing::debug!(
                endpoint = id,
                listed = file.size,
                downloaded = bytes.len(),
                "File changed while downloading; waiting for it to settle."
            );
            self.tracker.changed(&file.name, bytes.len() as u64);
            return Ok(Taken::Skipped);
        }
        let raw = RawFile {
            facility_id: self.facility_id.clone(),
            source: endpoint.source,
            file_name: file.name.clone(),
            bytes,
            received_at: Utc::now(),
        };
        let receipt = match self.ingestor.ingest(raw).await {
            Ok(receipt) => receipt,
            Err(source) if source.kind() == ErrorKind::BadInput => {
                tracing::error!(endpoint = id, %source, "File cannot be published; setting it aside.");
                self.reject(session, file, "unpublishable").await?;
                return Ok(Taken::Rejected);
            }
            Err(source) => {
                return Err(PollError::Ingest {
                    file_name: file.name.clone(),
                    source,
                });
            }
        };
        // Only now, with the file in the raw zone and acked by Kafka, is
        // the source told it was taken.
        match endpoint.after {
            After::Move => {
                session
                    .move_to(
                        &endpoint,
                        &file.name,
                        &endpoint.processed_dir,
                        &receipt.file_id,
                    )
                    .await?
            }
            After::Delete => session.delete(&file.name).await?,
        }
        tracing::info!(endpoint = id, file_id = receipt.file_id, facility_id = self.facility_id,
            after = ?endpoint.after, "FTP file taken.");
        Ok(Taken::Ingested)
    }

    /// Moves a file that cannot be ingested to `rejected_dir`, so it is
    /// neither lost nor retried forever.
    async fn reject(
        &mut self,
        session: &mut Session,
        file: &RemoteFile,
        reason: &'static str,
    ) -> Result<(), PollError> {
        let endpoint = self.endpoint.clone();
        tracing::warn!(
            endpoint = endpoint.id,
            file = %file_name_ref(&file.name),
            bytes = file.size,
            reason,
            "FTP file rejected; moving it to the rejected folder."
        );
        metrics::CONNECTOR_FILES_REJECTED
            .with_label_values(&[endpoint.id.as_str(), reason])
            .inc();
        let suffix = Utc::now().format("%Y%m%dT%H%M%S").to_string();
        session
            .move_to(&endpoint, &file.name, &endpoint.rejected_dir, &suffix)
            .await
    }
}

/// What happened to one settled file.
enum Taken {
    Ingested,
    Rejected,
    /// Not taken this time (too young, changed, shutting down).
    Skipped,
    /// Not taken, and the session was left mid-transfer (the file grew past
    /// the limit): the next listing sees its real size.
    SessionSpent,
}
