//! What the push API answers: `202` with the receipt, or a 4xx/5xx with a
//! JSON body `{"error": {"code": "...", "message": "..."}}`. Codes are a
//! small fixed set clients can branch on; messages never repeat file
//! content, file names or keys.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::body::BodyError;
use super::slots::Refusal;

/// The body of a `202 Accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Accepted {
    /// Hex SHA-256 of the bytes: the file's id everywhere downstream.
    pub file_id: String,
    /// The facility the key belongs to.
    pub facility_id: String,
    /// Where the original bytes are kept in the raw zone.
    pub raw_path: String,
    /// True when this exact file was already accepted recently and was not
    /// published again.
    pub duplicate: bool,
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        (StatusCode::ACCEPTED, Json(self)).into_response()
    }
}

/// A refused or failed push.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("an API key is required: `Authorization: Bearer <key>` or `X-API-Key`")]
    MissingKey,
    #[error("the API key is not valid")]
    UnknownKey,
    #[error("this API key may not push files for another facility")]
    OtherFacility,
    #[error("{reason}")]
    BadName { reason: super::body::NameError },
    #[error("{message}")]
    BadRequest { message: String },
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the file is empty")]
    Empty,
    #[error("no such route")]
    NotFound,
    #[error("the headers of a multipart part are larger than {limit} bytes")]
    PartHeaderTooLarge { limit: usize },
    #[error(
        "this facility has {limit} uploads in progress, the most it may have at once; retry later"
    )]
    FacilityBusy { limit: usize },
    #[error("too many uploads in progress; retry later")]
    Busy,
    #[error("the file could not be stored right now; retry later")]
    Unavailable,
    #[error("the file could not be stored")]
    Internal,
}

impl ApiError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingKey | ApiError::UnknownKey => StatusCode::UNAUTHORIZED,
            ApiError::OtherFacility => StatusCode::FORBIDDEN,
            ApiError::BadName { .. }
            | ApiError::BadRequest { .. }
            | ApiError::PartHeaderTooLarge { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Empty => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::FacilityBusy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy | ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_api_key",
            ApiError::UnknownKey => "invalid_api_key",
            ApiError::OtherFacility => "forbidden_facility",
            ApiError::BadName { .. } => "bad_file_name",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::TooLarge { .. } => "file_too_large",
            ApiError::Empty => "empty_file",
            ApiError::NotFound => "not_found",
            ApiError::PartHeaderTooLarge { .. } => "part_header_too_large",
            ApiError::FacilityBusy { .. } => "facility_busy",
            ApiError::Busy => "busy",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal => "internal",
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::FacilityShare { limit } => ApiError::FacilityBusy { limit },
            Refusal::Slots | Refusal::Memory => ApiError::Busy,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::TooLarge { limit } => ApiError::TooLarge { limit },
            BodyError::Read { .. } => ApiError::BadRequest {
                message: "the request body could not be read".to_string(),
            },
            BodyError::NoRoom { refusal } => refusal.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        };
        let mut response = (self.status(), Json(body)).into_response();
        match self {
            ApiError::MissingKey | ApiError::UnknownKey => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"medlake\""),
                );
            }
            ApiError::FacilityBusy { .. } | ApiError::Busy | ApiError::Unavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_answer_json_with_code_and_message() {
        let response = ApiError::TooLarge { limit: 10 }.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "file_too_large");
        assert!(json["error"]["message"].as_str().unwrap().contains("10"));

        let response = ApiError::MissingKey.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(ApiError::Empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ApiError::OtherFacility.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_facility_over_its_share_is_told_to_retry_with_429() {
        let response = ApiError::from(Refusal::FacilityShare { limit: 4 }).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let json = body_json(response).await;
        assert_eq!(json["error"]["code"], "facility_busy");
        let response = ApiError::from(Refusal::Memory).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[tokio::test]
    async fn accepted_is_202_with_the_receipt() {
        let response = Accepted {
            file_id: "ab".into(),
            facility_id: "F1".into(),
            raw_path: "_raw/F1/x".into(),
            duplicate: false,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let json = body_json(response).await;
        assert_eq!(json["file_id"], "ab");
        assert_eq!(json["duplicate"], false);
    }
}
