//! The operations on tasks and functions that both APIs offer — HTTP (CONTRACT §4, §6, §8) and
//! the NATS micro service (§7) — so that both answer with the same shapes and errors. Each takes
//! the caller and plain JSON-ish arguments and returns JSON or an [`ApiError`].

use crate::api::error::ErrorDetail;
use crate::api::{ApiError, ApiResult};
use crate::core::function::{self, Function};
use crate::core::machine::{self, Effect, Event};
use crate::core::submission::{self, Options};
use crate::core::task::{valid_function_name, Encoded, ErrorType, Status, TaskError};
use crate::core::time::Timestamp;
use crate::engine::control::Signal;
use crate::engine::ctx::Ctx;
use crate::engine::intake::{self, Accepted, HttpSubmission, SubmitError};
use crate::engine::records::{self, CommitError};
use crate::store::index::Query;
use crate::store::kv::{StoreError, Versioned};
use axum::http::StatusCode;
use base64::Engine;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The answer to an accepted submission (`202`), a duplicate one (`200`), or a replay.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Accepted)]
pub struct AcceptedAnswer {
    pub task_id: String,
    /// `Enqueued` for a new task; the current state of the existing one for a duplicate.
    pub status: Status,
    /// `true`: a task with this ID already existed and nothing new runs.
    pub duplicate: bool,
    /// Only in the answer to a replay: the task it replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Heartbeat)]
pub struct HeartbeatAnswer {
    pub id: String,
    pub status: Status,
    pub heartbeat_at: Option<Timestamp>,
}

/// The answer to a bulk stop or replay: `matched` = `acted` + `skipped` + `failed`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BulkResult)]
pub struct BulkAnswer {
    /// Tasks the filter found that the caller may see.
    pub matched: u64,
    /// Stopped, or replayed (a duplicate replay under an `idempotency_key` counts).
    pub acted: u64,
    /// In a state the operation refuses (the single operation's `409`), or, for a replay,
    /// whose function is gone.
    pub skipped: u64,
    /// Could not be acted on; `errors` lists the first 10.
    pub failed: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BulkError>,
    /// Replay only: the new tasks' IDs, at most 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ids: Option<Vec<String>>,
    /// Replay only: whether there were more new tasks than `task_ids` lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_ids_truncated: Option<bool>,
}

/// A task a bulk operation could not act on, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkError {
    pub task_id: String,
    pub error: ErrorDetail,
}

/// Who is calling: the token's user under auth (HTTP), else nobody in particular.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// `Some`: the caller sees, stops and lists only this user's tasks.
    pub user: Option<String>,
}

impl Caller {
    pub fn may_see(&self, owner: &str) -> bool {
        self.user.as_deref().is_none_or(|u| u == owner)
    }
}

fn conflict(id: &str, status: Status, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("task {id:?} is {status} and cannot {what}"),
    )
}

/// Reads a task the caller may see.
pub(crate) async fn visible(ctx: &Ctx, caller: &Caller, id: &str) -> ApiResult<Versioned> {
    submission::check_id("id", id)?;
    match ctx.tasks.get(id).await? {
        Some(v) if caller.may_see(&v.record.user) => Ok(v),
        _ => Err(ApiError::task_not_found(id)),
    }
}

pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::IdTaken(id) => ApiError::new(
            StatusCode::CONFLICT,
            "id_taken",
            format!("task ID {id:?} is already taken"),
        ),
        SubmitError::Unavailable(m) => ApiError::unavailable(format!("nothing was accepted: {m}")),
        e @ SubmitError::Refused(_) => ApiError::bad_request("invalid_request", e.to_string()),
        // Never "nothing was accepted": it may have been. The same ID makes a retry safe.
        SubmitError::Unknown { id, reason } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "task {id:?} may or may not have been accepted ({reason}); submit again with this ID to learn which"
            ),
        )
        .with_task_id(&id),
        SubmitError::TooLarge { size, max } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("input of {size} bytes is over limits.max_payload = {max}"),
        ),
    }
}

pub fn accepted(a: &Accepted) -> AcceptedAnswer {
    AcceptedAnswer {
        task_id: a.task_id.clone(),
        status: a.status,
        duplicate: a.duplicate,
        replay_of: None,
    }
}

pub fn accepted_json(a: &Accepted) -> Value {
    serde_json::to_value(accepted(a)).unwrap_or_default()
}

pub async fn task_get(ctx: &Ctx, caller: &Caller, id: &str, include_input: bool) -> ApiResult<Value> {
    Ok(visible(ctx, caller, id).await?.record.to_view(include_input))
}

fn parse_query(params: &HashMap<String, String>, caller: &Caller) -> ApiResult<Query> {
    parse_filter(params, caller, "invalid_query")
}

/// The list filters of `params`; errors carry `code` and name the field.
fn parse_filter(params: &HashMap<String, String>, caller: &Caller, code: &'static str) -> ApiResult<Query> {
    const KNOWN: [&str; 8] = [
        "function",
        "status",
        "user",
        "since",
        "until",
        "limit",
        "cursor",
        "id_prefix",
    ];
    let bad = |k: &str, why: String| ApiError::bad_request(code, format!("{k}: {why}"));
    if let Some(k) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(
            k,
            format!("unknown parameter; expected one of {}", KNOWN.join(", ")),
        ));
    }
    let time = |k: &str| -> ApiResult<Option<Timestamp>> {
        params
            .get(k)
            .map(|v| v.parse::<Timestamp>().map_err(|e| bad(k, e.to_string())))
            .transpose()
    };
    let limit = match params.get("limit") {
        None => 20,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(bad("limit", format!("{v:?} is not a number from 1 to 100"))),
        },
    };
    let status = params
        .get("status")
        .map(|s| Status::parse(s).ok_or_else(|| bad("status", format!("{s:?} is not a task state"))))
        .transpose()?;
    let user = match (&caller.user, params.get("user")) {
        (Some(own), _) => Some(own.clone()),
        (None, u) => u.cloned(),
    };
    let id_prefix = params
        .get("id_prefix")
        .map(|p| {
            crate::core::task::valid_task_id(p)
                .then(|| p.clone())
                .ok_or_else(|| bad("id_prefix", "expected 1 to 128 of A-Z, a-z, 0-9, _ and -".into()))
        })
        .transpose()?;
    Ok(Query {
        id_prefix,
        function: params.get("function").cloned(),
        status,
        user,
        since: time("since")?,
        until: time("until")?,
        limit,
        cursor: params.get("cursor").cloned(),
    })
}

/// Lists tasks newest first; `params` are the query parameters of CONTRACT §4, as strings.
pub async fn task_list(ctx: &Ctx, caller: &Caller, params: &HashMap<String, String>) -> ApiResult<Value> {
    let q = parse_query(params, caller)?;
    let index = ctx.index.clone();
    let (ids, next) = tokio::task::spawn_blocking(move || index.query(&q))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| match e {
            crate::store::index::IndexError::Cursor(_) => {
                ApiError::bad_request("invalid_query", format!("cursor: {e}"))
            }
            other => ApiError::unavailable(other.to_string()),
        })?;
    // Showing a page of records: a direct get from any replica is enough.
    let records = futures::future::join_all(ids.iter().map(|id| ctx.tasks.peek(id))).await;
    let mut tasks = Vec::with_capacity(ids.len());
    for r in records {
        if let Some(v) = r? {
            if caller.may_see(&v.record.user) {
                tasks.push(v.record.to_view(false));
            }
        }
    }
    Ok(json!({"tasks": tasks, "next_cursor": next}))
}

/// Applies `events` to a task the caller may see, retrying on concurrent changes; `refuse`
/// names the operation for the 409 of a task that cannot take them.
async fn transition(
    ctx: &Ctx,
    caller: &Caller,
    id: &str,
    refuse: &str,
    events: impl Fn(&Versioned) -> ApiResult<Vec<Event>>,
) -> ApiResult<(Versioned, Vec<Effect>)> {
    loop {
        let v = visible(ctx, caller, id).await?;
        let events = events(&v)?;
        let spec = ctx.function(&v.record.function).await;
        match records::commit(ctx, &v, events, Timestamp::now(), true, spec.as_deref()).await {
            Ok(done) => return Ok(done),
            Err(CommitError::Invalid(_)) => return Err(conflict(id, v.record.status, refuse)),
            Err(CommitError::Store(StoreError::Conflict)) => continue,
            Err(CommitError::Store(e)) => return Err(e.into()),
            Err(CommitError::Delivery(e)) => {
                // Written; the delivery is queued again when the task's submission comes back.
                tracing::warn!(task_id = %id, error = %e, "result delivery not queued yet");
                let now = visible(ctx, caller, id).await?;
                return Ok((now, vec![]));
            }
        }
    }
}

/// Stops a task: queued ones at once; a running one through `Stopping` and the replica holding
/// its attempt (a long task waiting for its completion is `Stopped` at once). A terminal task
/// answers 409 with its state.
pub async fn task_stop(ctx: &Ctx, caller: &Caller, id: &str) -> ApiResult<Value> {
    let (v, effects) = transition(ctx, caller, id, "be stopped", |v| {
        Ok(if v.record.status == Status::Running && v.record.async_attempt {
            vec![Event::Stop, Event::Stop]
        } else {
            vec![Event::Stop]
        })
    })
    .await?;
    if effects.contains(&Effect::AbortAttempt) {
        ctx.control
            .signal(&ctx.nats.client, id, Signal::Stop)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
    }
    Ok(v.record.to_view(false))
}

/// A long task's heartbeat (CONTRACT §5): accepted while the attempt is `Running`.
/// Refuses a heartbeat or completion that names an attempt other than the one in flight (a
/// late report from an attempt that already timed out must not settle the next one).
fn check_attempt(id: &str, v: &Versioned, attempt: Option<u32>) -> ApiResult<()> {
    match attempt {
        Some(n) if n != v.record.attempts || v.record.status != Status::Running => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "attempt {n} of task {id:?} is over (the task is {} on attempt {})",
                v.record.status, v.record.attempts
            ),
        )),
        _ => Ok(()),
    }
}

/// The attempt a report names: `attempt` in the body, else the `Jetask-Attempt` it was called with.
pub fn reported_attempt(body: &Value, header: Option<&str>) -> ApiResult<Option<u32>> {
    let bad = || ApiError::bad_request("invalid_body", "attempt: expected a positive integer");
    match (body.get("attempt"), header) {
        (Some(Value::Null) | None, None) => Ok(None),
        (Some(Value::Null) | None, Some(h)) => h.trim().parse().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_request",
                format!(
                    "{}: expected a positive integer",
                    crate::core::subjects::headers::ATTEMPT
                ),
            )
        }),
        (Some(v), _) => v.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some).ok_or_else(bad),
    }
}

pub async fn task_heartbeat(ctx: &Ctx, caller: &Caller, id: &str, attempt: Option<u32>) -> ApiResult<Value> {
    loop {
        let v = visible(ctx, caller, id).await?;
        check_attempt(id, &v, attempt)?;
        let r =
            machine::heartbeat(&v.record, Timestamp::now()).map_err(|e| conflict(id, e.from, "take a heartbeat"))?;
        match ctx.tasks.update(&r, v.revision).await {
            Ok(_) => {
                let answer = HeartbeatAnswer {
                    id: id.to_string(),
                    status: r.status,
                    heartbeat_at: r.heartbeat_at,
                };
                return Ok(serde_json::to_value(answer).unwrap_or_default());
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn bytes_of(v: &Value, field: &str) -> ApiResult<Vec<u8>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        other => serde_json::to_vec(other).map_err(|e| ApiError::bad_request("invalid_body", format!("{field}: {e}"))),
    }
}

/// A long task's end, reported by its function: `{"status": "Succeeded"|"Failed", "result"?,
/// "result_base64"?, "error"?}`. A reported failure is final: the function knows best.
pub async fn task_complete(
    ctx: &Ctx,
    caller: &Caller,
    id: &str,
    body: &Value,
    attempt: Option<u32>,
) -> ApiResult<Value> {
    let bad = |m: String| ApiError::bad_request("invalid_body", m);
    let obj = body.as_object().ok_or_else(|| bad("expected a JSON object".into()))?;
    const KNOWN: [&str; 6] = ["id", "status", "result", "result_base64", "error", "attempt"];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(format!(
            "{k}: unknown key; expected status, result, result_base64, error, attempt"
        )));
    }

    let result = match (obj.get("result"), obj.get("result_base64").and_then(Value::as_str)) {
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| bad(format!("result_base64: not base64: {e}")))?,
        (Some(r), None) => bytes_of(r, "result")?,
        (None, None) => Vec::new(),
    };
    let event = match obj.get("status").and_then(Value::as_str) {
        Some("Succeeded") => Event::Succeed {
            result: Encoded::encode(&result, ctx.config.limits.max_result),
            detail: "completed".into(),
        },
        Some("Failed") => {
            let message = match obj.get("error") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(e)) => e.get("message").and_then(Value::as_str).unwrap_or("failed").to_string(),
                _ => "the function reported a failure".to_string(),
            };
            Event::Fail {
                error: TaskError::new(ErrorType::FunctionError, message),
                retry_at: None,
                detail: "completed".into(),
            }
        }
        _ => return Err(bad("status: expected \"Succeeded\" or \"Failed\"".into())),
    };
    let (v, _) = transition(ctx, caller, id, "be completed", |v| {
        check_attempt(id, v, attempt)?;
        Ok(vec![event.clone()])
    })
    .await?;
    let _ = ctx.control.signal(&ctx.nats.client, id, Signal::Wake).await;
    Ok(v.record.to_view(false))
}

/// Runs a finished task again as a new task (CONTRACT §8.1).
/// The ID of the replay of task `original` under idempotency key `key`: the same for every
/// replay with that key, so that JetStream's deduplication and the record's create make them
/// one task, however many arrive at once; distinct per original, so that one key may be reused
/// across tasks.
pub fn replay_id(original: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(original.as_bytes())
        .chain_update([0u8])
        .chain_update(key.as_bytes())
        .finalize();
    let hex = crate::core::hex::lower(&digest[..16]);
    format!("replay-{hex}")
}

/// Replays a finished task as a new one. With `idempotency_key`, every replay of `id` with
/// that key is the same new task (`200` and `duplicate: true` after the first).
pub async fn task_replay(
    ctx: &Ctx,
    caller: &Caller,
    id: &str,
    idempotency_key: Option<&str>,
) -> ApiResult<(StatusCode, Value)> {
    if let Some(key) = idempotency_key {
        submission::check_id("Idempotency-Key", key)?;
    }
    let old = visible(ctx, caller, id).await?.record;
    if !matches!(old.status, Status::Failed | Status::Expired | Status::Stopped) {
        return Err(conflict(
            id,
            old.status,
            "be replayed (only Failed, Expired and Stopped tasks can)",
        ));
    }
    if ctx.function(&old.function).await.is_none() {
        return Err(ApiError::function_not_found(&old.function));
    }
    let input = old.input_bytes();
    let s = HttpSubmission {
        function: old.function.clone(),
        user: old.user.clone(),
        id: idempotency_key.map(|key| replay_id(&old.id, key)),
        options: Options {
            not_before: None,
            callback: old.callback.clone(),
            content_type: old.content_type.clone(),
            traceparent: old.traceparent.clone(),
            replay_of: Some(old.id.clone()),
            triggered_by: None,
        },
        input: input.into(),
    };
    let a = intake::submit(ctx, s, caller.user.is_some(), true)
        .await
        .map_err(submit_error)?;
    let answer = AcceptedAnswer {
        replay_of: Some(old.id),
        ..accepted(&a)
    };
    let status = if a.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, serde_json::to_value(answer).unwrap_or_default()))
}

/// What a bulk operation does to each task its filter matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bulk {
    Stop,
    Replay,
}

/// The list filters a bulk operation takes (CONTRACT §12 "Bulk operations").
pub const BULK_FILTERS: [&str; 5] = ["function", "status", "user", "since", "until"];
/// Index rows read per page of a bulk operation.
const BULK_PAGE: usize = 500;
/// Tasks of a bulk operation acted on at once.
const BULK_IN_FLIGHT: usize = 32;
/// New task IDs a bulk replay lists at most (`replayed` counts them all).
const BULK_LISTED: usize = 1000;

/// Stops or replays every task matching `body`, a JSON object of the list filters of
/// `GET /v1/tasks` (at least one), that the caller may see. A bulk replay also takes
/// `idempotency_key`: each original's replay is then the same task however often the bulk
/// replay is sent. Answers `{"matched", "acted", "skipped", "failed", "errors"?, "task_ids"?}`:
/// matched = acted + skipped + failed; skipped tasks were in a state the operation refuses
/// (a finished task for stop, one not Failed, Expired or Stopped for replay).
pub async fn task_bulk(ctx: &Ctx, caller: &Caller, body: &Value, op: Bulk) -> ApiResult<Value> {
    const CODE: &str = "invalid_filter";
    let (params, key) = bulk_params(body, op, CODE)?;
    let mut q = parse_filter(&params, caller, CODE)?;
    // A token's user asking for another user's tasks: none of those is theirs to see.
    if let (Some(own), Some(asked)) = (&caller.user, params.get("user")) {
        if own != asked {
            return Ok(BulkTally::default().answer(op));
        }
    }
    // Only what existed when the operation began: not the replays it makes itself.
    let now = Timestamp::now();
    q.until = Some(q.until.map_or(now, |u| u.min(now)));
    q.limit = BULK_PAGE;
    let mut tally = BulkTally::default();
    loop {
        let index = ctx.index.clone();
        let page_q = q.clone();
        let (ids, next) = tokio::task::spawn_blocking(move || index.query(&page_q))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let outcomes: Vec<(String, ApiResult<Option<String>>)> = futures::stream::iter(ids)
            .map(|id| {
                let key = key.clone();
                async move {
                    let r = match op {
                        Bulk::Stop => task_stop(ctx, caller, &id).await.map(|_| None),
                        Bulk::Replay => task_replay(ctx, caller, &id, key.as_deref())
                            .await
                            .map(|(_, v)| v["task_id"].as_str().map(str::to_string)),
                    };
                    (id, r)
                }
            })
            .buffer_unordered(BULK_IN_FLIGHT)
            .collect()
            .await;
        for (id, r) in outcomes {
            tally.count(id, r);
        }
        match next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    Ok(tally.answer(op))
}

/// A bulk body's filters (as list query parameters) and, for a replay, its idempotency key;
/// at least one filter, so that a bulk operation never acts on every task unasked.
fn bulk_params(body: &Value, op: Bulk, code: &'static str) -> ApiResult<(HashMap<String, String>, Option<String>)> {
    let bad = |m: String| ApiError::bad_request(code, m);
    let obj = body
        .as_object()
        .ok_or_else(|| bad("expected a JSON object of filters".into()))?;
    let mut params = HashMap::new();
    let mut key = None;
    for (k, v) in obj {
        if op == Bulk::Replay && k == "idempotency_key" {
            let s = v
                .as_str()
                .ok_or_else(|| bad("idempotency_key: expected a string".into()))?;
            submission::check_id("idempotency_key", s)?;
            key = Some(s.to_string());
            continue;
        }
        if !BULK_FILTERS.contains(&k.as_str()) {
            let extra = if op == Bulk::Replay { ", idempotency_key" } else { "" };
            return Err(bad(format!(
                "{k}: unknown key; expected one of {}{extra}",
                BULK_FILTERS.join(", ")
            )));
        }
        match v {
            Value::Null => {}
            Value::String(s) => {
                params.insert(k.clone(), s.clone());
            }
            _ => return Err(bad(format!("{k}: expected a string"))),
        }
    }
    if params.is_empty() {
        return Err(bad(format!(
            "give at least one filter ({}); a bulk operation never acts on every task unasked",
            BULK_FILTERS.join(", ")
        )));
    }
    Ok((params, key))
}

/// What a bulk operation did so far.
#[derive(Default)]
struct BulkTally {
    acted: u64,
    skipped: u64,
    failed: u64,
    /// The new tasks of a replay, the first [`BULK_LISTED`].
    task_ids: Vec<String>,
    /// The first ten failures.
    errors: Vec<BulkError>,
    replayed: u64,
}

impl BulkTally {
    /// Counts one task's outcome: acted on (with the replay's new task), skipped (a state the
    /// operation refuses), failed, or not matched (gone since the index listed it, or never
    /// the caller's).
    fn count(&mut self, id: String, r: ApiResult<Option<String>>) {
        match r {
            Ok(new) => {
                self.acted += 1;
                if let Some(new) = new {
                    self.replayed += 1;
                    if self.task_ids.len() < BULK_LISTED {
                        self.task_ids.push(new);
                    }
                }
            }
            Err(e) if e.code == "task_not_found" => {}
            Err(e) if e.status == StatusCode::CONFLICT || e.code == "function_not_found" => self.skipped += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < 10 {
                    self.errors.push(BulkError {
                        task_id: id,
                        error: e.detail(),
                    });
                }
            }
        }
    }

    fn answer(self, op: Bulk) -> Value {
        let replay = op == Bulk::Replay;
        let answer = BulkAnswer {
            matched: self.acted + self.skipped + self.failed,
            acted: self.acted,
            skipped: self.skipped,
            failed: self.failed,
            errors: self.errors,
            task_ids: replay.then_some(self.task_ids),
            task_ids_truncated: replay.then_some(self.replayed > BULK_LISTED as u64),
        };
        serde_json::to_value(answer).unwrap_or_default()
    }
}

fn check_function_name(name: &str) -> ApiResult<()> {
    if valid_function_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_function_name",
            format!("{name:?} is not a function name ([A-Za-z0-9_-]{{1,64}})"),
        ))
    }
}

/// A new Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
pub fn new_signing_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Creates or replaces a function. The signing secret is generated when absent and shown once,
/// in this answer.
pub async fn fn_put(ctx: &Ctx, name: &str, partial: &Value) -> ApiResult<(StatusCode, Value)> {
    check_function_name(name)?;
    // A GET answer can be sent back as is: its name and live figures are not policy.
    let mut partial = partial.clone();
    if let Some(obj) = partial.as_object_mut() {
        if obj.get("name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "invalid_policy",
                format!("name: {} differs from the path's {name:?}", obj["name"]),
            ));
        }
        for k in ["name", "queued", "running", "delayed", "concurrency_limit"] {
            obj.remove(k);
        }
    }
    let partial = &partial;
    let mut spec = function::resolve(partial, &ctx.config.defaults, ctx.config.retention())
        .and_then(|spec| function::check_rules(&spec, &ctx.config.rules()).map(|()| spec))
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    let existing = ctx.functions.get(name).await?;
    let mut generated = None;
    if spec.signing_secret.is_none() {
        match existing.as_ref().and_then(|f| f.spec.signing_secret.clone()) {
            Some(kept) => spec.signing_secret = Some(kept),
            None => {
                let s = new_signing_secret();
                generated = Some(s.clone());
                spec.signing_secret = Some(s);
            }
        }
    }
    let f = Function {
        name: name.to_string(),
        spec,
    };
    ctx.put_function(&f).await.map_err(ApiError::unavailable)?;
    let mut answer = f.spec.public_json(name);
    if let Some(s) = generated {
        answer["signing_secret"] = Value::String(s);
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, answer))
}

/// A function with its live figures.
pub async fn fn_get(ctx: &Ctx, name: &str) -> ApiResult<Value> {
    check_function_name(name)?;
    let f = ctx
        .functions
        .get(name)
        .await?
        .ok_or_else(|| ApiError::function_not_found(name))?;
    let mut v = f.spec.public_json(name);
    let q = crate::engine::metrics::queues(ctx, name).await.unwrap_or_default();
    v["queued"] = q.queued.into();
    v["running"] = q.running.into();
    v["delayed"] = q.delayed.into();
    // What all replicas may run now: adaptive and shared, at most `concurrency.max`.
    v["concurrency_limit"] = ctx.replicas.cluster_limit(name, f.spec.concurrency.max).into();
    Ok(v)
}

pub async fn fn_delete(ctx: &Ctx, name: &str) -> ApiResult<Value> {
    check_function_name(name)?;
    if ctx.functions.delete(name).await? {
        ctx.registry.remove(name);
        Ok(json!({"deleted": name}))
    } else {
        Err(ApiError::function_not_found(name))
    }
}

pub async fn fn_list(ctx: &Ctx) -> ApiResult<Value> {
    let all = ctx.functions.list().await?;
    let functions: Vec<Value> = all.iter().map(|f| f.spec.public_json(&f.name)).collect();
    Ok(json!({ "functions": functions }))
}

async fn schedule_view(ctx: &Ctx, s: &crate::core::schedule::Schedule) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    let last = ctx
        .nats
        .fires
        .entry(&s.name)
        .await
        .ok()
        .flatten()
        .and_then(|e| std::str::from_utf8(&e.value).ok().and_then(|v| v.parse::<i64>().ok()))
        .map(Timestamp);
    v["next_fire_at"] = json!(s.next_after(Timestamp::now()).filter(|_| s.enabled));
    v["last_fired_at"] = json!(last);
    v
}

fn schedule_not_found(name: &str) -> ApiError {
    ApiError::not_found("schedule_not_found", format!("no schedule {name:?}"))
}

async fn stored_schedule(ctx: &Ctx, name: &str) -> ApiResult<Option<crate::core::schedule::Schedule>> {
    if !valid_function_name(name) {
        return Err(ApiError::bad_request(
            "invalid_schedule",
            format!("name: {name:?} is not a schedule name ([A-Za-z0-9_-]{{1,64}})"),
        ));
    }
    match ctx
        .nats
        .schedules
        .entry(name)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
    {
        Some(e) if e.operation == async_nats::jetstream::kv::Operation::Put => serde_json::from_slice(&e.value)
            .map(Some)
            .map_err(|e| ApiError::unavailable(format!("unreadable schedule: {e}"))),
        _ => Ok(None),
    }
}

/// Creates or replaces a recurring schedule.
pub async fn schedule_put(ctx: &Ctx, name: &str, body: &Value) -> ApiResult<(StatusCode, Value)> {
    let existing = if valid_function_name(name) {
        stored_schedule(ctx, name).await?
    } else {
        None
    };
    let created_at = existing.as_ref().map(|s| s.created_at).unwrap_or_else(Timestamp::now);
    let mut body = body.clone();
    if let Some(o) = body.as_object_mut() {
        for k in ["next_fire_at", "last_fired_at", "created_at"] {
            o.remove(k);
        }
    }
    let s = crate::core::schedule::Schedule::resolve(name, &body, created_at)
        .map_err(|e| ApiError::bad_request("invalid_schedule", e.to_string()))?;
    if ctx.function(&s.function).await.is_none() {
        return Err(ApiError::bad_request(
            "invalid_schedule",
            format!("function: no function {:?}", s.function),
        ));
    }
    let bytes = serde_json::to_vec(&s).map_err(|e| ApiError::unavailable(e.to_string()))?;
    ctx.nats
        .schedules
        .put(name, bytes.into())
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    ctx.schedules.upsert(s.clone());
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, schedule_view(ctx, &s).await))
}

pub async fn schedule_get(ctx: &Ctx, name: &str) -> ApiResult<Value> {
    match stored_schedule(ctx, name).await? {
        Some(s) => Ok(schedule_view(ctx, &s).await),
        None => Err(schedule_not_found(name)),
    }
}

pub async fn schedule_delete(ctx: &Ctx, name: &str) -> ApiResult<Value> {
    if stored_schedule(ctx, name).await?.is_none() {
        return Err(schedule_not_found(name));
    }
    ctx.nats
        .schedules
        .delete(name)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let _ = ctx.nats.fires.delete(name).await;
    ctx.schedules.remove(name);
    Ok(json!({"deleted": name}))
}

pub async fn schedule_list(ctx: &Ctx) -> ApiResult<Value> {
    let mut keys = ctx
        .nats
        .schedules
        .keys()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let mut names = Vec::new();
    while let Some(k) = futures::StreamExt::next(&mut keys).await {
        names.push(k.map_err(|e| ApiError::unavailable(e.to_string()))?);
    }
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        if let Some(s) = stored_schedule(ctx, &n).await? {
            out.push(schedule_view(ctx, &s).await);
        }
    }
    Ok(json!({ "schedules": out }))
}
