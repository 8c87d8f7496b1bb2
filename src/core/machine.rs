//! The task lifecycle as a pure state machine (CONTRACT §4.1): `apply(record, event, now)` returns
//! the next record and the effects the shell must carry out, or refuses the transition. No I/O,
//! no clock, no randomness: every input comes in as an argument.
//!
//! Who moves tasks where:
//! - intake (or the dispatcher, whichever sees a submission first) creates `Enqueued` / `Invalid`;
//! - the dispatcher moves `Enqueued`/`Retrying` → `Dequeued` → `Running` → an outcome, and ages
//!   tasks out (`Expired`);
//! - a stop request (API) moves queued tasks to `Stopped` and running ones to `Stopping`; the
//!   dispatcher holding the attempt finishes `Stopping` → `Stopped`.

use crate::core::task::{Encoded, ErrorType, EventEntry, Status, TaskError, TaskRecord};
use crate::core::time::Timestamp;

/// What happened to a task.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A dispatcher took the task and waits for a slot.
    Dequeue,
    /// Attempt number `attempt` (1-based) starts.
    Start { attempt: u32 },
    /// The function answered 2xx.
    Succeed { result: Encoded, detail: String },
    /// The attempt failed; `retry_at` is when the next one may start, `None` when none will.
    Fail {
        error: TaskError,
        retry_at: Option<Timestamp>,
        detail: String,
    },
    /// The function throttled the call (429/503): retried at `retry_at` without using an attempt.
    Throttle { retry_at: Timestamp, detail: String },
    /// Someone asked to stop the task.
    Stop,
    /// The task outlived its `max_event_age` (or can no longer run) before finishing.
    Expire { reason: String },
    /// The task can never run: unknown or disabled function, unusable input.
    Invalidate { reason: String },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Dequeue => "dequeue",
            Event::Start { .. } => "start",
            Event::Succeed { .. } => "succeed",
            Event::Fail { .. } => "fail",
            Event::Throttle { .. } => "throttle",
            Event::Stop => "stop",
            Event::Expire { .. } => "expire",
            Event::Invalidate { .. } => "invalidate",
        }
    }
}

/// What the shell must do after writing the new record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Publish the record on `jetask.events.<function>.<status>`.
    Emit(Status),
    /// Abort the attempt in flight (its replica holds the HTTP request).
    AbortAttempt,
    /// Bring the task back no earlier than this (a delayed redelivery).
    Redeliver { at: Timestamp },
    /// The task is done: settle its message for good and run its destinations.
    Finish,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot {event}")]
pub struct InvalidTransition {
    pub from: Status,
    pub event: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: TaskRecord,
    pub effects: Vec<Effect>,
}

/// The state `event` leads to from `from`, or `None` when §4.1 forbids it.
pub fn target(from: Status, event: &Event) -> Option<Status> {
    use Status::*;
    match (from, event) {
        (Enqueued | Retrying, Event::Dequeue) => Some(Dequeued),
        (Dequeued, Event::Start { .. }) => Some(Running),
        (Running, Event::Succeed { .. }) => Some(Succeeded),
        (Running, Event::Fail { retry_at: Some(_), .. }) => Some(Retrying),
        (Running, Event::Fail { retry_at: None, .. }) => Some(Failed),
        (Running, Event::Throttle { .. }) => Some(Retrying),
        (Enqueued | Dequeued | Retrying, Event::Stop) => Some(Stopped),
        (Running, Event::Stop) => Some(Stopping),
        (Stopping, Event::Stop) => Some(Stopped),
        (Enqueued | Dequeued | Retrying, Event::Expire { .. }) => Some(Expired),
        (Enqueued, Event::Invalidate { .. }) => Some(Invalid),
        _ => None,
    }
}

/// Applies `event` to `record` at `now`.
pub fn apply(record: &TaskRecord, event: Event, now: Timestamp) -> Result<Transition, InvalidTransition> {
    apply_owned(record.clone(), event, now)
}

/// [`apply`] to a record the caller gives up (a copy it made to apply several events in a row):
/// the same, without copying the record again for each event.
pub fn apply_owned(mut r: TaskRecord, event: Event, now: Timestamp) -> Result<Transition, InvalidTransition> {
    let to = target(r.status, &event).ok_or(InvalidTransition {
        from: r.status,
        event: event.name(),
    })?;
    let mut effects = Vec::with_capacity(3);
    let detail = record_event(&mut r, to, event, now, &mut effects);
    r.status = to;
    if to.is_terminal() {
        r.finished_at = Some(now);
        r.next_attempt_at = None;
        effects.push(Effect::Finish);
    }
    r.events.push(EventEntry {
        status: to,
        at: now,
        detail,
    });
    effects.insert(0, Effect::Emit(to));
    Ok(Transition { record: r, effects })
}

/// Writes what `event` changes into `r` (still in its old status, on its way `to`), pushing the
/// effects it needs beyond the emit and finish every transition gets; returns the history detail.
fn record_event(
    r: &mut TaskRecord,
    to: Status,
    event: Event,
    now: Timestamp,
    effects: &mut Vec<Effect>,
) -> Option<String> {
    match event {
        Event::Dequeue => None,
        Event::Start { attempt } => Some(start_attempt(r, attempt, now)),
        Event::Succeed { result, detail } => {
            record_success(r, result, now);
            Some(detail)
        }
        Event::Fail {
            error,
            retry_at,
            detail,
        } => {
            end_attempt(r, now);
            r.error = Some(error);
            r.next_attempt_at = retry_at;
            if let Some(at) = retry_at {
                effects.push(Effect::Redeliver { at });
            }
            Some(detail)
        }
        Event::Throttle { retry_at, detail } => {
            record_throttle(r, retry_at, &detail, now);
            effects.push(Effect::Redeliver { at: retry_at });
            Some(detail)
        }
        Event::Stop => {
            if to == Status::Stopping {
                effects.push(Effect::AbortAttempt);
            } else {
                record_stop(r, now);
            }
            None
        }
        Event::Expire { reason } => {
            r.error = Some(TaskError::new(ErrorType::Expired, reason.clone()));
            r.next_attempt_at = None;
            Some(reason)
        }
        Event::Invalidate { reason } => {
            r.error = Some(TaskError::new(ErrorType::Invalid, reason.clone()));
            Some(reason)
        }
    }
}

/// Opens attempt number `attempt`; the first one also fixes when the task started and how long it
/// queued. Returns the history detail.
fn start_attempt(r: &mut TaskRecord, attempt: u32, now: Timestamp) -> String {
    r.attempts = attempt;
    if r.started_at.is_none() {
        r.started_at = Some(now);
        r.queue_ms = Some(now.since(r.not_before.unwrap_or(r.created_at).max(r.created_at)));
    }
    r.attempt_started_at = Some(now);
    r.next_attempt_at = None;
    r.heartbeat_at = None;
    r.async_attempt = false;
    format!("attempt {attempt}")
}

fn record_success(r: &mut TaskRecord, result: Encoded, now: Timestamp) {
    end_attempt(r, now);
    r.result = result.text;
    r.result_base64 = result.base64;
    r.result_truncated = result.truncated;
    r.error = None;
}

fn record_throttle(r: &mut TaskRecord, retry_at: Timestamp, detail: &str, now: Timestamp) {
    end_attempt(r, now);
    // A throttled call is not an attempt: the retry carries the same number.
    r.attempts = r.attempts.saturating_sub(1);
    r.error = Some(TaskError::new(ErrorType::Throttled, detail.to_string()));
    r.next_attempt_at = Some(retry_at);
}

/// A stop that ends the task now (not one that must first abort a running attempt).
fn record_stop(r: &mut TaskRecord, now: Timestamp) {
    if r.status == Status::Stopping {
        end_attempt(r, now);
    }
    r.error = Some(TaskError::new(ErrorType::Stopped, "stopped on request"));
    r.next_attempt_at = None;
}

fn end_attempt(r: &mut TaskRecord, now: Timestamp) {
    if let Some(start) = r.attempt_started_at.take() {
        r.duration_ms = Some(now.since(start));
    }
    r.async_attempt = false;
}

/// Notes that the attempt in flight answered `202` + `Jetask-Async: true`. Not a transition:
/// the task stays `Running` until the function completes it.
pub fn mark_async(record: &TaskRecord) -> Result<TaskRecord, InvalidTransition> {
    if record.status != Status::Running {
        return Err(InvalidTransition {
            from: record.status,
            event: "await completion",
        });
    }
    let mut r = record.clone();
    r.async_attempt = true;
    Ok(r)
}

/// Notes in a waiting task's history why it waits (a rate limit), without changing its state;
/// `None` when it is not waiting or the same note is already the last entry (a task throttled
/// again and again keeps one line).
pub fn note_wait(record: &TaskRecord, why: &str, now: Timestamp) -> Option<TaskRecord> {
    if !matches!(record.status, Status::Enqueued | Status::Dequeued | Status::Retrying) {
        return None;
    }
    if record.events.last().and_then(|e| e.detail.as_deref()) == Some(why) {
        return None;
    }
    let mut r = record.clone();
    r.events.push(EventEntry {
        status: r.status,
        at: now,
        detail: Some(why.to_string()),
    });
    Some(r)
}

/// A long task's heartbeat: accepted while `Running`, refused in any other state.
pub fn heartbeat(record: &TaskRecord, now: Timestamp) -> Result<TaskRecord, InvalidTransition> {
    if record.status != Status::Running {
        return Err(InvalidTransition {
            from: record.status,
            event: "heartbeat",
        });
    }
    let mut r = record.clone();
    r.heartbeat_at = Some(now);
    Ok(r)
}

/// Why a long task's attempt has run out of time at `now`, if it has: no heartbeat within
/// `heartbeat_timeout` (counted from the attempt's start until the first one), or past `timeout`.
pub fn long_attempt_overdue(
    record: &TaskRecord,
    heartbeat_timeout: std::time::Duration,
    timeout: std::time::Duration,
    now: Timestamp,
) -> Option<String> {
    let started = record.attempt_started_at?;
    let last = record.heartbeat_at.unwrap_or(started).max(started);
    if now > last.plus(heartbeat_timeout) {
        return Some(format!(
            "no heartbeat within {}",
            crate::core::duration::Dur(heartbeat_timeout)
        ));
    }
    if now > started.plus(timeout) {
        return Some(format!("not completed within {}", crate::core::duration::Dur(timeout)));
    }
    None
}

/// A fresh record for an accepted submission.
pub struct NewTask {
    pub id: String,
    pub function: String,
    pub user: String,
    pub seq: u64,
    pub not_before: Option<Timestamp>,
    pub input: Vec<u8>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub callback: Option<String>,
    pub replay_of: Option<String>,
    pub triggered_by: Option<String>,
}

impl NewTask {
    /// A plain submission: no delay, callback, trace context or lineage.
    pub fn new(id: &str, function: &str, user: &str, seq: u64, input: Vec<u8>) -> NewTask {
        NewTask {
            id: id.to_string(),
            function: function.to_string(),
            user: user.to_string(),
            seq,
            not_before: None,
            input,
            content_type: None,
            traceparent: None,
            callback: None,
            replay_of: None,
            triggered_by: None,
        }
    }
}

/// The first record of a task: `Enqueued`, or `Invalid` when `invalid` names why it cannot run.
pub fn create(task: NewTask, invalid: Option<String>, now: Timestamp) -> Transition {
    let input = Encoded::encode(&task.input, usize::MAX);
    let mut r = TaskRecord {
        id: task.id,
        function: task.function,
        user: task.user,
        status: Status::Enqueued,
        created_at: now,
        not_before: task.not_before,
        started_at: None,
        finished_at: None,
        attempts: 0,
        duration_ms: None,
        queue_ms: None,
        input_size: task.input.len(),
        result: None,
        result_base64: None,
        result_truncated: false,
        error: None,
        destination: None,
        replay_of: task.replay_of,
        triggered_by: task.triggered_by,
        heartbeat_at: None,
        events: vec![EventEntry {
            status: Status::Enqueued,
            at: now,
            detail: None,
        }],
        seq: task.seq,
        next_attempt_at: None,
        attempt_started_at: None,
        async_attempt: false,
        content_type: task.content_type,
        traceparent: task.traceparent,
        callback: task.callback,
        holder: None,
        input: input.text,
        input_base64: input.base64,
    };
    match invalid {
        None => Transition {
            record: r,
            effects: vec![Effect::Emit(Status::Enqueued)],
        },
        Some(reason) => {
            let mut t = apply(&r, Event::Invalidate { reason }, now).expect("Enqueued → Invalid is always allowed");
            t.effects.insert(0, Effect::Emit(Status::Enqueued));
            r = t.record;
            Transition {
                record: r,
                effects: t.effects,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    fn at(ms: i64) -> Timestamp {
        Timestamp(T0.0 + ms)
    }

    fn new_record() -> TaskRecord {
        create(NewTask::new("t1", "f", "default", 7, b"in".to_vec()), None, T0).record
    }

    /// A new record taken at 1 ms and started at 2 ms, through the machine itself.
    fn first_attempt_running() -> TaskRecord {
        let r = apply(&new_record(), Event::Dequeue, at(1)).unwrap().record;
        apply(&r, Event::Start { attempt: 1 }, at(2)).unwrap().record
    }

    fn in_state(status: Status) -> TaskRecord {
        let mut r = new_record();
        r.status = status;
        if status == Running || status == Stopping {
            r.attempts = 1;
            r.attempt_started_at = Some(T0);
        }
        r
    }

    fn every_event() -> Vec<Event> {
        let err = TaskError::new(ErrorType::FunctionError, "500");
        vec![
            Event::Dequeue,
            Event::Start { attempt: 1 },
            Event::Succeed {
                result: Encoded::encode(b"ok", 10),
                detail: "200".into(),
            },
            Event::Fail {
                error: err.clone(),
                retry_at: Some(at(1000)),
                detail: "500".into(),
            },
            Event::Fail {
                error: err,
                retry_at: None,
                detail: "500".into(),
            },
            Event::Throttle {
                retry_at: at(1000),
                detail: "429".into(),
            },
            Event::Stop,
            Event::Expire {
                reason: "too old".into(),
            },
            Event::Invalidate {
                reason: "no such function".into(),
            },
        ]
    }

    /// The table of CONTRACT §4.1, written out independently of `target`.
    fn allowed_next(from: Status) -> &'static [Status] {
        match from {
            Enqueued => &[Dequeued, Stopped, Expired, Invalid],
            Dequeued => &[Running, Stopped, Expired],
            Running => &[Succeeded, Failed, Retrying, Stopping],
            Retrying => &[Dequeued, Stopped, Expired],
            Stopping => &[Stopped],
            Succeeded | Failed | Stopped | Expired | Invalid => &[],
        }
    }

    #[test]
    fn every_state_and_event_pair_obeys_the_contract_table() {
        for from in Status::ALL {
            let mut reached = Vec::new();
            for ev in every_event() {
                let name = ev.name();
                match apply(&in_state(from), ev, at(5)) {
                    Ok(t) => {
                        assert!(
                            allowed_next(from).contains(&t.record.status),
                            "{from} --{name}--> {} is not in the table",
                            t.record.status
                        );
                        assert_eq!(t.record.events.last().map(|e| e.status), Some(t.record.status));
                        assert_eq!(t.effects.first(), Some(&Effect::Emit(t.record.status)));
                        reached.push(t.record.status);
                    }
                    Err(e) => assert_eq!(e, InvalidTransition { from, event: name }),
                }
            }
            for to in allowed_next(from) {
                assert!(reached.contains(to), "{from} → {to} is allowed but no event reaches it");
            }
        }
    }

    #[test]
    fn terminal_records_never_change() {
        for from in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
            for ev in every_event() {
                assert!(apply(&in_state(from), ev, at(1)).is_err());
            }
        }
    }

    #[test]
    fn a_successful_run_records_timings_result_and_history() {
        let r = new_record();
        let r = apply(&r, Event::Dequeue, at(2)).unwrap().record;
        let r = apply(&r, Event::Start { attempt: 1 }, at(3)).unwrap().record;
        let t = apply(
            &r,
            Event::Succeed {
                result: Encoded::encode(b"done", 100),
                detail: "200".into(),
            },
            at(215),
        )
        .unwrap();
        let r = t.record;
        assert_eq!(r.status, Succeeded);
        assert_eq!(r.result.as_deref(), Some("done"));
        assert_eq!((r.attempts, r.queue_ms, r.duration_ms), (1, Some(3), Some(212)));
        assert_eq!((r.started_at, r.finished_at), (Some(at(3)), Some(at(215))));
        let history: Vec<_> = r.events.iter().map(|e| (e.status, e.detail.clone())).collect();
        assert_eq!(
            history,
            vec![
                (Enqueued, None),
                (Dequeued, None),
                (Running, Some("attempt 1".into())),
                (Succeeded, Some("200".into()))
            ]
        );
        assert_eq!(t.effects, vec![Effect::Emit(Succeeded), Effect::Finish]);
    }

    #[test]
    fn a_failed_attempt_with_retries_left_waits_for_its_backoff() {
        let r = first_attempt_running();
        let err = TaskError::new(ErrorType::Timeout, "no answer in 1s");
        let t = apply(
            &r,
            Event::Fail {
                error: err.clone(),
                retry_at: Some(at(2000)),
                detail: "timeout".into(),
            },
            at(1002),
        )
        .unwrap();
        assert_eq!(t.record.status, Retrying);
        assert_eq!(t.record.next_attempt_at, Some(at(2000)));
        assert_eq!(t.record.error, Some(err));
        assert_eq!(
            t.effects,
            vec![Effect::Emit(Retrying), Effect::Redeliver { at: at(2000) }]
        );
        assert_eq!(t.record.finished_at, None);
    }

    #[test]
    fn a_throttled_call_does_not_use_up_an_attempt() {
        let r = first_attempt_running();
        let r = apply(
            &r,
            Event::Throttle {
                retry_at: at(500),
                detail: "429".into(),
            },
            at(3),
        )
        .unwrap()
        .record;
        assert_eq!((r.status, r.attempts), (Retrying, 0));
        assert_eq!(r.error.as_ref().map(|e| e.kind), Some(ErrorType::Throttled));
    }

    #[test]
    fn stopping_a_running_task_aborts_its_attempt_then_stops_it() {
        let r = in_state(Running);
        let t = apply(&r, Event::Stop, at(1)).unwrap();
        assert_eq!(t.record.status, Stopping);
        assert_eq!(t.effects, vec![Effect::Emit(Stopping), Effect::AbortAttempt]);
        let t = apply(&t.record, Event::Stop, at(2)).unwrap();
        assert_eq!(t.record.status, Stopped);
        assert_eq!(t.record.error.as_ref().map(|e| e.kind), Some(ErrorType::Stopped));
        assert_eq!(t.record.finished_at, Some(at(2)));
    }

    #[test]
    fn long_tasks_take_heartbeats_only_while_running_and_time_out_without_them() {
        let r = in_state(Running);
        let r = mark_async(&r).unwrap();
        assert!(r.async_attempt);
        let hb = std::time::Duration::from_secs(10);
        let limit = std::time::Duration::from_secs(100);
        assert_eq!(long_attempt_overdue(&r, hb, limit, at(10_000)), None);
        assert_eq!(
            long_attempt_overdue(&r, hb, limit, at(10_001)).as_deref(),
            Some("no heartbeat within 10s")
        );
        let r = heartbeat(&r, at(9_000)).unwrap();
        assert_eq!(long_attempt_overdue(&r, hb, limit, at(19_000)), None);
        let mut late = r.clone();
        late.heartbeat_at = Some(at(99_000));
        assert_eq!(
            long_attempt_overdue(&late, hb, limit, at(100_001)).as_deref(),
            Some("not completed within 100s")
        );
        for s in Status::ALL.into_iter().filter(|s| *s != Running) {
            assert!(heartbeat(&in_state(s), at(1)).is_err());
            assert!(mark_async(&in_state(s)).is_err());
        }
        let done = apply(
            &r,
            Event::Succeed {
                result: Encoded::default(),
                detail: "complete".into(),
            },
            at(20),
        )
        .unwrap();
        assert!(!done.record.async_attempt);
    }

    #[test]
    fn queue_time_counts_from_not_before_for_delayed_tasks() {
        let mut r = new_record();
        r.not_before = Some(at(1000));
        let r = apply(
            &apply(&r, Event::Dequeue, at(1000)).unwrap().record,
            Event::Start { attempt: 1 },
            at(1004),
        )
        .unwrap()
        .record;
        assert_eq!(r.queue_ms, Some(4));
    }

    #[test]
    fn an_unusable_submission_is_created_invalid_with_its_reason() {
        let mut task = NewTask::new("x", "f", "u", 1, vec![0xff]);
        task.input = vec![0xff];
        let t = create(task, Some("Jetask-Delay: invalid duration".into()), T0);
        assert_eq!(t.record.status, Invalid);
        assert_eq!(t.record.input_base64.as_deref(), Some("/w=="));
        assert_eq!(t.record.events.len(), 2);
        assert_eq!(
            t.effects,
            vec![Effect::Emit(Enqueued), Effect::Emit(Invalid), Effect::Finish]
        );
    }

    #[test]
    fn a_wait_is_noted_once_in_the_history_of_a_waiting_task_only() {
        let r = new_record();
        let noted = note_wait(&r, "waiting for user_rate_limit", at(5)).unwrap();
        assert_eq!(noted.status, Status::Enqueued);
        assert_eq!(noted.events.len(), r.events.len() + 1);
        assert_eq!(
            noted.events.last().unwrap().detail.as_deref(),
            Some("waiting for user_rate_limit")
        );
        assert_eq!(note_wait(&noted, "waiting for user_rate_limit", at(6)), None);
        assert_eq!(note_wait(&first_attempt_running(), "x", at(7)), None);
    }
}
