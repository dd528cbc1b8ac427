//! The company's landing server: one folder per facility, walked by a
//! bounded pool of sessions.
//!
//! 8,000 facilities pushing into their folders of one server must not mean
//! 8,000 sessions: real servers cap sessions per client in the tens. A walk
//! lists the folder that holds the facility folders once, then `sessions`
//! workers, each with one session kept across walks, take the folders of
//! registered facilities (of this replica's shard) from one queue: enter,
//! list, take the settled files, next. A walk starts every
//! `poll_interval_ms`, or at once when the last one took longer.
//!
//! A file settles when two listings in a row show the same size. Between
//! walks, the folders whose last listing showed a file that had not
//! settled are listed again every [`SETTLE_RELIST`] (a settle pass), so a
//! new file is taken about a second after a walk first saw it rather than a
//! whole walk later: with thousands of folders a walk takes seconds.
//!
//! Folders of no registered facility are left alone, counted in
//! `medlake_connector_unknown_folders` and logged once each. A registered
//! facility without a folder yet is not an error. Every folder keeps its own
//! stability memory, so a file still being uploaded is taken only once it
//! settled, as on any endpoint; the acknowledgement order is the same
//! (raw zone, acked publish, then `processed/`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medlake_common::backoff::Backoff;
use medlake_common::budget::ByteBudget;
use medlake_common::endpoints::ftp::{FtpEndpoint, LandingServer};
use medlake_common::facilities::Registry;
use medlake_common::ingest::Ingestor;
use medlake_common::{Classify, ErrorKind, Shutdown, metrics};

use crate::config::FtpConnectorConfig;
use crate::endpoint::{Folder, PollOutcome, failed};
use crate::error::PollError;
use crate::session::Session;

/// Most unknown folder names remembered so as to log each once.
const MAX_REPORTED_UNKNOWN: usize = 10_000;

/// Pause before folders with unsettled files are listed again.
pub const SETTLE_RELIST: Duration = Duration::from_secs(1);

/// One landing server and the facility folders this replica walks.
pub struct Landing {
    server: LandingServer,
    /// The server with the login folder as its directory: what sessions
    /// open.
    login: FtpEndpoint,
    /// Folders of the registered facilities this replica owns, by id.
    folders: Vec<Folder>,
    /// Every registered facility id (of any replica): not unknown.
    known: HashSet<String>,
    sessions: Vec<Option<Session>>,
    backoff: Backoff,
    reported_unknown: HashSet<String>,
}

/// What one walk did.
#[derive(Debug, Default)]
struct Walk {
    present: usize,
    unknown: usize,
    outcome: PollOutcome,
    errors: Vec<PollError>,
    /// Folders not walked because every session failed.
    unfinished: usize,
}

impl Landing {
    pub fn new(
        server: LandingServer,
        registry: &Registry,
        config: &FtpConnectorConfig,
        ingestor: &Arc<Ingestor>,
        budget: &ByteBudget,
        backoff: Backoff,
    ) -> Self {
        let mut owned: Vec<_> = registry
            .iter()
            .filter(|f| config.owns(&f.id))
            .map(|f| f.id.clone())
            .collect();
        owned.sort();
        let folders = owned
            .into_iter()
            .map(|id| {
                let endpoint = server.folder_of(&id);
                Folder::new(id, endpoint, ingestor.clone(), budget.clone())
            })
            .collect();
        let login = FtpEndpoint {
            directory: ".".to_string(),
            ..server.server.clone()
        };
        let sessions = (0..server.sessions).map(|_| None).collect();
        Self {
            known: registry.iter().map(|f| f.id.clone()).collect(),
            server,
            login,
            folders,
            sessions,
            backoff,
            reported_unknown: HashSet::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.server.server.id
    }

    /// Walks until `shutdown`; returns an error only when the service must
    /// stop (a fatal ingestion error).
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), PollError> {
        let id = self.id().to_string();
        let interval = Duration::from_millis(self.server.server.poll_interval_ms);
        tracing::info!(
            endpoint = id,
            host = self.server.server.host,
            port = self.server.server.port,
            ftps = self.server.server.ftps,
            folders = self.folders.len(),
            sessions = self.sessions.len(),
            "Walking landing server."
        );
        loop {
            let started = Instant::now();
            let walk = self.walk(&shutdown).await;
            let mut retry_in = None;
            for error in &walk.errors {
                if error.kind() == ErrorKind::Fatal {
                    failed(&id, error, &mut self.backoff);
                    return Err(walk.errors.into_iter().next().expect("an error"));
                }
                retry_in = failed(&id, error, &mut self.backoff);
            }
            let delay = if walk.unfinished > 0 {
                retry_in.unwrap_or(interval)
            } else {
                if walk.errors.is_empty() && self.backoff.failures() > 0 {
                    tracing::info!(endpoint = id, "Landing server recovered.");
                    self.backoff.reset();
                }
                interval.saturating_sub(started.elapsed())
            };
            tracing::debug!(
                endpoint = id,
                present = walk.present,
                unknown = walk.unknown,
                listed = walk.outcome.listed,
                ingested = walk.outcome.ingested,
                rejected = walk.outcome.rejected,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "Walked."
            );
            let next_walk = Instant::now() + delay;
            if !self.settle(&shutdown, next_walk).await {
                break;
            }
        }
        for session in self.sessions.iter_mut().filter_map(Option::take) {
            session.close().await;
        }
        tracing::info!(endpoint = id, "Stopped walking landing server.");
        Ok(())
    }

    /// Until `next_walk`: every [`SETTLE_RELIST`], the folders whose files
    /// have not settled are listed again. Returns false when the service
    /// stops.
    async fn settle(&mut self, shutdown: &Shutdown, next_walk: Instant) -> bool {
        loop {
            let waiting = self.folders.iter().any(|f| f.waiting() > 0);
            let now = Instant::now();
            let wake = if waiting {
                next_walk.min(now + SETTLE_RELIST)
            } else {
                next_walk
            };
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(wake.saturating_duration_since(now)) => {}
            }
            if !waiting || Instant::now() >= next_walk {
                return true;
            }
            let pass = self.visit_folders(shutdown, |f| f.waiting() > 0).await;
            let id = self.server.server.id.clone();
            for error in &pass.errors {
                // Logged as any poll failure; the next walk retries with
                // its back-off.
                let _ = failed(&id, error, &mut self.backoff);
            }
            tracing::debug!(
                endpoint = self.id(),
                folders = pass.present,
                ingested = pass.outcome.ingested,
                "Settle pass."
            );
        }
    }

    /// One walk: which facility folders exist, then every one of them by
    /// the pool.
    async fn walk(&mut self, shutdown: &Shutdown) -> Walk {
        let present = match self.discover().await {
            Ok(present) => present,
            Err(error) => {
                self.sessions[0] = None;
                return Walk {
                    errors: vec![error],
                    unfinished: self.folders.len(),
                    ..Walk::default()
                };
            }
        };
        let unknown = self.note_unknown(&present);
        let mut walk = self
            .visit_folders(shutdown, |folder| present.contains(folder.facility_id()))
            .await;
        walk.unknown = unknown;
        walk
    }

    /// The folders `select` picks, visited by the pool.
    async fn visit_folders(
        &mut self,
        shutdown: &Shutdown,
        select: impl Fn(&Folder) -> bool,
    ) -> Walk {
        let mut walk = Walk::default();
        let (todo, idle): (Vec<_>, Vec<_>) = std::mem::take(&mut self.folders)
            .into_iter()
            .partition(|folder| select(folder));
        walk.present = todo.len();
        let queue = Mutex::new(VecDeque::from(todo));
        let done = Mutex::new(idle);
        let login = &self.login;
        let workers = self
            .sessions
            .iter_mut()
            .map(|slot| work(slot, login, &queue, &done, shutdown));
        for (outcome, error) in futures::future::join_all(workers).await {
            walk.outcome.listed += outcome.listed;
            walk.outcome.ingested += outcome.ingested;
            walk.outcome.rejected += outcome.rejected;
            walk.errors.extend(error);
        }
        let left = queue.into_inner().unwrap_or_else(|e| e.into_inner());
        walk.unfinished = left.len();
        let mut folders = done.into_inner().unwrap_or_else(|e| e.into_inner());
        folders.extend(left);
        folders.sort_by(|a, b| a.facility_id().cmp(b.facility_id()));
        self.folders = folders;
        walk
    }

    /// The names of the folders that hold facility folders, listed with the
    /// first session.
    async fn discover(&mut self) -> Result<HashSet<String>, PollError> {
        let parent = self.server.parent_dir();
        let session = live(&mut self.sessions[0], &self.login).await?;
        Ok(session.folders(&parent).await?.into_iter().collect())
    }

    /// Counts the folders of no registered facility and logs each new one
    /// once; returns how many there are.
    fn note_unknown(&mut self, present: &HashSet<String>) -> usize {
        let mut unknown = 0;
        for name in present.iter().filter(|n| !self.known.contains(*n)) {
            unknown += 1;
            if self.reported_unknown.len() < MAX_REPORTED_UNKNOWN
                && self.reported_unknown.insert(name.clone())
            {
                tracing::warn!(
                    endpoint = self.server.server.id,
                    folder = name,
                    "Folder of no registered facility on the landing server; its files are left alone."
                );
            }
        }
        metrics::CONNECTOR_UNKNOWN_FOLDERS
            .with_label_values(&[self.server.server.id.as_str()])
            .set(i64::try_from(unknown).unwrap_or(i64::MAX));
        unknown
    }
}

/// The slot's session if the server still answers, else a new one.
async fn live<'a>(
    slot: &'a mut Option<Session>,
    login: &FtpEndpoint,
) -> Result<&'a mut Session, PollError> {
    if let Some(session) = slot.as_mut()
        && !session.alive().await
    {
        *slot = None;
    }
    if slot.is_none() {
        *slot = Some(Session::open(login).await?);
    }
    Ok(slot.as_mut().expect("session was just set"))
}

/// One worker of the pool: takes folders from `queue` until it is empty,
/// the service stops or its session fails (the error is returned; the
/// other workers go on with the queue).
async fn work(
    slot: &mut Option<Session>,
    login: &FtpEndpoint,
    queue: &Mutex<VecDeque<Folder>>,
    done: &Mutex<Vec<Folder>>,
    shutdown: &Shutdown,
) -> (PollOutcome, Option<PollError>) {
    let mut total = PollOutcome::default();
    let mut checked = false;
    while !shutdown.is_cancelled() {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(mut folder) = next else { break };
        let result = visit(slot, login, &mut folder, !checked, shutdown).await;
        checked = true;
        done.lock().unwrap_or_else(|e| e.into_inner()).push(folder);
        match result {
            Ok(outcome) => {
                total.listed += outcome.listed;
                total.ingested += outcome.ingested;
                total.rejected += outcome.rejected;
                if outcome.session_spent {
                    *slot = None;
                }
            }
            Err(error) => {
                // Dropped without QUIT: the connection state is unknown.
                *slot = None;
                return (total, Some(error));
            }
        }
    }
    (total, None)
}

/// Polls one facility folder with the slot's session (checked first when
/// `check` is set: it may have idled since the last walk).
async fn visit(
    slot: &mut Option<Session>,
    login: &FtpEndpoint,
    folder: &mut Folder,
    check: bool,
    shutdown: &Shutdown,
) -> Result<PollOutcome, PollError> {
    let session = if check {
        live(slot, login).await?
    } else {
        match slot {
            Some(session) => session,
            None => slot.insert(Session::open(login).await?),
        }
    };
    match session.enter(&folder.endpoint().directory).await {
        Ok(()) => folder.poll(session, shutdown).await,
        // The facility folder exists but its inner folder does not (yet).
        Err(error) if error.is_missing_folder() => Ok(PollOutcome::default()),
        Err(error) => Err(error),
    }
}
