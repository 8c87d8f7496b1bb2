//! `PUT/GET/DELETE /v1/schedules/{name}` and `GET /v1/schedules`, through [`crate::api::ops`].

use super::openapi::{ScheduleList, SchedulePut, ScheduleView};
use super::{ApiError, ApiResult, Caller, ErrorBody, Segment};
use crate::api::ops;
use crate::engine::ctx::Ctx;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use std::sync::Arc;

/// Creates or replaces a recurring schedule (keys left out take their defaults; `created_at`
/// is kept).
#[utoipa::path(
    put,
    path = "/v1/schedules/{name}",
    operation_id = "put_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "the schedule name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "nightly-report")),
    request_body(content = SchedulePut, description = "the schedule: `function` and one of `cron` and `every`"),
    responses(
        (status = 201, description = "created", body = ScheduleView),
        (status = 200, description = "replaced", body = ScheduleView),
        (status = 400, description = "`invalid_body` (not JSON) or `invalid_schedule` (`key: reason`, a bad name, an unknown function)", body = ErrorBody),
    )
)]
pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    _caller: Caller,
    Segment(name): Segment,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    ops::schedule_put(&ctx, &name, &body).await.map(|(s, v)| (s, Json(v)))
}

/// A schedule with its next and last firing.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "the schedule name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "nightly-report")),
    responses(
        (status = 200, description = "the schedule", body = ScheduleView),
        (status = 400, description = "`invalid_schedule`: not a schedule name", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
    )
)]
pub async fn get(State(ctx): State<Arc<Ctx>>, _caller: Caller, Segment(name): Segment) -> ApiResult<Json<Value>> {
    ops::schedule_get(&ctx, &name).await.map(Json)
}

/// Deletes a schedule; a firing already submitted still runs.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "the schedule name", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "nightly-report")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "`invalid_schedule`: not a schedule name", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`", body = ErrorBody),
    )
)]
pub async fn delete(State(ctx): State<Arc<Ctx>>, _caller: Caller, Segment(name): Segment) -> ApiResult<StatusCode> {
    ops::schedule_delete(&ctx, &name).await.map(|_| StatusCode::NO_CONTENT)
}

/// Every schedule, sorted by name.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    responses((status = 200, description = "the schedules", body = ScheduleList))
)]
pub async fn list(State(ctx): State<Arc<Ctx>>, _caller: Caller) -> ApiResult<Json<Value>> {
    ops::schedule_list(&ctx).await.map(Json)
}
