//! The one error type of the HTTP API, mapped to status codes in one place. Every error body is
//! `{"error": {"code", "message"}}`; 5xx answers are logged, 4xx are the client's business.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Every error answer of the HTTP API (and of the NATS micro service).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code` and a message naming the header, field or key at fault.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// `invalid_request`, `invalid_body`, `invalid_query`, `invalid_filter`, `invalid_policy`,
    /// `invalid_schedule`, `invalid_function_name`, `unauthorized`, `forbidden`,
    /// `task_not_found`, `function_not_found`, `schedule_not_found`, `not_found`, `id_taken`,
    /// `conflict`, `payload_too_large`, `unavailable`, `outcome_unknown`.
    #[schema(examples("task_not_found"))]
    pub code: String,
    pub message: String,
    /// With `outcome_unknown`: the ID to submit again with to learn whether it was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The task an error is about when the caller may not know its ID (a submission whose
    /// outcome is unknown, with an ID jetask generated): answered beside `code`.
    pub task_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            task_id: None,
        }
    }
    pub fn with_task_id(mut self, id: &str) -> Self {
        self.task_id = Some(id.to_string());
        self
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub fn task_not_found(id: &str) -> Self {
        Self::not_found("task_not_found", format!("no task {id:?}"))
    }
    pub fn function_not_found(name: &str) -> Self {
        Self::not_found("function_not_found", format!("no function {name:?}"))
    }
    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code.to_string(),
            message: self.message.clone(),
            task_id: self.task_id.clone(),
        }
    }
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody { error: self.detail() }).unwrap_or_default()
    }
}

impl From<crate::core::submission::FieldError> for ApiError {
    fn from(e: crate::core::submission::FieldError) -> Self {
        ApiError::bad_request("invalid_request", e.to_string())
    }
}

impl From<crate::store::kv::StoreError> for ApiError {
    fn from(e: crate::store::kv::StoreError) -> Self {
        ApiError::unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        (self.status, Json(ErrorBody { error: self.detail() })).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
