//! `PUT/GET/DELETE /v1/functions/{name}` and `GET /v1/functions`, through [`crate::api::ops`].

use super::{ApiError, ApiResult, Caller};
use crate::api::ops;
use crate::engine::ctx::Ctx;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use std::sync::Arc;

pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    _caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let partial: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    ops::fn_put(&ctx, &name, &partial).await.map(|(s, v)| (s, Json(v)))
}

pub async fn get(State(ctx): State<Arc<Ctx>>, _caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    ops::fn_get(&ctx, &name).await.map(Json)
}

pub async fn delete(State(ctx): State<Arc<Ctx>>, _caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    ops::fn_delete(&ctx, &name).await.map(|_| StatusCode::NO_CONTENT)
}

pub async fn list(State(ctx): State<Arc<Ctx>>, _caller: Caller) -> ApiResult<Json<Value>> {
    ops::fn_list(&ctx).await.map(Json)
}
