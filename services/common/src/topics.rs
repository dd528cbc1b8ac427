//! The topics of DESIGN.md and `medlake topics ensure`, which creates the
//! missing ones and brings the configs of existing ones to what medlake
//! needs. Running it twice changes nothing the second time.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::TopicsConfig;

/// One topic medlake needs, with the configs it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

/// What `ensure` did to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    /// Existed; these config keys were changed.
    Altered(Vec<String>),
    Unchanged,
}

/// `ensure` failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic} failed: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("reading the configs of topic {topic} failed: {code}")]
    Describe {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("altering the configs of topic {topic} failed: {code}")]
    Alter {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

impl crate::Classify for TopicsError {
    fn kind(&self) -> crate::ErrorKind {
        match self {
            TopicsError::Kafka(e) => crate::error::kafka_error_kind(e),
            _ => crate::ErrorKind::Fatal,
        }
    }
}

/// The topics of DESIGN.md for these data sets.
pub fn specs<'a>(
    config: &TopicsConfig,
    datasets: impl IntoIterator<Item = &'a str>,
) -> Vec<TopicSpec> {
    let spec = |name: String, configs: &[(&str, String)]| TopicSpec {
        name,
        partitions: config.partitions,
        replication_factor: config.replication_factor,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let big = config.raw_max_message_bytes.to_string();
    let mut specs = vec![
        spec(
            config.raw_files(),
            &[
                ("max.message.bytes", big.clone()),
                ("compression.type", "producer".into()),
            ],
        ),
        // Dead letters may carry a whole rejected file.
        spec(config.dlq(), &[("max.message.bytes", big)]),
        spec(
            config.files(),
            &[
                ("cleanup.policy", "compact".into()),
                ("min.compaction.lag.ms", "3600000".into()),
            ],
        ),
    ];
    for dataset in datasets {
        specs.push(spec(config.records(dataset), &[]));
    }
    specs
}

/// Creates the missing topics and aligns the configs of existing ones.
pub async fn ensure(
    admin: &AdminClient<DefaultClientContext>,
    specs: &[TopicSpec],
) -> Result<Vec<(String, TopicOutcome)>, TopicsError> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            s.configs.iter().fold(
                NewTopic::new(
                    &s.name,
                    s.partitions,
                    TopicReplication::Fixed(s.replication_factor),
                ),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let mut outcomes = BTreeMap::new();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(topic) => {
                outcomes.insert(topic, TopicOutcome::Created);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicsError::Create { topic, code }),
        }
    }

    let existing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !outcomes.contains_key(&s.name))
        .collect();
    if !existing.is_empty() {
        let resources: Vec<ResourceSpecifier<'_>> = existing
            .iter()
            .map(|s| ResourceSpecifier::Topic(&s.name))
            .collect();
        let described = admin.describe_configs(&resources, &options).await?;
        for (spec, result) in existing.iter().zip(described) {
            let resource = result.map_err(|code| TopicsError::Describe {
                topic: spec.name.clone(),
                code,
            })?;
            let current = resource.entry_map();
            let changed: Vec<String> = spec
                .configs
                .iter()
                .filter(|(k, v)| {
                    current.get(k.as_str()).and_then(|e| e.value.as_deref()) != Some(v.as_str())
                })
                .map(|(k, _)| k.clone())
                .collect();
            if changed.is_empty() {
                outcomes.insert(spec.name.clone(), TopicOutcome::Unchanged);
                continue;
            }
            // AlterConfigs replaces the topic's whole set of dynamic configs,
            // so send every config medlake manages, not only the changed ones.
            let alter = spec.configs.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(&spec.name)),
                |a, (k, v)| a.set(k, v),
            );
            for result in admin.alter_configs([&alter], &options).await? {
                result.map_err(|(_, code)| TopicsError::Alter {
                    topic: spec.name.clone(),
                    code,
                })?;
            }
            outcomes.insert(spec.name.clone(), TopicOutcome::Altered(changed));
        }
    }
    Ok(specs
        .iter()
        .map(|s| {
            let outcome = outcomes.remove(&s.name).unwrap_or(TopicOutcome::Unchanged);
            (s.name.clone(), outcome)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_follow_the_design() {
        let config = TopicsConfig::default();
        let specs = specs(&config, ["adt_events"]);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "medlake.raw.files",
                "medlake.dlq",
                "medlake.files",
                "medlake.records.adt_events"
            ]
        );
        let raw: u64 = specs[0].configs["max.message.bytes"].parse().unwrap();
        assert!(raw >= 64 * 1024 * 1024);
        assert_eq!(specs[2].configs["cleanup.policy"], "compact");
        assert!(
            names
                .iter()
                .all(|n| !n.contains('_') || n.contains("adt_events"))
        );
    }
}
