//! The Delta Lake side of the sink: one [`TableWriter`] per table.
//!
//! # Exactly once
//!
//! A [`SinkBatch`] carries, besides its rows, the Kafka origin of every row
//! and the last consumed offset of every partition. Each commit the writer
//! makes (append, merge, or an offsets-only commit when every message of the
//! batch became a dead letter) carries one `txn` action per partition:
//! app id `<consumer group>-<topic>-<partition>`, version = last offset.
//!
//! The consumer seeks to [`TableWriter::committed_offsets`] + 1 on
//! assignment. The writer defends on its own as well: before every attempt it
//! refreshes the table, reads the recorded versions and drops rows at or
//! below them, so a batch delivered twice changes nothing. A concurrent
//! writer that commits one of the same app ids makes Delta's conflict checker
//! refuse our commit; the writer then backs off, re-reads and retries
//! (bounded by [`DeltaConfig::max_commit_attempts`]), so nothing is written
//! twice.
//!
//! # Append and merge
//!
//! Append data sets append. Merge data sets reduce the batch to the latest
//! event per key and run one MERGE; see [`merge`] for the rules and for why
//! deletes are hard deletes. The `_op` column is stored like any lineage
//! column (stored rows always say `upsert`; a delete removes its row).
//!
//! # Table shape
//!
//! See [`create`]: oldest protocol Spark and Trino read (reader 1 /
//! writer 2), no deletion vectors, checkpoints every
//! [`DeltaConfig::checkpoint_interval`] commits (written by the commit's
//! post-commit hook), and schema evolution limited to new nullable columns.
//!
//! # Compaction
//!
//! Every [`DeltaConfig::compact_every_commits`] commits the writer compacts
//! its table ([`TableWriter::compact_if_due`]): OPTIMIZE bins the small
//! files of each partition into files of up to
//! [`DeltaConfig::target_file_size_bytes`]. The compaction commit carries no
//! `txn` action, so offsets are untouched. Only one OPTIMIZE of a table runs
//! at a time, across replicas and `medlake maintain` ([`rewrite_lock`]), and
//! MERGEs commit without delta-rs's rebase, so a MERGE that lost the race to a
//! compaction re-runs on the compacted table. Z-order and vacuum stay with
//! `medlake maintain`, which rewrites whole partitions.

pub mod builtin;
mod config;
pub mod create;
mod error;
pub mod merge;
pub mod read;
pub mod rewrite_lock;
mod spec;
pub mod txn;

pub use rewrite_lock::RewriteLock;

/// How long a rewrite lock holds when its holder dies before releasing it.
/// A compaction takes seconds and a Z-order minutes; a crashed holder delays
/// the next compaction of its table by at most this.
pub const REWRITE_LEASE: Duration = Duration::from_secs(3600);

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::operations::optimize::OptimizeType;
use deltalake::protocol::{DeltaOperation, SaveMode};

pub use config::{DeltaConfig, WriterOptions};
pub use error::DeltaError;
pub use merge::{MergeCounts, RowReject};
pub use spec::{OP_COLUMN, OP_DELETE, OP_UPSERT, TableMode, TableSpec};
pub use txn::{PartitionOffset, RowOrigin, SinkBatch, app_id};

/// What one [`TableWriter::write`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// Table version after the call.
    pub version: i64,
    /// Whether a commit was made (false: the table already held the batch).
    pub committed: bool,
    /// Rows handed to Delta: appended rows, or merge events after reduction
    /// to one per key.
    pub rows_written: u64,
    /// Merge counts (all zero for append tables).
    pub merge: MergeCounts,
    /// Rows refused (merge rows without key, sequence or valid `_op`); the
    /// caller sends them to the dead-letter topic with stage `write`.
    pub rejects: Vec<RowReject>,
    /// Commit attempts made (more than one after conflicts).
    pub attempts: u32,
    /// Whether the commit landed past the version it was planned on: another
    /// writer committed in between and delta-rs checked and rebased ours
    /// (appends, whose rows conflict with nothing but the same offsets).
    pub rebased: bool,
    /// Wall time of the call.
    pub duration: Duration,
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written in their place.
    pub files_added: u64,
    /// Data files in the table afterwards.
    pub live_files: u64,
    /// Table version afterwards.
    pub version: i64,
}

/// Writes batches into one Delta table.
#[derive(Debug)]
pub struct TableWriter {
    spec: TableSpec,
    table: DeltaTable,
    options: WriterOptions,
    /// Commits this writer made since it last compacted the table.
    commits_since_compaction: u64,
}

impl TableWriter {
    /// Opens `<lake_uri>/<spec.name>`, creating it from the spec on first use
    /// and adding columns the spec gained since.
    pub async fn open_or_create(
        lake_uri: &str,
        spec: &TableSpec,
        options: &WriterOptions,
    ) -> Result<Self, DeltaError> {
        let url = create::table_url(lake_uri, &spec.name)?;
        let table = create::open_or_create(url, spec, &options.config).await?;
        Ok(Self {
            spec: spec.clone(),
            table,
            options: options.clone(),
            commits_since_compaction: 0,
        })
    }

    /// The table's definition.
    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// The underlying table, as of the last write or refresh.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// Table version as of the last write or refresh.
    pub fn version(&self) -> i64 {
        self.table.version().map_or(-1, |v| v as i64)
    }

    /// Number of data files in the table as of the last write or refresh.
    pub fn live_files(&self) -> usize {
        self.table
            .snapshot()
            .map(|s| s.log_data().num_files())
            .unwrap_or(0)
    }

    /// Reloads the table state from the log.
    pub async fn refresh(&mut self) -> Result<(), DeltaError> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| DeltaError::delta(&self.spec.name, "refresh table", e))
    }

    /// Last offset the table holds for each of `partitions` of `topic` under
    /// this writer's consumer group; partitions never written are absent.
    /// Refreshes the table first.
    pub async fn committed_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, DeltaError> {
        self.refresh().await?;
        txn::committed_offsets(
            &self.table,
            &self.spec.name,
            &self.options.consumer_group,
            topic,
            partitions.iter().copied(),
        )
        .await
    }

    /// Commits `batch` exactly once: rows the table already holds (by the
    /// `txn` versions) are dropped, the rest is appended or merged in one
    /// commit that also records the batch's offsets.
    pub async fn write(&mut self, batch: SinkBatch) -> Result<CommitOutcome, DeltaError> {
        let started = Instant::now();
        batch.validate(&self.spec.name)?;
        let partitions: Vec<i32> = batch.offsets.iter().map(|p| p.partition).collect();
        let max_attempts = self.options.config.max_commit_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let committed = self.committed_offsets(&batch.topic, &partitions).await?;
            let Some(pending) = txn::pending(&self.spec.name, &batch, &committed)? else {
                return Ok(CommitOutcome {
                    version: self.version(),
                    attempts: attempt,
                    duration: started.elapsed(),
                    ..CommitOutcome::default()
                });
            };
            let planned_on = self.version();
            match self.commit(pending).await {
                Ok(mut outcome) => {
                    self.commits_since_compaction += 1;
                    outcome.attempts = attempt;
                    outcome.rebased = outcome.version > planned_on + 1;
                    outcome.duration = started.elapsed();
                    return Ok(outcome);
                }
                Err(err) if err.is_commit_conflict() && attempt < max_attempts => {
                    let backoff = self.options.config.backoff(attempt);
                    tracing::warn!(
                        table = self.spec.name.as_str(),
                        attempt,
                        backoff_ms = backoff.as_millis() as u64,
                        "Commit conflict with another writer; retrying."
                    );
                    tokio::time::sleep(backoff).await;
                }
                Err(err) if err.is_commit_conflict() => {
                    let DeltaError::Delta { source, .. } = err else {
                        return Err(err);
                    };
                    return Err(DeltaError::Conflict {
                        table: self.spec.name.clone(),
                        attempts: attempt,
                        source,
                    });
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Compacts the table when [`DeltaConfig::compact_every_commits`] commits
    /// were made since the last compaction; `Ok(None)` when it is not due.
    /// Only partitions holding more than one file below the target size are
    /// rewritten, so a compacted table costs a look at its file list. A
    /// failed compaction (a concurrent writer's commit conflicting with it)
    /// is tried again after the next commit.
    pub async fn compact_if_due(&mut self) -> Result<Option<Compaction>, DeltaError> {
        let every = self.options.config.compact_every_commits;
        if every == 0 || self.commits_since_compaction < every {
            return Ok(None);
        }
        let name = self.spec.name.clone();
        let name = name.as_str();
        let owner = format!("sink {}", self.options.consumer_group);
        let Some(lock) = RewriteLock::try_acquire(&self.table, name, &owner, REWRITE_LEASE).await?
        else {
            tracing::debug!(
                table = name,
                "Another writer is compacting; trying after the next commit."
            );
            return Ok(None);
        };
        // Planned on the table as it is now, with no other OPTIMIZE able to
        // commit before this one.
        let optimized = async {
            self.refresh().await?;
            let target =
                std::num::NonZeroU64::new(self.options.config.target_file_size_bytes.max(1))
                    .expect("at least one");
            self.table
                .clone()
                .optimize()
                .with_type(OptimizeType::Compact)
                .with_target_size(target)
                .await
                .map_err(|e| DeltaError::delta(name, "compact", e))
        }
        .await;
        let released = lock.release().await;
        let (table, metrics) = optimized?;
        released?;
        self.table = table;
        self.commits_since_compaction = 0;
        let compaction = Compaction {
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            live_files: self.live_files() as u64,
            version: self.version(),
        };
        tracing::info!(
            table = name,
            files_removed = compaction.files_removed,
            files_added = compaction.files_added,
            live_files = compaction.live_files,
            version = compaction.version,
            "Table compacted."
        );
        Ok(Some(compaction))
    }

    /// One commit attempt of a batch with nothing already committed.
    async fn commit(&mut self, batch: SinkBatch) -> Result<CommitOutcome, DeltaError> {
        let properties = CommitProperties::default()
            .with_application_transactions(txn::transactions(&self.options.consumer_group, &batch))
            .with_metadata(batch.metadata.clone());
        let name = self.spec.name.clone();
        let mut outcome = CommitOutcome::default();
        let rows = match &self.spec.mode {
            TableMode::Append => batch.records,
            TableMode::Merge {
                primary_key,
                sequence_by,
            } => {
                let (reduced, rejects) = merge::latest_per_key(
                    &self.spec,
                    primary_key,
                    sequence_by,
                    &batch.records,
                    &batch.origins,
                )?;
                outcome.rejects = rejects;
                reduced
            }
        };
        outcome.rows_written = rows.num_rows() as u64;
        self.table = if rows.num_rows() == 0 {
            self.commit_offsets_only(properties).await?
        } else {
            match &self.spec.mode {
                TableMode::Append => {
                    let rows = self.to_table_order(rows)?;
                    self.table
                        .clone()
                        .write([rows])
                        .with_save_mode(SaveMode::Append)
                        .with_target_file_size(std::num::NonZeroU64::new(
                            self.options.config.target_file_size_bytes,
                        ))
                        .with_commit_properties(properties)
                        .await
                        .map_err(|e| DeltaError::delta(&name, "append", e))?
                }
                TableMode::Merge {
                    primary_key,
                    sequence_by,
                } => {
                    let (table, counts) = merge::merge(
                        self.table.clone(),
                        &self.spec,
                        primary_key,
                        sequence_by,
                        rows,
                        properties,
                    )
                    .await?;
                    outcome.merge = counts;
                    table
                }
            }
        };
        outcome.committed = true;
        outcome.version = self.version();
        tracing::info!(
            table = name.as_str(),
            mode = self.spec.mode.label(),
            rows = outcome.rows_written,
            version = outcome.version,
            "Batch committed."
        );
        Ok(outcome)
    }

    /// A commit that only records offsets (every message of the batch
    /// became a dead letter, or a merge batch reduced to nothing).
    async fn commit_offsets_only(
        &self,
        properties: CommitProperties,
    ) -> Result<DeltaTable, DeltaError> {
        let name = self.spec.name.as_str();
        let state = self
            .table
            .snapshot()
            .map_err(|e| DeltaError::delta(name, "read table state", e))?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        CommitBuilder::from(properties)
            .with_actions(Vec::new())
            .build(Some(state), self.table.log_store(), operation)
            .await
            .map_err(|e| DeltaError::delta(name, "commit offsets", e))?;
        let mut table = self.table.clone();
        table
            .update_incremental(None)
            .await
            .map_err(|e| DeltaError::delta(name, "refresh table", e))?;
        Ok(table)
    }

    /// Puts the batch's columns in the table's order (columns added by
    /// schema evolution sit at the table's end). A nullable table column the
    /// batch lacks (the table was evolved by a newer definition while this
    /// writer ran) is filled with nulls.
    fn to_table_order(&self, rows: RecordBatch) -> Result<RecordBatch, DeltaError> {
        let name = self.spec.name.as_str();
        let schema = self
            .table
            .snapshot()
            .map_err(|e| DeltaError::delta(name, "read table state", e))?
            .snapshot()
            .arrow_schema();
        if schema.fields().len() == rows.num_columns()
            && schema
                .fields()
                .iter()
                .zip(rows.schema().fields())
                .all(|(t, r)| t.name() == r.name())
        {
            return Ok(rows);
        }
        let columns = schema
            .fields()
            .iter()
            .map(|field| match rows.column_by_name(field.name()) {
                Some(column) => Ok(column.clone()),
                None if field.is_nullable() => Ok(arrow::array::new_null_array(
                    field.data_type(),
                    rows.num_rows(),
                )),
                None => Err(DeltaError::InvalidBatch {
                    table: name.to_string(),
                    reason: format!("required column '{}' is missing", field.name()),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(schema, columns)
            .map_err(|e| DeltaError::arrow(name, "reorder columns", e))
    }
}
