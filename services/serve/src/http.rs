//! The SQL API: `POST /v1/query` with `{"sql": "…"}` and a bearer token.
//!
//! Answers:
//! - 200 `{"columns": [{"name", "type"}], "rows": [{…}], "row_count",
//!   "truncated", "tables": {"<table>": <version>}, "elapsed_ms"}`;
//! - 400 `{"error", "code"}`: `refused` (not read-only), `invalid` (does not
//!   parse, or names what does not exist), `timeout`, `memory`;
//! - 401 without a known token; 429 with `Retry-After` when the customer
//!   already runs `max_queries_per_customer` queries; 503 with
//!   `Retry-After` when the server runs `max_queries`; 500 `failed`.
//!
//! `POST /v1/query.csv` takes the same body and answers `text/csv` as an
//! attachment, written batch by batch as the query computes them (never
//! the whole result in memory), up to `max_csv_rows` rows and within the
//! query's time limit. An error once rows were sent cuts the download
//! short (the connection ends without the final chunk), so a partial file
//! is never mistaken for a whole one.
//!
//! Reports (see [`crate::reports`]): `GET /v1/reports` lists them (name,
//! title, description, parameters, chart); `POST /v1/reports/{name}` with
//! `{"params": {"from": "2026-11-01"}}` answers like `/v1/query`, and
//! `POST /v1/reports/{name}/csv` like `/v1/query.csv`, the file named after
//! the report and its parameters. A parameter error is 400 `invalid`; an
//! unknown report 404.
//!
//! Logs say who asked what and how it went, never a value: a report by its
//! name, ad-hoc SQL by the first 12 hex digits of its SHA-256.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use deltalake::datafusion::common::ScalarValue;
use medlake_common::raw_file::sha256_hex;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::audit::{AuditLog, AuditRow};
use crate::cache::{self, Cache};
use crate::catalog::Catalog;
use crate::customers::{CustomerRegistry, Principal};
use crate::engine::{self, Params, QueryError, QueryLimits, QueryResult, scoped_session};
use crate::reports::{self, Report};
use futures::StreamExt;

/// What every request needs.
pub struct AppState {
    pub registry: CustomerRegistry,
    pub catalog: Catalog,
    pub limits: QueryLimits,
    /// Rows one CSV download returns at most.
    pub max_csv_rows: usize,
    pub slots: Slots,
    /// The predefined reports.
    pub reports: Vec<Report>,
    /// Answers by scope, SQL, parameters and versions of the tables read.
    pub cache: Cache,
    /// One `_audit` row per query.
    pub audit: AuditLog,
}

/// Query slots: per customer and for the whole server.
pub struct Slots {
    per_customer: usize,
    customers: Mutex<HashMap<String, Arc<Semaphore>>>,
    all: Arc<Semaphore>,
    /// How long a query waits for a server slot (in order of arrival).
    queue_wait: std::time::Duration,
}

/// Why no slot was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    Customer,
    Server,
}

impl Slots {
    pub fn new(per_customer: usize, all: usize) -> Self {
        Self {
            per_customer: per_customer.max(1),
            customers: Mutex::new(HashMap::new()),
            all: Arc::new(Semaphore::new(all.max(1))),
            queue_wait: std::time::Duration::ZERO,
        }
    }

    /// A query finding every server slot taken waits up to `wait` for one.
    pub fn with_queue_wait(mut self, wait: std::time::Duration) -> Self {
        self.queue_wait = wait;
        self
    }

    /// A slot of `customer` (without waiting: a customer at its bound is
    /// told so at once) and one of the server (waiting up to the queue
    /// wait, in order of arrival). A customer has `own_limit` slots when
    /// given (its registry entry says so), else the server's `per_customer`.
    pub async fn take(
        &self,
        customer: &str,
        own_limit: Option<usize>,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Busy> {
        let own = {
            let mut customers = self.customers.lock().expect("slots lock");
            customers
                .entry(customer.to_string())
                .or_insert_with(|| {
                    Arc::new(Semaphore::new(
                        own_limit.unwrap_or(self.per_customer).max(1),
                    ))
                })
                .clone()
        };
        let own = own.try_acquire_owned().map_err(|_| Busy::Customer)?;
        let all = match self.all.clone().try_acquire_owned() {
            Ok(all) => all,
            Err(_) if self.queue_wait.is_zero() => return Err(Busy::Server),
            Err(_) => tokio::time::timeout(self.queue_wait, self.all.clone().acquire_owned())
                .await
                .map_err(|_| Busy::Server)?
                .map_err(|_| Busy::Server)?,
        };
        Ok((own, all))
    }
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/query", post(query))
        .route("/v1/query.csv", post(query_csv))
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/v1/reports", get(list_reports))
        .route("/v1/reports/{name}", post(run_report))
        .route("/v1/reports/{name}/csv", post(run_report_csv))
        .with_state(state)
}

/// The portal's page, script and style, built into the binary: nothing is
/// fetched from elsewhere, and the page may load from this server only.
const PAGE: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/app.css");
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `{"sql", "params", "page", "page_size"}` of an ad-hoc query. Parameters
/// are `$name` in the SQL: strings, numbers, booleans or null.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default)]
    params: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    page_size: Option<usize>,
}

/// Which page of a JSON answer to return: `page` counts from 1,
/// `page_size` rows each (default [`DEFAULT_PAGE_SIZE`], at most the
/// server's row limit). The whole answer is computed once and kept in the
/// cache, so the next page of an unchanged table is a cache hit.
#[derive(Debug, Default, Clone, Copy)]
struct PageRequest {
    page: Option<usize>,
    page_size: Option<usize>,
}

/// Rows of a JSON page when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// A page of an answer: 0-based offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    number: usize,
    size: usize,
}

impl PageRequest {
    fn resolve(self, max_rows: usize) -> Result<Page, String> {
        let number = self.page.unwrap_or(1);
        let size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE.min(max_rows));
        if number == 0 {
            return Err("page counts from 1".to_string());
        }
        if size == 0 || size > max_rows {
            return Err(format!("page_size must be 1 to {max_rows}"));
        }
        Ok(Page { number, size })
    }
}

/// A JSON value given for an ad-hoc query's `$name`.
fn param_value(name: &str, value: &serde_json::Value) -> Result<ScalarValue, String> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(ScalarValue::Utf8(None)),
        Value::Bool(b) => Ok(ScalarValue::Boolean(Some(*b))),
        Value::String(s) => Ok(ScalarValue::Utf8(Some(s.clone()))),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(ScalarValue::Int64(Some(i))),
            None => n
                .as_f64()
                .map(|f| ScalarValue::Float64(Some(f)))
                .ok_or_else(|| format!("parameter {name}: {n} is out of range")),
        },
        Value::Array(_) | Value::Object(_) => Err(format!(
            "parameter {name}: a string, number, boolean or null is expected"
        )),
    }
}

/// An error answer: status, `{"error", "code"}`, optional Retry-After.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": code });
    (status, Json(body)).into_response()
}

fn busy(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = error(status, code, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The principal of the request's bearer token.
fn principal(state: &AppState, headers: &HeaderMap) -> Option<Principal> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    state.registry.authenticate(token)
}

/// Requests refused for want of a valid token, by reason: `missing` (no
/// bearer token) or `invalid` (a token of no user). A rise in `invalid` is
/// someone guessing.
pub static UNAUTHORIZED: std::sync::LazyLock<prometheus::IntCounterVec> = std::sync::LazyLock::new(
    || {
        medlake_common::metrics::counter_vec(
            "medlake_serve_unauthorized_requests_total",
            "Portal and SQL API requests refused for want of a valid token, by reason (missing, invalid).",
            &["reason"],
        )
    },
);

/// The principal of the request, or the 401 answer (counted and logged,
/// never with the token).
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, Box<Response>> {
    principal(state, headers).ok_or_else(|| {
        let reason = if headers.contains_key(header::AUTHORIZATION) {
            "invalid"
        } else {
            "missing"
        };
        UNAUTHORIZED.with_label_values(&[reason]).inc();
        tracing::info!(reason, "Refused a request without a valid token.");
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Box::new(response)
    })
}

/// The request's JSON body, or the 400 answer.
fn body_of<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Box<Response>> {
    body.map(|Json(value)| value).map_err(|rejection| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &rejection.body_text(),
        ))
    })
}

type Held = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// The customer's and the server's query slots, or the 429 / 503 answer.
async fn take_slots(state: &AppState, principal: &Principal) -> Result<Held, Box<Response>> {
    state
        .slots
        .take(&principal.customer, principal.limits.max_queries)
        .await
        .map_err(|busy_with| {
            Box::new(match busy_with {
                Busy::Customer => busy(
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    "this customer already runs as many queries as it may; retry shortly",
                ),
                Busy::Server => busy(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server runs as many queries as it may; retry shortly",
                ),
            })
        })
}

/// The answer to a query error.
fn query_error(e: &QueryError) -> Response {
    let status = if e.is_client_error() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    error(status, e.code(), &e.to_string())
}

/// What the audit row of a query says of its answer.
struct AuditFigures {
    rows: usize,
    bytes: usize,
    tables: String,
    outcome: &'static str,
    elapsed: std::time::Duration,
}

fn audit_row(principal: &Principal, work: &Work, answer: &str, figures: AuditFigures) -> AuditRow {
    AuditRow {
        at: chrono::Utc::now(),
        customer: principal.customer.clone(),
        user: principal.user.clone(),
        query: work.label.clone(),
        sql_sha256: sha256_hex(work.sql.as_bytes()),
        params: work.params_text.clone(),
        tables: figures.tables,
        answer: answer.to_string(),
        rows: i64::try_from(figures.rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(figures.bytes).unwrap_or(i64::MAX),
        outcome: figures.outcome.to_string(),
        elapsed_ms: i64::try_from(figures.elapsed.as_millis()).unwrap_or(i64::MAX),
    }
}

/// `table@version;…`.
fn tables_text(versions: &[(String, u64)]) -> String {
    versions
        .iter()
        .map(|(t, v)| format!("{t}@{v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// What to run: SQL, its parameters, and how logs and files name it.
struct Work {
    sql: String,
    params: Params,
    /// The parameters as given, `name=value;…`, for the audit.
    params_text: String,
    /// `sql=<12 hex>` or `report=<name>`.
    label: String,
    /// The CSV file name.
    file_name: String,
    /// The page of a JSON answer.
    page: Page,
}

impl Work {
    fn ad_hoc(sql: String, page: Page) -> Self {
        let digest = sha256_hex(sql.as_bytes())[..12].to_string();
        Self {
            label: format!("sql={digest}"),
            file_name: format!("query-{digest}.csv"),
            sql,
            params: Params::new(),
            params_text: String::new(),
            page,
        }
    }
}

/// The names of an ad-hoc query's parameters, for the audit: values may be
/// PHI (a patient's name typed into a filter), so only names are kept.
fn params_text<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(";")
}

/// How a query is answered.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Json,
    Csv,
}

async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    ad_hoc(&state, &headers, body, Answer::Json).await
}

async fn query_csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
) -> Response {
    ad_hoc(&state, &headers, body, Answer::Csv).await
}

async fn ad_hoc(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Json<QueryRequest>, JsonRejection>,
    answer: Answer,
) -> Response {
    let admitted = authenticate(state, headers).and_then(|principal| {
        let request = body_of(body)?;
        let invalid = |reason: String| Box::new(error(StatusCode::BAD_REQUEST, "invalid", &reason));
        let page = PageRequest {
            page: request.page,
            page_size: request.page_size,
        }
        .resolve(state.limits.max_rows)
        .map_err(invalid)?;
        let params = request
            .params
            .iter()
            .map(|(name, value)| Ok((name.clone(), param_value(name, value)?)))
            .collect::<Result<Params, String>>()
            .map_err(invalid)?;
        let mut work = Work::ad_hoc(request.sql, page);
        work.params_text = params_text(request.params.keys());
        work.params = params;
        Ok((principal, work))
    });
    match admitted {
        Ok((principal, work)) => respond(state, principal, work, answer).await,
        Err(response) => *response,
    }
}

/// Runs `work` for `principal`, answered as asked.
async fn respond(state: &AppState, principal: Principal, work: Work, answer: Answer) -> Response {
    match answer {
        Answer::Json => json_query(state, principal, work).await,
        Answer::Csv => csv_query(state, principal, work).await,
    }
}

/// `{"params": {"name": "value"}}` of a report run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    page_size: Option<usize>,
}

async fn list_reports(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers) {
        Ok(_) => Json(serde_json::json!({ "reports": state.reports })).into_response(),
        Err(response) => *response,
    }
}

/// The report `name` with the request's parameters bound, or the answer.
fn report_work(
    state: &AppState,
    principal: &Principal,
    name: &str,
    body: Result<Json<ReportRequest>, JsonRejection>,
) -> Result<Work, Box<Response>> {
    let Some(report) = state.reports.iter().find(|r| r.name == name) else {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no report {name:?}"),
        )));
    };
    let request = body_of(body)?;
    let page = PageRequest {
        page: request.page,
        page_size: request.page_size,
    }
    .resolve(state.limits.max_rows)
    .map_err(|reason| Box::new(error(StatusCode::BAD_REQUEST, "invalid", &reason)))?;
    let params = report
        .bind(&request.params, &principal.scope, reports::today())
        .map_err(|reason| Box::new(error(StatusCode::BAD_REQUEST, "invalid", &reason)))?;
    let params_text = request
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";");
    Ok(Work {
        sql: report.sql.clone(),
        params,
        params_text,
        label: format!("report={}", report.name),
        file_name: report.file_name(&request.params),
        page,
    })
}

async fn run_report(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReportRequest>, JsonRejection>,
) -> Response {
    report(&state, &name, &headers, body, Answer::Json).await
}

async fn run_report_csv(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ReportRequest>, JsonRejection>,
) -> Response {
    report(&state, &name, &headers, body, Answer::Csv).await
}

async fn report(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    body: Result<Json<ReportRequest>, JsonRejection>,
    answer: Answer,
) -> Response {
    let work = authenticate(state, headers).and_then(|principal| {
        let work = report_work(state, &principal, name, body)?;
        Ok((principal, work))
    });
    match work {
        Ok((principal, work)) => respond(state, principal, work, answer).await,
        Err(response) => *response,
    }
}

/// Runs `work` for `principal` and answers JSON.
async fn json_query(state: &AppState, principal: Principal, work: Work) -> Response {
    let _slots = match take_slots(state, &principal).await {
        Ok(slots) => slots,
        Err(response) => return *response,
    };
    let started = std::time::Instant::now();
    let outcome = execute(state, &principal, &work.sql, &work.params).await;
    let (rows, bytes, tables, audited) = match &outcome {
        Ok((result, cached)) => (
            result.rows,
            result.bytes,
            tables_text(&result.versions),
            if *cached { "cached" } else { "ok" },
        ),
        Err(e) => (0, 0, String::new(), e.code()),
    };
    state
        .audit
        .record(audit_row(
            &principal,
            &work,
            "json",
            AuditFigures {
                rows,
                bytes,
                tables,
                outcome: audited,
                elapsed: started.elapsed(),
            },
        ))
        .await;
    let outcome = outcome.map(|(result, _)| result);
    match &outcome {
        Ok(result) => tracing::info!(
            customer = principal.customer,
            user = principal.user,
            query = work.label,
            rows = result.rows,
            bytes = result.bytes,
            truncated = result.truncated,
            elapsed_ms = result.elapsed.as_millis() as u64,
            "Query answered."
        ),
        Err(e) => tracing::info!(
            customer = principal.customer,
            user = principal.user,
            query = work.label,
            error = %e,
            "Query refused or failed."
        ),
    }
    match outcome {
        Ok(result) => match json_answer(&result, work.page) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(message) => error(StatusCode::INTERNAL_SERVER_ERROR, "failed", &message),
        },
        Err(e) => query_error(&e),
    }
}

/// Runs `work` for `principal` and answers its rows as a CSV attachment,
/// written as they are computed.
async fn csv_query(state: &AppState, principal: Principal, work: Work) -> Response {
    let slots = match take_slots(state, &principal).await {
        Ok(slots) => slots,
        Err(response) => return *response,
    };
    let limits = state.limits.overridden(&principal.limits);
    let started = tokio::time::Instant::now();
    let deadline = started + limits.timeout;
    let planned = async {
        let tables = state.catalog.latest().await.map_err(QueryError::failed)?;
        let ctx = scoped_session(&tables, &principal.scope, &limits).await?;
        engine::stream(&ctx, &work.sql, &work.params, &limits).await
    };
    let stream = match tokio::time::timeout_at(deadline, planned).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return query_error(&e),
        Err(_) => {
            return query_error(&QueryError::Timeout {
                limit_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
    };
    let file_name = work.file_name.clone();
    let csv = CsvBody {
        stream,
        deadline,
        rows_left: state.max_csv_rows,
        header: true,
        slots: Some(slots),
        principal,
        work,
        audit: state.audit.clone(),
        rows: 0,
        bytes: 0,
        started,
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        axum::body::Body::from_stream(csv.into_stream()),
    )
        .into_response()
}

/// A query's batches written out as CSV as they come.
struct CsvBody {
    stream: deltalake::datafusion::execution::SendableRecordBatchStream,
    deadline: tokio::time::Instant,
    rows_left: usize,
    header: bool,
    /// Held until the download ends.
    slots: Option<Held>,
    principal: Principal,
    work: Work,
    audit: AuditLog,
    rows: usize,
    bytes: usize,
    started: tokio::time::Instant,
}

impl CsvBody {
    fn into_stream(self) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        futures::stream::unfold(self, |mut body| async move {
            body.slots.as_ref()?;
            if body.rows_left == 0 {
                body.finish("cut");
                return None;
            }
            let next = tokio::time::timeout_at(body.deadline, body.stream.next()).await;
            let batch = match next {
                Ok(Some(Ok(batch))) => batch,
                Ok(None) => {
                    body.finish("ok");
                    return None;
                }
                Ok(Some(Err(e))) => {
                    body.finish("failed");
                    return Some((Err(std::io::Error::other(e.to_string())), body));
                }
                Err(_) => {
                    body.finish("timeout");
                    let error = std::io::Error::other("the query ran past its time limit");
                    return Some((Err(error), body));
                }
            };
            let batch = batch.slice(0, batch.num_rows().min(body.rows_left));
            body.rows_left -= batch.num_rows();
            body.rows += batch.num_rows();
            let mut out = Vec::new();
            let written = arrow::csv::WriterBuilder::new()
                .with_header(body.header)
                .build(&mut out)
                .write(&batch);
            body.header = false;
            match written {
                Ok(()) => {
                    body.bytes += out.len();
                    Some((Ok(bytes::Bytes::from(out)), body))
                }
                Err(e) => {
                    body.finish("failed");
                    Some((Err(std::io::Error::other(e.to_string())), body))
                }
            }
        })
    }

    /// Logs and audits the download's end and gives its slots back.
    fn finish(&mut self, outcome: &'static str) {
        if self.slots.take().is_some() {
            tracing::info!(
                customer = self.principal.customer,
                user = self.principal.user,
                query = self.work.label,
                rows = self.rows,
                outcome,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "CSV download ended."
            );
            let row = audit_row(
                &self.principal,
                &self.work,
                "csv",
                AuditFigures {
                    rows: self.rows,
                    bytes: self.bytes,
                    tables: String::new(),
                    outcome,
                    elapsed: self.started.elapsed(),
                },
            );
            let audit = self.audit.clone();
            tokio::spawn(async move { audit.record(row).await });
        }
    }
}

/// Runs `sql` with `params` for `principal` over the tables' latest
/// versions, or answers from the cache when none of the tables it reads
/// changed since the same question was answered. The answer's `versions`
/// are those of the tables the query reads.
///
/// A text asked before is looked up before it is planned (the cache knows
/// which tables it reads), so a hit costs a catalog refresh and a lookup.
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    sql: &str,
    params: &Params,
) -> Result<(Arc<QueryResult>, bool), QueryError> {
    let tables = state.catalog.latest().await.map_err(QueryError::failed)?;
    let scope = principal.scope.key();
    let versions_of = |read: &[String]| -> Vec<(String, u64)> {
        tables
            .iter()
            .filter(|t| read.contains(&t.def.name))
            .map(|t| (t.def.name.clone(), t.version))
            .collect()
    };
    let known = state.cache.tables_read(sql);
    if let Some(read) = &known {
        let versions = versions_of(read);
        if versions.len() == read.len()
            && let Some(answer) = state.cache.get(&cache::key(&scope, sql, params, &versions))
        {
            return Ok((answer, true));
        }
    }
    let limits = state.limits.overridden(&principal.limits);
    let ctx = scoped_session(&tables, &principal.scope, &limits).await?;
    let planned = engine::plan(&ctx, sql, params, &limits).await?;
    let versions = versions_of(&planned.tables);
    let key = cache::key(&scope, sql, params, &versions);
    // Looked up above already when the text was known to read these tables.
    if known.as_ref() != Some(&planned.tables) {
        if let Some(answer) = state.cache.get(&key) {
            return Ok((answer, true));
        }
        state
            .cache
            .remember_tables_read(sql, planned.tables.clone());
    }
    let answer = Arc::new(engine::collect(planned, &limits, versions).await?);
    state.cache.put(key, answer.clone());
    Ok((answer, false))
}

/// The rows `page` selects of `batches`, as slices (no copy).
fn page_of(batches: &[RecordBatch], page: Page) -> Vec<RecordBatch> {
    let mut skip = (page.number - 1).saturating_mul(page.size);
    let mut room = page.size;
    let mut out = Vec::new();
    for batch in batches {
        if room == 0 {
            break;
        }
        let rows = batch.num_rows();
        if skip >= rows {
            skip -= rows;
            continue;
        }
        let take = (rows - skip).min(room);
        out.push(batch.slice(skip, take));
        room -= take;
        skip = 0;
    }
    out
}

/// The 200 body: columns, the page's rows as JSON objects, the page's
/// place in the answer, and what was read.
fn json_answer(result: &QueryResult, page: Page) -> Result<String, String> {
    let columns: Vec<serde_json::Value> = result
        .batches
        .first()
        .map(|batch| {
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
                .collect()
        })
        .unwrap_or_default();
    let selected = page_of(&result.batches, page);
    let mut rows = Vec::new();
    {
        let mut writer = arrow_json::ArrayWriter::new(&mut rows);
        let batches: Vec<&RecordBatch> = selected.iter().collect();
        writer.write_batches(&batches).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    if rows.is_empty() {
        rows.extend_from_slice(b"[]");
    }
    let tables: serde_json::Map<String, serde_json::Value> = result
        .versions
        .iter()
        .map(|(table, version)| (table.clone(), serde_json::Value::from(*version)))
        .collect();
    let rows = String::from_utf8(rows).map_err(|e| e.to_string())?;
    Ok(format!(
        "{{\"columns\":{},\"rows\":{rows},\"row_count\":{},\"page\":{},\"page_size\":{},\"pages\":{},\"truncated\":{},\"tables\":{},\"elapsed_ms\":{}}}",
        serde_json::Value::from(columns),
        result.rows,
        page.number,
        page.size,
        result.rows.div_ceil(page.size),
        result.truncated,
        serde_json::Value::from(tables),
        result.elapsed.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_slice_the_answer_across_its_batches() {
        use arrow::array::{AsArray, Int64Array};
        use arrow::datatypes::Int64Type;
        let batch = |from: i64, to: i64| {
            RecordBatch::try_from_iter([(
                "n",
                Arc::new(Int64Array::from_iter_values(from..to)) as arrow::array::ArrayRef,
            )])
            .unwrap()
        };
        // 10 rows in batches of 3, 4 and 3.
        let batches = [batch(0, 3), batch(3, 7), batch(7, 10)];
        let values = |page: Page| -> Vec<i64> {
            page_of(&batches, page)
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect()
        };
        assert_eq!(values(Page { number: 1, size: 4 }), vec![0, 1, 2, 3]);
        assert_eq!(values(Page { number: 2, size: 4 }), vec![4, 5, 6, 7]);
        assert_eq!(values(Page { number: 3, size: 4 }), vec![8, 9]);
        assert!(values(Page { number: 4, size: 4 }).is_empty());
        assert_eq!(
            values(Page {
                number: 1,
                size: 100
            })
            .len(),
            10
        );
    }

    #[test]
    fn page_requests_are_checked_against_the_row_limit() {
        let request = |page, page_size| PageRequest { page, page_size }.resolve(500);
        assert_eq!(
            request(None, None),
            Ok(Page {
                number: 1,
                size: 500
            })
        );
        assert_eq!(
            request(Some(3), Some(20)),
            Ok(Page {
                number: 3,
                size: 20
            })
        );
        assert!(request(Some(0), None).is_err());
        assert!(request(None, Some(0)).is_err());
        assert!(request(None, Some(501)).is_err());
    }

    #[test]
    fn ad_hoc_parameters_take_json_scalars_only() {
        let value = |v: serde_json::Value| param_value("p", &v);
        assert_eq!(
            value(serde_json::json!("F1")),
            Ok(ScalarValue::Utf8(Some("F1".into())))
        );
        assert_eq!(value(serde_json::json!(7)), Ok(ScalarValue::Int64(Some(7))));
        assert_eq!(
            value(serde_json::json!(0.5)),
            Ok(ScalarValue::Float64(Some(0.5)))
        );
        assert_eq!(
            value(serde_json::json!(true)),
            Ok(ScalarValue::Boolean(Some(true)))
        );
        assert_eq!(value(serde_json::Value::Null), Ok(ScalarValue::Utf8(None)));
        assert!(value(serde_json::json!(["F1"])).is_err());
    }

    #[tokio::test]
    async fn slots_are_per_customer_inside_a_server_bound() {
        let slots = Slots::new(2, 3);
        let a1 = slots.take("A", None).await.unwrap();
        let _a2 = slots.take("A", None).await.unwrap();
        assert_eq!(slots.take("A", None).await.unwrap_err(), Busy::Customer);
        let _b1 = slots.take("B", None).await.unwrap();
        assert_eq!(slots.take("B", None).await.unwrap_err(), Busy::Server);
        drop(a1);
        assert!(slots.take("B", None).await.is_ok());
    }

    #[tokio::test]
    async fn a_query_waits_for_a_server_slot_up_to_the_queue_wait() {
        let slots = Arc::new(Slots::new(4, 1).with_queue_wait(std::time::Duration::from_secs(5)));
        let held = slots.take("A", None).await.unwrap();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take("B", None).await.is_ok() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "B waits while A holds the only slot"
        );
        drop(held);
        assert!(waiting.await.unwrap(), "B runs once A is done");
        // Past the wait: 503.
        let slots = Slots::new(4, 1).with_queue_wait(std::time::Duration::from_millis(50));
        let _held = slots.take("A", None).await.unwrap();
        assert_eq!(slots.take("B", None).await.unwrap_err(), Busy::Server);
    }

    #[tokio::test]
    async fn a_customer_with_slots_of_its_own_has_that_many() {
        let slots = Slots::new(4, 8);
        let _held = slots.take("analysts", Some(1)).await.unwrap();
        assert_eq!(
            slots.take("analysts", Some(1)).await.unwrap_err(),
            Busy::Customer
        );
        for _ in 0..4 {
            std::mem::forget(slots.take("C1", None).await.unwrap());
        }
        assert_eq!(slots.take("C1", None).await.unwrap_err(), Busy::Customer);
    }
}
