//! Results out (CONTRACT §6, §7): when a task finishes, its destination — the task's
//! `Jetask-Callback`, else the function's `on_success` (Succeeded) or `on_failure` (Failed,
//! Expired, Stopped) — receives `{"type", "task"}`: a signed webhook, a NATS message, or a new
//! task of another function. Deliveries are jobs on the `JETASK_CALLBACKS` work-queue stream,
//! retried with the function's backoff until its `max_event_age`; their outcome is the record's
//! `destination` field, the one field a finished record may still change.

use crate::core::destination::Destination;
use crate::core::function::FunctionSpec;
use crate::core::retry::backoff_delay;
use crate::core::subjects;
use crate::core::submission::Options;
use crate::core::task::{Encoded, Status, TaskRecord};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::egress;
use crate::engine::intake::{self, HttpSubmission};
use crate::store::kv::StoreError;
use async_nats::jetstream::AckKind;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The event type a finished state delivers, if any.
pub fn event_type(status: Status) -> Option<&'static str> {
    match status {
        Status::Succeeded => Some("task.succeeded"),
        Status::Failed => Some("task.failed"),
        Status::Expired => Some("task.expired"),
        Status::Stopped => Some("task.stopped"),
        _ => None,
    }
}

/// A delivery to make.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub task_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub target: String,
}

impl Job {
    /// The same for every resend: JetStream deduplicates by it, receivers may too.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}_{}", self.task_id, self.kind.trim_start_matches("task."))
    }
}

/// Where a finished record's result goes, if anywhere.
pub fn target(record: &TaskRecord, spec: Option<&FunctionSpec>) -> Option<String> {
    event_type(record.status)?;
    record.callback.clone().or_else(|| {
        let spec = spec?;
        if record.status == Status::Succeeded {
            spec.on_success.clone()
        } else {
            spec.on_failure.clone()
        }
    })
}

/// Marks a record that has just finished as owing a delivery (in the same write that finishes
/// it) and returns the job.
pub fn prepare(record: &mut TaskRecord, spec: Option<&FunctionSpec>) -> Option<Job> {
    if record.destination.is_some() {
        return None;
    }
    let target = target(record, spec)?;
    let kind = event_type(record.status)?.to_string();
    record.destination = Some(json!({"target": target, "status": "Pending", "attempts": 0}));
    Some(Job {
        task_id: record.id.clone(),
        kind,
        target,
    })
}

/// The job of a finished record whose delivery is not settled yet.
pub fn pending_job(record: &TaskRecord) -> Option<Job> {
    let d = record.destination.as_ref()?;
    if !matches!(d["status"].as_str(), Some("Pending") | Some("Retrying")) {
        return None;
    }
    Some(Job {
        task_id: record.id.clone(),
        kind: event_type(record.status)?.to_string(),
        target: d["target"].as_str()?.to_string(),
    })
}

/// Puts a delivery on the callbacks stream (deduplicated by task and state).
pub async fn enqueue(ctx: &Ctx, job: &Job) -> Result<(), String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(subjects::headers::MSG_ID, job.webhook_id().as_str());
    let body = serde_json::to_vec(job).map_err(|e| e.to_string())?;
    ctx.nats
        .js
        .publish_with_headers(subjects::CALLBACK_DELIVER, headers, body.into())
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Makes sure a finished record's pending delivery is on the stream (after a crash between the
/// record's write and the enqueue).
pub async fn ensure_enqueued(ctx: &Ctx, record: &TaskRecord) {
    if let Some(job) = pending_job(record) {
        if let Err(e) = enqueue(ctx, &job).await {
            tracing::warn!(task_id = %record.id, error = %e, "cannot enqueue result delivery");
        }
    }
}

/// The body every destination receives: `{"type", "task"}` (the record without input).
pub fn body(kind: &str, record: &TaskRecord) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": kind, "task": record.to_view(false)})).unwrap_or_default()
}

/// The task a `function:` destination starts: derived from the finished task and its state, so
/// that a redelivery starts no second one.
pub fn chained_task_id(job: &Job) -> String {
    let digest = sha2::Sha256::digest(format!("{}:{}", job.task_id, job.kind).as_bytes());
    let hex = crate::core::hex::lower(&digest[..16]);
    format!("then-{hex}")
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth another try, with the function's backoff.
    Retry(String),
    /// Refused by a rule (the destination's or the egress policy's): final, nothing was sent.
    Refused(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Retry(e)
    }
}

/// Makes one delivery of `job` to its destination, checked against the operator's rules first.
async fn deliver(ctx: &Ctx, job: &Job, record: &TaskRecord, spec: Option<&FunctionSpec>) -> Result<(), Failure> {
    // Checked again here, not only where the destination was given: a record or a function
    // written before a rule, or before the operator narrowed it, must not get through.
    let dest = crate::core::destination::check(&job.target, &ctx.config.rules())
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let payload = body(&job.kind, record);
    let delivery = Delivery { ctx, job, record, spec };
    match dest {
        Destination::Webhook(url) => delivery.post_webhook(&url, payload).await,
        Destination::Nats(subject) => delivery.publish(subject, payload).await,
        Destination::Function(name) => delivery.start_task(name, payload).await,
    }
}

/// One delivery of `job`'s finished `record`, under its function's `spec` (if it still has one).
struct Delivery<'a> {
    ctx: &'a Ctx,
    job: &'a Job,
    record: &'a TaskRecord,
    spec: Option<&'a FunctionSpec>,
}

impl Delivery<'_> {
    /// A signed `POST` of `payload` to `url`; delivered when it answers 2xx.
    async fn post_webhook(&self, url: &str, payload: Vec<u8>) -> Result<(), Failure> {
        let (ctx, spec) = (self.ctx, self.spec);
        let msg_id = self.job.webhook_id();
        let ts = Timestamp::now().millis() / 1000;
        let mut req = ctx
            .http
            .http()
            .post(url)
            .timeout(
                spec.map(|s| s.timeout.0)
                    .unwrap_or(Duration::from_secs(30))
                    .min(Duration::from_secs(30)),
            )
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", ts.to_string());
        if let Some(secret) = spec.and_then(|s| s.signing_secret.as_deref()) {
            let sig = crate::core::signing::sign(secret, &msg_id, ts, &payload).map_err(|e| e.to_string())?;
            req = req.header("webhook-signature", sig);
        }
        if let Some(tp) = &self.record.traceparent {
            req = req.header("traceparent", tp);
        }
        let resp = req.body(payload).send().await.map_err(|e| match egress::refusal(&e) {
            Some(r) => Failure::Refused(format!("webhook {r}")),
            None => Failure::Retry(format!("webhook unreachable: {}", crate::engine::invoke::describe(&e))),
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered HTTP {}", resp.status().as_u16()).into())
        }
    }

    /// `payload` on the NATS `subject`, acknowledged by a stream when one keeps the subject.
    async fn publish(&self, subject: String, payload: Vec<u8>) -> Result<(), Failure> {
        let ctx = self.ctx;
        // A stream that keeps the subject acknowledges the message; without one, a plain
        // publish reaches the subject's subscribers (a JetStream publish would wait for an
        // acknowledgement that a plain subscriber never sends).
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subjects::headers::MSG_ID, self.job.webhook_id().as_str());
        if let Some(tp) = &self.record.traceparent {
            headers.insert(subjects::headers::TRACEPARENT, tp.as_str());
        }
        if ctx.nats.js.stream_by_subject(subject.clone()).await.is_ok() {
            let ack = ctx
                .nats
                .js
                .publish_with_headers(subject, headers, payload.into())
                .await
                .map_err(|e| e.to_string())?;
            return ack.await.map(|_| ()).map_err(|e| e.to_string().into());
        }
        ctx.nats
            .client
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| e.to_string())?;
        ctx.nats.client.flush().await.map_err(|e| e.to_string().into())
    }

    /// A new task of the function `name`, with an ID derived from the job so that a redelivery
    /// starts no second one.
    async fn start_task(&self, name: String, payload: Vec<u8>) -> Result<(), Failure> {
        let (ctx, record) = (self.ctx, self.record);
        if ctx.function(&name).await.is_none() {
            return Err(format!("no function {name:?}").into());
        }
        let (input, content_type) = chained_input(record, payload);
        let s = HttpSubmission {
            function: name,
            user: record.user.clone(),
            id: Some(chained_task_id(self.job)),
            options: Options {
                content_type: Some(content_type.into()),
                traceparent: record.traceparent.clone(),
                triggered_by: Some(record.id.clone()),
                ..Options::default()
            },
            input: input.into(),
        };
        intake::submit(ctx, s, false, true)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string().into())
    }
}

/// The input of a chained task and its content type: a succeeded task's result, as it is; else
/// the delivery body, which says why the task did not succeed.
fn chained_input(record: &TaskRecord, payload: Vec<u8>) -> (Vec<u8>, &'static str) {
    if record.status == Status::Succeeded {
        let bytes = Encoded::decode(record.result.as_deref(), record.result_base64.as_deref());
        let ct = if record.result.is_some() {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        (bytes, ct)
    } else {
        (payload, "application/json")
    }
}

/// Writes the delivery's outcome into the record, whatever else changed meanwhile.
async fn record_outcome(ctx: &Ctx, id: &str, destination: Value) -> Result<(), StoreError> {
    loop {
        let Some(mut v) = ctx.tasks.get(id).await? else {
            return Ok(());
        };
        v.record.destination = Some(destination.clone());
        match ctx.tasks.update(&v.record, v.revision).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One delivery attempt of a job; what to tell JetStream.
async fn handle(ctx: &Ctx, job: &Job) -> AckKind {
    let record = match still_owed(ctx, job).await {
        Ok(record) => record,
        Err(ack) => return ack,
    };
    let spec = ctx.function(&record.function).await;
    let attempts = record
        .destination
        .as_ref()
        .and_then(|d| d["attempts"].as_u64())
        .unwrap_or(0)
        + 1;
    let outcome = deliver(ctx, job, &record, spec.as_deref()).await;
    let kind = destination_kind(&job.target);
    let now = Timestamp::now();
    let (destination, ack) = match outcome {
        Ok(()) => {
            ctx.metrics.delivery(kind, "delivered");
            (
                json!({"target": job.target, "status": "Delivered", "attempts": attempts}),
                AckKind::Ack,
            )
        }
        Err(Failure::Refused(error)) => {
            ctx.metrics.delivery(kind, "failed");
            tracing::warn!(task_id = %job.task_id, target = %job.target, error = %error, "result delivery refused");
            let d = json!({"target": job.target, "status": "Failed", "attempts": attempts, "last_error": error});
            (d, AckKind::Ack)
        }
        Err(Failure::Retry(error)) => {
            tracing::info!(task_id = %job.task_id, attempts, error = %error, "result delivery failed");
            match next_try(spec.as_deref(), &record, attempts, now) {
                Some(wait) => {
                    ctx.metrics.delivery(kind, "retrying");
                    let d =
                        json!({"target": job.target, "status": "Retrying", "attempts": attempts, "last_error": error});
                    (d, AckKind::Nak(Some(wait)))
                }
                None => {
                    ctx.metrics.delivery(kind, "failed");
                    let d =
                        json!({"target": job.target, "status": "Failed", "attempts": attempts, "last_error": error});
                    (d, AckKind::Ack)
                }
            }
        }
    };
    match record_outcome(ctx, &job.task_id, destination).await {
        Ok(()) => ack,
        Err(_) => AckKind::Nak(Some(Duration::from_secs(1))),
    }
}

/// The record whose pending delivery `job` still is; else what to tell JetStream (a job that
/// was delivered, superseded or whose task is gone is settled; a store error tries again soon).
async fn still_owed(ctx: &Ctx, job: &Job) -> Result<TaskRecord, AckKind> {
    let record = match ctx.tasks.get(&job.task_id).await {
        Ok(Some(v)) => v.record,
        Ok(None) => return Err(AckKind::Ack),
        Err(_) => return Err(AckKind::Nak(Some(Duration::from_secs(1)))),
    };
    match pending_job(&record) {
        Some(pending) if pending == *job => Ok(record),
        _ => Err(AckKind::Ack),
    }
}

/// The destination kind a delivery is counted under in the metrics.
fn destination_kind(target: &str) -> &str {
    target.split_once(':').map_or("webhook", |(scheme, _)| match scheme {
        "nats" | "function" => scheme,
        _ => "webhook",
    })
}

/// How long to wait before trying a failed delivery again (the function's backoff), or `None`
/// when that would fall past its `max_event_age` from the task's finish: the delivery has failed.
fn next_try(spec: Option<&FunctionSpec>, record: &TaskRecord, attempts: u64, now: Timestamp) -> Option<Duration> {
    let defaults = crate::core::function::Backoff {
        initial: crate::core::duration::Dur::from_secs(1),
        max: crate::core::duration::Dur::from_secs(300),
        multiplier: 2.0,
        jitter: true,
    };
    let backoff = spec.map(|s| s.backoff.clone()).unwrap_or(defaults);
    let age = spec.map(|s| s.max_event_age.0).unwrap_or(Duration::from_secs(86_400));
    let wait = backoff_delay(&backoff, attempts as u32, rand::random::<f64>());
    let deadline = record.finished_at.unwrap_or(now).plus(age);
    (now.plus(wait) < deadline).then_some(wait)
}

/// Deliveries in flight on one replica.
const IN_FLIGHT: usize = 64;

/// Delivers results until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    crate::store::follow::consume(
        &ctx.nats.callbacks,
        subjects::CALLBACK_CONSUMER,
        IN_FLIGHT,
        shutdown,
        |m| {
            let ctx = &ctx;
            async move {
                let ack = match serde_json::from_slice::<Job>(&m.payload) {
                    Ok(job) => handle(ctx, &job).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropping unreadable delivery job");
                        AckKind::Term
                    }
                };
                if let Err(e) = m.ack_with(ack).await {
                    tracing::warn!(error = %e, "cannot settle delivery job");
                }
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::{create, NewTask};

    fn finished(status: Status, callback: Option<&str>) -> TaskRecord {
        let mut r = create(
            NewTask {
                callback: callback.map(str::to_string),
                ..NewTask::new("t1", "f", "u", 1, vec![])
            },
            None,
            Timestamp(0),
        )
        .record;
        r.status = status;
        r
    }

    fn spec() -> FunctionSpec {
        crate::core::function::resolve(
            &json!({"endpoint": "http://x.test", "on_success": "nats:ok", "on_failure": "https://hooks.test/fail"}),
            &json!({}),
            Duration::from_secs(7 * 86400),
        )
        .unwrap()
    }

    #[test]
    fn success_goes_to_on_success_and_every_failure_to_on_failure() {
        let s = spec();
        assert_eq!(
            target(&finished(Status::Succeeded, None), Some(&s)).as_deref(),
            Some("nats:ok")
        );
        for st in [Status::Failed, Status::Expired, Status::Stopped] {
            assert_eq!(
                target(&finished(st, None), Some(&s)).as_deref(),
                Some("https://hooks.test/fail")
            );
        }
        assert_eq!(target(&finished(Status::Invalid, None), Some(&s)), None);
        assert_eq!(target(&finished(Status::Running, None), Some(&s)), None);
    }

    #[test]
    fn a_task_callback_overrides_the_function_destinations() {
        let s = spec();
        assert_eq!(
            target(&finished(Status::Failed, Some("function:g")), Some(&s)).as_deref(),
            Some("function:g")
        );
    }

    #[test]
    fn prepare_marks_the_record_pending_once() {
        let s = spec();
        let mut r = finished(Status::Succeeded, None);
        let job = prepare(&mut r, Some(&s)).unwrap();
        assert_eq!(
            job,
            Job {
                task_id: "t1".into(),
                kind: "task.succeeded".into(),
                target: "nats:ok".into()
            }
        );
        assert_eq!(r.destination.as_ref().unwrap()["status"], "Pending");
        assert_eq!(pending_job(&r), Some(job.clone()));
        assert_eq!(prepare(&mut r, Some(&s)), None);
        assert_eq!(job.webhook_id(), "msg_t1_succeeded");
        let chained = chained_task_id(&job);
        assert!(crate::core::task::valid_task_id(&chained) && chained.len() == 37);
    }
}
