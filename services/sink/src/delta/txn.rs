//! Kafka offsets in the Delta log.
//!
//! Every commit carries one `txn` action per Kafka partition of its batch:
//! app id `<consumer group>-<topic>-<partition>`, version = the last offset
//! of that partition the batch covers. The table, not Kafka, is the source of
//! truth: the consumer seeks to `version + 1`, and `pending` drops whatever
//! the table already holds, so a batch delivered twice changes nothing.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;

use super::error::DeltaError;

/// Where one row of a batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowOrigin {
    /// Kafka partition.
    pub partition: i32,
    /// Offset of the message the row was decoded from.
    pub offset: i64,
}

/// The last offset of one partition that a batch covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Kafka partition.
    pub partition: i32,
    /// Last consumed offset (inclusive), with or without a row.
    pub last_offset: i64,
}

/// A batch of rows from one topic with its Kafka positions.
///
/// `origins[i]` is the origin of row `i` of `records`. `offsets` holds the
/// last consumed offset of every partition in the batch: it may be past the
/// last row (messages that became dead letters still move the offset).
#[derive(Debug, Clone)]
pub struct SinkBatch {
    /// Topic the rows were consumed from.
    pub topic: String,
    /// Decoded rows, in the table spec's schema.
    pub records: RecordBatch,
    /// Origin of each row.
    pub origins: Vec<RowOrigin>,
    /// Last consumed offset per partition.
    pub offsets: Vec<PartitionOffset>,
    /// Written into the commit's `commitInfo` (why a partition started
    /// where it did, for one).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl SinkBatch {
    /// A batch whose partition offsets are the largest row offsets.
    pub fn new(topic: impl Into<String>, records: RecordBatch, origins: Vec<RowOrigin>) -> Self {
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for origin in &origins {
            let entry = last.entry(origin.partition).or_insert(origin.offset);
            *entry = (*entry).max(origin.offset);
        }
        Self {
            topic: topic.into(),
            records,
            origins,
            offsets: last
                .into_iter()
                .map(|(partition, last_offset)| PartitionOffset {
                    partition,
                    last_offset,
                })
                .collect(),
            metadata: serde_json::Map::new(),
        }
    }

    /// Adds `key: value` to the commit's metadata.
    pub fn with_metadata(mut self, key: &str, value: serde_json::Value) -> Self {
        self.metadata.insert(key.to_string(), value);
        self
    }

    /// Records that the batch consumed `partition` up to `offset` (for
    /// messages that produced no row).
    pub fn consumed(mut self, partition: i32, offset: i64) -> Self {
        match self.offsets.iter_mut().find(|p| p.partition == partition) {
            Some(p) => p.last_offset = p.last_offset.max(offset),
            None => self.offsets.push(PartitionOffset {
                partition,
                last_offset: offset,
            }),
        }
        self
    }

    /// Checks the batch's invariants.
    pub(crate) fn validate(&self, table: &str) -> Result<(), DeltaError> {
        let invalid = |reason: String| DeltaError::InvalidBatch {
            table: table.to_string(),
            reason,
        };
        if self.origins.len() != self.records.num_rows() {
            return Err(invalid(format!(
                "{} origins for {} rows",
                self.origins.len(),
                self.records.num_rows()
            )));
        }
        let mut last = HashMap::new();
        for p in &self.offsets {
            if last.insert(p.partition, p.last_offset).is_some() {
                return Err(invalid(format!("partition {} listed twice", p.partition)));
            }
        }
        for origin in &self.origins {
            match last.get(&origin.partition) {
                Some(l) if *l >= origin.offset => {}
                _ => {
                    return Err(invalid(format!(
                        "row from partition {} offset {} is past the batch's last offset",
                        origin.partition, origin.offset
                    )));
                }
            }
        }
        Ok(())
    }
}

/// App id of the `txn` action of one partition.
pub fn app_id(consumer_group: &str, topic: &str, partition: i32) -> String {
    format!("{consumer_group}-{topic}-{partition}")
}

/// Last committed offset per partition, for the partitions asked about.
/// Partitions the table has never seen are absent.
pub(crate) async fn committed_offsets(
    table: &DeltaTable,
    table_name: &str,
    consumer_group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<HashMap<i32, i64>, DeltaError> {
    let mut out = HashMap::new();
    let Ok(state) = table.snapshot() else {
        return Ok(out);
    };
    let log_store = table.log_store();
    for partition in partitions {
        let version = state
            .transaction_version(log_store.as_ref(), app_id(consumer_group, topic, partition))
            .await
            .map_err(|e| DeltaError::delta(table_name, "read committed offsets", e))?;
        if let Some(version) = version {
            out.insert(partition, version);
        }
    }
    Ok(out)
}

/// The part of `batch` the table does not hold yet, or `None` when the
/// table already covers every partition's last offset.
pub(crate) fn pending(
    table: &str,
    batch: &SinkBatch,
    committed: &HashMap<i32, i64>,
) -> Result<Option<SinkBatch>, DeltaError> {
    let is_new =
        |partition: i32, offset: i64| committed.get(&partition).is_none_or(|c| offset > *c);
    let offsets: Vec<PartitionOffset> = batch
        .offsets
        .iter()
        .copied()
        .filter(|p| is_new(p.partition, p.last_offset))
        .collect();
    if offsets.is_empty() {
        return Ok(None);
    }
    let keep: Vec<bool> = batch
        .origins
        .iter()
        .map(|o| is_new(o.partition, o.offset))
        .collect();
    if keep.iter().all(|k| *k) {
        return Ok(Some(SinkBatch {
            offsets,
            ..batch.clone()
        }));
    }
    let records = filter_record_batch(&batch.records, &BooleanArray::from(keep.clone()))
        .map_err(|e| DeltaError::arrow(table, "drop committed rows", e))?;
    let origins = batch
        .origins
        .iter()
        .zip(keep)
        .filter_map(|(o, k)| k.then_some(*o))
        .collect();
    Ok(Some(SinkBatch {
        topic: batch.topic.clone(),
        records,
        origins,
        offsets,
        metadata: batch.metadata.clone(),
    }))
}

/// The `txn` actions of a batch.
pub(crate) fn transactions(consumer_group: &str, batch: &SinkBatch) -> Vec<Transaction> {
    batch
        .offsets
        .iter()
        .map(|p| {
            Transaction::new(
                app_id(consumer_group, &batch.topic, p.partition),
                p.last_offset,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(rows: &[(i32, i64)]) -> SinkBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(rows.iter().map(|(_, o)| *o));
        let records = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        let origins = rows
            .iter()
            .map(|(partition, offset)| RowOrigin {
                partition: *partition,
                offset: *offset,
            })
            .collect();
        SinkBatch::new("topic", records, origins)
    }

    #[test]
    fn new_batch_takes_the_largest_offset_per_partition() {
        let b = batch(&[(0, 5), (1, 3), (0, 7)])
            .consumed(1, 9)
            .consumed(2, 1);
        b.validate("t").unwrap();
        let mut offsets: Vec<_> = b
            .offsets
            .iter()
            .map(|p| (p.partition, p.last_offset))
            .collect();
        offsets.sort();
        assert_eq!(offsets, vec![(0, 7), (1, 9), (2, 1)]);
    }

    #[test]
    fn committed_rows_are_dropped() {
        let b = batch(&[(0, 5), (0, 6), (1, 3), (0, 7)]);
        let committed = HashMap::from([(0, 6)]);
        let p = pending("t", &b, &committed).unwrap().unwrap();
        let values = p
            .records
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(values.len(), 2);
        assert_eq!(
            p.origins,
            vec![
                RowOrigin {
                    partition: 1,
                    offset: 3
                },
                RowOrigin {
                    partition: 0,
                    offset: 7
                },
            ]
        );
    }

    #[test]
    fn a_fully_committed_batch_is_nothing() {
        let b = batch(&[(0, 5), (1, 3)]);
        let committed = HashMap::from([(0, 5), (1, 10)]);
        assert!(pending("t", &b, &committed).unwrap().is_none());
    }

    #[test]
    fn rows_past_the_offsets_are_invalid() {
        let mut b = batch(&[(0, 5)]);
        b.offsets[0].last_offset = 4;
        assert!(b.validate("t").is_err());
    }

    #[test]
    fn app_ids_name_group_topic_and_partition() {
        assert_eq!(
            app_id("g", "medlake.records.labs", 3),
            "g-medlake.records.labs-3"
        );
    }
}
