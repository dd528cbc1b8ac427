//! The run loop: consume, check each message against the partition's
//! position, batch per topic, write batches when they are due, retry what
//! can be retried, stop on what cannot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use medlake_common::admin::Health;
use medlake_common::events::{ConsumeFailed, Event, WorkFailed};
use medlake_common::metrics::{SINK_OFFSET_MISMATCHES, SINK_PARTITIONS_REFUSED};
use medlake_common::{Classify, Context, ErrorKind, Shutdown, kafka};
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::batch::Buffer;
use super::config::SinkConfig;
use super::error::SinkError;
use super::flush::{Io, Lane, flush};
use super::partitions::{Partitions, RebalanceEvent, SinkContext, Verdict};
use super::start::{self, Decision, Observed, Refusal, Start, UntrackedStart};
use super::tables::{self, Target};

/// The `component` label of the sink's events.
const COMPONENT: &str = "sink";

/// How long the loop waits for a message when no batch is open.
const IDLE_WAKEUP: Duration = Duration::from_secs(1);

/// Longest pause after a consumer error (other topics keep flowing).
const MAX_CONSUME_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How long a seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the watermark and committed-offset queries of an assignment
/// may take.
const POSITIONS_TIMEOUT: Duration = Duration::from_secs(10);

/// A running sink: its tables, consumer and batches.
pub(crate) struct Worker {
    io: Io,
    context: SinkContext,
    lanes: HashMap<String, Lane>,
    partitions: Partitions,
    health: Health,
}

impl Worker {
    /// Opens every table, then subscribes to their topics.
    pub(crate) async fn start(ctx: &Context, config: SinkConfig) -> Result<Self, SinkError> {
        let mut lanes = HashMap::new();
        for planned in tables::plan(ctx, &config)? {
            let target = Target::open(planned, &ctx.lake_uri, &config).await?;
            tracing::info!(
                table = target.name(),
                topic = target.topic.as_str(),
                version = target.writer.version(),
                "Table open."
            );
            lanes.insert(
                target.topic.clone(),
                Lane {
                    target,
                    buffer: Buffer::default(),
                    starts: BTreeMap::new(),
                },
            );
        }
        let context = SinkContext::default();
        let consumer =
            kafka::consumer_with_context(&ctx.kafka, &config.consumer_group, context.clone())
                .map_err(|e| SinkError::kafka("create consumer", e))?;
        let topics: Vec<&str> = lanes.keys().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| SinkError::kafka("subscribe", e))?;
        let producer =
            kafka::producer(&ctx.kafka).map_err(|e| SinkError::kafka("create producer", e))?;
        let untracked = config.untracked_partition_start;
        tracing::info!(
            topics = topics.len(),
            group = config.consumer_group.as_str(),
            untracked_partition_start = untracked.as_str(),
            resume_past_offset_gaps = config.resume_past_offset_gaps,
            "Sink consuming."
        );
        if untracked != UntrackedStart::Earliest {
            tracing::warn!(
                untracked_partition_start = untracked.as_str(),
                "Partitions the tables hold no offset for do not start at the earliest retained offset: rows before the start will not be in the tables."
            );
        }
        ctx.health.set_ready(true);
        Ok(Self {
            io: Io {
                consumer: Arc::new(consumer),
                producer,
                dlq_topic: ctx.topics.dlq(),
                config,
            },
            context,
            lanes,
            partitions: Partitions::default(),
            health: ctx.health.clone(),
        })
    }

    /// Runs until `shutdown`, then writes the open batches and returns.
    pub(crate) async fn run(mut self, shutdown: Shutdown) -> Result<(), SinkError> {
        let consumer = Arc::clone(&self.io.consumer);
        let mut consume_failures = 0;
        let result = loop {
            let deadline = self.next_deadline();
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                received = consumer.recv() => Some(received.map(|m| m.detach())),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            match self.apply_rebalances(&shutdown).await {
                Ok(true) => {}
                Ok(false) => break Ok(()),
                Err(error) => break Err(error),
            }
            match received {
                Some(Ok(message)) => {
                    consume_failures = 0;
                    if let Err(error) = self.take(message, &shutdown).await {
                        break Err(error);
                    }
                }
                Some(Err(error)) => {
                    // Broker away, topic missing: back off a little instead
                    // of spinning, but keep serving the other topics.
                    let error = SinkError::kafka("consume", error);
                    if error.kind() == ErrorKind::Fatal {
                        break Err(error);
                    }
                    consume_failures += 1;
                    let pause = self
                        .io
                        .config
                        .retry_backoff(consume_failures)
                        .min(MAX_CONSUME_ERROR_PAUSE);
                    ConsumeFailed {
                        component: COMPONENT,
                        pause,
                        error: &error,
                    }
                    .emit();
                    tokio::time::sleep(pause).await;
                }
                None => {}
            }
            if let Err(error) = self.flush_due(&shutdown).await {
                break Err(error);
            }
        };
        if result.is_ok() {
            // Only revocations matter now; lookups are cut short by shutdown.
            let _ = self.apply_rebalances(&shutdown).await;
            self.drain().await;
        }
        self.health.set_ready(false);
        result
    }

    /// The earliest batch deadline, or a short idle wait.
    fn next_deadline(&self) -> Instant {
        let interval = self.io.config.flush_interval();
        self.lanes
            .values()
            .filter_map(|l| l.buffer.deadline(interval))
            .min()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + IDLE_WAKEUP)
    }

    /// Applies the rebalances the consumer context saw, then tries the
    /// pending seeks. Revoked partitions leave their batches (the new owner
    /// reads them again from the table); assigned ones are sought to the
    /// table's offsets. Returns false when shutdown interrupted it.
    async fn apply_rebalances(&mut self, shutdown: &Shutdown) -> Result<bool, SinkError> {
        for event in self.context.drain() {
            match event {
                RebalanceEvent::Revoked(list) => {
                    for (topic, partition) in &list {
                        let Some(lane) = self.lanes.get_mut(topic) else {
                            continue;
                        };
                        lane.starts.remove(partition);
                        let dropped = lane.buffer.drop_partition(*partition);
                        if dropped > 0 {
                            tracing::info!(
                                topic = topic.as_str(),
                                partition,
                                dropped,
                                "Revoked partition left the batch."
                            );
                        }
                    }
                    self.partitions.revoked(&list);
                    for lane in self.lanes.values() {
                        SINK_PARTITIONS_REFUSED
                            .with_label_values(&[lane.target.name()])
                            .set(self.partitions.refused(&lane.target.topic) as i64);
                    }
                }
                RebalanceEvent::Assigned(list) => {
                    for lane in self.lanes.values_mut() {
                        let mine: Vec<i32> = list
                            .iter()
                            .filter(|(topic, _)| *topic == lane.target.topic)
                            .map(|(_, partition)| *partition)
                            .collect();
                        if !mine.is_empty()
                            && !assign(lane, &mine, &mut self.partitions, &self.io, shutdown)
                                .await?
                        {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        for (topic, partition, target) in self.partitions.pending_seeks() {
            self.seek(&topic, partition, target);
        }
        Ok(true)
    }

    /// Seeks a partition to the table's offset; a refused seek stays pending.
    fn seek(&mut self, topic: &str, partition: i32, target: i64) {
        match self
            .io
            .consumer
            .seek(topic, partition, Offset::Offset(target), SEEK_TIMEOUT)
        {
            Ok(()) => {
                tracing::info!(
                    topic,
                    partition,
                    offset = target,
                    "Resuming at the table's offset."
                );
                self.partitions.sought(topic, partition);
            }
            Err(error) => {
                tracing::debug!(topic, partition, %error, "Seek not possible yet; will try again.");
            }
        }
    }

    /// Takes one message into its topic's batch, after checking it against
    /// the partition's position.
    async fn take(&mut self, message: OwnedMessage, shutdown: &Shutdown) -> Result<(), SinkError> {
        let (partition, offset) = (message.partition(), message.offset());
        let Some(lane) = self.lanes.get_mut(message.topic()) else {
            tracing::warn!(
                topic = message.topic(),
                "Message of a topic the sink does not write."
            );
            return Ok(());
        };
        let mut verdict = self.partitions.check(&lane.target.topic, partition, offset);
        if verdict == Verdict::Verify {
            if !assign(lane, &[partition], &mut self.partitions, &self.io, shutdown).await? {
                return Ok(());
            }
            verdict = self.partitions.check(&lane.target.topic, partition, offset);
        }
        match verdict {
            Verdict::Accept => lane.buffer.push(message),
            Verdict::Seek(target) => {
                let topic = lane.target.topic.clone();
                self.seek(&topic, partition, target);
            }
            Verdict::Drop | Verdict::Verify => {}
        }
        Ok(())
    }

    /// Writes every batch that is full or old enough, retrying retryable
    /// failures with back-off. The tables are written concurrently: a
    /// commit mostly waits on storage, and one table's wait must not hold
    /// back the others' rows (with five data sets and a flush a second,
    /// serial commits alone made the file-to-table latency grow).
    async fn flush_due(&mut self, shutdown: &Shutdown) -> Result<(), SinkError> {
        let io = &self.io;
        let (rows, bytes, interval) = (
            io.config.max_batch_rows,
            io.config.max_batch_bytes,
            io.config.flush_interval(),
        );
        let due = self
            .lanes
            .values_mut()
            .filter(|lane| lane.buffer.is_due(rows, bytes, interval))
            .map(|lane| async move {
                let mut failures = 0;
                while let Err(error) = flush(lane, io).await {
                    if !pause_after(error, &mut failures, &io.config, shutdown).await? {
                        break;
                    }
                }
                Ok::<(), SinkError>(())
            });
        for result in futures::future::join_all(due).await {
            result?;
        }
        Ok(())
    }

    /// On shutdown: one attempt per open batch; what fails is read again by
    /// the next owner of the partition.
    async fn drain(&mut self) {
        for lane in self.lanes.values_mut() {
            if let Err(error) = flush(lane, &self.io).await {
                // Not retried: the next owner of the partition reads it again.
                WorkFailed {
                    component: COMPONENT,
                    work: "batch at shutdown",
                    origin: None,
                    dataset: Some(lane.target.name()),
                    file: None,
                    attempt: 1,
                    retry_in: None,
                    error: &error,
                }
                .emit();
            }
        }
    }
}

/// Records newly assigned partitions of a lane: where each starts, decided
/// from the table's offsets and what Kafka still retains (retrying while
/// either cannot be read). Returns false when shutdown interrupted it.
async fn assign(
    lane: &mut Lane,
    partitions: &[i32],
    positions: &mut Partitions,
    io: &Io,
    shutdown: &Shutdown,
) -> Result<bool, SinkError> {
    let topic = lane.target.topic.clone();
    let mut failures = 0;
    let committed = loop {
        match lane
            .target
            .writer
            .committed_offsets(&topic, partitions)
            .await
        {
            Ok(committed) => break committed,
            Err(error) => {
                let error = SinkError::table(lane.target.name(), error);
                if !pause_after(error, &mut failures, &io.config, shutdown).await? {
                    return Ok(false);
                }
            }
        }
    };
    let kafka = loop {
        match kafka_positions(io, &topic, partitions).await {
            Ok(kafka) => break kafka,
            Err(error) => {
                if !pause_after(error, &mut failures, &io.config, shutdown).await? {
                    return Ok(false);
                }
            }
        }
    };
    let policy = start::StartPolicy {
        untracked: io.config.untracked_partition_start,
        resume_past_gaps: io.config.resume_past_offset_gaps,
    };
    let mut refused = TopicPartitionList::new();
    for (partition, (earliest, latest, group)) in kafka {
        let seen = Observed {
            table_next: committed.get(&partition).map(|offset| offset + 1),
            earliest,
            latest,
            group,
        };
        let decision = start::decide(seen, policy);
        report_start(lane.target.name(), &topic, partition, &seen, &decision);
        if let Start::Refuse(_) = decision.start {
            refused.add_partition(&topic, partition);
        }
        match decision.note {
            Some(note) => lane.starts.insert(partition, note),
            None => lane.starts.remove(&partition),
        };
        positions.assigned(&topic, partition, decision.start);
    }
    if refused.count() > 0 {
        // Nothing of a refused partition is fetched; the others keep flowing.
        if let Err(error) = io.consumer.pause(&refused) {
            tracing::debug!(topic, %error, "Pausing refused partitions failed; their messages are dropped.");
        }
    }
    SINK_PARTITIONS_REFUSED
        .with_label_values(&[lane.target.name()])
        .set(positions.refused(&topic) as i64);
    Ok(true)
}

/// Per partition: the earliest retained offset, the end, and the consumer
/// group's committed position (if any).
async fn kafka_positions(
    io: &Io,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64, Option<i64>)>, SinkError> {
    let consumer = Arc::clone(&io.consumer);
    let topic = topic.to_string();
    let partitions = partitions.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        for partition in &partitions {
            tpl.add_partition(&topic, *partition);
        }
        let group = consumer
            .committed_offsets(tpl, POSITIONS_TIMEOUT)
            .map_err(|e| SinkError::kafka("read the group's committed offsets", e))?;
        let mut out = BTreeMap::new();
        for partition in partitions {
            let (earliest, latest) = consumer
                .fetch_watermarks(&topic, partition, POSITIONS_TIMEOUT)
                .map_err(|e| SinkError::kafka("fetch watermarks", e))?;
            let committed =
                group
                    .find_partition(&topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    });
            out.insert(partition, (earliest, latest, committed));
        }
        Ok(out)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Logs (and counts) what an assignment decided, when it is not the
/// ordinary resume right after the table's offset.
fn report_start(table: &str, topic: &str, partition: i32, seen: &Observed, decision: &Decision) {
    let table_offset = seen.table_next.map(|next| next - 1);
    if decision.group_ahead {
        SINK_OFFSET_MISMATCHES.with_label_values(&[table]).inc();
        tracing::warn!(
            table,
            topic,
            partition,
            table_offset,
            group_offset = seen.group,
            "The consumer group's position is ahead of what the table holds (table lost, restored or recreated?); following the table."
        );
    }
    match (decision.start, &decision.note) {
        (Start::Refuse(Refusal::Gone { needed, earliest }), _) => tracing::error!(
            table,
            topic,
            partition,
            needed_offset = needed,
            earliest_retained = earliest,
            missing_from = needed,
            missing_to = earliest - 1,
            "Kafka no longer retains offsets the table needs: this partition is not written. Refill the gap from the raw zone, then set sink.resume_past_offset_gaps (see docs/operations.md, Recovery)."
        ),
        (Start::Refuse(Refusal::PastEnd { needed, latest }), _) => tracing::error!(
            table,
            topic,
            partition,
            needed_offset = needed,
            partition_end = latest,
            "The table holds offsets past the end of this partition (the topic was deleted and recreated?): this partition is not written. Give the sink a new consumer group to start the topic over (see docs/operations.md, Recovery)."
        ),
        (Start::At(offset), Some(note)) => tracing::warn!(
            table,
            topic,
            partition,
            offset,
            table_offset,
            reason = note.reason,
            policy = note.policy,
            "Partition starts where the table holds no offset; recorded in the next commit."
        ),
        (Start::At(_), None) => {}
    }
}

/// After a failed attempt: a fatal error is returned; otherwise waits the
/// back-off and says whether to try again (false once shutting down).
async fn pause_after(
    error: SinkError,
    failures: &mut u32,
    config: &SinkConfig,
    shutdown: &Shutdown,
) -> Result<bool, SinkError> {
    *failures += 1;
    let fatal = error.kind() == ErrorKind::Fatal;
    let pause = config.retry_backoff(*failures);
    WorkFailed {
        component: COMPONENT,
        work: "batch",
        origin: None,
        dataset: None,
        file: None,
        attempt: *failures,
        retry_in: (!fatal).then_some(pause),
        error: &error,
    }
    .emit();
    if fatal {
        return Err(error);
    }
    tokio::select! {
        _ = shutdown.cancelled() => Ok(false),
        _ = tokio::time::sleep(pause) => Ok(true),
    }
}
