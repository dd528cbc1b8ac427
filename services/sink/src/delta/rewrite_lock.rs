//! One OPTIMIZE at a time per table, across every process that writes it.
//!
//! delta-rs 1.1's conflict checker ignores files that a winning commit
//! removed with `dataChange: false`, which is how OPTIMIZE removes them. Two
//! OPTIMIZEs of one table made at once (two sink replicas compacting, or a
//! compaction and `medlake maintain`) both commit, and the rows of the files
//! both replaced are then in the table twice (seen with two sink replicas on
//! S3). So whoever compacts a table first takes its rewrite lock, refreshes
//! the table, and only then plans and commits the OPTIMIZE. (A MERGE cannot
//! race an OPTIMIZE this way: merges commit without delta-rs's own retry, see
//! [`super::merge`], so a MERGE that lost to an OPTIMIZE re-runs on the new
//! table.)
//!
//! The lock lives in the table's folder, under `_medlake/rewrite/`, which
//! readers and vacuum ignore (a name starting with `_`). It is a sequence of
//! generations, each created with a create-if-absent PUT (the same
//! guarantee Delta commits rely on, local or S3): generation `n + 1` can be
//! created by one process only. A generation is free once its holder wrote
//! `<n>.released`, or once its lease has expired (a holder that died).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::error::DeltaError;

/// Folder of the lock's generations, relative to the table root.
const LOCK_DIR: &str = "_medlake/rewrite";
/// Generations kept behind the current one (older ones are deleted).
const KEEP_GENERATIONS: u64 = 8;

/// What a generation says about its holder.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    owner: String,
    acquired_at_ms: i64,
    expires_at_ms: i64,
}

/// A held rewrite lock; [`RewriteLock::release`] it when the OPTIMIZE is done
/// (dropping it without releasing leaves it to expire).
#[derive(Debug)]
pub struct RewriteLock {
    store: Arc<dyn ObjectStore>,
    generation: u64,
    table: String,
}

fn generation_path(generation: u64) -> Path {
    Path::from(format!("{LOCK_DIR}/{generation:020}"))
}

fn released_path(generation: u64) -> Path {
    Path::from(format!("{LOCK_DIR}/{generation:020}.released"))
}

impl RewriteLock {
    /// Takes the rewrite lock of `table` for `owner`, for at most `lease`;
    /// `Ok(None)` while someone else holds it.
    pub async fn try_acquire(
        table: &DeltaTable,
        table_name: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Self>, DeltaError> {
        let store = table.log_store().object_store(None);
        let lock_error = |e: object_store::Error| DeltaError::Lock {
            table: table_name.to_string(),
            source: Box::new(e),
        };
        let mut generations = Vec::new();
        let mut released = std::collections::HashSet::new();
        let listed: Vec<_> = store
            .list(Some(&Path::from(LOCK_DIR)))
            .try_collect()
            .await
            .map_err(lock_error)?;
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            match name.strip_suffix(".released") {
                Some(n) => {
                    if let Ok(n) = n.parse::<u64>() {
                        released.insert(n);
                    }
                }
                None => {
                    if let Ok(n) = name.parse::<u64>() {
                        generations.push(n);
                    }
                }
            }
        }
        let now = Utc::now().timestamp_millis();
        let current = generations.iter().copied().max();
        if let Some(n) = current.filter(|n| !released.contains(n)) {
            match store.get(&generation_path(n)).await {
                Ok(result) => {
                    let bytes = result.bytes().await.map_err(lock_error)?;
                    // An unreadable generation counts as held until it is
                    // as old as a lease.
                    let expires = serde_json::from_slice::<Holder>(&bytes)
                        .map(|h| h.expires_at_ms)
                        .unwrap_or(0);
                    if now < expires {
                        return Ok(None);
                    }
                    tracing::warn!(
                        table = table_name,
                        generation = n,
                        "Rewrite lock expired without a release (its holder died); taking it over."
                    );
                }
                // Deleted by a newer holder's clean-up: a newer generation exists.
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(lock_error(e)),
            }
        }
        let next = current.map_or(1, |n| n + 1);
        let holder = Holder {
            owner: owner.to_string(),
            acquired_at_ms: now,
            expires_at_ms: now + lease.as_millis() as i64,
        };
        let body = serde_json::to_vec(&holder).expect("a holder serializes");
        let put = store
            .put_opts(
                &generation_path(next),
                PutPayload::from(Bytes::from(body)),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                return Ok(None);
            }
            Err(e) => return Err(lock_error(e)),
        }
        for old in generations
            .iter()
            .copied()
            .filter(|n| n + KEEP_GENERATIONS < next)
        {
            let _ = store.delete(&released_path(old)).await;
            let _ = store.delete(&generation_path(old)).await;
        }
        Ok(Some(Self {
            store,
            generation: next,
            table: table_name.to_string(),
        }))
    }

    /// Frees the lock for the next rewrite.
    pub async fn release(self) -> Result<(), DeltaError> {
        self.store
            .put_opts(
                &released_path(self.generation),
                PutPayload::default(),
                PutOptions::from(PutMode::Overwrite),
            )
            .await
            .map(|_| ())
            .map_err(|e| DeltaError::Lock {
                table: self.table.clone(),
                source: Box::new(e),
            })
    }
}
