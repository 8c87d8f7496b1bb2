//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` (CONTRACT §12).
//!
//! Generated from the code: every route of [`crate::api::router`] is registered through
//! `utoipa_axum`'s `routes!`, which takes the method and path from the handler's
//! `#[utoipa::path]`, so a route cannot be served without being in the document. Bodies are the
//! schemas of the types that produce them (`ToSchema` on the task record, function spec, schedule,
//! error body, ...); the answers that handlers assemble as JSON (a function with its live
//! figures, a schedule with its firings, lists) are described by the types below, and the unit
//! tests here check those against what the code assembles.

use crate::api::error::ErrorBody;
use crate::core::duration::Dur;
use crate::core::function::FunctionSpec;
use crate::core::schedule::Schedule;
use crate::core::task::TaskRecord;
use crate::core::time::Timestamp;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

/// The document's fixed parts; the paths come from the router ([`crate::api::openapi`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "jetask",
        description = "Asynchronous task platform on NATS JetStream: submit tasks, which jetask \
                       dispatches to HTTP functions with retries, limits and timeouts, records and \
                       delivers. See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document: never behind a token"),
        (name = "functions", description = "Functions and their policy (CONTRACT §6)"),
        (name = "tasks", description = "Submitting, reading, listing, stopping and replaying tasks (CONTRACT §3.2, §4, §5, §8)"),
        (name = "schedules", description = "Recurring schedules"),
    )
)]
pub struct ApiDoc;

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok`.
    #[schema(examples("ok"))]
    pub status: String,
}

/// `GET /readyz`: connected to NATS and the list index has replayed the tasks bucket.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub ready: bool,
    pub nats: bool,
    pub index: bool,
    /// While start-up waits for JetStream: what it is waiting for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// A function as `PUT` and `GET /v1/functions` answer it: its resolved policy and its name.
/// `signing_secret` appears only in the answer to the `PUT` that generated it.
#[derive(ToSchema)]
#[schema(as = Function)]
#[allow(dead_code)]
pub struct FunctionView {
    #[serde(flatten)]
    spec: FunctionSpec,
    name: String,
}

/// A function as `GET /v1/functions/{name}` answers it: with its live figures.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FunctionDetail {
    #[serde(flatten)]
    function: FunctionView,
    /// Tasks due and waiting for a slot.
    queued: u64,
    /// Tasks `Running` or `Stopping`.
    running: u64,
    /// Tasks waiting for a delay, a backoff or a `Retry-After`.
    delayed: u64,
    /// What all replicas may run at once now, at most `concurrency.max`.
    concurrency_limit: u32,
}

/// `GET /v1/functions`: sorted by name, without live figures.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FunctionList {
    functions: Vec<FunctionView>,
}

/// `backoff` of a policy: keys left out keep their default.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BackoffPolicy {
    #[serde(default)]
    initial: Dur,
    #[serde(default)]
    max: Dur,
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default)]
    multiplier: f64,
    #[serde(default)]
    jitter: bool,
}

/// `concurrency` of a policy: keys left out keep their default.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ConcurrencyPolicy {
    #[schema(minimum = 1)]
    #[serde(default)]
    min: u32,
    #[schema(minimum = 1, maximum = 100000)]
    #[serde(default)]
    max: u32,
    #[serde(default)]
    adaptive: bool,
}

/// `rate_limit` / `user_rate_limit` of a policy.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RateLimitPolicy {
    #[schema(exclusive_minimum = 0, maximum = 10000000)]
    per_second: f64,
    /// Default: `per_second` rounded up.
    #[schema(minimum = 1)]
    #[serde(default)]
    burst: u32,
}

/// The body of `PUT /v1/functions/{name}`: the keys of `[functions.NAME]`; those left out take
/// their default (from `[defaults]`, else built in), except `signing_secret`, which is kept.
/// `name` and the live figures of a `GET` answer are accepted and ignored, so that one can be
/// sent back as it is.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct FunctionPolicy {
    /// Required: the URL jetask calls, within the `[egress]` policy.
    #[schema(value_type = String, format = "uri")]
    endpoint: String,
    #[serde(default)]
    timeout: Dur,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default)]
    max_attempts: u32,
    #[serde(default)]
    backoff: BackoffPolicy,
    #[serde(default)]
    max_event_age: Dur,
    #[serde(default)]
    concurrency: ConcurrencyPolicy,
    rate_limit: Option<RateLimitPolicy>,
    user_rate_limit: Option<RateLimitPolicy>,
    /// A destination: `https://…`, `http://…`, `nats:SUBJECT` or `function:NAME`.
    on_success: Option<String>,
    /// A destination, as `on_success`.
    on_failure: Option<String>,
    #[serde(default)]
    task_mode: bool,
    #[serde(default)]
    heartbeat_timeout: Dur,
    #[serde(default)]
    enabled: bool,
    /// `whsec_` and the base64 of a key of at least 12 bytes; generated when absent.
    signing_secret: Option<String>,
    /// Ignored; when given, it must be the name in the path.
    #[serde(default)]
    name: String,
    /// Ignored (a live figure of `GET`).
    #[serde(default)]
    queued: Value,
    /// Ignored (a live figure of `GET`).
    #[serde(default)]
    running: Value,
    /// Ignored (a live figure of `GET`).
    #[serde(default)]
    delayed: Value,
    /// Ignored (a live figure of `GET`).
    #[serde(default)]
    concurrency_limit: Value,
}

/// A schedule as `PUT` and `GET` answer it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ScheduleView {
    #[serde(flatten)]
    schedule: Schedule,
    /// The next moment it fires; `null` when disabled.
    next_fire_at: Option<Timestamp>,
    /// The last moment handled, run or skipped.
    last_fired_at: Option<Timestamp>,
}

/// `GET /v1/schedules`: sorted by name.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ScheduleList {
    schedules: Vec<ScheduleView>,
}

/// The body of `PUT /v1/schedules/{name}`: exactly one of `cron` and `every`. `name` (which
/// must be the name in the path) and the read-only `created_at`, `next_fire_at` and
/// `last_fired_at` are accepted and ignored, so that a `GET` answer can be sent back.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SchedulePut {
    /// Required: the function each firing runs; it must exist.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    function: String,
    /// A cron expression (5, 6 or 7 fields, or a nickname such as `@daily`).
    cron: Option<String>,
    /// An interval of at least `1s`.
    every: Option<Dur>,
    /// The IANA time zone of `cron` (default UTC).
    time_zone: Option<String>,
    /// The input of each firing: a string is sent as its text, any other value as JSON.
    #[serde(default)]
    input: Value,
    enabled: Option<bool>,
    catch_up: Option<bool>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    created_at: Value,
    #[serde(default)]
    next_fire_at: Value,
    #[serde(default)]
    last_fired_at: Value,
}

/// `GET /v1/tasks`: newest first, without input.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TaskList {
    tasks: Vec<TaskRecord>,
    /// Give it as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<String>,
}

/// One item's outcome in a `:batch` answer: accepted, or an error body.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum BatchResult {
    Accepted(crate::api::ops::AcceptedAnswer),
    Error(ErrorBody),
}

/// The answer of `:batch`: one result per item, in order.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchResults {
    results: Vec<BatchResult>,
}

/// The optional body of a heartbeat.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HeartbeatBody {
    /// The attempt this reports on (else the `Jetask-Attempt` header, else the one in flight).
    #[schema(minimum = 1)]
    attempt: Option<u32>,
}

/// How a long task ended, as its function reports it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub enum CompletedStatus {
    Succeeded,
    Failed,
}

/// The body of a completion.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CompleteBody {
    status: CompletedStatus,
    /// For `Succeeded`: a string is stored as its text, any other value as its JSON text.
    #[serde(default)]
    result: Value,
    /// For `Succeeded`: the result as base64 (wins over `result`).
    result_base64: Option<String>,
    /// For `Failed`: a string, or an object whose `message` is taken.
    #[serde(default)]
    error: Value,
    /// The attempt this reports on (else the `Jetask-Attempt` header, else the one in flight).
    #[schema(minimum = 1)]
    attempt: Option<u32>,
    /// Ignored.
    #[serde(default)]
    id: Value,
}

/// The body of `POST /v1/tasks:stop`: list filters (at least one), each as in `GET /v1/tasks`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkFilter {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    function: Option<String>,
    status: Option<crate::core::task::Status>,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    user: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
}

/// The body of `POST /v1/tasks:replay`: list filters (at least one), and an idempotency key.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BulkReplayFilter {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    function: Option<String>,
    status: Option<crate::core::task::Status>,
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    user: Option<String>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    /// Each matched task's replay is the one a single replay with this key makes.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,128}$")]
    idempotency_key: Option<String>,
}

/// The security scheme every `/v1/` route takes, and the answers every one of them may give,
/// added to the document the router made; `null` taken out of the types of headers and query
/// parameters (they are absent or a string, never null); a submission's body optional.
pub(crate) fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token of `auth.tokens`; required on every /v1/ route when auth.tokens is set"
        }
    });
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (_, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else { continue };
            // A task's input may be empty.
            if op.get("operationId").and_then(Value::as_str) == Some("submit_task") {
                if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
                    body.insert("required".into(), Value::Bool(false));
                }
            }
            if path.starts_with("/v1/") {
                op.insert("security".into(), json!([{"bearer": []}, {}]));
                if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                    for (code, what) in [
                        (
                            "401",
                            "`unauthorized`: auth is on and there is no `Authorization: Bearer TOKEN`",
                        ),
                        ("403", "`forbidden`: auth is on and the token is unknown"),
                        ("503", "`unavailable`: NATS or JetStream unavailable"),
                    ] {
                        responses.entry(code).or_insert_with(|| error(what));
                    }
                }
            }
            for p in op
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if p["in"] == "header" || p["in"] == "query" {
                    let Some(schema) = p.get_mut("schema").and_then(Value::as_object_mut) else {
                        continue;
                    };
                    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
                        types.retain(|t| t != "null");
                    }
                    match schema.get("type") {
                        Some(Value::Array(types)) if types.len() == 1 => {
                            let only = types[0].clone();
                            schema.insert("type".into(), only);
                        }
                        Some(Value::Array(types)) if types.is_empty() => {
                            schema.remove("type");
                        }
                        Some(Value::Null) => {
                            schema.remove("type");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::task::{EventEntry, Status};
    use std::collections::BTreeSet;

    fn doc() -> Value {
        crate::api::openapi()
    }

    /// The property names of component `name`, following `allOf` (a flattened struct).
    fn properties(doc: &Value, name: &str) -> BTreeSet<String> {
        let schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        let mut out = BTreeSet::new();
        collect(doc, schema, &mut out);
        out
    }

    fn collect(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            return collect(doc, &doc["components"]["schemas"][name], out);
        }
        if let Some(props) = schema["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            collect(doc, part, out);
        }
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    fn full_record() -> TaskRecord {
        let t = Timestamp(1_795_914_000_000);
        TaskRecord {
            id: "job-42".into(),
            function: "resize".into(),
            user: "alice".into(),
            status: Status::Running,
            created_at: t,
            not_before: Some(t),
            started_at: Some(t),
            finished_at: Some(t),
            attempts: 1,
            duration_ms: Some(1),
            queue_ms: Some(1),
            input_size: 3,
            result: Some("r".into()),
            result_base64: Some("cg==".into()),
            result_truncated: true,
            error: None,
            destination: Some(json!({"target": "nats:x", "status": "Pending", "attempts": 0})),
            replay_of: Some("a".into()),
            triggered_by: Some("b".into()),
            heartbeat_at: Some(t),
            events: vec![EventEntry {
                status: Status::Enqueued,
                at: t,
                detail: None,
            }],
            seq: 7,
            next_attempt_at: Some(t),
            attempt_started_at: Some(t),
            async_attempt: true,
            content_type: Some("text/plain".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            callback: Some("nats:x".into()),
            holder: Some("replica".into()),
            input: Some("abc".into()),
            input_base64: None,
        }
    }

    #[test]
    fn the_task_schema_is_the_view_of_a_record_with_every_field_set() {
        let d = doc();
        assert_eq!(keys(&full_record().to_view(true)), properties(&d, "Task"));
    }

    #[test]
    fn the_function_schemas_have_the_keys_the_answers_have() {
        let d = doc();
        let spec = crate::core::function::resolve(
            &json!({"endpoint": "http://127.0.0.1:9/f", "rate_limit": {"per_second": 1}, "signing_secret": "whsec_MTIzNDU2Nzg5MDEy"}),
            &json!({}),
            std::time::Duration::from_secs(86400),
        )
        .expect("a spec");
        let mut shown = keys(&spec.public_json("f"));
        shown.insert("signing_secret".into());
        assert_eq!(shown, properties(&d, "Function"));
        let mut detail = shown.clone();
        detail.extend(["queued", "running", "delayed", "concurrency_limit"].map(String::from));
        assert_eq!(detail, properties(&d, "FunctionDetail"));
        // Every policy key can be given, and what a GET answers can be sent back.
        let mut policy = detail;
        policy.remove("name");
        assert!(properties(&d, "FunctionPolicy").is_superset(&policy));
    }

    #[test]
    fn the_schedule_schemas_have_the_keys_the_answers_have() {
        let d = doc();
        let s = Schedule::resolve("s", &json!({"function": "f", "every": "1m"}), Timestamp(0)).expect("a schedule");
        let mut shown = keys(&serde_json::to_value(&s).expect("json"));
        shown.extend(["next_fire_at", "last_fired_at"].map(String::from));
        assert_eq!(shown, properties(&d, "ScheduleView"));
        assert_eq!(shown, properties(&d, "SchedulePut"));
    }

    #[test]
    fn the_document_is_openapi_3_1_with_a_bearer_scheme() {
        let d = doc();
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(d["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(d["paths"]["/v1/tasks"]["get"]["security"], json!([{"bearer": []}, {}]));
        assert!(d["paths"]["/healthz"]["get"].get("security").is_none());
    }
}
