//! Hostile queries against real Delta tables of two customers with disjoint
//! facilities: every one is refused, or answered with the asker's rows only.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use medlake_serve::catalog::Catalog;
use medlake_serve::customers::Scope;
use medlake_serve::engine::{Params, QueryError, QueryLimits, QueryResult, run, scoped_session};

async fn write(lake: &std::path::Path, table: &str, batch: RecordBatch) {
    let url = medlake_sink::delta::create::table_url(lake.to_str().unwrap(), table).unwrap();
    DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .write([batch])
        .await
        .unwrap();
}

fn labs(rows: &[(&str, &str, f64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("_facility_id", DataType::Utf8, false),
        Field::new("test", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn files(facilities: &[&str]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("facility_id", DataType::Utf8, true),
        Field::new("file_name", DataType::Utf8, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(facilities.iter().copied())),
            Arc::new(StringArray::from_iter_values(
                facilities.iter().map(|f| format!("{f}.zip")),
            )),
        ],
    )
    .unwrap()
}

struct Lake {
    dir: tempfile::TempDir,
    catalog: Catalog,
}

async fn lake() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lab_results",
        labs(&[
            ("F1", "k", 4.1),
            ("F1", "na", 140.0),
            ("F2", "k", 3.9),
            ("F3", "k", 5.5),
            ("F3", "na", 150.0),
            ("F3", "hb", 13.0),
        ]),
    )
    .await;
    write(dir.path(), "_files", files(&["F1", "F2", "F3", "F3"])).await;
    let catalog = Catalog::new(dir.path().to_str().unwrap(), ["lab_results".to_string()]);
    Lake { dir, catalog }
}

fn scope(ids: &[&str]) -> Scope {
    Scope::Facilities(ids.iter().map(|s| s.to_string()).collect())
}

async fn query(
    lake: &Lake,
    scope: &Scope,
    sql: &str,
    limits: QueryLimits,
) -> Result<QueryResult, QueryError> {
    let tables = lake.catalog.latest().await.unwrap();
    let versions = tables
        .iter()
        .map(|t| (t.def.name.clone(), t.version))
        .collect();
    let ctx = scoped_session(&tables, scope, &limits).await?;
    run(&ctx, sql, &Params::new(), &limits, versions).await
}

/// Every string value of every column, for "no other facility's id".
fn strings(result: &QueryResult) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for batch in &result.batches {
        for column in batch.columns() {
            let column = arrow::compute::cast(column, &DataType::Utf8).unwrap();
            let column = column.as_string::<i32>();
            for i in 0..column.len() {
                if column.is_valid(i) {
                    out.insert(column.value(i).to_string());
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn hostile_queries_are_refused_or_see_the_askers_rows_only() {
    let lake = lake().await;
    let c1 = scope(&["F1", "F2"]);
    let limits = QueryLimits::default();

    let scoped = [
        "SELECT * FROM lab_results",
        "SELECT * FROM lab_results WHERE _facility_id = 'F3' OR 1 = 1",
        "SELECT a._facility_id, f.facility_id FROM lab_results a JOIN _files f ON true",
        "SELECT _facility_id FROM lab_results UNION ALL SELECT facility_id FROM _files",
        "WITH x AS (SELECT * FROM lab_results) SELECT _facility_id FROM x",
        "SELECT _facility_id FROM lab_results WHERE _facility_id IN (SELECT facility_id FROM _files)",
        "SELECT (SELECT max(_facility_id) FROM lab_results) AS f",
        "SELECT _facility_id FROM datafusion.public.lab_results",
        "SELECT facility_id, count(*) FROM _files GROUP BY facility_id",
        "EXPLAIN SELECT * FROM lab_results",
    ];
    for sql in scoped {
        let result = query(&lake, &c1, sql, limits)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let seen = strings(&result);
        assert!(
            !seen.iter().any(|v| v.contains("F3")),
            "{sql}: another customer's facility in {seen:?}"
        );
        assert!(result.rows > 0, "{sql}: nothing at all");
    }
    let own = query(&lake, &c1, "SELECT * FROM lab_results", limits)
        .await
        .unwrap();
    assert_eq!(own.rows, 3);
    let other = query(&lake, &scope(&["F3"]), "SELECT * FROM lab_results", limits)
        .await
        .unwrap();
    assert_eq!(other.rows, 3);
    let everyone = query(&lake, &Scope::All, "SELECT * FROM lab_results", limits)
        .await
        .unwrap();
    assert_eq!(everyone.rows, 6);

    let lab_dir = lake.dir.path().join("lab_results");
    let part = std::fs::read_dir(&lab_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    let refused = [
        format!(
            "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{}'",
            lab_dir.display()
        ),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "INSERT INTO lab_results VALUES ('F3', 'x', 1.0)".to_string(),
        "COPY (SELECT 1) TO '/tmp/medlake-serve-copy.csv'".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "DROP TABLE lab_results".to_string(),
        "EXPLAIN ANALYZE SELECT * FROM lab_results".to_string(),
    ];
    for sql in &refused {
        match query(&lake, &c1, sql, limits).await {
            Err(QueryError::Refused { .. }) => {}
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/medlake-serve-copy.csv").exists());

    let unknown = [
        "SELECT * FROM information_schema.tables".to_string(),
        format!("SELECT * FROM '{}'", part.display()),
        format!("SELECT * FROM read_parquet('{}')", part.display()),
        "SELECT * FROM lab_results_raw".to_string(),
    ];
    for sql in &unknown {
        match query(&lake, &c1, sql, limits).await {
            Err(error @ QueryError::Invalid { .. }) => assert!(error.is_client_error()),
            other => panic!("{sql}: expected an unknown table, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn huge_and_endless_queries_stop_at_their_limits() {
    let lake = lake().await;
    let c1 = scope(&["F1", "F2"]);
    let small = QueryLimits {
        timeout: Duration::from_secs(2),
        memory_bytes: 4 * 1024 * 1024,
        max_rows: 1_000,
        max_bytes: 1024 * 1024,
    };

    // 3^8 = 6,561 rows of a cross join: cut at 1,000.
    let cross = "SELECT a.value FROM lab_results a, lab_results b, lab_results c, lab_results d, \
                 lab_results e, lab_results f, lab_results g, lab_results h";
    let result = query(&lake, &c1, cross, small).await.unwrap();
    assert_eq!(result.rows, 1_000);
    assert!(result.truncated);
    let exact = query(&lake, &c1, "SELECT * FROM lab_results", small)
        .await
        .unwrap();
    assert!(!exact.truncated);

    let endless = "SELECT count(*) FROM generate_series(1, 100000000000)";
    let started = std::time::Instant::now();
    match query(&lake, &c1, endless, small).await {
        Err(QueryError::Timeout { limit_ms: 2_000 }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    let hungry = "SELECT v FROM generate_series(1, 5000000) AS t(v) ORDER BY v DESC";
    match query(&lake, &c1, hungry, small).await {
        Err(QueryError::Memory { .. }) => {}
        other => panic!("expected the memory limit, got {other:?}"),
    }
}

#[tokio::test]
async fn a_commit_is_seen_by_the_next_query_with_its_version() {
    let lake = lake().await;
    let c1 = scope(&["F1", "F2"]);
    let all_rows = || {
        query(
            &lake,
            &c1,
            "SELECT * FROM lab_results",
            QueryLimits::default(),
        )
    };
    let before = all_rows().await.unwrap();
    write(lake.dir.path(), "lab_results", labs(&[("F2", "hb", 12.0)])).await;
    let after = all_rows().await.unwrap();
    assert_eq!(after.rows, before.rows + 1);
    let version = |r: &QueryResult| {
        r.versions
            .iter()
            .find(|(t, _)| t == "lab_results")
            .unwrap()
            .1
    };
    assert_eq!(version(&after), version(&before) + 1);
}

mod api {
    use super::*;
    use medlake_common::Shutdown;
    use medlake_common::admin::{PlainLimits, serve_plain};
    use medlake_serve::customers::CustomerRegistry;
    use medlake_serve::http::{AppState, Slots, router};

    const C1_TOKEN: &str = "token-of-customer-one-0001";
    const C2_TOKEN: &str = "token-of-customer-two-0002";

    async fn start(lake: Lake, per_customer: usize) -> (String, Shutdown, Lake) {
        let registry = CustomerRegistry::from_yaml(&format!(
            "customers:\n  - id: C1\n    facilities: [F1, F2]\n    users: [{{ name: a, token_sha256: {} }}]\n  \
             - id: C2\n    facilities: [F3]\n    limits: {{ query_timeout_ms: 300, query_memory_bytes: 4194304 }}\n    \
             users: [{{ name: b, token_sha256: {} }}]\n",
            medlake_common::raw_file::sha256_hex(C1_TOKEN.as_bytes()),
            medlake_common::raw_file::sha256_hex(C2_TOKEN.as_bytes()),
        ))
        .unwrap();
        let catalog = Catalog::new(
            lake.dir.path().to_str().unwrap(),
            ["lab_results".to_string()],
        );
        let state = Arc::new(AppState {
            registry,
            catalog,
            limits: QueryLimits {
                timeout: Duration::from_secs(3),
                ..QueryLimits::default()
            },
            max_csv_rows: 5,
            slots: Slots::new(per_customer, 8),
            cache: medlake_serve::cache::Cache::new(64 * 1024 * 1024),
            audit: medlake_serve::audit::AuditLog::start(
                lake.dir.path().to_str().unwrap(),
                Duration::from_millis(200),
            )
            .0,
            reports: vec![
                serde_yaml::from_str(
                    "name: labs\ntitle: Labs\nparams:\n  - { name: facility, type: facility }\n\
                     sql: SELECT _facility_id, test FROM lab_results WHERE $facility IS NULL OR \
                     _facility_id = $facility ORDER BY _facility_id, test\n",
                )
                .unwrap(),
            ],
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = Shutdown::new();
        tokio::spawn(serve_plain(
            listener,
            router(state),
            PlainLimits {
                max_connections: 16,
                header_read_timeout: Duration::from_secs(5),
                max_header_bytes: 16 * 1024,
            },
            stop.clone(),
        ));
        (base, stop, lake)
    }

    async fn post(base: &str, token: Option<&str>, sql: &str) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(format!("{base}/v1/query"))
            .json(&serde_json::json!({ "sql": sql }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn the_sql_api_answers_each_customer_with_its_own_rows() {
        let (base, stop, _lake) = start(lake().await, 4).await;
        let sql = "SELECT _facility_id, test, value FROM lab_results ORDER BY _facility_id, test";

        let refused = |reason: &str| {
            medlake_serve::http::UNAUTHORIZED
                .with_label_values(&[reason])
                .get()
        };
        let (missing, invalid) = (refused("missing"), refused("invalid"));
        let none = post(&base, None, sql).await;
        assert_eq!(none.status(), 401);
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            post(&base, Some("not-a-token-of-anyone"), sql)
                .await
                .status(),
            401
        );
        // Tests of this binary run side by side: at least these two.
        assert!(refused("missing") > missing);
        assert!(refused("invalid") > invalid);

        let c1: serde_json::Value = post(&base, Some(C1_TOKEN), sql).await.json().await.unwrap();
        assert_eq!(c1["row_count"], 3);
        assert_eq!(c1["truncated"], false);
        assert_eq!(c1["columns"][0]["name"], "_facility_id");
        let facilities: Vec<&str> = c1["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["_facility_id"].as_str().unwrap())
            .collect();
        assert_eq!(facilities, ["F1", "F1", "F2"]);
        assert!(c1["tables"]["lab_results"].is_u64());

        let c2: serde_json::Value = post(&base, Some(C2_TOKEN), sql).await.json().await.unwrap();
        assert_eq!(c2["row_count"], 3);
        assert!(
            c2["rows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["_facility_id"] == "F3")
        );

        let refused = post(&base, Some(C1_TOKEN), "DROP TABLE lab_results").await;
        assert_eq!(refused.status(), 400);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "refused");
        let invalid = post(
            &base,
            Some(C1_TOKEN),
            "SELECT * FROM information_schema.tables",
        )
        .await;
        assert_eq!(invalid.status(), 400);
        let body: serde_json::Value = invalid.json().await.unwrap();
        assert_eq!(body["code"], "invalid");
        let empty: serde_json::Value = post(
            &base,
            Some(C1_TOKEN),
            "SELECT * FROM lab_results WHERE value < 0",
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(empty["row_count"], 0);
        assert_eq!(empty["rows"], serde_json::json!([]));

        // One audit row per query that ran (not the two refused logins).
        let lake_dir = _lake.dir.path().to_str().unwrap().to_string();
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            if let Ok(batches) = medlake_sink::delta::read::read_all(&lake_dir, "_audit").await {
                outcomes.clear();
                for batch in &batches {
                    let column = |name: &str| {
                        let column = batch.column_by_name(name).unwrap();
                        arrow::compute::cast(column, &DataType::Utf8)
                            .unwrap()
                            .as_string::<i32>()
                            .clone()
                    };
                    let (customer, outcome, query) =
                        (column("customer"), column("outcome"), column("query"));
                    for i in 0..batch.num_rows() {
                        assert!(query.value(i).starts_with("sql="), "a digest, not the SQL");
                        outcomes.push(format!("{}:{}", customer.value(i), outcome.value(i)));
                    }
                }
                if outcomes.len() >= 5 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        outcomes.sort();
        assert_eq!(
            outcomes,
            ["C1:invalid", "C1:ok", "C1:ok", "C1:refused", "C2:ok"],
            "the audit rows"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_customers_own_limits_apply_to_its_queries_only() {
        let (base, stop, _lake) = start(lake().await, 4).await;
        let endless = "SELECT count(*) FROM generate_series(1, 100000000000)";
        // A sort of 1,000,000 integers: ~8 MiB of working memory.
        let hungry = "SELECT v FROM generate_series(1, 1000000) AS t(v) ORDER BY v DESC";
        let answer = async |token: &str, sql: &str| {
            let response = post(&base, Some(token), sql).await;
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        };
        // C2's registry entry: 300 ms and 4 MiB; C1 has the server's 3 s
        // and 256 MiB.
        let (status, body) = answer(C2_TOKEN, endless).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("timeout")),
            "{body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains(" 300 ms"),
            "{body}"
        );
        let (status, body) = answer(C1_TOKEN, endless).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("timeout")),
            "{body}"
        );
        assert!(
            body["error"].as_str().unwrap().contains(" 3000 ms"),
            "{body}"
        );
        let (status, body) = answer(C2_TOKEN, hungry).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("memory")),
            "{body}"
        );
        let (status, body) = answer(C1_TOKEN, hungry).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rows"][0]["v"], 1_000_000);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_customer_past_its_query_slots_gets_429_and_others_are_served() {
        let (base, stop, _lake) = start(lake().await, 1).await;
        let slow = "SELECT count(*) FROM generate_series(1, 100000000000)";
        let busy = tokio::spawn({
            let base = base.clone();
            async move { post(&base, Some(C1_TOKEN), slow).await.status() }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = post(&base, Some(C1_TOKEN), "SELECT 1").await;
        assert_eq!(second.status(), 429);
        assert_eq!(second.headers()["retry-after"], "1");
        let other = post(&base, Some(C2_TOKEN), "SELECT count(*) FROM lab_results").await;
        assert_eq!(other.status(), 200);
        // The slow one ends at its time limit, as a client error.
        assert_eq!(busy.await.unwrap(), 400);
        assert_eq!(post(&base, Some(C1_TOKEN), "SELECT 1").await.status(), 200);
        stop.cancel();
    }

    #[tokio::test]
    async fn csv_downloads_are_the_json_rows_streamed_and_cut_at_their_limit() {
        let (base, stop, _lake) = start(lake().await, 4).await;
        let sql = "SELECT _facility_id, test, value FROM lab_results ORDER BY _facility_id, test";
        let csv = |sql: &'static str| {
            let base = base.clone();
            async move {
                reqwest::Client::new()
                    .post(format!("{base}/v1/query.csv"))
                    .bearer_auth(C1_TOKEN)
                    .json(&serde_json::json!({ "sql": sql }))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let response = csv(sql).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            disposition.starts_with("attachment; filename=\"query-"),
            "{disposition}"
        );
        let text = response.text().await.unwrap();
        let json: serde_json::Value = post(&base, Some(C1_TOKEN), sql).await.json().await.unwrap();
        let from_json: Vec<String> = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{},{},{}",
                    r["_facility_id"].as_str().unwrap(),
                    r["test"].as_str().unwrap(),
                    r["value"]
                )
            })
            .collect();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("_facility_id,test,value"));
        assert_eq!(lines.collect::<Vec<_>>(), from_json);

        // 3^4 rows, cut at max_csv_rows (5).
        let cut =
            csv("SELECT a.value FROM lab_results a, lab_results b, lab_results c, lab_results d")
                .await
                .text()
                .await
                .unwrap();
        assert_eq!(cut.lines().count(), 1 + 5);

        let refused = csv("DROP TABLE lab_results").await;
        assert_eq!(refused.status(), 400);
        stop.cancel();
    }

    #[tokio::test]
    async fn reports_run_with_their_parameters_inside_the_askers_scope() {
        let (base, stop, _lake) = start(lake().await, 4).await;
        let client = reqwest::Client::new();
        let listed: serde_json::Value = client
            .get(format!("{base}/v1/reports"))
            .bearer_auth(C1_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["reports"][0]["name"], "labs");
        assert_eq!(listed["reports"][0]["params"][0]["type"], "facility");

        let run = |params: serde_json::Value, path: &'static str| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                client
                    .post(format!("{base}/v1/reports/{path}"))
                    .bearer_auth(C1_TOKEN)
                    .json(&serde_json::json!({ "params": params }))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let all: serde_json::Value = run(serde_json::json!({}), "labs")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(all["row_count"], 3);
        let f2: serde_json::Value = run(serde_json::json!({ "facility": "F2" }), "labs")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(f2["row_count"], 1);
        assert_eq!(f2["rows"][0]["_facility_id"], "F2");

        let other = run(serde_json::json!({ "facility": "F3" }), "labs").await;
        assert_eq!(other.status(), 400);
        let body: serde_json::Value = other.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("not one of yours"));
        assert_eq!(run(serde_json::json!({}), "nope").await.status(), 404);

        let csv = run(serde_json::json!({ "facility": "F1" }), "labs/csv").await;
        assert_eq!(
            csv.headers()["content-disposition"],
            "attachment; filename=\"labs_facility-F1.csv\""
        );
        assert_eq!(csv.text().await.unwrap().lines().count(), 1 + 2);
        stop.cancel();
    }

    #[tokio::test]
    async fn the_cache_answers_until_a_table_read_has_a_new_commit() {
        use medlake_serve::customers::Principal;
        let lake = lake().await;
        let state = AppState {
            registry: CustomerRegistry::default(),
            catalog: Catalog::new(
                lake.dir.path().to_str().unwrap(),
                ["lab_results".to_string()],
            ),
            limits: QueryLimits::default(),
            max_csv_rows: 10,
            slots: Slots::new(4, 8),
            cache: medlake_serve::cache::Cache::new(64 * 1024 * 1024),
            audit: medlake_serve::audit::AuditLog::start(
                lake.dir.path().to_str().unwrap(),
                Duration::from_millis(200),
            )
            .0,
            reports: Vec::new(),
        };
        let c1 = Principal {
            customer: "C1".into(),
            user: "a".into(),
            scope: Arc::new(scope(&["F1", "F2"])),
            limits: Default::default(),
        };
        let sql = "SELECT count(*) AS n FROM lab_results";
        let none = Params::new();
        let ask = async |who: &Principal| {
            medlake_serve::http::execute(&state, who, sql, &none)
                .await
                .unwrap()
        };
        let (first, cached) = ask(&c1).await;
        assert!(!cached);
        let (second, cached) = ask(&c1).await;
        assert!(cached);
        assert!(
            Arc::ptr_eq(&first, &second),
            "the same question: the kept answer"
        );
        assert_eq!(
            first.versions.len(),
            1,
            "only the table read: {:?}",
            first.versions
        );

        // A commit to a table the query does not read keeps the answer.
        write(lake.dir.path(), "_files", files(&["F1"])).await;
        assert!(Arc::ptr_eq(&first, &ask(&c1).await.0));

        // A commit to the table it reads is a new question at once.
        write(lake.dir.path(), "lab_results", labs(&[("F1", "k", 4.4)])).await;
        let after = ask(&c1).await.0;
        assert!(!Arc::ptr_eq(&first, &after));
        let count = |r: &QueryResult| {
            r.batches[0]
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0)
        };
        assert_eq!(count(&after), count(&first) + 1);

        // Another customer never gets this customer's answer.
        let c2 = Principal {
            customer: "C2".into(),
            user: "b".into(),
            scope: Arc::new(scope(&["F3"])),
            limits: Default::default(),
        };
        let theirs = ask(&c2).await.0;
        assert!(!Arc::ptr_eq(&after, &theirs));
        assert_eq!(count(&theirs), 3);
    }

    #[tokio::test]
    async fn the_portal_page_is_served_whole_from_the_binary() {
        let (base, stop, _lake) = start(lake().await, 4).await;
        let get = |path: &'static str| {
            let base = base.clone();
            async move { reqwest::get(format!("{base}{path}")).await.unwrap() }
        };
        let page = get("/").await;
        assert_eq!(page.status(), 200);
        let policy = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(policy.contains("default-src 'self'"), "{policy}");
        let html = page.text().await.unwrap();
        for id in ["token", "report", "run", "csv", "sql", "chart", "result"] {
            assert!(html.contains(&format!("id=\"{id}\"")), "the page has #{id}");
        }
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external resource"
        );
        let script = get("/app.js").await.text().await.unwrap();
        assert!(script.contains("/v1/reports") && script.contains("Authorization"));
        // The SVG namespace is a name, not a resource; nothing else is absolute.
        let fetched = script.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !fetched.contains("://"),
            "no external resource in the script"
        );
        assert_eq!(get("/app.css").await.status(), 200);
        stop.cancel();
    }
}
