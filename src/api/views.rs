//! Read-only views the console is drawn from, public like the rest of the API:
//! `GET /v1/overview` (every function's figures, scoped to the caller's user under auth) and
//! `GET /v1/tasks/{id}/timeline` (a task's life as spans of time).

use super::{ApiError, ApiResult, Caller, ErrorBody, Segment};
use crate::core::function::FunctionSpec;
use crate::core::task::valid_function_name;
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::store::index::{FunctionStats, Outcomes, Percentiles};
use axum::extract::{Query as QueryParams, State};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn outcomes(o: &Outcomes) -> Value {
    json!({
        "succeeded": o.succeeded,
        "failed": o.failed,
        "stopped": o.stopped,
        "expired": o.expired,
        "invalid": o.invalid,
    })
}

fn percentiles(p: &Percentiles) -> Value {
    json!({"count": p.count, "p50": p.p50, "p99": p.p99})
}

fn function_view(ctx: &Ctx, name: &str, spec: &FunctionSpec, s: &FunctionStats) -> Value {
    json!({
        "name": name,
        "enabled": spec.enabled,
        "queued": s.queued,
        "delayed": s.delayed,
        "running": s.running,
        "throttled": s.throttled,
        "last_minute": outcomes(&s.last_minute),
        "last_hour": outcomes(&s.last_hour),
        "queue_ms": percentiles(&s.queue_ms),
        "run_ms": percentiles(&s.run_ms),
        "concurrency": {
            "max": spec.concurrency.max,
            "min": spec.concurrency.min,
            "adaptive": spec.concurrency.adaptive,
            // What all replicas may run now: adaptive and shared, at most `max`.
            "limit": ctx.replicas.cluster_limit(name, spec.concurrency.max),
        },
        "rate_limit": spec.rate_limit,
        "user_rate_limit": spec.user_rate_limit,
        "series": {
            "start": Timestamp(s.series_start),
            "step_s": 60,
            "finished": s.series.iter().map(Outcomes::total).collect::<Vec<_>>(),
            "succeeded": s.series.iter().map(|o| o.succeeded).collect::<Vec<_>>(),
            "failed": s.series.iter().map(|o| o.failed).collect::<Vec<_>>(),
        },
    })
}

/// `GET /v1/overview[?function=NAME]`.
#[utoipa::path(
    get,
    path = "/v1/overview",
    operation_id = "get_overview",
    tag = "console",
    params(
        ("function" = Option<String>, Query, description = "only this function", pattern = "^[A-Za-z0-9_-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "per function (of the caller's tasks when tokens are on): `queued`, `delayed`, `running`, `throttled`, `last_minute` and `last_hour` outcomes, `queue_ms` and `run_ms` percentiles, `concurrency`, rate limits and a per-minute `series` of the last hour (see docs/api.md)", body = Object),
        (status = 400, description = "`invalid_query`: an unknown parameter or a bad function name", body = ErrorBody),
        (status = 404, description = "`function_not_found`", body = ErrorBody),
    )
)]
pub async fn overview(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    if let Some(k) = params.keys().find(|k| k.as_str() != "function") {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("{k}: unknown parameter; expected function"),
        ));
    }
    let mut names = match params.get("function") {
        Some(f) if !valid_function_name(f) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("function: {f:?} is not a function name ([A-Za-z0-9_-]{{1,64}})"),
            ))
        }
        Some(f) if ctx.registry.get(f).is_none() => return Err(ApiError::function_not_found(f)),
        Some(f) => vec![f.clone()],
        None => ctx.registry.names(),
    };
    names.sort();
    let specs: Vec<(String, Arc<FunctionSpec>)> = names
        .into_iter()
        .filter_map(|n| ctx.registry.get(&n).map(|s| (n, s)))
        .collect();
    let now = Timestamp::now();
    let (index, user) = (ctx.index.clone(), caller.user.clone());
    let wanted: Vec<String> = specs.iter().map(|(n, _)| n.clone()).collect();
    let stats = tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .map(|n| index.stats(n, user.as_deref(), now))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))?
    .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let functions: Vec<Value> = specs
        .iter()
        .zip(&stats)
        .map(|((name, spec), s)| function_view(&ctx, name, spec, s))
        .collect();
    Ok(Json(json!({
        "at": now,
        "user": caller.user,
        "index_ready": ctx.index.ready(),
        "functions": functions,
    })))
}

/// `GET /v1/tasks/{id}/timeline`.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/timeline",
    operation_id = "get_task_timeline",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42"),
    ),
    responses(
        (status = 200, description = "the task's `spans` (queue, delay, slot wait, each attempt, backoffs, throttle waits) from its history, with `id`, `status`, `attempts` and `at` (see docs/api.md)", body = Object),
        (status = 400, description = "`invalid_request`: a bad ID", body = ErrorBody),
        (status = 404, description = "`task_not_found`: no such task, or (under auth) another user's", body = ErrorBody),
    )
)]
pub async fn timeline(State(ctx): State<Arc<Ctx>>, caller: Caller, Segment(id): Segment) -> ApiResult<Json<Value>> {
    let record = super::ops::visible(&ctx, &caller, &id).await?.record;
    let now = Timestamp::now();
    Ok(Json(json!({
        "id": record.id,
        "status": record.status,
        "attempts": record.attempts,
        "at": now,
        "spans": crate::core::timeline::of(&record, now),
    })))
}
