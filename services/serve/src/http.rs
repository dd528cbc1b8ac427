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
//! Logs say who asked what and how it went, never a value: the SQL is
//! named by the first 12 hex digits of its SHA-256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use medlake_common::raw_file::sha256_hex;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::catalog::Catalog;
use crate::customers::{CustomerRegistry, Principal};
use crate::engine::{self, QueryError, QueryLimits, QueryResult, run, scoped_session};
use futures::StreamExt;

/// What every request needs.
pub struct AppState {
    pub registry: CustomerRegistry,
    pub catalog: Catalog,
    pub limits: QueryLimits,
    /// Rows one CSV download returns at most.
    pub max_csv_rows: usize,
    pub slots: Slots,
}

/// Query slots: per customer and for the whole server.
pub struct Slots {
    per_customer: usize,
    customers: Mutex<HashMap<String, Arc<Semaphore>>>,
    all: Arc<Semaphore>,
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
        }
    }

    /// A slot of `customer` and one of the server, without waiting.
    pub fn try_take(
        &self,
        customer: &str,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Busy> {
        let own = {
            let mut customers = self.customers.lock().expect("slots lock");
            customers
                .entry(customer.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_customer)))
                .clone()
        };
        let own = own.try_acquire_owned().map_err(|_| Busy::Customer)?;
        let all = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Server)?;
        Ok((own, all))
    }
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/v1/query", post(query))
        .route("/v1/query.csv", post(query_csv))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
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

/// A request that may run: who asks, what, and the slots it holds.
struct Admitted {
    principal: Principal,
    sql: String,
    slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Authenticates, reads the body and takes the query slots, or answers.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Admitted, Box<Response>> {
    let Some(principal) = principal(state, headers) else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(Box::new(response));
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &rejection.body_text(),
            )));
        }
    };
    let slots = match state.slots.try_take(&principal.customer) {
        Ok(slots) => slots,
        Err(Busy::Customer) => {
            return Err(Box::new(busy(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "this customer already runs as many queries as it may; retry shortly",
            )));
        }
        Err(Busy::Server) => {
            return Err(Box::new(busy(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server runs as many queries as it may; retry shortly",
            )));
        }
    };
    Ok(Admitted {
        principal,
        sql: request.sql,
        slots,
    })
}

/// The answer to a query error.
fn query_error(e: &QueryError) -> Response {
    let (status, code) = match e {
        QueryError::Refused { .. } => (StatusCode::BAD_REQUEST, "refused"),
        QueryError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
        QueryError::Timeout { .. } => (StatusCode::BAD_REQUEST, "timeout"),
        QueryError::Memory { .. } => (StatusCode::BAD_REQUEST, "memory"),
        QueryError::Failed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
    };
    error(status, code, &e.to_string())
}

async fn query_csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Admitted {
        principal,
        sql,
        slots,
    } = match admit(&state, &headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let sql_ref = sha256_hex(sql.as_bytes())[..12].to_string();
    let started = tokio::time::Instant::now();
    let deadline = started + state.limits.timeout;
    let planned = async {
        let tables = state
            .catalog
            .latest()
            .await
            .map_err(|e| QueryError::Failed {
                message: e.to_string(),
            })?;
        let ctx = scoped_session(&tables, &principal.scope, &state.limits).await?;
        engine::stream(&ctx, &sql, &state.limits).await
    };
    let stream = match tokio::time::timeout_at(deadline, planned).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return query_error(&e),
        Err(_) => {
            return query_error(&QueryError::Timeout {
                limit_ms: u64::try_from(state.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            });
        }
    };
    let name = format!("query-{sql_ref}.csv");
    let csv = CsvBody {
        stream,
        deadline,
        rows_left: state.max_csv_rows,
        header: true,
        slots: Some(slots),
        principal,
        sql_ref,
        rows: 0,
        started,
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
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
    slots: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    principal: Principal,
    sql_ref: String,
    rows: usize,
    started: tokio::time::Instant,
}

impl CsvBody {
    fn into_stream(self) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        futures::stream::unfold(self, |mut body| async move {
            body.slots.as_ref()?;
            if body.rows_left == 0 {
                body.finish("cut at max_csv_rows");
                return None;
            }
            let next = tokio::time::timeout_at(body.deadline, body.stream.next()).await;
            let batch = match next {
                Ok(Some(Ok(batch))) => batch,
                Ok(None) => {
                    body.finish("complete");
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
                Ok(()) => Some((Ok(bytes::Bytes::from(out)), body)),
                Err(e) => {
                    body.finish("failed");
                    Some((Err(std::io::Error::other(e.to_string())), body))
                }
            }
        })
    }

    /// Logs the download's end and gives its slots back.
    fn finish(&mut self, outcome: &str) {
        if self.slots.take().is_some() {
            tracing::info!(
                customer = self.principal.customer,
                user = self.principal.user,
                sql = self.sql_ref,
                rows = self.rows,
                outcome,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "CSV download ended."
            );
        }
    }
}

async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Admitted {
        principal,
        sql,
        slots: _slots,
    } = match admit(&state, &headers, body) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let request = QueryRequest { sql };
    let sql_ref = sha256_hex(request.sql.as_bytes())[..12].to_string();
    let outcome = execute(&state, &principal, &request.sql).await;
    match &outcome {
        Ok(result) => tracing::info!(
            customer = principal.customer,
            user = principal.user,
            sql = sql_ref,
            rows = result.rows,
            bytes = result.bytes,
            truncated = result.truncated,
            elapsed_ms = result.elapsed.as_millis() as u64,
            "Query answered."
        ),
        Err(e) => tracing::info!(
            customer = principal.customer,
            user = principal.user,
            sql = sql_ref,
            error = %e,
            "Query refused or failed."
        ),
    }
    match outcome {
        Ok(result) => match json_answer(&result) {
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

/// Runs `sql` for `principal` over the tables' latest versions.
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    sql: &str,
) -> Result<QueryResult, QueryError> {
    let tables = state
        .catalog
        .latest()
        .await
        .map_err(|e| QueryError::Failed {
            message: e.to_string(),
        })?;
    let versions = tables
        .iter()
        .map(|t| (t.def.name.clone(), t.version))
        .collect();
    let ctx = scoped_session(&tables, &principal.scope, &state.limits).await?;
    run(&ctx, sql, &state.limits, versions).await
}

/// The 200 body: columns, rows as JSON objects, and what was read.
fn json_answer(result: &QueryResult) -> Result<String, String> {
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
    let mut rows = Vec::new();
    {
        let mut writer = arrow_json::ArrayWriter::new(&mut rows);
        let batches: Vec<&RecordBatch> = result.batches.iter().collect();
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
        "{{\"columns\":{},\"rows\":{rows},\"row_count\":{},\"truncated\":{},\"tables\":{},\"elapsed_ms\":{}}}",
        serde_json::Value::from(columns),
        result.rows,
        result.truncated,
        serde_json::Value::from(tables),
        result.elapsed.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_customer_inside_a_server_bound() {
        let slots = Slots::new(2, 3);
        let a1 = slots.try_take("A").unwrap();
        let _a2 = slots.try_take("A").unwrap();
        assert_eq!(slots.try_take("A").unwrap_err(), Busy::Customer);
        let _b1 = slots.try_take("B").unwrap();
        assert_eq!(slots.try_take("B").unwrap_err(), Busy::Server);
        drop(a1);
        assert!(slots.try_take("B").is_ok());
    }
}
