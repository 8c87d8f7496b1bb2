//! Long attempts (`202` + `Jetask-Async: true`): held, with `Progress` heartbeats to JetStream,
//! until the function completes the task, a stop, a missed heartbeat or the attempt's timeout.

use super::attempt::{commit_or_reload, reload};
use super::delivery::Settle;
use crate::core::function::FunctionSpec;
use crate::core::machine;
use crate::core::outcome::{self, Outcome};
use crate::core::task::{ErrorType, Status, TaskError};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::store::kv::Versioned;
use async_nats::jetstream::{message::Acker, AckKind};
use std::time::Duration;

/// How often a long attempt's holder reads its record even without being woken.
const LONG_TASK_POLL: Duration = Duration::from_secs(5);

/// A long task (`202` + `Jetask-Async: true`): holds the attempt, kept alive, until the function
/// completes it (through any replica), a stop, or a missed heartbeat or the attempt's timeout.
pub(super) async fn await_completion(
    ctx: &Ctx,
    v: &Versioned,
    spec: &FunctionSpec,
    guard: &crate::engine::control::AttemptGuard,
    persist: bool,
) -> Result<Versioned, Settle> {
    let attempt = v.record.attempts;
    let mut current = match machine::mark_async(&v.record) {
        Ok(marked) => match commit_record(ctx, v, marked, persist).await {
            Ok(next) => next,
            Err(fresh) => fresh?,
        },
        Err(_) => v.clone(),
    };
    loop {
        let r = &current.record;
        if r.status != Status::Running || r.attempts != attempt {
            return Ok(current);
        }
        let now = Timestamp::now();
        if let Some(why) = machine::long_attempt_overdue(r, spec.heartbeat_timeout.0, spec.timeout.0, now) {
            let error = TaskError::new(ErrorType::Timeout, why);
            let ev = outcome::decide(r, Outcome::Retryable(error), spec, 0, now, rand::random::<f64>());
            return commit_or_reload(ctx, &current, ev.into_iter().collect(), now, persist, Some(spec))
                .await
                .map(|(next, _)| next);
        }
        let started = r.attempt_started_at.unwrap_or(now);
        let due = r
            .heartbeat_at
            .unwrap_or(started)
            .max(started)
            .plus(spec.heartbeat_timeout.0)
            .min(started.plus(spec.timeout.0));
        let wait = now.until(due).min(LONG_TASK_POLL) + Duration::from_millis(1);
        tokio::select! {
            _ = guard.token.cancelled() => {}
            _ = guard.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        current = reload(ctx, &r.id).await?;
    }
}

/// Writes a record changed outside the state machine (no transition); on a lost race, the
/// record as it now is.
async fn commit_record(
    ctx: &Ctx,
    v: &Versioned,
    record: crate::core::task::TaskRecord,
    persist: bool,
) -> Result<Versioned, Result<Versioned, Settle>> {
    if !persist {
        return Ok(Versioned {
            record,
            revision: v.revision,
        });
    }
    match ctx.tasks.update(&record, v.revision).await {
        Ok(revision) => Ok(Versioned { record, revision }),
        Err(_) => Err(reload(ctx, &v.record.id).await),
    }
}

/// Awaits `work`, telling JetStream every third of the ack wait that the task is still being
/// worked on, so that a long attempt is never redelivered while in flight.
pub(super) async fn keep_alive<F: std::future::Future>(
    work: F,
    acker: Option<&Acker>,
    ack_wait: Duration,
) -> F::Output {
    // A task started from its record (a head start) has no delivery to keep alive.
    let Some(acker) = acker else { return work.await };
    // Not `interval`, whose first tick, though due at once, waits for the timer wheel's next
    // millisecond: that was a millisecond added to every call.
    let period = ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "cannot extend the ack wait of a running attempt");
                }
            }
        }
    }
}
