//! A task's life as spans of time, read from its record's history (CONTRACT §4 `events`): how
//! long it waited to be due, in the queue, for a slot, for each attempt, for each backoff and
//! for each throttle. What `GET /v1/tasks/{id}/timeline` answers and the console draws.

use crate::core::duration::Dur;
use crate::core::task::{EventEntry, Status, TaskRecord};
use crate::core::time::Timestamp;
use serde::Serialize;

/// What a task was doing during a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Not due yet: before its not-before.
    Delayed,
    /// Due, in its function's queue.
    Queued,
    /// Taken by a dispatcher, waiting for a concurrency slot.
    Waiting,
    /// Held back by a throttle: a rate limit, or its endpoint's 429/503 and the wait after it.
    Throttled,
    /// An attempt in flight.
    Attempt,
    /// Waiting for the next attempt after a failed one.
    Backoff,
    /// A stop was asked while an attempt ran; the attempt is being aborted.
    Stopping,
}

/// One span of a task's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    pub kind: Kind,
    /// The record's state meanwhile.
    pub status: Status,
    /// The attempt's number (an attempt span, and the throttle wait or backoff after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub duration_ms: u64,
    /// Still going at the time of the answer (its `end` is that time).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// What the history says about it: why it waits, an attempt's answer (`200`, `500`,
    /// `timeout`, `429`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How an attempt ended: the state it led to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Status>,
}

/// A task's spans, oldest first, at `now`.
pub fn of(record: &TaskRecord, now: Timestamp) -> Vec<Span> {
    let events = &record.events;
    let mut spans: Vec<Span> = Vec::with_capacity(events.len() + 1);
    let mut attempt: Option<u32> = None;
    for (i, e) in events.iter().enumerate() {
        if e.status.is_terminal() {
            break;
        }
        let next = events.get(i + 1);
        let (end, open) = match next {
            Some(n) => (n.at, false),
            None => (now.max(e.at), true),
        };
        // "waited 1200ms for rate_limit", noted when the wait ended: the end of the span
        // before this entry was that wait.
        let waited = rate_wait(e);
        if let Some(ms) = waited {
            carve_throttle(&mut spans, e.at, ms);
        }
        let detail = e.detail.clone().filter(|_| waited.is_none());
        let noted_wait = detail.as_deref().is_some_and(|d| d.starts_with("waiting for "));
        let kind = match e.status {
            Status::Running => {
                attempt = detail
                    .as_deref()
                    .and_then(|d| d.strip_prefix("attempt "))
                    .and_then(|n| n.parse().ok())
                    .or(attempt.map(|a| a + 1))
                    .or(Some(1));
                Kind::Attempt
            }
            Status::Stopping => Kind::Stopping,
            _ if noted_wait => Kind::Throttled,
            Status::Retrying if is_throttle(detail.as_deref()) => Kind::Throttled,
            Status::Retrying => Kind::Backoff,
            Status::Dequeued => Kind::Waiting,
            _ => Kind::Queued,
        };
        let span = |kind, start: Timestamp, end: Timestamp| Span {
            kind,
            status: e.status,
            attempt: match kind {
                Kind::Attempt | Kind::Backoff | Kind::Stopping => attempt,
                Kind::Throttled if e.status == Status::Retrying => attempt,
                _ => None,
            },
            start,
            end,
            duration_ms: end.since(start),
            open,
            detail: match kind {
                // The history notes an attempt's answer on the entry after it.
                Kind::Attempt => next.and_then(|n| n.detail.clone()).or(detail.clone()),
                _ => detail.clone(),
            },
            outcome: match kind {
                Kind::Attempt => next.map(|n| n.status),
                _ => None,
            },
        };
        // The first entry of a delayed task: not due until its not-before.
        if kind == Kind::Queued && i == 0 {
            if let Some(nb) = record.not_before.filter(|nb| *nb > e.at) {
                let due = nb.min(end);
                spans.push(Span {
                    open: open && due == end,
                    ..span(Kind::Delayed, e.at, due)
                });
                if due < end {
                    spans.push(span(Kind::Queued, due, end));
                }
                continue;
            }
        }
        spans.push(span(kind, e.at, end));
    }
    merge(spans)
}

/// The answer codes of a throttled call (the detail of the `Retrying` entry after it).
fn is_throttle(detail: Option<&str>) -> bool {
    matches!(detail, Some("429" | "503"))
}

/// How long a "waited D for rate_limit" note says the task waited.
fn rate_wait(e: &EventEntry) -> Option<u64> {
    let d = e.detail.as_deref()?.strip_prefix("waited ")?;
    let (dur, why) = d.split_once(' ')?;
    why.starts_with("for ")
        .then(|| dur.parse::<Dur>().ok().map(|d| d.as_millis()))
        .flatten()
}

/// Turns the last `ms` before `at` (of the span that ends there) into a throttle wait.
fn carve_throttle(spans: &mut Vec<Span>, at: Timestamp, ms: u64) {
    let Some(pos) = spans.iter().rposition(|s| s.end == at && !s.open) else {
        return;
    };
    let s = spans[pos].clone();
    let from = Timestamp((at.millis() - i64::try_from(ms).unwrap_or(i64::MAX)).max(s.start.millis()));
    let throttled = Span {
        kind: Kind::Throttled,
        start: from,
        duration_ms: at.since(from),
        detail: Some("rate_limit".into()),
        ..s.clone()
    };
    if from <= s.start {
        spans[pos] = throttled;
    } else {
        spans[pos].end = from;
        spans[pos].duration_ms = from.since(s.start);
        spans.insert(pos + 1, throttled);
    }
}

/// Joins neighbours of the same kind, attempt and detail (a note in the history that changes
/// nothing splits no bar), and drops closed waits of no time.
fn merge(spans: Vec<Span>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        // A closed wait of no time at all is no bar (an attempt is, however short).
        if s.duration_ms == 0 && !s.open && s.kind != Kind::Attempt {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if last.kind == s.kind
                && last.kind != Kind::Attempt
                && last.attempt == s.attempt
                && last.end == s.start
                && (s.detail.is_none() || last.detail == s.detail)
            {
                last.end = s.end;
                last.duration_ms = s.end.since(last.start);
                last.open = s.open;
                continue;
            }
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::{apply, create, note_wait, Event, NewTask};
    use crate::core::task::{ErrorType, TaskError};

    fn kinds(spans: &[Span]) -> Vec<(Kind, u64, Option<u32>)> {
        spans.iter().map(|s| (s.kind, s.duration_ms, s.attempt)).collect()
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    #[test]
    fn attempts_backoffs_and_throttles_are_spans_in_order() {
        let mut r = create(NewTask::new("t", "f", "u", 1, vec![]), None, at(0)).record;
        let step = |r: &TaskRecord, e: Event, t: i64| apply(r, e, at(t)).unwrap().record;
        r = step(&r, Event::Dequeue, 100);
        r = step(&r, Event::Start { attempt: 1 }, 150);
        let fail = Event::Fail {
            error: TaskError::new(ErrorType::FunctionError, "HTTP 500"),
            retry_at: Some(at(2_000)),
            detail: "500".into(),
        };
        r = step(&r, fail, 400);
        r = step(&r, Event::Dequeue, 2_000);
        r = step(&r, Event::Start { attempt: 2 }, 2_010);
        let throttle = Event::Throttle {
            retry_at: at(5_000),
            detail: "429".into(),
        };
        r = step(&r, throttle, 2_020);
        r = step(&r, Event::Dequeue, 5_000);
        r = step(&r, Event::Start { attempt: 2 }, 5_005);
        // Still running at 6,000.
        let live = of(&r, at(6_000));
        assert_eq!(
            kinds(&live),
            vec![
                (Kind::Queued, 100, None),
                (Kind::Waiting, 50, None),
                (Kind::Attempt, 250, Some(1)),
                (Kind::Backoff, 1_600, Some(1)),
                (Kind::Waiting, 10, None),
                (Kind::Attempt, 10, Some(2)),
                (Kind::Throttled, 2_980, Some(2)),
                (Kind::Waiting, 5, None),
                (Kind::Attempt, 995, Some(2)),
            ]
        );
        assert_eq!(live[2].detail.as_deref(), Some("500"));
        assert_eq!(live[2].outcome, Some(Status::Retrying));
        assert!(live[8].open && live[8].outcome.is_none());
        let ok = Event::Succeed {
            result: Default::default(),
            detail: "200".into(),
        };
        r = step(&r, ok, 7_000);
        let done = of(&r, at(60_000));
        assert_eq!(done.len(), 9);
        assert_eq!((done[8].duration_ms, done[8].open), (1_995, false));
        assert_eq!(done[8].outcome, Some(Status::Succeeded));
        assert_eq!(done[8].detail.as_deref(), Some("200"));
    }

    #[test]
    fn a_delay_and_rate_limit_waits_are_their_own_spans() {
        let mut r = create(NewTask::new("t", "f", "u", 1, vec![]), None, at(0)).record;
        r.not_before = Some(at(1_000));
        let r = note_wait(&r, "waiting for user_rate_limit of user u", at(1_500)).unwrap();
        let spans = of(&r, at(2_000));
        assert_eq!(
            kinds(&spans),
            vec![
                (Kind::Delayed, 1_000, None),
                (Kind::Queued, 500, None),
                (Kind::Throttled, 500, None)
            ]
        );
        assert!(spans[2].open);

        let r = create(NewTask::new("t", "f", "u", 1, vec![]), None, at(0)).record;
        let mut r = note_wait(&r, "waited 300ms for rate_limit", at(1_000)).unwrap();
        r = apply(&r, Event::Dequeue, at(1_000)).unwrap().record;
        let spans = of(&r, at(1_000));
        assert_eq!(
            kinds(&spans),
            vec![
                (Kind::Queued, 700, None),
                (Kind::Throttled, 300, None),
                (Kind::Waiting, 0, None)
            ]
        );
    }

    #[test]
    fn a_stop_while_running_shows_the_abort() {
        let mut r = create(NewTask::new("t", "f", "u", 1, vec![]), None, at(0)).record;
        r = apply(&r, Event::Dequeue, at(10)).unwrap().record;
        r = apply(&r, Event::Start { attempt: 1 }, at(20)).unwrap().record;
        r = apply(&r, Event::Stop, at(500)).unwrap().record;
        r = apply(&r, Event::Stop, at(530)).unwrap().record;
        let spans = of(&r, at(9_999));
        assert_eq!(
            kinds(&spans),
            vec![
                (Kind::Queued, 10, None),
                (Kind::Waiting, 10, None),
                (Kind::Attempt, 480, Some(1)),
                (Kind::Stopping, 30, Some(1))
            ]
        );
        assert_eq!(spans[2].outcome, Some(Status::Stopping));
        // A task stopped in the queue has one span, and none is open.
        let q = create(NewTask::new("q", "f", "u", 1, vec![]), None, at(0)).record;
        let q = apply(&q, Event::Stop, at(40)).unwrap().record;
        assert_eq!(kinds(&of(&q, at(100))), vec![(Kind::Queued, 40, None)]);
    }
}
