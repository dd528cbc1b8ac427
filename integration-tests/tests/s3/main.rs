//! The lake on object storage: the whole pipeline, two sink replicas of one
//! data set and Trino, against a real S3 API server (`moto` in server mode,
//! started here) and the real broker.
//!
//! One S3 server serves every scenario of this binary, each under a prefix
//! of its own. The `AWS_*` settings that object_store and delta-rs read must
//! be in this process's environment (the test reads the lake itself), and a
//! running test harness has threads, so this binary has its own `main` (no
//! libtest harness): it runs itself again with the settings in the child's
//! environment; the child starts the server, then runs the scenarios one
//! after another. Arguments that do not start with `-` filter scenarios by
//! name, as libtest's do.

// The end-to-end pipeline of the on-disk tests; its own tests are not
// compiled into this binary, so some of its items are unused here.
#[path = "../it/e2e.rs"]
#[allow(dead_code, unused_imports)]
mod e2e;
mod pipeline;
mod replicas;
// The Spark interoperability test's table writers and readers.
#[path = "../it/spark.rs"]
#[allow(dead_code, unused_imports)]
mod spark;
mod trino;

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use futures::FutureExt;
use medlake_integration_tests::{S3Server, free_port, short_id};

/// The bucket every scenario writes under.
const BUCKET: &str = "medlake-it";

/// The S3 server of this run.
pub struct Lakes {
    pub server: S3Server,
}

impl Lakes {
    /// A fresh lake root for `scenario`: `s3://<bucket>/<scenario>-<id>/lake`.
    pub fn lake(&self, scenario: &str) -> String {
        format!("s3://{BUCKET}/{scenario}-{}/lake", short_id())
    }

    /// An object_store client on the bucket (for what the tests check
    /// directly: the raw zone, the Delta logs).
    pub fn store(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(BUCKET)
            .build()
            .expect("S3 client")
    }
}

/// Set in the child run by [`run_with_s3_environment`]: the S3 server's port.
const PORT_ENV: &str = "MEDLAKE_TEST_S3_PORT";

/// Runs this binary again, with the same arguments, with the S3 settings of
/// a server on a free port in its environment; exits as it does.
fn run_with_s3_environment() -> ExitCode {
    let port = free_port();
    let exe = std::env::current_exe().expect("this test binary");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(S3Server::env_for(&format!("http://127.0.0.1:{port}")))
        .env(PORT_ENV, port.to_string())
        .status()
        .expect("run the S3 scenarios");
    if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The scenarios, by name.
const SCENARIOS: [&str; 3] = [
    "s3::the_pipeline_on_s3_reconciles_as_on_disk",
    "s3::two_sink_replicas_commit_every_batch_once_on_s3",
    "s3::trino_reads_every_table_from_disk_and_s3_as_spark_and_medlake_do",
];

async fn run(name: &str, lakes: &Lakes) {
    match name {
        "s3::the_pipeline_on_s3_reconciles_as_on_disk" => pipeline::reconciles(lakes).await,
        "s3::two_sink_replicas_commit_every_batch_once_on_s3" => replicas::commit_once(lakes).await,
        "s3::trino_reads_every_table_from_disk_and_s3_as_spark_and_medlake_do" => {
            trino::reads_every_table(lakes).await
        }
        other => unreachable!("no scenario {other}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let exact = args.iter().any(|a| a == "--exact");
    let selected: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|name| {
            filters.is_empty()
                || filters.iter().any(|f| {
                    if exact {
                        name == f
                    } else {
                        name.contains(f.as_str())
                    }
                })
        })
        .collect();
    if args.iter().any(|a| a == "--list") {
        for name in &selected {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    if selected.is_empty() {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed\n");
        return ExitCode::SUCCESS;
    }
    let Some(port) = std::env::var(PORT_ENV).ok().and_then(|p| p.parse().ok()) else {
        return run_with_s3_environment();
    };
    println!("\nrunning {} tests", selected.len());

    deltalake::aws::register_handlers(None);
    let started = Instant::now();
    let lakes = Lakes {
        server: S3Server::start(port),
    };
    lakes.server.create_bucket(BUCKET);
    eprintln!(
        "s3: moto server up at {} in {:.1?}",
        lakes.server.endpoint,
        started.elapsed()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut failed = Vec::new();
    for name in &selected {
        let started = Instant::now();
        let outcome = runtime.block_on(AssertUnwindSafe(run(name, &lakes)).catch_unwind());
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("test {name} ... {verdict} ({:.1?})", started.elapsed());
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    let passed = selected.len() - failed.len();
    if failed.is_empty() {
        println!("\ntest result: ok. {passed} passed; 0 failed\n");
        ExitCode::SUCCESS
    } else {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
        println!(
            "\ntest result: FAILED. {passed} passed; {} failed\n",
            failed.len()
        );
        ExitCode::FAILURE
    }
}
