//! Intake: every submission becomes a record as soon as it is stored, however long its
//! function's queue (one durable consumer over all submissions, shared by every replica,
//! writing records with many creates in flight). Also the publishing side of HTTP submission.

use crate::core::machine;
use crate::core::subjects::{self, headers as h};
use crate::core::submission::{self, Options};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::records;
use crate::store::kv::StoreError;
use async_nats::jetstream::AckKind;
use async_nats::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records written concurrently by one replica's intake.
const IN_FLIGHT: usize = 512;

/// Runs intake until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    crate::store::follow::consume(&ctx.nats.submit, subjects::INTAKE_CONSUMER, IN_FLIGHT, shutdown, |m| {
        record(&ctx, m)
    })
    .await;
}

/// Records one submission, then acknowledges it.
async fn record(ctx: &Ctx, msg: async_nats::jetstream::Message) {
    let Ok(info) = msg.info() else {
        crate::engine::poison::terminate_without_metadata(ctx, &msg).await;
        return;
    };
    let (seq, accepted_at) = (info.stream_sequence, Timestamp(info.published.timestamp_millis()));
    // What follows `jetask.submit.`: a function name (and the user NATS vouches for), or
    // something the task is Invalid for.
    let function = subjects::submit_parts(msg.subject.as_str()).0.to_string();
    let spec = ctx.function(&function).await;
    if spec.as_ref().is_some_and(|s| !s.task_mode) {
        let _ = msg.ack().await;
        return;
    }
    let flag = crate::engine::poison::flagged(msg.headers.as_ref());
    let Some(parsed) = parse(ctx, &function, &msg, seq, accepted_at, flag.as_deref()).await else {
        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        return;
    };
    let invalid = if crate::core::task::valid_function_name(&function) {
        parsed
            .invalid
            .or_else(|| spec.is_none().then(|| format!("no such function: {function:?}")))
    } else {
        Some(format!("{}: {function:?} is not a function name", msg.subject))
    };
    let t = machine::create(parsed.task, invalid, accepted_at);
    if dispatch_is_ready(ctx, &t.record, spec.as_deref()) && left_to_dispatch(ctx, &t.record.id, seq, accepted_at).await
    {
        let _ = msg.ack().await;
        return;
    }
    let kind = create(ctx, &t, seq, info.delivered, flag.is_some()).await;
    let _ = msg.ack_with(kind).await;
}

/// Creates the submission's record and says what to tell JetStream: done (terminated, for a
/// poison submission: never delivered again, whatever comes), or later when the record cannot
/// be written now (NATS unavailable). One too large for the server is terminated after a few
/// tries.
async fn create(ctx: &Ctx, t: &machine::Transition, seq: u64, delivered: i64, poison: bool) -> AckKind {
    match records::create(ctx, t).await {
        Ok(revision) => {
            if t.record.status == crate::core::task::Status::Enqueued {
                ctx.revisions.created(&t.record.id, seq, revision);
            }
            ctx.fair.recorded(ctx, &t.record).await;
            if poison {
                let why = t.record.error.as_ref().map_or("", |e| e.message.as_str());
                crate::engine::poison::report(
                    ctx,
                    crate::engine::poison::Kind::UnreadableHeaders,
                    seq,
                    &t.record.id,
                    why,
                );
            }
        }
        Err(StoreError::Exists) => {}
        Err(e @ StoreError::TooLarge(_)) if delivered >= crate::engine::poison::MAX_FAILED_DELIVERIES => {
            crate::engine::poison::report(
                ctx,
                crate::engine::poison::Kind::Unrecordable,
                seq,
                &t.record.id,
                &e.to_string(),
            );
            return AckKind::Term;
        }
        Err(e) => {
            tracing::warn!(task_id = %t.record.id, error = %e, "cannot record submission; will retry");
            return AckKind::Nak(Some(Duration::from_secs(1)));
        }
    }
    if poison {
        AckKind::Term
    } else {
        AckKind::Ack
    }
}

/// The submission as a task: read from its headers, or, when async-nats could not read them
/// (see [`crate::engine::poison`]), from the raw stored message. `None`: try again later.
async fn parse(
    ctx: &Ctx,
    function: &str,
    msg: &async_nats::jetstream::Message,
    seq: u64,
    accepted_at: Timestamp,
    flag: Option<&str>,
) -> Option<submission::Parsed> {
    match flag {
        None => Some(read(ctx, function, msg, seq, accepted_at)),
        Some(fault) => match crate::engine::poison::parse(ctx, function, msg, seq, accepted_at, fault).await {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                tracing::warn!(stream_sequence = seq, error = %e, "cannot read a submission's headers; will retry");
                None
            }
        },
    }
}

/// A submission whose headers async-nats could read, as a task under the configured retention,
/// limits and destination rules: what intake records and what dispatch rebuilds a record from.
pub(crate) fn read(
    ctx: &Ctx,
    function: &str,
    msg: &async_nats::Message,
    seq: u64,
    accepted_at: Timestamp,
) -> submission::Parsed {
    submission::from_message_on(
        msg.subject.as_str(),
        function,
        |k| msg.headers.as_ref().and_then(|hm| hm.get_str(k)).map(|v| v.as_str()),
        &msg.payload,
        seq,
        accepted_at,
        ctx.config.retention(),
        ctx.config.limits.max_payload,
        &ctx.config.rules(),
    )
}

/// Leaves a task its dispatcher takes at once to its first delivery, which creates the record
/// itself in one write with its start (see `dispatch::find`): written here too, the two writes
/// would race for nothing. Waits out [`DEFER`]; `true` when this replica's dispatcher created it
/// meanwhile (a create now would fail, at the cost of a KV write and its answer).
async fn left_to_dispatch(ctx: &Ctx, id: &str, seq: u64, accepted_at: Timestamp) -> bool {
    let age = Duration::from_millis(Timestamp::now().since(accepted_at));
    if let Some(wait) = DEFER.checked_sub(age) {
        tokio::time::sleep(wait).await;
    }
    ctx.revisions.take_dispatched(id, seq)
}

/// How long after its submission intake leaves a task's record to a ready dispatcher.
const DEFER: Duration = Duration::from_millis(50);

/// Whether this replica's dispatcher of the task's function will take it at once: it is due,
/// nothing paces the function, and a slot is free.
fn dispatch_is_ready(
    ctx: &Ctx,
    r: &crate::core::task::TaskRecord,
    spec: Option<&crate::core::function::FunctionSpec>,
) -> bool {
    let runnable = r.status == crate::core::task::Status::Enqueued
        && r.waiting_until().is_none()
        && spec.is_some_and(|s| s.task_mode && s.enabled && !s.is_paced());
    if !runnable {
        return false;
    }
    !ctx.replicas.slots(&r.function).is_full()
}

/// What an HTTP submission led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub task_id: String,
    pub status: crate::core::task::Status,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("task ID {0:?} is held by another user")]
    IdTaken(String),
    /// Nothing was published: the submission was not accepted.
    #[error("JetStream unavailable: {0}")]
    Unavailable(String),
    /// Published, but whether JetStream stored it is not known (its acknowledgement was lost,
    /// e.g. with the connection): submitting again with the same ID is safe, another ID is not.
    #[error("task {id:?} may or may not have been accepted: {reason}")]
    Unknown { id: String, reason: String },
    /// JetStream refused the message for what it carries (e.g. headers over 64 KiB).
    #[error("JetStream refused the submission: {0}")]
    Refused(String),
    #[error("input of {size} bytes is over limits.max_payload = {max}")]
    TooLarge { size: usize, max: usize },
}

/// One submission arriving over HTTP, already validated.
pub struct HttpSubmission {
    pub function: String,
    pub user: String,
    pub id: Option<String>,
    pub options: Options,
    pub input: bytes::Bytes,
}

/// The answer to a submission whose ID is taken: the task's status, unless (with tokens on)
/// the ID is another user's.
fn duplicate_of(
    existing: Option<crate::store::kv::Versioned>,
    id: String,
    user: &str,
    auth: bool,
) -> Result<Accepted, SubmitError> {
    if let Some(v) = &existing {
        if auth && v.record.user != user {
            return Err(SubmitError::IdTaken(id));
        }
    }
    let status = existing
        .map(|v| v.record.status)
        .unwrap_or(crate::core::task::Status::Enqueued);
    Ok(Accepted {
        task_id: id,
        status,
        duplicate: true,
    })
}

/// The headers an HTTP submission is published with: what a NATS client would set.
fn submission_headers(id: &str, s: &HttpSubmission) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(h::MSG_ID, id);
    headers.insert(h::USER, s.user.as_str());
    if let Some(nb) = s.options.not_before {
        headers.insert(h::NOT_BEFORE, nb.to_string().as_str());
    }
    for (name, value) in [
        (h::CALLBACK, &s.options.callback),
        (h::CONTENT_TYPE, &s.options.content_type),
        (h::TRACEPARENT, &s.options.traceparent),
        (h::REPLAY_OF, &s.options.replay_of),
        (h::TRIGGERED_BY, &s.options.triggered_by),
    ] {
        if let Some(v) = value {
            headers.insert(name, v.as_str());
        }
    }
    headers
}

/// How long a submission whose acknowledgement is lost is published again (deduplicated by its
/// `Nats-Msg-Id`) to learn whether JetStream stored it.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(5);

/// Publishes a submission until JetStream acknowledges it. A lost acknowledgement (a timeout,
/// a dropped connection) does not mean the message was not stored: the same message, with the
/// same `Nats-Msg-Id`, is published again, and JetStream's duplicate window answers whether
/// the first one was. Only an answer from the stream refusing it (or no stream answering at all)
/// means it was not accepted.
async fn publish_until_known(
    ctx: &Ctx,
    function: &str,
    id: &str,
    headers: HeaderMap,
    input: bytes::Bytes,
) -> Result<async_nats::jetstream::publish::PublishAck, SubmitError> {
    use async_nats::jetstream::context::PublishErrorKind as Kind;
    let deadline = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
    let mut pause = Duration::from_millis(20);
    // Whether an earlier try may have been stored, unbeknown to us.
    let mut maybe_stored = false;
    loop {
        let sent = ctx
            .nats
            .js
            .publish_with_headers(subjects::submit(function), headers.clone(), input.clone())
            .await;
        let error = match sent {
            Ok(ack) => match ack.await {
                Ok(ack) => return Ok(ack),
                Err(e) => e,
            },
            Err(e) => e,
        };
        let refusal = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            .map(|js| (js.code(), js.to_string()));
        match (error.kind(), refusal) {
            // The stream answered no: nothing was stored, and trying again changes nothing.
            (_, Some((400, why))) => return Err(SubmitError::Refused(why)),
            (_, Some((_, why))) if !maybe_stored => return Err(SubmitError::Unavailable(why)),
            (Kind::MaxPayloadExceeded, _) => return Err(SubmitError::Refused(error.to_string())),
            // No stream listening (a failover): not stored, but may be soon.
            (Kind::StreamNotFound, _) => {}
            _ => maybe_stored = true,
        }
        if tokio::time::Instant::now() + pause > deadline {
            let reason = error.to_string();
            return Err(if maybe_stored {
                SubmitError::Unknown {
                    id: id.to_string(),
                    reason,
                }
            } else {
                SubmitError::Unavailable(reason)
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Publishes a submission and answers once JetStream has stored it. `record_now` also writes its
/// record, so that a client reading it right after the answer finds it.
pub async fn submit(ctx: &Ctx, s: HttpSubmission, auth: bool, record_now: bool) -> Result<Accepted, SubmitError> {
    if s.input.len() > ctx.config.limits.max_payload {
        return Err(SubmitError::TooLarge {
            size: s.input.len(),
            max: ctx.config.limits.max_payload,
        });
    }
    if ctx.nats.client.connection_state() != async_nats::connection::State::Connected {
        return Err(SubmitError::Unavailable("not connected to NATS".into()));
    }
    let client_id = s.id.is_some();
    let id = s.id.clone().unwrap_or_else(crate::core::task::new_task_id);
    if client_id {
        // Past JetStream's duplicate window, the record is what deduplicates.
        match ctx.tasks.get(&id).await {
            Ok(Some(v)) => return duplicate_of(Some(v), id, &s.user, auth),
            Ok(None) => {}
            Err(e) => return Err(SubmitError::Unavailable(e.to_string())),
        }
    }
    let headers = submission_headers(&id, &s);
    let now = Timestamp::now();
    let ack = publish_until_known(ctx, &s.function, &id, headers, s.input.clone()).await?;
    if ack.duplicate {
        let existing = ctx.tasks.get(&id).await.ok().flatten();
        return duplicate_of(existing, id, &s.user, auth);
    }
    if record_now && ctx.registry.get(&s.function).is_some_and(|f| f.task_mode) {
        let t = machine::create(
            machine::NewTask {
                id: id.clone(),
                function: s.function,
                user: s.user,
                seq: ack.sequence,
                not_before: s.options.not_before.filter(|nb| *nb > now),
                input: s.input.to_vec(),
                content_type: s.options.content_type,
                traceparent: s.options.traceparent,
                callback: s.options.callback,
                replay_of: s.options.replay_of,
                triggered_by: s.options.triggered_by,
            },
            None,
            now,
        );
        // Intake writes it otherwise; whichever comes first wins.
        if records::create(ctx, &t).await.is_ok() {
            ctx.fair.recorded(ctx, &t.record).await;
        }
    }
    Ok(Accepted {
        task_id: id,
        status: crate::core::task::Status::Enqueued,
        duplicate: false,
    })
}
