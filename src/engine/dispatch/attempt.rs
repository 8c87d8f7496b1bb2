//! One attempt: call the function, classify its answer, and commit the outcome over the
//! record's revision (a lost race reloads the record to be decided afresh).

use super::delivery::Settle;
use super::long::{await_completion, keep_alive};
use crate::core::function::FunctionSpec;
use crate::core::limits;
use crate::core::machine::Event;
use crate::core::outcome::{self, Outcome};
use crate::core::task::{ErrorType, Status};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::invoke::{self, Call};
use crate::engine::records::{self, CommitError};
use crate::store::kv::{StoreError, Versioned};
use async_nats::jetstream::message::Acker;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use tracing::Instrument;

/// Writes `events` over `v` (creating it when `v` is not written yet): the record written and
/// `true`; or, on a lost race, the record as it now is (to be decided afresh) and `false`.
pub(super) async fn commit_or_reload(
    ctx: &Ctx,
    v: &Versioned,
    events: Vec<Event>,
    now: Timestamp,
    persist: bool,
    spec: Option<&FunctionSpec>,
) -> Result<(Versioned, bool), Settle> {
    match records::commit(ctx, v, events, now, persist, spec).await {
        Ok((next, _)) => Ok((next, true)),
        Err(CommitError::Store(StoreError::Conflict)) => match ctx.tasks.get(&v.record.id).await {
            // The ID's record is another submission's: this one is a duplicate.
            Ok(Some(fresh)) if fresh.record.seq != v.record.seq => {
                tracing::info!(
                    seq = v.record.seq,
                    recorded_seq = fresh.record.seq,
                    "not run: the task ID is recorded for another submission (a duplicate)"
                );
                Err(Settle::Ack)
            }
            Ok(Some(fresh)) => Ok((fresh, false)),
            Ok(None) => {
                tracing::info!("not run: the task's record was deleted");
                Err(Settle::Ack)
            }
            Err(_) => Err(Settle::Later(Duration::from_secs(1))),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot record transition; will retry");
            Err(Settle::Later(Duration::from_secs(1)))
        }
    }
}

/// Runs one attempt of a `Running` task, which this replica's own write started and `guard`
/// holds, and records its outcome, in the attempt's log span. The record afterwards, and
/// whether it was read back (another writer's) rather than written by this attempt.
pub(super) async fn attempt(
    ctx: &Ctx,
    v: Versioned,
    spec: &FunctionSpec,
    acker: Option<&Acker>,
    persist: bool,
    guard: crate::engine::control::AttemptGuard,
) -> Result<(Versioned, bool), Settle> {
    let span = tracing::info_span!("attempt", attempt = v.record.attempts, trace_id = tracing::field::Empty);
    // Deriving a trace ID costs a hash: only when the span is logged.
    if !span.is_disabled() {
        let trace = crate::core::trace::TraceContext::of_task(v.record.traceparent.as_deref(), &v.record.id);
        span.record("trace_id", tracing::field::display(&trace.trace_id));
    }
    // Before the span is entered: with OpenTelemetry on, its parent is the submitter's span.
    let traceparent = crate::core::trace::outgoing(&span, v.record.traceparent.as_deref());
    run_attempt(ctx, v, spec, acker, persist, guard, traceparent)
        .instrument(span)
        .await
}

async fn run_attempt(
    ctx: &Ctx,
    v: Versioned,
    spec: &FunctionSpec,
    acker: Option<&Acker>,
    persist: bool,
    guard: crate::engine::control::AttemptGuard,
    traceparent: Option<String>,
) -> Result<(Versioned, bool), Settle> {
    let r = &v.record;
    let _in_flight = ctx.metrics.in_flight(&r.function);
    let slots = ctx.replicas.slots(&r.function);
    let running = slots.in_flight.load(Ordering::Acquire);
    let started = std::time::Instant::now();
    let call = invoke::call(
        &ctx.http,
        Call {
            endpoint: spec.endpoint.url(),
            task_id: &r.id,
            function: &r.function,
            attempt: r.attempts,
            timeout: spec.timeout.0,
            content_type: r.content_type.as_deref(),
            traceparent: traceparent.as_deref(),
            body: r.input_bytes().into(),
            max_result: ctx.config.limits.max_result,
        },
    );
    tracing::debug!("calling function");
    let ack_wait = ctx.config.dispatch.ack_wait.0;
    let outcome = tokio::select! {
        o = keep_alive(call, acker, ack_wait) => Some(o),
        _ = guard.token.cancelled() => None,
    };
    let now = Timestamp::now();
    note_answer(ctx, &r.function, &slots, started, running, outcome.as_ref(), persist);
    let event = match outcome {
        // Aborted by a stop request: the record says Stopping; the caller finishes it.
        None => None,
        // Without a record there is nothing to complete: the 202 is the end (documented).
        Some(Outcome::Accepted) if !persist => Some(Event::Succeed {
            result: Default::default(),
            detail: "202".into(),
        }),
        Some(Outcome::Accepted) => {
            // Boxed: otherwise this rare path's future makes up most of every delivery's task (16 KB
            // of 22, allocated and copied for each delivery).
            let waiting = Box::pin(await_completion(ctx, &v, spec, &guard, persist));
            let waited = keep_alive(waiting, acker, ack_wait).await;
            let label = match &waited {
                Ok(next) if next.record.attempts == r.attempts => match next.record.status {
                    Status::Succeeded => "success",
                    Status::Stopped | Status::Stopping => "stopped",
                    _ => "async_failed",
                },
                _ => "async_unknown",
            };
            ctx.metrics.attempt(&r.function, label, started.elapsed());
            return waited.map(|next| (next, true));
        }
        Some(o) => outcome::decide(r, o, spec, ctx.config.limits.max_result, now, rand::random::<f64>()),
    };
    let Some(ev) = event else {
        drop(guard);
        return reload(ctx, &r.id).await.map(|fresh| (fresh, true));
    };
    let recorded = keep_alive(record_outcome(ctx, &v, ev, now, persist, spec), acker, ack_wait).await;
    drop(guard);
    recorded.map(|(next, written)| (next, !written))
}

/// What an attempt's answer teaches: the adaptive limit's sample, the throttling count, and
/// (but for a 202, whose attempt goes on) the attempt's metric and log line.
fn note_answer(
    ctx: &Ctx,
    function: &str,
    slots: &crate::store::replicas::Slots,
    started: Instant,
    running: u32,
    outcome: Option<&Outcome>,
    persist: bool,
) {
    let signal = match outcome {
        Some(Outcome::Success { .. } | Outcome::Fatal(_) | Outcome::Accepted) => limits::Signal::Answered,
        Some(Outcome::Throttled { .. }) => limits::Signal::Overloaded,
        Some(Outcome::Retryable(e)) if e.kind == ErrorType::Timeout => limits::Signal::Overloaded,
        _ => limits::Signal::Neutral,
    };
    slots.sample(started.elapsed(), signal, running);
    if let Some(Outcome::Throttled { .. }) = outcome {
        ctx.metrics.throttled(function, "endpoint");
    }
    if !matches!(outcome, Some(Outcome::Accepted)) || !persist {
        let label = crate::engine::metrics::outcome_label(outcome);
        let took = started.elapsed();
        ctx.metrics.attempt(function, &label, took);
        // Failures are worth a line at the default level; successes only when debugging.
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Some(Outcome::Retryable(e) | Outcome::Fatal(e)) => {
                tracing::info!(outcome = %label, took_ms, error = %e.message, "attempt failed")
            }
            _ => tracing::debug!(outcome = %label, took_ms, "attempt finished"),
        }
    }
}

/// How long an attempt's outcome is retried while JetStream cannot take it (a failover takes
/// 5–8 s), before the delivery is left to come back: given up at once, the outcome is lost and
/// the redelivery runs the task again as interrupted.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(20);

/// Writes an attempt's outcome, retrying what JetStream could not take; `(record, written)` as
/// [`commit_or_reload`].
async fn record_outcome(
    ctx: &Ctx,
    v: &Versioned,
    event: Event,
    now: Timestamp,
    persist: bool,
    spec: &FunctionSpec,
) -> Result<(Versioned, bool), Settle> {
    let deadline = Instant::now() + OUTCOME_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match commit_or_reload(ctx, v, vec![event.clone()], now, persist, Some(spec)).await {
            Err(Settle::Later(_)) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

pub(super) async fn reload(ctx: &Ctx, id: &str) -> Result<Versioned, Settle> {
    match ctx.tasks.get(id).await {
        Ok(Some(fresh)) => Ok(fresh),
        Ok(None) => Err(Settle::Ack),
        Err(_) => Err(Settle::Later(Duration::from_secs(1))),
    }
}
