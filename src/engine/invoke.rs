//! Calling a function's endpoint once (CONTRACT §5): the request, its headers and timeout, and
//! the answer turned into an [`Outcome`].

use crate::core::egress::Refused;
use crate::core::outcome::{classify, Outcome};
use crate::core::retry::parse_retry_after;
use crate::core::subjects::headers as h;
use crate::core::task::{ErrorType, TaskError};
use crate::core::time::Timestamp;
use crate::engine::egress;
use std::time::Duration;

/// One attempt's request.
pub struct Call<'a> {
    pub endpoint: &'a reqwest::Url,
    pub task_id: &'a str,
    pub function: &'a str,
    pub attempt: u32,
    pub timeout: Duration,
    pub content_type: Option<&'a str>,
    pub traceparent: Option<&'a str>,
    pub body: bytes::Bytes,
    /// Bytes of the answer kept; one more tells the record that it was cut.
    pub max_result: usize,
}

/// The request's header names, built once: given as text, each would be parsed, lowercased
/// and allocated again on every call. HTTP/1 sends them lowercased either way.
mod names {
    use reqwest::header::HeaderName;
    pub const CONTENT_TYPE: HeaderName = reqwest::header::CONTENT_TYPE;
    pub const TASK_ID: HeaderName = HeaderName::from_static("jetask-task-id");
    pub const FUNCTION: HeaderName = HeaderName::from_static("jetask-function");
    pub const ATTEMPT: HeaderName = HeaderName::from_static("jetask-attempt");
    pub const DEADLINE: HeaderName = HeaderName::from_static("jetask-deadline");
    pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

    #[cfg(test)]
    #[test]
    fn they_are_the_contract_names() {
        use crate::core::subjects::headers as h;
        for (name, text) in [
            (CONTENT_TYPE, h::CONTENT_TYPE),
            (TASK_ID, h::TASK_ID),
            (FUNCTION, h::FUNCTION),
            (ATTEMPT, h::ATTEMPT),
            (DEADLINE, h::DEADLINE),
            (TRACEPARENT, h::TRACEPARENT),
        ] {
            assert_eq!(name, HeaderName::from_bytes(text.as_bytes()).unwrap());
        }
    }
}

/// A call the egress policy refuses: `Unreachable`, and final, since trying again reaches
/// the same rule.
fn refused(r: &Refused) -> Outcome {
    Outcome::Fatal(TaskError::new(ErrorType::Unreachable, r.to_string()))
}

/// Makes the call; never fails: errors are outcomes.
pub async fn call(client: &egress::Client, c: Call<'_>) -> Outcome {
    if let Err(r) = client.check(c.endpoint) {
        return refused(&r);
    }
    let started = Timestamp::now();
    let deadline = started.plus(c.timeout);
    let req = client
        .http()
        .post(c.endpoint.clone())
        .timeout(c.timeout)
        .header(
            names::CONTENT_TYPE,
            c.content_type.unwrap_or("application/octet-stream"),
        )
        .header(names::TASK_ID, c.task_id)
        .header(names::FUNCTION, c.function)
        .header(names::ATTEMPT, c.attempt.to_string())
        .header(names::DEADLINE, deadline.to_string());
    let req = match c.traceparent {
        Some(tp) => req.header(names::TRACEPARENT, tp),
        None => req,
    };
    let timeout_err = || {
        Outcome::Retryable(TaskError::new(
            ErrorType::Timeout,
            format!("no answer within {}", crate::core::duration::Dur(c.timeout)),
        ))
    };
    let mut resp = match req.body(c.body).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return timeout_err(),
        Err(e) => match egress::refusal(&e) {
            Some(r) => return refused(r),
            None => return Outcome::Retryable(TaskError::new(ErrorType::Unreachable, describe(&e))),
        },
    };
    let code = resp.status().as_u16();
    let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
    let is_async = header(h::ASYNC).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let retry_after = header("Retry-After").and_then(|v| parse_retry_after(&v, Timestamp::now()));
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = (c.max_result + 1).saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() > c.max_result {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return timeout_err(),
            Err(e) => {
                return Outcome::Retryable(TaskError::new(
                    ErrorType::Unreachable,
                    format!("answer cut off: {}", describe(&e)),
                ))
            }
        }
    }
    classify(code, is_async, retry_after, body)
}

/// The error and its sources, which say what actually went wrong (reqwest's own message is
/// only "error sending request").
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
