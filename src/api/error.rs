//! The one error type of the HTTP API, mapped to status codes in one place. Every error body is
//! `{"error": {"code", "message"}}`; 5xx answers are logged, 4xx are the client's business.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

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
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(id) = &self.task_id {
            error["task_id"] = id.as_str().into();
        }
        serde_json::json!({ "error": error })
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
        (self.status, Json(self.body())).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
