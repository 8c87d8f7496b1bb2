//! Task routes: submitting (single and `:batch`) here; the rest through [`crate::api::ops`].

use super::openapi::{BatchResults, BulkFilter, BulkReplayFilter, CompleteBody, HeartbeatBody, TaskList};
use super::{ApiError, ApiResult, Caller, ErrorBody, Segment};
use crate::api::ops;
use crate::api::ops::{AcceptedAnswer, BulkAnswer, HeartbeatAnswer};
use crate::core::destination::Rules;
use crate::core::duration::Dur;
use crate::core::subjects::headers as h;
use crate::core::submission::{self, field_error, FieldError, Options};
use crate::core::task::{Status, TaskRecord};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::intake::{self, HttpSubmission};
use axum::body::{Body, Bytes};
use axum::extract::{Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Largest `:batch` body.
const MAX_BATCH_BODY: usize = 256 * 1024 * 1024;
/// Submissions of one batch in flight at once.
const BATCH_IN_FLIGHT: usize = 1024;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, FieldError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| field_error(name, "not valid ASCII")),
    }
}

async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> ApiResult<Bytes> {
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("input of {size} bytes is over limits.max_payload = {max}"),
        )
    };
    if let Some(len) = header(headers, "content-length")?.and_then(|v| v.parse::<usize>().ok()) {
        if len > max {
            return Err(too_large(len.to_string()));
        }
    }
    axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large(format!("over {max}")))
}

/// The user a submission belongs to.
fn submitter(caller: &Caller, headers: &HeaderMap) -> Result<String, FieldError> {
    if let Some(u) = &caller.user {
        return Ok(u.clone());
    }
    match header(headers, h::USER)? {
        Some(u) => submission::check_user(h::USER, u).map(|_| u.to_string()),
        None => Ok("default".into()),
    }
}

/// Options shared by every task of a request (callback, content type, trace context).
fn shared_options(headers: &HeaderMap, rules: &Rules<'_>) -> Result<Options, FieldError> {
    Ok(Options {
        not_before: None,
        callback: header(headers, h::CALLBACK)?
            .map(|c| submission::check_callback(h::CALLBACK, c, rules))
            .transpose()?,
        content_type: header(headers, h::CONTENT_TYPE)?
            .map(|c| submission::check_content_type(h::CONTENT_TYPE, c))
            .transpose()?,
        traceparent: header(headers, h::TRACEPARENT)?
            .map(submission::check_traceparent)
            .transpose()?,
        replay_of: None,
        triggered_by: None,
    })
}

async fn known_function(ctx: &Ctx, name: &str) -> ApiResult<()> {
    if !crate::core::task::valid_function_name(name) {
        return Err(ApiError::bad_request(
            "invalid_function_name",
            format!("{name:?} is not a function name"),
        ));
    }
    match ctx.function(name).await {
        Some(_) => Ok(()),
        None => Err(ApiError::function_not_found(name)),
    }
}

/// Submits one task: the body is its input (any bytes). The answer comes once JetStream has
/// stored the submission.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/tasks",
    operation_id = "submit_task",
    tag = "tasks",
    params(
        ("name" = String, Path, description = "the function", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "resize"),
        ("Idempotency-Key" = Option<String>, Header, description = "the task ID (deduplication key); else a UUIDv7 is generated", pattern = "^[A-Za-z0-9_-]{1,128}$"),
        ("Jetask-Delay" = Option<String>, Header, description = "run no earlier than acceptance + this duration (at most `tasks.retention`)", pattern = "^[0-9]+(ms|s|m|h|d)$"),
        ("Jetask-Not-Before" = Option<String>, Header, description = "run no earlier than this RFC 3339 time (not with `Jetask-Delay`)", format = DateTime),
        ("Jetask-User" = Option<String>, Header, description = "the task's user when auth is off (under auth, the token's)", pattern = "^[A-Za-z0-9_-]{1,128}$"),
        ("Jetask-Callback" = Option<String>, Header, description = "the task's destination: `https://…`, `http://…`, `nats:SUBJECT` or `function:NAME`"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context, passed on to the function", pattern = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"),
    ),
    request_body(
        description = "the input, passed on to the function with its `Content-Type` (at most `limits.max_payload`)",
        content(
            (String = "application/octet-stream"),
            (Value = "application/json"),
            (String = "text/plain"),
        )
    ),
    responses(
        (status = 202, description = "accepted: stored by JetStream and recorded", body = AcceptedAnswer),
        (status = 200, description = "a task with this ID exists: nothing new runs (`duplicate: true`)", body = AcceptedAnswer),
        (status = 400, description = "`invalid_function_name` or `invalid_request` (a bad header, named in the message)", body = ErrorBody),
        (status = 404, description = "`function_not_found`", body = ErrorBody),
        (status = 409, description = "`id_taken`: under auth, the ID belongs to another user's task", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the input is over `limits.max_payload`", body = ErrorBody),
        (status = 503, description = "`unavailable`: nothing was accepted; or `outcome_unknown`: it may have been, submit again with `error.task_id`", body = ErrorBody),
    )
)]
pub async fn submit(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(function): Segment,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    known_function(&ctx, &function).await?;
    let input = read_body(body, &headers, ctx.config.limits.max_payload).await?;
    let id = header(&headers, "Idempotency-Key")?
        .map(|id| submission::check_id("Idempotency-Key", id).map(|_| id.to_string()))
        .transpose()?;
    let mut options = shared_options(&headers, &ctx.config.rules())?;
    options.not_before = submission::not_before(
        header(&headers, h::DELAY)?.map(|v| (h::DELAY, v)),
        header(&headers, h::NOT_BEFORE)?.map(|v| (h::NOT_BEFORE, v)),
        Timestamp::now(),
        ctx.config.retention(),
    )?;
    let user = submitter(&caller, &headers)?;
    let auth = caller.user.is_some();
    let a = intake::submit(
        &ctx,
        HttpSubmission {
            function,
            user,
            id,
            options,
            input,
        },
        auth,
        true,
    )
    .await
    .map_err(ops::submit_error)?;
    let status = if a.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(ops::accepted_json(&a))))
}

/// One task of a `:batch` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// The task ID (else generated).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    id: Option<String>,
    /// The input as JSON: a string is taken as its UTF-8 bytes, any other value as its JSON
    /// text; `null` or absent: no input.
    input: Option<Value>,
    /// The input as base64 (not with `input`).
    input_base64: Option<String>,
    /// As `Jetask-Delay` (not with `not_before`).
    #[schema(value_type = Option<Dur>)]
    delay: Option<String>,
    /// As `Jetask-Not-Before`.
    #[schema(value_type = Option<Timestamp>)]
    not_before: Option<String>,
    /// The `Content-Type` passed on to the function; default: after the input's kind.
    content_type: Option<String>,
}

fn batch_item(
    ctx: &Ctx,
    raw: Value,
    shared: &Options,
    now: Timestamp,
) -> Result<(Option<String>, Options, Bytes), FieldError> {
    let item: BatchItem = serde_json::from_value(raw).map_err(|e| field_error("item", e.to_string()))?;
    if let Some(id) = &item.id {
        submission::check_id("id", id)?;
    }
    // The request's own Content-Type describes the array; each task's follows its input.
    let (input, content_type) = match (item.input, item.input_base64) {
        (Some(_), Some(_)) => return Err(field_error("input", "give either input or input_base64, not both")),
        (Some(Value::String(s)), None) => (Bytes::from(s), "text/plain; charset=utf-8"),
        (Some(v), None) => (
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            "application/json",
        ),
        (None, Some(b)) => (
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map(Bytes::from)
                .map_err(|e| field_error("input_base64", format!("not base64: {e}")))?,
            "application/octet-stream",
        ),
        (None, None) => (Bytes::new(), "application/octet-stream"),
    };
    let mut options = shared.clone();
    options.content_type = match item.content_type {
        Some(c) => Some(submission::check_content_type("content_type", &c)?),
        None => Some(content_type.to_string()),
    };
    options.not_before = submission::not_before(
        item.delay.as_deref().map(|d| ("delay", d)),
        item.not_before.as_deref().map(|t| ("not_before", t)),
        now,
        ctx.config.retention(),
    )?;
    Ok((item.id, options, input))
}

/// Submits many tasks of one function, one result per item in order (the records are written
/// moments later).
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/tasks:batch",
    operation_id = "submit_tasks",
    tag = "tasks",
    params(
        ("name" = String, Path, description = "the function", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "resize"),
        ("Jetask-User" = Option<String>, Header, description = "every task's user when auth is off", pattern = "^[A-Za-z0-9_-]{1,128}$"),
        ("Jetask-Callback" = Option<String>, Header, description = "every task's destination"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context of every task", pattern = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"),
    ),
    request_body(content = Vec<BatchItem>, description = "a JSON array of tasks (at most 256 MiB)"),
    responses(
        (status = 200, description = "one result per item: accepted, or an error body", body = BatchResults),
        (status = 400, description = "`invalid_function_name`, `invalid_body` (not a JSON array) or `invalid_request` (a shared header)", body = ErrorBody),
        (status = 404, description = "`function_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 MiB", body = ErrorBody),
    )
)]
pub async fn submit_batch(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(function): Segment,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    known_function(&ctx, &function).await?;
    let body = axum::body::to_bytes(body, MAX_BATCH_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a batch body is at most {MAX_BATCH_BODY} bytes"),
        )
    })?;
    let items: Vec<Value> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("expected a JSON array of tasks: {e}")))?;
    let shared = shared_options(&headers, &ctx.config.rules())?;
    let user = submitter(&caller, &headers)?;
    let auth = caller.user.is_some();
    let batch = Arc::new(Batch {
        ctx: ctx.clone(),
        function,
        user,
        shared,
        auth,
        now: Timestamp::now(),
    });
    // Items run concurrently, but items naming the same ID run in the batch's order, so that
    // the later one is the duplicate, as it would be sent one by one.
    let turns = turns_of_repeated_ids(&items);
    let results: Vec<Value> = futures::stream::iter(items.into_iter().enumerate())
        .map(|(i, raw)| {
            let batch = batch.clone();
            let turn = raw
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| turns.get(id))
                .cloned();
            async move {
                // Taken in the batch's order: futures are first polled in order, and the lock
                // is fair.
                let _turn = match turn {
                    Some(t) => Some(t.lock_owned().await),
                    None => None,
                };
                batch.submit(i, raw).await
            }
        })
        .buffered(BATCH_IN_FLIGHT)
        .collect()
        .await;
    Ok(Json(json!({ "results": results })))
}

/// What every item of one batch shares.
struct Batch {
    ctx: Arc<Ctx>,
    function: String,
    user: String,
    shared: Options,
    auth: bool,
    now: Timestamp,
}

impl Batch {
    /// Submits item `i`: its answer, or its error naming the item (`[i].field`).
    async fn submit(&self, i: usize, raw: Value) -> Value {
        let (id, options, input) = match batch_item(&self.ctx, raw, &self.shared, self.now) {
            Ok(x) => x,
            Err(e) => {
                return ApiError::from(FieldError {
                    field: format!("[{i}].{}", e.field),
                    reason: e.reason,
                })
                .body()
            }
        };
        let submission = HttpSubmission {
            function: self.function.clone(),
            user: self.user.clone(),
            id,
            options,
            input,
        };
        match intake::submit(&self.ctx, submission, self.auth, false).await {
            Ok(a) => ops::accepted_json(&a),
            Err(e) => ops::submit_error(e).body(),
        }
    }
}

/// A turn (a fair lock) for each ID that more than one item of the batch names.
fn turns_of_repeated_ids(items: &[Value]) -> HashMap<String, Arc<tokio::sync::Mutex<()>>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for raw in items {
        if let Some(id) = raw.get("id").and_then(Value::as_str) {
            *seen.entry(id).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, _)| (id.to_string(), Arc::default()))
        .collect()
}

fn flag(params: &HashMap<String, String>, key: &str) -> ApiResult<bool> {
    match params.get(key).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "invalid_query",
            format!("{key}: {other:?} is not true or false"),
        )),
    }
}

/// A task's record.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42"),
        ("include_input" = Option<bool>, Query, description = "add `input` and `input_base64` (also `1` or empty; `false` / `0` to leave out)"),
    ),
    responses(
        (status = 200, description = "the record", body = TaskRecord),
        (status = 400, description = "`invalid_request` (a bad ID) or `invalid_query` (a bad `include_input`)", body = ErrorBody),
        (status = 404, description = "`task_not_found`: no such task, or (under auth) another user's", body = ErrorBody),
    )
)]
pub async fn get(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(id): Segment,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    ops::task_get(&ctx, &caller, &id, flag(&params, "include_input")?)
        .await
        .map(Json)
}

/// Lists tasks newest first, from the replica's list index.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    params(
        ("function" = Option<String>, Query, description = "only this function"),
        ("status" = Option<Status>, Query, description = "only this state (case-insensitive)"),
        ("user" = Option<String>, Query, description = "only this user (under auth: always the caller's)"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive bound on `created_at`", format = DateTime),
        ("until" = Option<String>, Query, description = "RFC 3339, inclusive bound on `created_at`", format = DateTime),
        ("limit" = Option<u32>, Query, description = "page size, default 20", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page, unchanged"),
        ("id_prefix" = Option<String>, Query, description = "only tasks whose ID starts with this", pattern = "^[A-Za-z0-9_-]{1,128}$"),
    ),
    responses(
        (status = 200, description = "a page of records, without input", body = TaskList),
        (status = 400, description = "`invalid_query`: an unknown parameter or a bad value, named in the message", body = ErrorBody),
    )
)]
pub async fn list(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    ops::task_list(&ctx, &caller, &params).await.map(Json)
}

/// Stops a task: a waiting one at once, a running one through `Stopping`.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/stop",
    operation_id = "stop_task",
    tag = "tasks",
    params(("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42")),
    responses(
        (status = 200, description = "the record, now `Stopped` or `Stopping`", body = TaskRecord),
        (status = 400, description = "`invalid_request`: a bad ID", body = ErrorBody),
        (status = 404, description = "`task_not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the task is finished", body = ErrorBody),
    )
)]
pub async fn stop(State(ctx): State<Arc<Ctx>>, caller: Caller, Segment(id): Segment) -> ApiResult<Json<Value>> {
    ops::task_stop(&ctx, &caller, &id).await.map(Json)
}

/// A long task is still working (after its function answered `202` + `Jetask-Async: true`).
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/heartbeat",
    operation_id = "heartbeat",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42"),
        ("Jetask-Attempt" = Option<u32>, Header, description = "the attempt this reports on, as the function was called with", minimum = 1),
    ),
    request_body(content = Option<HeartbeatBody>, description = "optional: may name the attempt"),
    responses(
        (status = 200, description = "recorded", body = HeartbeatAnswer),
        (status = 400, description = "`invalid_request` (a bad ID, a bad header) or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`task_not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the task (or the attempt named) is not `Running`: stop working on it", body = ErrorBody),
    )
)]
pub async fn heartbeat(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?
    };
    let attempt = ops::reported_attempt(&body, header(&headers, h::ATTEMPT)?)?;
    ops::task_heartbeat(&ctx, &caller, &id, attempt).await.map(Json)
}

/// A long task's end, reported by its function. A reported failure is final.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/complete",
    operation_id = "complete_task",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42"),
        ("Jetask-Attempt" = Option<u32>, Header, description = "the attempt this reports on, as the function was called with", minimum = 1),
    ),
    request_body(content = CompleteBody),
    responses(
        (status = 200, description = "the record, now `Succeeded` or `Failed`", body = TaskRecord),
        (status = 400, description = "`invalid_request` (a bad ID, a bad header) or `invalid_body`", body = ErrorBody),
        (status = 404, description = "`task_not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the task (or the attempt named) is not `Running`", body = ErrorBody),
    )
)]
pub async fn complete(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(id): Segment,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    let attempt = ops::reported_attempt(&body, header(&headers, h::ATTEMPT)?)?;
    ops::task_complete(&ctx, &caller, &id, &body, attempt).await.map(Json)
}

/// Runs a `Failed`, `Expired` or `Stopped` task again as a new task.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/replay",
    operation_id = "replay_task",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "the task ID", pattern = "^[A-Za-z0-9_-]{1,128}$", example = "job-42"),
        ("Idempotency-Key" = Option<String>, Header, description = "every replay of this task with this key is the same new task", pattern = "^[A-Za-z0-9_-]{1,128}$"),
    ),
    responses(
        (status = 202, description = "the new task is accepted", body = AcceptedAnswer),
        (status = 200, description = "a replay with this key was already made (`duplicate: true`)", body = AcceptedAnswer),
        (status = 400, description = "`invalid_request`: a bad ID or `Idempotency-Key`", body = ErrorBody),
        (status = 404, description = "`task_not_found`, or `function_not_found`: its function no longer exists", body = ErrorBody),
        (status = 409, description = "`conflict`: the task is not `Failed`, `Expired` or `Stopped`", body = ErrorBody),
        (status = 503, description = "`unavailable`: nothing was accepted; or `outcome_unknown`", body = ErrorBody),
    )
)]
pub async fn replay(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    Segment(id): Segment,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key = header(&headers, "Idempotency-Key")?;
    ops::task_replay(&ctx, &caller, &id, key)
        .await
        .map(|(s, v)| (s, Json(v)))
}

/// A bulk operation's body: a JSON object of filters (an empty body is `{}`, refused as such).
fn filter_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_filter", format!("body is not JSON: {e}")))
}

/// Runs a bulk operation to its end even if the client goes away meanwhile: half of one is
/// worse than all of it.
async fn bulk(ctx: Arc<Ctx>, caller: Caller, filter: Value, op: ops::Bulk) -> ApiResult<Json<Value>> {
    tokio::spawn(async move { ops::task_bulk(&ctx, &caller, &filter, op).await })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map(Json)
}

/// `POST /v1/tasks:stop`: stops every task the filters match (CONTRACT §12 "Bulk operations").
#[utoipa::path(
    post,
    path = "/v1/tasks:stop",
    operation_id = "stop_tasks",
    tag = "tasks",
    request_body(content = BulkFilter, description = "list filters, at least one"),
    responses(
        (status = 200, description = "done: every match was acted on", body = BulkAnswer),
        (status = 400, description = "`invalid_filter`: not an object, an unknown key, a bad value, or no filter", body = ErrorBody),
    )
)]
pub async fn stop_many(State(ctx): State<Arc<Ctx>>, caller: Caller, body: Bytes) -> ApiResult<Json<Value>> {
    bulk(ctx, caller, filter_body(&body)?, ops::Bulk::Stop).await
}

/// `POST /v1/tasks:replay`: replays every task the filters match; an `Idempotency-Key` header
/// is the body's `idempotency_key`.
#[utoipa::path(
    post,
    path = "/v1/tasks:replay",
    operation_id = "replay_tasks",
    tag = "tasks",
    params(("Idempotency-Key" = Option<String>, Header, description = "the body's `idempotency_key`, when that is absent", pattern = "^[A-Za-z0-9_-]{1,128}$")),
    request_body(content = BulkReplayFilter, description = "list filters, at least one"),
    responses(
        (status = 200, description = "done: every match was acted on", body = BulkAnswer),
        (status = 400, description = "`invalid_filter` (not an object, an unknown key, a bad value, or no filter) or `invalid_request` (a bad `idempotency_key`)", body = ErrorBody),
    )
)]
pub async fn replay_many(
    State(ctx): State<Arc<Ctx>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let mut filter = filter_body(&body)?;
    if let (Some(key), Some(obj)) = (header(&headers, "Idempotency-Key")?, filter.as_object_mut()) {
        obj.entry("idempotency_key")
            .or_insert_with(|| Value::String(key.to_string()));
    }
    bulk(ctx, caller, filter, ops::Bulk::Replay).await
}
