//! What an endpoint's answer means (CONTRACT §5), and the event it leads to under a function's
//! policy. Pure: the shell hands in the answer, the record, `now` and the jitter.

use crate::core::function::FunctionSpec;
use crate::core::machine::Event;
use crate::core::retry::backoff_delay;
use crate::core::task::{Encoded, ErrorType, Status, TaskError, TaskRecord};
use crate::core::time::Timestamp;
use std::time::Duration;

/// How one call to a function ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: the body is the result.
    Success { code: u16, body: Vec<u8> },
    /// 202 with `Jetask-Async: true`: the function reports the end itself.
    Accepted,
    /// 429/503: not an attempt; retry after `retry_after` (else the backoff).
    Throttled { code: u16, retry_after: Option<Duration> },
    /// 408, other 5xx, timeout, connection error: an attempt used up, retried if any remain.
    Retryable(TaskError),
    /// Any other 4xx: the input is at fault, retrying cannot help.
    Fatal(TaskError),
}

/// Classifies an HTTP answer.
pub fn classify(code: u16, is_async: bool, retry_after: Option<Duration>, body: Vec<u8>) -> Outcome {
    let function_error = |body: &[u8]| {
        let text = String::from_utf8_lossy(&body[..body.len().min(512)]).trim().to_string();
        let message = if text.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {text}")
        };
        TaskError::new(ErrorType::FunctionError, message)
    };
    match code {
        202 if is_async => Outcome::Accepted,
        200..=299 => Outcome::Success { code, body },
        429 | 503 => Outcome::Throttled { code, retry_after },
        408 | 500..=599 => Outcome::Retryable(function_error(&body)),
        _ => Outcome::Fatal(function_error(&body)),
    }
}

/// The event an outcome leads to for a `Running` record. `Accepted` yields `None`: the task
/// stays `Running` until the function completes it.
pub fn decide(
    record: &TaskRecord,
    outcome: Outcome,
    spec: &FunctionSpec,
    max_result: usize,
    now: Timestamp,
    jitter: f64,
) -> Option<Event> {
    Some(match outcome {
        Outcome::Accepted => return None,
        Outcome::Success { code, body } => Event::Succeed {
            result: Encoded::encode(&body, max_result),
            detail: code.to_string(),
        },
        Outcome::Throttled { code, retry_after } => {
            // A throttle is not an attempt, so the attempt count cannot make the backoff grow:
            // the throttles in a row since the last other outcome do.
            let n = consecutive_throttles(record).saturating_add(1);
            let wait = retry_after.unwrap_or_else(|| backoff_delay(&spec.backoff, n, jitter));
            Event::Throttle {
                retry_at: now.plus(wait),
                detail: code.to_string(),
            }
        }
        Outcome::Retryable(error) => {
            let detail = detail_of(&error);
            let retry_at = (record.attempts < spec.max_attempts)
                .then(|| now.plus(backoff_delay(&spec.backoff, record.attempts, jitter)));
            Event::Fail {
                error,
                retry_at,
                detail,
            }
        }
        Outcome::Fatal(error) => {
            let detail = detail_of(&error);
            Event::Fail {
                error,
                retry_at: None,
                detail,
            }
        }
    })
}

/// How many of the task's latest calls in a row were throttled (429 or 503): the history's
/// trailing `Retrying` entries with that detail, the dequeues and starts between them aside.
pub fn consecutive_throttles(r: &TaskRecord) -> u32 {
    let mut n = 0u32;
    for e in r.events.iter().rev() {
        match (e.status, e.detail.as_deref()) {
            (Status::Retrying, Some("429" | "503")) => n = n.saturating_add(1),
            (Status::Running | Status::Dequeued, _) => {}
            _ => break,
        }
    }
    n
}

fn detail_of(e: &TaskError) -> String {
    match e.kind {
        ErrorType::FunctionError => e
            .message
            .split(':')
            .next()
            .unwrap_or("")
            .trim_start_matches("HTTP ")
            .to_string(),
        ErrorType::Timeout => "timeout".into(),
        ErrorType::Unreachable => "unreachable".into(),
        _ => e.message.clone(),
    }
}

/// Whether a task has outlived `spec.max_event_age` at `now`. Age counts from when the task
/// was due: its creation, or its `not_before` when delayed (a task delayed 3 days with a 1-day
/// maximum age still runs).
pub fn is_expired(record: &TaskRecord, spec: &FunctionSpec, now: Timestamp) -> bool {
    let due = record.not_before.unwrap_or(record.created_at).max(record.created_at);
    now > due.plus(spec.max_event_age.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::function::resolve;
    use crate::core::machine::{create, NewTask};
    use serde_json::json;

    fn spec() -> FunctionSpec {
        resolve(
            &json!({"endpoint": "http://x.test", "max_attempts": 3, "backoff": {"initial": "1s", "jitter": false}}),
            &json!({}),
            Duration::from_secs(7 * 86400),
        )
        .unwrap()
    }

    fn running(attempts: u32) -> TaskRecord {
        let mut r = create(NewTask::new("t", "f", "u", 1, vec![]), None, Timestamp(0)).record;
        r.attempts = attempts;
        r
    }

    #[test]
    fn answers_are_classified_as_the_contract_table_says() {
        assert!(matches!(
            classify(200, false, None, b"x".to_vec()),
            Outcome::Success { code: 200, .. }
        ));
        assert!(matches!(classify(204, false, None, vec![]), Outcome::Success { .. }));
        assert_eq!(classify(202, true, None, vec![]), Outcome::Accepted);
        assert!(matches!(classify(202, false, None, vec![]), Outcome::Success { .. }));
        assert!(matches!(
            classify(429, false, None, vec![]),
            Outcome::Throttled { code: 429, .. }
        ));
        assert!(matches!(
            classify(503, false, None, vec![]),
            Outcome::Throttled { code: 503, .. }
        ));
        assert!(matches!(classify(408, false, None, vec![]), Outcome::Retryable(_)));
        assert!(matches!(classify(500, false, None, vec![]), Outcome::Retryable(_)));
        assert!(matches!(classify(502, false, None, vec![]), Outcome::Retryable(_)));
        assert!(matches!(classify(400, false, None, vec![]), Outcome::Fatal(_)));
        assert!(matches!(classify(404, false, None, vec![]), Outcome::Fatal(_)));
        assert!(matches!(classify(301, false, None, vec![]), Outcome::Fatal(_)));
    }

    #[test]
    fn a_failure_retries_while_attempts_remain_then_fails() {
        let now = Timestamp(10_000);
        let e = || classify(500, false, None, b"boom".to_vec());
        match decide(&running(1), e(), &spec(), 100, now, 0.5) {
            Some(Event::Fail {
                retry_at: Some(at),
                detail,
                error,
            }) => {
                assert_eq!(at, Timestamp(11_000));
                assert_eq!(detail, "500");
                assert_eq!(error.message, "HTTP 500: boom");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&running(3), e(), &spec(), 100, now, 0.5),
            Some(Event::Fail { retry_at: None, .. })
        ));
    }

    #[test]
    fn a_client_error_fails_at_once() {
        let ev = decide(
            &running(1),
            classify(422, false, None, vec![]),
            &spec(),
            100,
            Timestamp(0),
            0.0,
        );
        assert!(matches!(ev, Some(Event::Fail { retry_at: None, .. })));
    }

    #[test]
    fn throttles_without_a_usable_retry_after_back_off_more_each_time() {
        let mut r = running(1);
        let mut waits = Vec::new();
        for _ in 0..5 {
            match decide(&r, classify(503, false, None, vec![]), &spec(), 100, Timestamp(0), 0.0) {
                Some(Event::Throttle { retry_at, .. }) => waits.push(retry_at.0 / 1000),
                other => panic!("{other:?}"),
            }
            for (status, detail) in [(Status::Retrying, "503"), (Status::Running, "attempt 1")] {
                r.events.push(crate::core::task::EventEntry {
                    status,
                    at: Timestamp(0),
                    detail: Some(detail.into()),
                });
            }
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 16]);
        // Another outcome ends the run of throttles.
        r.events.push(crate::core::task::EventEntry {
            status: Status::Retrying,
            at: Timestamp(0),
            detail: Some("500".into()),
        });
        assert_eq!(consecutive_throttles(&r), 0);
    }

    #[test]
    fn throttling_waits_for_retry_after() {
        let ev = decide(
            &running(3),
            classify(429, false, Some(Duration::from_secs(7)), vec![]),
            &spec(),
            100,
            Timestamp(0),
            0.0,
        );
        assert_eq!(
            ev,
            Some(Event::Throttle {
                retry_at: Timestamp(7000),
                detail: "429".into()
            })
        );
    }

    #[test]
    fn age_is_counted_from_when_the_task_was_due() {
        let s = spec();
        let mut r = running(0);
        assert!(!is_expired(&r, &s, Timestamp(86_400_000)));
        assert!(is_expired(&r, &s, Timestamp(86_400_001)));
        r.not_before = Some(Timestamp(3 * 86_400_000));
        assert!(!is_expired(&r, &s, Timestamp(4 * 86_400_000)));
        assert!(is_expired(&r, &s, Timestamp(4 * 86_400_000 + 1)));
    }
}
