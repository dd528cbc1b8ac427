//! `medlake serve` over a lake the real pipeline wrote: the four services
//! land generated files of three facilities, then `serve` answers two
//! customers with disjoint facilities and a company analyst.
//!
//! - Each customer's answers equal the lake's rows of its own facilities, in
//!   every table; a table of hostile queries is refused or scoped, and not
//!   one row of the other customer comes back.
//! - A cached answer is replaced as soon as a commit adds rows.
//! - Every query has its `_audit` row.
//! - Headless Chromium (Debian's `chromium`, driven by
//!   `scripts/portal_check.py`) signs in, runs a report, sees its chart and
//!   downloads the CSV, whose rows equal the API's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medlake_common::raw_file::sha256_hex;
use medlake_datagen::{FileEntry, Manifest};
use medlake_integration_tests::{
    ChildGuard, brokers, free_port, metric_sample, metrics_text, repo_root, wait_ready,
};
use medlake_sink::delta::read;
use serde_json::Value;

use crate::e2e::{Pipeline, SERVICES, rows, tuples};

/// The customers of the test registry: id, facilities (empty: all), token.
const CUSTOMERS: [(&str, &[&str], &str); 3] = [
    ("C1", &["E01"], "c1-token-0123456789"),
    ("C2", &["E02", "E03"], "c2-token-0123456789"),
    ("analysts", &[], "analyst-token-0123456789"),
];
/// The tables a customer reads, with their facility column.
const TABLES: [(&str, &str); 7] = [
    ("adt_events", "_facility_id"),
    ("bed_census", "_facility_id"),
    ("bed_census_fixed", "_facility_id"),
    ("lab_results", "_facility_id"),
    ("patients", "_facility_id"),
    ("_files", "facility_id"),
    ("_dead_letters", "facility_id"),
];
/// Rows of one answer at most (so a cross join is cut, not refused).
const MAX_ROWS: usize = 2_000;
/// How long one query may run.
const QUERY_TIMEOUT_MS: u64 = 4_000;

/// A running `medlake serve` over a pipeline's lake.
struct Serve {
    _child: ChildGuard,
    base: String,
    admin: String,
    client: reqwest::Client,
    /// Requests answered, by user, for the audit check.
    asked: BTreeMap<String, usize>,
}

/// A pipeline with every service running and `manifest`'s files landed.
async fn landed(files: usize, bad: usize, seed: u64) -> (Pipeline, Manifest) {
    let mut pipeline = Pipeline::new(brokers());
    for service in SERVICES {
        pipeline.start(service).await;
    }
    let manifest = pipeline.generate(files, bad, seed);
    let all: Vec<&FileEntry> = manifest.files.iter().collect();
    pipeline.deliver(&all).await;
    pipeline
        .wait_reconciled(&manifest, false, Duration::from_secs(150))
        .await;
    (pipeline, manifest)
}

fn user_of(customer: &str) -> String {
    format!("{}-user", customer.to_lowercase())
}

impl Serve {
    /// Writes the customer registry and starts `medlake serve` on the
    /// pipeline's lake.
    async fn start(pipeline: &Pipeline) -> Self {
        let mut yaml = String::from("customers:\n");
        for (id, facilities, token) in CUSTOMERS {
            yaml.push_str(&format!("  - id: {id}\n    name: Customer {id}\n"));
            if facilities.is_empty() {
                yaml.push_str("    all_facilities: true\n");
            } else {
                yaml.push_str(&format!("    facilities: [{}]\n", facilities.join(", ")));
            }
            yaml.push_str(&format!(
                "    users:\n      - name: {}\n        token_sha256: {}\n",
                user_of(id),
                sha256_hex(token.as_bytes())
            ));
        }
        let customers = pipeline.dir().join("customers.yaml");
        std::fs::write(&customers, yaml).unwrap();
        let log = pipeline.dir().join("logs").join("serve.log");
        let log = std::fs::File::create(log).unwrap();
        let base = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut command = pipeline.command();
        command
            .arg("serve")
            .env("MEDLAKE_ADMIN__LISTEN", &admin)
            .env("MEDLAKE_SERVE__LISTEN", &base)
            .env("MEDLAKE_SERVE__CUSTOMERS_FILE", &customers)
            .env("MEDLAKE_SERVE__REPORTS_DIR", repo_root().join("reports"))
            .env("MEDLAKE_SERVE__MAX_ROWS", MAX_ROWS.to_string())
            .env(
                "MEDLAKE_SERVE__QUERY_TIMEOUT_MS",
                QUERY_TIMEOUT_MS.to_string(),
            )
            .env("MEDLAKE_SERVE__AUDIT_FLUSH_MS", "300")
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = ChildGuard::spawn(command);
        wait_ready(&mut child, &admin, "medlake serve", Duration::from_secs(60)).await;
        Self {
            _child: child,
            base: format!("http://{base}"),
            admin,
            client: reqwest::Client::new(),
            asked: BTreeMap::new(),
        }
    }

    fn token(customer: &str) -> &'static str {
        CUSTOMERS
            .iter()
            .find(|(id, _, _)| *id == customer)
            .map(|(_, _, token)| *token)
            .unwrap()
    }

    /// `POST path` with `body` as `customer`: status and JSON body.
    async fn post(&mut self, customer: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(Self::token(customer))
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        *self.asked.entry(user_of(customer)).or_default() += 1;
        (status, body)
    }

    /// The answer to `sql` as `customer`; panics unless it is a 200.
    async fn query(&mut self, customer: &str, sql: &str) -> Value {
        let (status, body) = self
            .post(customer, "/v1/query", serde_json::json!({ "sql": sql }))
            .await;
        assert_eq!(status, 200, "{customer}: {sql}: {body}");
        body
    }

    async fn cache_hits(&self) -> f64 {
        let text = metrics_text(&self.admin).await;
        metric_sample(&text, "medlake_serve_cache_lookups_total{outcome=\"hit\"}").unwrap_or(0.0)
    }
}

/// `(facility, count)` rows of a JSON answer with columns `fac` and `n`.
fn counts(answer: &Value) -> BTreeMap<String, u64> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["fac"].as_str().unwrap_or_default().to_string(),
                row["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Rows per facility of `table`, read straight from the Delta table.
async fn lake_counts(lake: &str, table: &str, column: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for row in tuples(&rows(lake, table).await, &[column]) {
        *out.entry(row[0].clone()).or_default() += 1;
    }
    out
}

/// Every string anywhere in the answer's rows.
fn strings_of(answer: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            Value::Object(map) => map.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&answer["rows"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_read_only_their_facilities_of_the_lake_the_pipeline_wrote() {
    let started = Instant::now();
    let (mut pipeline, _manifest) = landed(18, 3, 23).await;
    let lake = pipeline.lake();
    let mut serve = Serve::start(&pipeline).await;

    // 1. Each customer sees exactly its facilities' rows of every table.
    for (table, column) in TABLES {
        let truth = lake_counts(&lake, table, column).await;
        // The generator's slice may hold no file of a data set (and no
        // dead letter of a facility): those are empty for everyone.
        assert!(
            !truth.is_empty() || ["bed_census_fixed", "_dead_letters"].contains(&table),
            "{table} is empty"
        );
        let sql = format!("SELECT {column} AS fac, count(*) AS n FROM {table} GROUP BY {column}");
        for (customer, facilities, _) in CUSTOMERS {
            let seen = counts(&serve.query(customer, &sql).await);
            let expected: BTreeMap<String, u64> = truth
                .iter()
                .filter(|(f, _)| facilities.is_empty() || facilities.contains(&f.as_str()))
                .map(|(f, n)| (f.clone(), *n))
                .collect();
            assert_eq!(seen, expected, "{customer} reading {table}");
        }
        eprintln!("serve: {table}: rows per facility {truth:?}");
    }
    eprintln!("serve: every table scoped for every customer");

    // 1b. Every report answers every customer over the whole data, its
    //     range starting on the first day of the data exactly (a range
    //     ending on a column's bound once tripped the planner's statistics).
    let first_day = serve
        .query(
            "analysts",
            "SELECT CAST(min(event_time) AS DATE) AS d FROM adt_events",
        )
        .await["rows"][0]["d"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = serve
        .client
        .get(format!("{}/v1/reports", serve.base))
        .bearer_auth(Serve::token("analysts"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let reports = listed["reports"].as_array().unwrap().clone();
    assert!(reports.len() >= 7, "{listed}");
    for report in &reports {
        let name = report["name"].as_str().unwrap();
        let mut params = serde_json::Map::new();
        for param in report["params"].as_array().unwrap() {
            if param["type"] == "date" {
                let value = if param["name"] == "from" {
                    first_day.as_str()
                } else {
                    "today"
                };
                params.insert(param["name"].as_str().unwrap().into(), value.into());
            }
        }
        for (customer, facilities, _) in CUSTOMERS {
            let (status, body) = serve
                .post(
                    customer,
                    &format!("/v1/reports/{name}"),
                    serde_json::json!({ "params": params }),
                )
                .await;
            assert_eq!(status, 200, "{customer}: report {name} {params:?}: {body}");
            for value in strings_of(&body) {
                let foreign = ["E01", "E02", "E03"].contains(&value.as_str())
                    && !facilities.is_empty()
                    && !facilities.contains(&value.as_str());
                assert!(!foreign, "{customer}: report {name} shows {value}");
            }
        }
    }
    eprintln!(
        "serve: {} reports answer every customer from {first_day}",
        reports.len()
    );

    // 2. Hostile queries as C1 (E01): refused with a 400, or answered with
    //    E01's rows only. The raw zone, the audit table, files and settings
    //    are out of reach.
    let root = lake.trim_end_matches('/');
    let others = ["E02", "E03"];
    let hostile: Vec<(String, Expect)> = vec![
        ("SELECT _facility_id AS fac FROM lab_results".into(), Expect::Scoped),
        (
            "SELECT f.facility_id, d.facility_id FROM _files f \
             LEFT JOIN _dead_letters d ON f.file_id = d.file_id"
                .into(),
            Expect::Scoped,
        ),
        (
            "SELECT _facility_id FROM lab_results UNION ALL SELECT facility_id FROM _files \
             UNION SELECT _facility_id FROM patients UNION SELECT facility_id FROM _dead_letters"
                .into(),
            Expect::Scoped,
        ),
        (
            "WITH p AS (SELECT * FROM patients), a AS (SELECT * FROM adt_events) \
             SELECT p._facility_id, a._facility_id FROM p JOIN a ON p._facility_id = a._facility_id \
             LIMIT 50"
                .into(),
            Expect::Scoped,
        ),
        (
            "SELECT * FROM bed_census WHERE _facility_id IN (SELECT 'E02') OR _facility_id <> 'E01' OR true"
                .into(),
            Expect::Scoped,
        ),
        (
            "SELECT * FROM lab_results WHERE _facility_id = 'E02' OR facility_id = 'E03'".into(),
            Expect::Empty,
        ),
        (
            "SELECT (SELECT count(*) FROM patients WHERE _facility_id = 'E02') AS n".into(),
            Expect::ZeroCount,
        ),
        ("SELECT _facility_id FROM datafusion.public.adt_events".into(), Expect::Scoped),
        ("SELECT * FROM information_schema.tables".into(), Expect::Refused),
        ("SHOW TABLES".into(), Expect::Refused),
        ("SELECT * FROM _raw".into(), Expect::Refused),
        ("SELECT * FROM _audit".into(), Expect::Refused),
        (format!("SELECT * FROM '{root}/lab_results'"), Expect::Refused),
        (format!("SELECT * FROM read_parquet('{root}/lab_results')"), Expect::Refused),
        (format!("SELECT * FROM read_csv('{root}/_files')"), Expect::Refused),
        (
            format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{root}/lab_results'"),
            Expect::Refused,
        ),
        ("CREATE TABLE x AS SELECT * FROM lab_results".into(), Expect::Refused),
        ("CREATE VIEW lab_results2 AS SELECT 1".into(), Expect::Refused),
        ("INSERT INTO lab_results SELECT * FROM lab_results".into(), Expect::Refused),
        ("DELETE FROM patients".into(), Expect::Refused),
        ("UPDATE patients SET mrn = 'x'".into(), Expect::Refused),
        ("DROP TABLE patients".into(), Expect::Refused),
        (format!("COPY (SELECT * FROM patients) TO '{root}/leak.csv'"), Expect::Refused),
        ("SET datafusion.execution.target_partitions = 1".into(), Expect::Refused),
        ("EXPLAIN ANALYZE SELECT * FROM lab_results".into(), Expect::Refused),
        // A cross join far larger than any answer: cut at the row limit.
        (
            "SELECT a._facility_id, b._facility_id, c.facility_id \
             FROM lab_results a, lab_results b, _files c"
                .into(),
            Expect::Cut,
        ),
        // A query that never ends: stopped by the time limit.
        (
            "SELECT count(*) FROM generate_series(1, 100000000000) a".into(),
            Expect::Stopped,
        ),
    ];
    // Scoped queries that returned rows (E01's own): most must, or the
    // table proves nothing.
    let mut answered_rows = 0;
    for (sql, expect) in &hostile {
        let started = Instant::now();
        let (status, body) = serve
            .post("C1", "/v1/query", serde_json::json!({ "sql": sql }))
            .await;
        let leaked: Vec<String> = strings_of(&body)
            .into_iter()
            .filter(|s| others.contains(&s.as_str()))
            .collect();
        assert!(
            leaked.is_empty(),
            "{sql}: another customer's facility: {leaked:?}"
        );
        let rows = body["rows"].as_array().map_or(0, Vec::len);
        match expect {
            Expect::Scoped => {
                assert_eq!(status, 200, "{sql}: {body}");
                if rows > 0 {
                    answered_rows += 1;
                    assert!(strings_of(&body).contains("E01"), "{sql}: {body}");
                }
            }
            Expect::Empty => {
                assert_eq!(status, 200, "{sql}: {body}");
                assert_eq!(rows, 0, "{sql}: {body}");
            }
            Expect::ZeroCount => {
                assert_eq!(status, 200, "{sql}: {body}");
                assert_eq!(body["rows"][0]["n"], 0, "{sql}: {body}");
            }
            Expect::Refused => {
                assert_eq!(status, 400, "{sql}: {body}");
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{sql}: no reason given: {body}"
                );
            }
            Expect::Cut => {
                assert_eq!(status, 200, "{sql}: {body}");
                assert_eq!(body["truncated"], true, "{sql}");
                assert_eq!(body["row_count"], MAX_ROWS, "{sql}");
            }
            Expect::Stopped => {
                assert_eq!(status, 400, "{sql}: {body}");
                assert_eq!(body["code"], "timeout", "{sql}: {body}");
                assert!(
                    started.elapsed() < Duration::from_millis(QUERY_TIMEOUT_MS * 3),
                    "{sql}: stopped after {:?}",
                    started.elapsed()
                );
            }
        }
    }
    let scoped = hostile
        .iter()
        .filter(|(_, e)| matches!(e, Expect::Scoped))
        .count();
    assert!(
        answered_rows * 2 > scoped,
        "only {answered_rows} of {scoped} scoped queries returned rows"
    );
    eprintln!(
        "serve: {} hostile queries refused or scoped ({answered_rows} of {scoped} scoped ones with rows)",
        hostile.len()
    );

    // 3. The cache: the same question again is a hit; a commit that adds
    //    rows to a table read is answered anew at once.
    let sql =
        "SELECT facility_id AS fac, count(*) AS n FROM _files GROUP BY facility_id ORDER BY fac";
    let first = serve.query("C1", sql).await;
    let hits = serve.cache_hits().await;
    let again = serve.query("C1", sql).await;
    assert_eq!(
        serve.cache_hits().await,
        hits + 1.0,
        "the second ask is a cache hit"
    );
    assert_eq!(first["rows"], again["rows"]);
    let before = counts(&first)["E01"];
    let version_before = first["tables"]["_files"].as_u64().unwrap();

    let more = pipeline.generate(6, 0, 29);
    let e01: Vec<&FileEntry> = more
        .files
        .iter()
        .filter(|f| f.facility_id == "E01")
        .collect();
    assert!(!e01.is_empty(), "the second batch has files of E01");
    pipeline.deliver(&e01).await;
    let expected = before + e01.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let version = loop {
        let now = lake_counts(&lake, "_files", "facility_id").await;
        if now.get("E01") == Some(&expected) {
            break read::open(&lake, "_files")
                .await
                .unwrap()
                .version()
                .unwrap() as u64;
        }
        assert!(
            Instant::now() < deadline,
            "E01's new files never reached the ledger"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hits = serve.cache_hits().await;
    let after = serve.query("C1", sql).await;
    assert_eq!(
        serve.cache_hits().await,
        hits,
        "an answer after a commit is computed"
    );
    assert_eq!(counts(&after)["E01"], expected, "{after}");
    assert!(after["tables"]["_files"].as_u64().unwrap() >= version);
    assert!(version > version_before);
    eprintln!("serve: cache answered anew after the commit ({before} -> {expected} files)");

    // 4. Every request has its audit row: who, which query (a digest of the
    //    SQL, never its text), the tables and versions read, the outcome.
    let expected_rows: usize = serve.asked.values().sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    let audit = loop {
        let batches = rows(&lake, "_audit").await;
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        if n >= expected_rows {
            break batches;
        }
        assert!(
            Instant::now() < deadline,
            "{n} audit rows of {expected_rows}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let audit = tuples(
        &audit,
        &[
            "user",
            "customer",
            "query",
            "sql_sha256",
            "tables",
            "outcome",
        ],
    );
    let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
    for row in &audit {
        *per_user.entry(row[0].clone()).or_default() += 1;
    }
    assert_eq!(per_user, serve.asked, "audit rows per user");
    let digest = sha256_hex(sql.as_bytes());
    let cache_rows: Vec<_> = audit.iter().filter(|r| r[3] == digest).collect();
    assert_eq!(cache_rows.len(), 3, "{cache_rows:?}");
    assert!(
        cache_rows
            .iter()
            .all(|r| r[1] == "C1" && r[2] == format!("sql={}", &digest[..12]))
    );
    assert!(
        cache_rows.iter().any(|r| r[5] == "cached"),
        "{cache_rows:?}"
    );
    assert!(
        cache_rows.iter().all(|r| r[4].starts_with("_files@")),
        "{cache_rows:?}"
    );
    let refused = audit
        .iter()
        .filter(|r| r[5] != "ok" && r[5] != "cached")
        .count();
    let expected_refused = hostile
        .iter()
        .filter(|(_, e)| matches!(e, Expect::Refused | Expect::Stopped))
        .count();
    assert_eq!(refused, expected_refused, "refused queries in the audit");
    for row in &audit {
        assert!(
            !row.iter().any(|v| v.contains("SELECT")),
            "SQL text in the audit: {row:?}"
        );
    }
    eprintln!(
        "serve: {} audit rows; test took {:.1?}",
        audit.len(),
        started.elapsed()
    );
    pipeline.stop();
}

#[derive(Debug)]
enum Expect {
    /// 200, every row the asker's.
    Scoped,
    /// 200 and no row.
    Empty,
    /// 200 with `n` = 0.
    ZeroCount,
    /// 400 with a reason.
    Refused,
    /// 200 cut at the row limit.
    Cut,
    /// 400 `timeout`.
    Stopped,
}

/// Rows of a CSV text, header first.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_in_chromium_shows_a_report_and_downloads_its_csv() {
    let (mut pipeline, _manifest) = landed(10, 2, 31).await;
    let mut serve = Serve::start(&pipeline).await;
    let downloads = pipeline.dir().join("downloads");
    let python =
        std::env::var("MEDLAKE_PYTHON").map_or_else(|_| PathBuf::from("python3"), PathBuf::from);
    let output = Command::new(&python)
        .arg(repo_root().join("scripts").join("portal_check.py"))
        .args(["--url", &format!("{}/", serve.base)])
        .args(["--token", Serve::token("C2")])
        .args(["--report", "feed_status"])
        .args(["--param", "from=-7d"])
        .arg("--downloads")
        .arg(&downloads)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/portal_check.py");
    assert!(
        output.status.success(),
        "the browser run failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).expect("the browser's JSON");
    eprintln!("serve: the browser saw {seen}");
    assert_eq!(seen["title"], "medlake portal");
    assert_eq!(seen["refused"], "That token is not valid.");
    // The page loaded nothing from anywhere but the server.
    for resource in seen["resources"].as_array().unwrap() {
        let url = resource.as_str().unwrap();
        assert!(url.starts_with(&serve.base), "the page loaded {url}");
    }
    // The chart: a bar per facility and outcome, some of them not zero.
    assert_eq!(seen["chart"]["kind"], "bar", "{seen}");
    assert!(
        seen["chart"]["nonzero_bars"].as_u64().unwrap() > 0,
        "{seen}"
    );

    // The API's answer to the same report and parameters.
    let (status, api) = serve
        .post(
            "C2",
            "/v1/reports/feed_status",
            serde_json::json!({ "params": { "from": "-7d" } }),
        )
        .await;
    assert_eq!(status, 200, "{api}");
    let columns: Vec<String> = api["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let text = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let api_rows: Vec<Vec<String>> = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| columns.iter().map(|c| text(&row[c])).collect())
        .collect();
    let facilities: BTreeSet<&str> = api_rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        facilities,
        BTreeSet::from(["E02", "E03"]),
        "C2's facilities"
    );

    // The table on the page is the API's answer.
    let table_columns: Vec<String> =
        serde_json::from_value(seen["table"]["columns"].clone()).unwrap();
    let table_rows: Vec<Vec<String>> =
        serde_json::from_value(seen["table"]["rows"].clone()).unwrap();
    assert_eq!(table_columns, columns);
    assert_eq!(table_rows, api_rows);

    // The downloaded CSV: named after the report and its parameters, its
    // rows the API's.
    assert_eq!(seen["csv_name"], "feed_status_from--7d.csv", "{seen}");
    let downloaded = std::fs::read_to_string(seen["csv_path"].as_str().unwrap()).unwrap();
    let csv = csv_rows(&downloaded);
    assert_eq!(csv[0], columns, "the CSV header");
    assert_eq!(csv[1..].to_vec(), api_rows, "the CSV's rows");
    pipeline.stop();
}
