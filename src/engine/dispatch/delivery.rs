//! One delivery of a submission: read or rebuild its record, and move the task on (start an
//! attempt, wait, or settle) until it must wait or is done; then tell JetStream.

use super::attempt::{attempt, commit_or_reload};
use super::pull::parse;
use crate::core::function::FunctionSpec;
use crate::core::machine::{self, Event};
use crate::core::outcome;
use crate::core::submission;
use crate::core::task::{ErrorType, Status, TaskError};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::records;
use crate::store::kv::{StoreError, Versioned};
use async_nats::jetstream::{self, message::Acker, AckKind};
use std::time::Duration;
use tracing::Instrument;

/// What to tell JetStream about a submission.
pub(super) enum Settle {
    /// Done for good.
    Ack,
    /// Bring it back after this long.
    Later(Duration),
    /// Never deliver it again: it cannot be processed (see [`crate::engine::poison`]).
    Terminate,
}

/// A delivery whose headers async-nats could not read: recorded `Invalid` (by this delivery or
/// intake, whichever comes first) and terminated. Only a failed read of its stored headers or
/// of the store brings it back.
async fn settle_unreadable(
    ctx: &Ctx,
    function: &str,
    msg: &jetstream::Message,
    seq: u64,
    delivered: i64,
    accepted_at: Timestamp,
    flag: &str,
) -> AckKind {
    let later = AckKind::Nak(Some(Duration::from_secs(1)));
    let parsed = match crate::engine::poison::parse(ctx, function, msg, seq, accepted_at, flag).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(stream_sequence = seq, error = %e, "cannot read a submission's headers; will retry");
            return later;
        }
    };
    let t = machine::create(parsed.task, parsed.invalid, accepted_at);
    let why = t.record.error.as_ref().map_or(String::new(), |e| e.message.clone());
    let id = t.record.id.clone();
    let persist = ctx.function(function).await.is_none_or(|s| s.task_mode);
    if !persist {
        // Task mode off: no record, only its events, once.
        if delivered == 1 {
            records::publish(ctx, &t.record, &t.effects).await;
            crate::engine::poison::report(ctx, crate::engine::poison::Kind::UnreadableHeaders, seq, &id, &why);
        }
        return AckKind::Term;
    }
    match records::create(ctx, &t).await {
        Ok(_) => {
            crate::engine::poison::report(ctx, crate::engine::poison::Kind::UnreadableHeaders, seq, &id, &why);
            AckKind::Term
        }
        Err(StoreError::Exists) => AckKind::Term,
        Err(e) => {
            tracing::warn!(stream_sequence = seq, error = %e, "cannot record a poison submission; will retry");
            later
        }
    }
}

/// Handles one delivery of a submission.
pub(super) async fn handle(ctx: &Ctx, function: &str, msg: jetstream::Message, waited: Option<Duration>) {
    let Ok(info) = msg.info() else {
        crate::engine::poison::terminate_without_metadata(ctx, &msg).await;
        return;
    };
    let (seq, delivered) = (info.stream_sequence, info.delivered);
    let accepted_at = Timestamp(info.published.timestamp_millis());
    if let Some(flag) = crate::engine::poison::flagged(msg.headers.as_ref()) {
        let settle = settle_unreadable(ctx, function, &msg, seq, delivered, accepted_at, &flag).await;
        if let Err(e) = msg.ack_with(settle).await {
            tracing::warn!(error = %e, "cannot settle submission; it will be redelivered");
        }
        return;
    }
    let parsed = parse(ctx, function, &msg, &info);
    let (_, acker) = msg.split();
    let spec = ctx.function(function).await;
    let span = tracing::info_span!("task", task_id = %parsed.task.id, function = %function);
    let persist = spec.as_ref().map(|s| s.task_mode).unwrap_or(true);
    let settle = async {
        let mut task = if persist {
            match recorded_task(ctx, parsed, seq, accepted_at, delivered).await {
                Ok(v) => v,
                Err(settle) => return settle,
            }
        } else {
            unrecorded_task(ctx, parsed, accepted_at, delivered).await
        };
        note_rate_wait(&mut task, waited);
        drive(ctx, task, spec.as_deref(), Some(&acker), persist).await
    }
    .instrument(span)
    .await;
    let kind = match settle {
        Settle::Ack => AckKind::Ack,
        Settle::Later(d) => AckKind::Nak(Some(d.max(Duration::from_millis(1)))),
        Settle::Terminate => AckKind::Term,
    };
    if let Err(e) = acker.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle submission; it will be redelivered");
    }
}

/// The record a delivery of a recorded task works on (see [`find`]), or how to settle the
/// delivery when there is nothing to run.
async fn recorded_task(
    ctx: &Ctx,
    parsed: submission::Parsed,
    seq: u64,
    accepted_at: Timestamp,
    delivered: i64,
) -> Result<Versioned, Settle> {
    let id = parsed.task.id.clone();
    match find(ctx, parsed, accepted_at, delivered).await {
        Ok(Some(v)) if v.record.seq == seq => Ok(v),
        Ok(Some(v)) => {
            tracing::info!(
                seq,
                recorded_seq = v.record.seq,
                "not run: the task ID is recorded for another submission (a duplicate)"
            );
            Err(Settle::Ack)
        }
        Ok(None) => {
            tracing::info!(seq, "not run: the task's record was deleted");
            Err(Settle::Ack)
        }
        // Its record cannot be decoded: no delivery will change that (a few more in case
        // another replica is mid-upgrade), so it is not redelivered for ever.
        Err(e @ StoreError::Corrupt(_)) if delivered >= crate::engine::poison::MAX_FAILED_DELIVERIES => {
            crate::engine::poison::report(ctx, crate::engine::poison::Kind::Unrecordable, seq, &id, &e.to_string());
            Err(Settle::Terminate)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read task record; will retry");
            Err(Settle::Later(Duration::from_secs(1)))
        }
    }
}

/// Task mode off: the same lifecycle, kept in memory only; attempts counted from deliveries.
async fn unrecorded_task(ctx: &Ctx, parsed: submission::Parsed, accepted_at: Timestamp, delivered: i64) -> Versioned {
    let t = machine::create(parsed.task, parsed.invalid, accepted_at);
    if delivered == 1 {
        records::publish(ctx, &t.record, &t.effects).await;
    }
    let mut record = t.record;
    if record.status == Status::Enqueued && delivered > 1 {
        record.status = Status::Retrying;
        record.attempts = u32::try_from(delivered - 1).unwrap_or(u32::MAX);
    }
    Versioned { record, revision: 0 }
}

/// A wait for the function's rate limit goes into the history with the start.
fn note_rate_wait(task: &mut Versioned, waited: Option<Duration>) {
    if let Some(w) = waited.filter(|w| *w >= Duration::from_millis(1)) {
        let why = format!(
            "waited {} for rate_limit",
            crate::core::duration::Dur(Duration::from_millis(w.as_millis() as u64))
        );
        if let Some(noted) = machine::note_wait(&task.record, &why, Timestamp::now()) {
            task.record = noted;
        }
    }
}

/// A first delivery younger than this is likely ahead of intake: its record is built from the
/// submission and created by its first write, rather than looked for first.
const FRESH: Duration = Duration::from_millis(100);

/// The record a delivery works on: read back; or rebuilt from the submission when intake has
/// just created it (see [`crate::store::revisions`]) or, on a first delivery, is likely not to have yet
/// (`revision` 0: the delivery's first write creates it, see [`records::commit`]). Either guess
/// is checked by the write's revision: a wrong one costs a failed write and a read. `None`:
/// nothing to do.
async fn find(
    ctx: &Ctx,
    parsed: submission::Parsed,
    accepted_at: Timestamp,
    delivered: i64,
) -> Result<Option<Versioned>, StoreError> {
    // Also after a park (a delayed task come due): nothing else wrote its record meanwhile.
    let known = ctx.revisions.take(&parsed.task.id, parsed.task.seq);
    let fresh = delivered == 1 && u128::from(Timestamp::now().since(accepted_at)) < FRESH.as_millis();
    if known.is_none() && !fresh {
        return load_or_create(ctx, parsed, accepted_at).await;
    }
    let t = machine::create(parsed.task, parsed.invalid, accepted_at);
    // Invalid from the start: nothing to decide, written at once.
    if known.is_none() && t.record.status.is_terminal() {
        return create_or_read(ctx, t).await;
    }
    Ok(Some(Versioned {
        record: t.record,
        revision: known.unwrap_or(0),
    }))
}

/// The record of a submission, creating it when intake has not yet. `None`: nothing to do.
pub(super) async fn load_or_create(
    ctx: &Ctx,
    parsed: submission::Parsed,
    accepted_at: Timestamp,
) -> Result<Option<Versioned>, StoreError> {
    // A direct get is enough to go on with when it finds the task still to run: whatever is
    // decided from it is written with its revision, which a stale read fails. What would ack
    // the submission (finished, or another submission's ID) is read again from the leader, and
    // "no record" goes through a create, which cannot be stale either.
    match ctx.tasks.peek(&parsed.task.id).await? {
        Some(v) if !v.record.status.is_terminal() && v.record.seq == parsed.task.seq => Ok(Some(v)),
        Some(_) => ctx.tasks.get(&parsed.task.id).await,
        None => create_or_read(ctx, machine::create(parsed.task, parsed.invalid, accepted_at)).await,
    }
}

/// Writes a new record, or reads the one already there.
async fn create_or_read(ctx: &Ctx, t: machine::Transition) -> Result<Option<Versioned>, StoreError> {
    match records::create(ctx, &t).await {
        Ok(revision) => Ok(Some(Versioned {
            record: t.record,
            revision,
        })),
        Err(StoreError::Exists) => ctx.tasks.get(&t.record.id).await,
        Err(e) => Err(e),
    }
}

/// Moves a task on until it must wait or is done.
async fn drive(
    ctx: &Ctx,
    mut v: Versioned,
    spec: Option<&FunctionSpec>,
    acker: Option<&Acker>,
    persist: bool,
) -> Settle {
    // Whether the record was read as it is (not written by this delivery).
    let mut as_found = true;
    loop {
        let now = Timestamp::now();
        let events = match decide(ctx, &v.record, spec, now, as_found).await {
            Ok(events) => events,
            Err(settle) => return settle,
        };
        // An attempt is run only by the replica whose own write put the record into `Running`
        // for it: claimed here before the write (so that another delivery on this replica sees
        // it held), and run only if that write, not another writer's, is what landed.
        let start = events.iter().find_map(|e| match e {
            Event::Start { attempt } => Some(*attempt),
            _ => None,
        });
        let claim = match start {
            Some(_) => match ctx.control.claim(&v.record.id) {
                Some(guard) => Some(guard),
                // Another delivery of this task on this replica is starting it.
                None => return Settle::Later(HOLDER_WAIT),
            },
            None => None,
        };
        if start.is_some() {
            v.record.holder = Some(ctx.replicas.id.clone());
        }
        let written;
        (v, written) = match commit_or_reload(ctx, &v, events, now, persist, spec).await {
            Ok(next) => next,
            Err(settle) => return settle,
        };
        as_found = !written;
        let ours = written && v.record.status == Status::Running && Some(v.record.attempts) == start;
        if let (true, Some(guard), Some(spec)) = (ours, claim, spec) {
            (v, as_found) = match attempt(ctx, v, spec, acker, persist, guard).await {
                Ok(next) => next,
                Err(settle) => return settle,
            };
        }
    }
}

/// What to do with a task in the state its record is in: the events to write next, or how to
/// settle its delivery now. `as_found`: the record was read as it is, not written by this
/// delivery.
async fn decide(
    ctx: &Ctx,
    r: &crate::core::task::TaskRecord,
    spec: Option<&FunctionSpec>,
    now: Timestamp,
    as_found: bool,
) -> Result<Vec<Event>, Settle> {
    let events = match r.status {
        s if s.is_terminal() => {
            // Found finished with its delivery pending (a crash between the write and the
            // queueing): queue it again, deduplicated. A write of this delivery queued it.
            if let Some(job) = crate::engine::callback::pending_job(r).filter(|_| as_found) {
                if crate::engine::callback::enqueue(ctx, &job).await.is_err() {
                    return Err(Settle::Later(Duration::from_secs(1)));
                }
            }
            if as_found {
                tracing::info!(status = %r.status, "not run: the task is already settled");
            }
            return Err(Settle::Ack);
        }
        Status::Stopping => vec![Event::Stop],
        Status::Running if attempt_alive(ctx, r) => {
            // Its attempt is in flight on a live replica (a head start, or another
            // replica's): wait for it to finish.
            return Err(Settle::Later(HOLDER_WAIT));
        }
        Status::Running if !ctx.replicas.can_judge() => {
            // This replica cannot tell a busy holder from a lost one (NATS is failing
            // over, or it has only just started): look again later.
            tracing::info!(holder = ?r.holder, "attempt holder's state unknown; waiting");
            return Err(Settle::Later(HOLDER_WAIT));
        }
        Status::Running => {
            // Delivered again while recorded Running: the attempt's replica was lost.
            let retry_at = spec.filter(|s| r.attempts < s.max_attempts).map(|_| now);
            let error = TaskError::new(
                ErrorType::Unreachable,
                "attempt interrupted: its dispatcher stopped before recording an outcome",
            );
            vec![Event::Fail {
                error,
                retry_at,
                detail: "interrupted".into(),
            }]
        }
        Status::Enqueued | Status::Dequeued | Status::Retrying => to_run(r, spec, now)?,
        _ => {
            tracing::info!(status = %r.status, "not run: nothing to do in this state");
            return Err(Settle::Ack);
        }
    };
    Ok(events)
}

/// A task waiting to run: not before its due moment, expired past its age, invalid or expired
/// when its function is gone or disabled, else started.
fn to_run(
    r: &crate::core::task::TaskRecord,
    spec: Option<&FunctionSpec>,
    now: Timestamp,
) -> Result<Vec<Event>, Settle> {
    if let Some(at) = r.next_attempt_at.or(r.not_before).filter(|at| *at > now) {
        return Err(Settle::Later(now.until(at)));
    }
    Ok(match spec {
        Some(s) if s.enabled => {
            if outcome::is_expired(r, s, now) {
                vec![Event::Expire {
                    reason: format!("older than max_event_age {}", s.max_event_age),
                }]
            } else {
                let start = Event::Start {
                    attempt: r.attempts + 1,
                };
                if r.status == Status::Dequeued {
                    vec![start]
                } else {
                    vec![Event::Dequeue, start]
                }
            }
        }
        _ => {
            let why = match spec {
                Some(_) => format!("function {:?} is disabled", r.function),
                None => format!("no such function: {:?}", r.function),
            };
            if r.status == Status::Enqueued {
                vec![Event::Invalidate { reason: why }]
            } else {
                vec![Event::Expire {
                    reason: format!("cannot run any more: {why}"),
                }]
            }
        }
    })
}

/// How long a delivery that finds its task running elsewhere waits before looking again.
const HOLDER_WAIT: Duration = Duration::from_secs(2);

/// Whether the attempt a `Running` record names is still in flight: on this replica, held in
/// its table of attempts; on another, that replica is alive.
fn attempt_alive(ctx: &Ctx, r: &crate::core::task::TaskRecord) -> bool {
    match r.holder.as_deref() {
        Some(h) if h == ctx.replicas.id => ctx.control.holds(&r.id),
        Some(h) => ctx.replicas.is_alive(h),
        None => false,
    }
}

/// Runs a task named for a head start (see [`crate::engine::fair`]) from its record, in a slot of this
/// replica: only while it is still waiting its turn and due.
pub(super) async fn expedite(ctx: &Ctx, function: &str, id: &str) {
    // A direct get: a head start only runs a task it finds waiting, and its start is written
    // with the read's revision, which a stale read fails.
    let Ok(Some(v)) = ctx.tasks.peek(id).await else { return };
    if v.record.status != Status::Enqueued || v.record.waiting_until().is_some_and(|t| t > Timestamp::now()) {
        return;
    }
    let spec = ctx.function(function).await;
    if !spec.as_deref().is_some_and(|s| s.task_mode && s.enabled) {
        return;
    }
    let span = tracing::info_span!("task", task_id = %id, function = %function, head_start = true);
    // What the submission's own delivery does next is decided when it comes: its settle here
    // has nothing to act on.
    let _ = drive(ctx, v, spec.as_deref(), None, true).instrument(span).await;
}
