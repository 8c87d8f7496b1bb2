//! `PUT/GET/DELETE /v1/functions/{name}` and `GET /v1/functions`, through [`crate::api::ops`].

use super::openapi::{FunctionDetail, FunctionList, FunctionPolicy, FunctionView};
use super::{ApiError, ApiResult, Caller, ErrorBody, Segment};
use crate::api::ops;
use crate::engine::ctx::Ctx;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use std::sync::Arc;

/// Creates or replaces a function. The signing secret is generated when absent and shown once,
/// in this answer.
#[utoipa::path(
    put,
    path = "/v1/functions/{name}",
    operation_id = "put_function",
    tag = "functions",
    params(("name" = String, Path, description = "the function name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "resize")),
    request_body(content = FunctionPolicy, description = "the policy; `endpoint` is required"),
    responses(
        (status = 201, description = "created", body = FunctionView),
        (status = 200, description = "replaced", body = FunctionView),
        (status = 400, description = "`invalid_function_name`, `invalid_body` (not JSON) or `invalid_policy` (`key: reason`)", body = ErrorBody),
    )
)]
pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    _caller: Caller,
    Segment(name): Segment,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let partial: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    ops::fn_put(&ctx, &name, &partial).await.map(|(s, v)| (s, Json(v)))
}

/// A function with its live figures.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    operation_id = "get_function",
    tag = "functions",
    params(("name" = String, Path, description = "the function name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "resize")),
    responses(
        (status = 200, description = "the function", body = FunctionDetail),
        (status = 400, description = "`invalid_function_name`", body = ErrorBody),
        (status = 404, description = "`function_not_found`", body = ErrorBody),
    )
)]
pub async fn get(State(ctx): State<Arc<Ctx>>, _caller: Caller, Segment(name): Segment) -> ApiResult<Json<Value>> {
    ops::fn_get(&ctx, &name).await.map(Json)
}

/// Deletes a function; tasks still queued for it end `Invalid` or `Expired` when delivered.
#[utoipa::path(
    delete,
    path = "/v1/functions/{name}",
    operation_id = "delete_function",
    tag = "functions",
    params(("name" = String, Path, description = "the function name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "resize")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "`invalid_function_name`", body = ErrorBody),
        (status = 404, description = "`function_not_found`", body = ErrorBody),
    )
)]
pub async fn delete(State(ctx): State<Arc<Ctx>>, _caller: Caller, Segment(name): Segment) -> ApiResult<StatusCode> {
    ops::fn_delete(&ctx, &name).await.map(|_| StatusCode::NO_CONTENT)
}

/// Every function, sorted by name, without live figures.
#[utoipa::path(
    get,
    path = "/v1/functions",
    operation_id = "list_functions",
    tag = "functions",
    responses((status = 200, description = "the functions", body = FunctionList))
)]
pub async fn list(State(ctx): State<Arc<Ctx>>, _caller: Caller) -> ApiResult<Json<Value>> {
    ops::fn_list(&ctx).await.map(Json)
}
