//! `medlake topics ensure`.

use clap::{Args, Subcommand};
use medlake_common::topics::{self, TopicOutcome};

use crate::config::Config;

/// Kafka topic administration.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create the missing topics and align the configs of existing ones (idempotent).
    Ensure(EnsureArgs),
}

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// Partitions per topic (default: `topics.partitions` of the configuration).
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor (default: `topics.replication_factor`).
    #[arg(long)]
    replication_factor: Option<i32>,
}

pub async fn run(command: TopicsCommand, config: &Config) -> anyhow::Result<()> {
    let TopicsCommand::Ensure(args) = command;
    let mut topic_config = config.topics.clone();
    if let Some(p) = args.partitions {
        topic_config.partitions = p;
    }
    if let Some(r) = args.replication_factor {
        topic_config.replication_factor = r;
    }
    let datasets: Vec<String> = medlake_common::dataset::load_dir(&config.schemas_dir)?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let specs = topics::specs(&topic_config, datasets.iter().map(String::as_str));
    let admin = medlake_common::kafka::admin(&config.kafka)?;
    for (topic, outcome) in topics::ensure(&admin, &specs).await? {
        match outcome {
            TopicOutcome::Created => println!("created   {topic}"),
            TopicOutcome::Altered(keys) => println!("altered   {topic} ({})", keys.join(", ")),
            TopicOutcome::Unchanged => println!("unchanged {topic}"),
        }
    }
    Ok(())
}
