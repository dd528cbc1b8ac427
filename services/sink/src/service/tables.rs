//! Which tables this instance writes, which topic feeds each, and how a
//! topic's messages become rows.

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow::compute::filter_record_batch;
use medlake_common::Context;
use medlake_common::dataset;
use rdkafka::Message;
use rdkafka::message::Headers;

use super::batch::Buffered;
use super::config::SinkConfig;
use super::error::SinkError;
use crate::decode::{DecodeReject, Decoded, RecordDecoder};
use crate::delta::builtin::{self, DeadLetterMessage};
use crate::delta::{
    OP_COLUMN, OP_DELETE, OP_UPSERT, TableMode, TableSpec, TableWriter, WriterOptions,
};

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feed {
    /// JSON records of a data set (`<prefix>.records.<name>`).
    Records,
    /// Dead letters (`<prefix>.dlq`): headers and value become a row.
    DeadLetters,
    /// The file ledger (`<prefix>.files`): JSON entries.
    Files,
}

/// One table to write and the topic that feeds it.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub topic: String,
    pub spec: TableSpec,
    pub feed: Feed,
}

/// The tables named by `sink.datasets` (all of them when empty).
pub(crate) fn plan(ctx: &Context, config: &SinkConfig) -> Result<Vec<Planned>, SinkError> {
    let builtin_only = !config.datasets.is_empty()
        && config
            .datasets
            .iter()
            .all(|n| n == builtin::DEAD_LETTERS_TABLE || n == builtin::FILES_TABLE);
    let datasets = if builtin_only {
        Vec::new()
    } else {
        dataset::load_dir(&ctx.schemas_dir).map_err(|source| SinkError::Datasets { source })?
    };
    let records = |d: &dataset::Dataset| -> Result<Planned, SinkError> {
        Ok(Planned {
            topic: ctx.topics.records(&d.name),
            spec: TableSpec::from_dataset(d).map_err(|e| SinkError::table(&d.name, e))?,
            feed: Feed::Records,
        })
    };
    let dead_letters = || Planned {
        topic: ctx.topics.dlq(),
        spec: builtin::dead_letters_spec(),
        feed: Feed::DeadLetters,
    };
    let files = || Planned {
        topic: ctx.topics.files(),
        spec: builtin::files_spec(),
        feed: Feed::Files,
    };
    if config.datasets.is_empty() {
        let mut all = datasets
            .iter()
            .map(records)
            .collect::<Result<Vec<_>, _>>()?;
        all.push(dead_letters());
        all.push(files());
        return Ok(all);
    }
    let mut planned: Vec<Planned> = Vec::new();
    for name in &config.datasets {
        if planned.iter().any(|p| &p.spec.name == name) {
            continue;
        }
        planned.push(match name.as_str() {
            builtin::DEAD_LETTERS_TABLE => dead_letters(),
            builtin::FILES_TABLE => files(),
            _ => match datasets.iter().find(|d| &d.name == name) {
                Some(d) => records(d)?,
                None => {
                    return Err(SinkError::UnknownDataset {
                        name: name.clone(),
                        dir: ctx.schemas_dir.clone(),
                    });
                }
            },
        });
    }
    Ok(planned)
}

/// An open table with its topic and decoder.
#[derive(Debug)]
pub(crate) struct Target {
    pub topic: String,
    pub feed: Feed,
    pub writer: TableWriter,
    decoder: Option<RecordDecoder>,
    max_dead_letter_payload_bytes: usize,
}

impl Target {
    /// Opens (or creates) the table of `planned`.
    pub(crate) async fn open(
        planned: Planned,
        lake_uri: &str,
        config: &SinkConfig,
    ) -> Result<Self, SinkError> {
        let options = WriterOptions {
            consumer_group: config.consumer_group.clone(),
            config: config.delta.clone(),
        };
        let name = planned.spec.name.clone();
        let writer = TableWriter::open_or_create(lake_uri, &planned.spec, &options)
            .await
            .map_err(|e| SinkError::table(&name, e))?;
        let decoder = match planned.feed {
            // Strict: a key the definition lacks means the sink runs an older
            // definition than the parser; the record must not lose a column.
            Feed::Records => Some(RecordDecoder::new(
                &name,
                planned.spec.schema.clone(),
                true,
            )?),
            // Lenient: the ledger may grow keys the table does not keep.
            Feed::Files => Some(RecordDecoder::new(
                &name,
                planned.spec.schema.clone(),
                false,
            )?),
            Feed::DeadLetters => None,
        };
        Ok(Self {
            topic: planned.topic,
            feed: planned.feed,
            writer,
            decoder,
            max_dead_letter_payload_bytes: config.max_dead_letter_payload_bytes,
        })
    }

    /// The table (data set) name.
    pub(crate) fn name(&self) -> &str {
        &self.writer.spec().name
    }

    /// Turns a batch's messages into rows. `Decoded::rows` holds message
    /// positions; a message in neither rows nor rejects (a ledger tombstone)
    /// is consumed without a row.
    pub(crate) fn rows(&self, messages: &[Buffered]) -> Result<Decoded, SinkError> {
        match (&self.feed, &self.decoder) {
            (Feed::DeadLetters, _) | (_, None) => self.dead_letter_rows(messages),
            (feed, Some(decoder)) => {
                let mut positions = Vec::with_capacity(messages.len());
                let mut payloads = Vec::with_capacity(messages.len());
                let mut rejects = Vec::new();
                for (i, m) in messages.iter().enumerate() {
                    match m.message.payload() {
                        Some(p) => {
                            positions.push(i);
                            payloads.push(p);
                        }
                        None if *feed == Feed::Files => {}
                        None => rejects.push(DecodeReject {
                            index: i,
                            column: None,
                            reason: "message has no value",
                        }),
                    }
                }
                let mut decoded = decoder.decode(&payloads)?;
                for row in &mut decoded.rows {
                    *row = positions[*row];
                }
                for reject in &mut decoded.rejects {
                    reject.index = positions[reject.index];
                }
                decoded.rejects.append(&mut rejects);
                if matches!(self.writer.spec().mode, TableMode::Merge { .. }) {
                    decoded = self.refuse_unknown_operations(decoded)?;
                }
                decoded.rejects.sort_by_key(|r| r.index);
                Ok(decoded)
            }
        }
    }

    /// Merge rows whose `_op` is neither `upsert` nor `delete` are refused
    /// here, before the commit, so their dead letters precede it.
    fn refuse_unknown_operations(&self, decoded: Decoded) -> Result<Decoded, SinkError> {
        let Some(ops) = decoded
            .records
            .column_by_name(OP_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        else {
            return Ok(decoded);
        };
        let keep: Vec<bool> = (0..ops.len())
            .map(|i| ops.is_valid(i) && matches!(ops.value(i), OP_UPSERT | OP_DELETE))
            .collect();
        if keep.iter().all(|k| *k) {
            return Ok(decoded);
        }
        let records = filter_record_batch(&decoded.records, &BooleanArray::from(keep.clone()))
            .map_err(|source| crate::decode::DecodeError::Assemble {
                table: self.name().to_string(),
                source,
            })?;
        let mut rows = Vec::new();
        let mut rejects = decoded.rejects;
        for (row, kept) in decoded.rows.into_iter().zip(keep) {
            if kept {
                rows.push(row);
            } else {
                rejects.push(DecodeReject {
                    index: row,
                    column: Some(OP_COLUMN.to_string()),
                    reason: "operation must be upsert or delete",
                });
            }
        }
        Ok(Decoded {
            records,
            rows,
            rejects,
        })
    }

    fn dead_letter_rows(&self, messages: &[Buffered]) -> Result<Decoded, SinkError> {
        let headers: Vec<Vec<(&str, &[u8])>> = messages
            .iter()
            .map(|m| {
                m.message
                    .headers()
                    .map(|h| {
                        h.iter()
                            .filter_map(|h| h.value.map(|v| (h.key, v)))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let letters: Vec<DeadLetterMessage<'_>> = messages
            .iter()
            .zip(&headers)
            .map(|(m, h)| DeadLetterMessage {
                headers: h,
                payload: m.message.payload(),
                timestamp_ms: m.message.timestamp().to_millis(),
                partition: m.partition(),
                offset: m.offset(),
            })
            .collect();
        let records: RecordBatch =
            builtin::dead_letter_rows(&letters, self.max_dead_letter_payload_bytes)
                .map_err(|e| SinkError::table(self.name(), e))?;
        Ok(Decoded {
            records,
            rows: (0..messages.len()).collect(),
            rejects: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use medlake_common::admin::Health;
    use medlake_common::config::{KafkaConfig, TopicsConfig};

    use super::*;

    fn ctx() -> Context {
        Context {
            kafka: KafkaConfig::default(),
            topics: TopicsConfig {
                prefix: "p".into(),
                ..TopicsConfig::default()
            },
            lake_uri: "unused".into(),
            schemas_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas"),
            facilities_file: PathBuf::new(),
            health: Health::new(),
        }
    }

    #[test]
    fn empty_selection_is_every_data_set_and_both_built_in_tables() {
        let planned = plan(&ctx(), &SinkConfig::default()).unwrap();
        let names: Vec<_> = planned.iter().map(|p| p.spec.name.as_str()).collect();
        assert!(names.contains(&"lab_results"), "{names:?}");
        assert!(names.contains(&"_dead_letters") && names.contains(&"_files"));
        let labs = planned
            .iter()
            .find(|p| p.spec.name == "lab_results")
            .unwrap();
        assert_eq!(labs.topic, "p.records.lab_results");
        assert_eq!(labs.feed, Feed::Records);
        let dlq = planned
            .iter()
            .find(|p| p.feed == Feed::DeadLetters)
            .unwrap();
        assert_eq!(dlq.topic, "p.dlq");
    }

    #[test]
    fn one_data_set_per_deployment() {
        let config = SinkConfig {
            datasets: vec!["adt_events".into()],
            ..SinkConfig::default()
        };
        let planned = plan(&ctx(), &config).unwrap();
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].topic, "p.records.adt_events");
    }

    #[test]
    fn built_in_tables_need_no_definitions() {
        let mut c = ctx();
        c.schemas_dir = PathBuf::from("/nonexistent");
        let config = SinkConfig {
            datasets: vec!["_files".into()],
            ..SinkConfig::default()
        };
        let planned = plan(&c, &config).unwrap();
        assert_eq!(planned[0].topic, "p.files");
    }

    #[test]
    fn unknown_names_are_refused() {
        let config = SinkConfig {
            datasets: vec!["nope".into()],
            ..SinkConfig::default()
        };
        let err = plan(&ctx(), &config).unwrap_err();
        assert!(err.to_string().contains("'nope'"), "{err}");
    }
}
