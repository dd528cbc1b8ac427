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
use crate::engine::{QueryError, QueryLimits, QueryResult, run, scoped_session};

/// What every request needs.
pub struct AppState {
    pub registry: CustomerRegistry,
    pub catalog: Catalog,
    pub limits: QueryLimits,
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

async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<QueryRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(principal) = principal(&state, &headers) else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &rejection.body_text(),
            );
        }
    };
    let _slots = match state.slots.try_take(&principal.customer) {
        Ok(slots) => slots,
        Err(Busy::Customer) => {
            return busy(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "this customer already runs as many queries as it may; retry shortly",
            );
        }
        Err(Busy::Server) => {
            return busy(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server runs as many queries as it may; retry shortly",
            );
        }
    };
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
        Err(e) => {
            let (status, code) = match &e {
                QueryError::Refused { .. } => (StatusCode::BAD_REQUEST, "refused"),
                QueryError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
                QueryError::Timeout { .. } => (StatusCode::BAD_REQUEST, "timeout"),
                QueryError::Memory { .. } => (StatusCode::BAD_REQUEST, "memory"),
                QueryError::Failed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "failed"),
            };
            error(status, code, &e.to_string())
        }
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
