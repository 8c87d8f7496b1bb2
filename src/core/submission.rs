//! Reading a submission (CONTRACT §3): its ID, user, delay, callback and pass-through headers,
//! validated. Pure: headers come in as a lookup function, times as arguments. Over HTTP a bad
//! field is a 400; over NATS, where the message is already accepted, it makes the task `Invalid`.

use crate::core::destination::{self, Rules};
use crate::core::duration::Dur;
use crate::core::machine::NewTask;
use crate::core::subjects::headers as h;
use crate::core::task::{id_from_sequence, valid_task_id, valid_user};
use crate::core::time::Timestamp;
use std::time::Duration;

/// A field of a submission that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

pub fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// The options of a submission, before its ID and sequence are known.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub not_before: Option<Timestamp>,
    pub callback: Option<String>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    /// The task this one replays (CONTRACT §8.1).
    pub replay_of: Option<String>,
    /// The task whose result started this one (a `function:` destination).
    pub triggered_by: Option<String>,
}

pub fn check_id(field: &str, id: &str) -> Result<(), FieldError> {
    if valid_task_id(id) {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{id:?} is not a task ID ([A-Za-z0-9_-]{{1,128}})"),
        ))
    }
}

pub fn check_user(field: &str, user: &str) -> Result<(), FieldError> {
    if valid_user(user) {
        Ok(())
    } else {
        Err(field_error(
            field,
            format!("{user:?} is not a user name ([A-Za-z0-9_-]{{1,128}})"),
        ))
    }
}

/// `not_before` from a delay or a time (at most one of them), bounded by `max_delay`.
pub fn not_before(
    delay: Option<(&str, &str)>,
    at: Option<(&str, &str)>,
    accepted_at: Timestamp,
    max_delay: Duration,
) -> Result<Option<Timestamp>, FieldError> {
    let limit = || format!("at most {} after acceptance (the record retention)", Dur(max_delay));
    match (delay, at) {
        (Some((f1, _)), Some((f2, _))) => Err(field_error(f1, format!("give either {f1} or {f2}, not both"))),
        (Some((field, raw)), None) => {
            let d: Dur = raw
                .parse()
                .map_err(|e: crate::core::duration::DurationError| field_error(field, e.to_string()))?;
            if d.0 > max_delay {
                return Err(field_error(field, format!("{d} is too long: {}", limit())));
            }
            Ok(Some(accepted_at.plus(d.0)).filter(|_| !d.0.is_zero()))
        }
        (None, Some((field, raw))) => {
            let t: Timestamp = raw
                .parse()
                .map_err(|e: crate::core::time::TimeError| field_error(field, e.to_string()))?;
            if t > accepted_at.plus(max_delay) {
                return Err(field_error(field, format!("{t} is too far ahead: {}", limit())));
            }
            Ok(Some(t).filter(|t| *t > accepted_at))
        }
        (None, None) => Ok(None),
    }
}

/// A destination given with a submission, checked against the built-in and the operator's rules.
pub fn check_callback(field: &str, raw: &str, rules: &Rules<'_>) -> Result<String, FieldError> {
    destination::check(raw, rules)
        .map(|_| raw.to_string())
        .map_err(|e| field_error(field, e.to_string()))
}

/// Longest media type a task may carry: RFC 6838 names are at most 127 + 1 + 127 characters;
/// parameters make room for more, not for a 100 KB header.
pub const MAX_CONTENT_TYPE: usize = 1024;

/// A task's `Content-Type`: short, printable ASCII (it is passed on to the function as a header).
pub fn check_content_type(field: &str, raw: &str) -> Result<String, FieldError> {
    if raw.len() > MAX_CONTENT_TYPE {
        return Err(field_error(
            field,
            format!("{} bytes is over {MAX_CONTENT_TYPE}", raw.len()),
        ));
    }
    if !raw.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        return Err(field_error(field, "not printable ASCII"));
    }
    Ok(raw.trim().to_string())
}

pub fn check_traceparent(raw: &str) -> Result<String, FieldError> {
    let parts: Vec<&str> = raw.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if parts.len() >= 4 && hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2) {
        Ok(raw.trim().to_string())
    } else {
        Err(field_error(
            h::TRACEPARENT,
            "not a W3C trace context (version-traceid-parentid-flags)",
        ))
    }
}

/// A submission read from a JetStream message.
pub struct Parsed {
    pub task: NewTask,
    /// Why the task cannot run, when it cannot.
    pub invalid: Option<String>,
}

/// The task ID and user a submission's headers name, as its record has them (a malformed one
/// is replaced, and the first fault returned).
pub fn id_and_user<'a>(header: impl Fn(&str) -> Option<&'a str>, seq: u64) -> (String, String, Option<FieldError>) {
    let mut fault = None;
    let id = match header(h::MSG_ID).map(|id| (id, check_id(h::MSG_ID, id))) {
        Some((id, Ok(()))) => id.to_string(),
        Some((_, Err(e))) => {
            fault = Some(e);
            id_from_sequence(seq)
        }
        None => id_from_sequence(seq),
    };
    let user = match header(h::USER).map(|u| (u, check_user(h::USER, u))) {
        Some((u, Ok(()))) => u.to_string(),
        Some((_, Err(e))) => {
            fault.get_or_insert(e);
            "default".to_string()
        }
        None => "default".to_string(),
    };
    (id, user, fault)
}

/// Reads a message on `jetask.submit.<function>`. Never fails: a field that cannot be used makes
/// the task invalid (with the reason), since the message is already accepted.
#[allow(clippy::too_many_arguments)] // each is a separate input of a pure function
pub fn from_message<'a>(
    function: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    input: &[u8],
    seq: u64,
    accepted_at: Timestamp,
    max_delay: Duration,
    max_payload: usize,
    rules: &Rules<'_>,
) -> Parsed {
    let mut invalid = None;
    let mut note = |e: FieldError| {
        invalid.get_or_insert(e.to_string());
    };
    let (id, user, fault) = id_and_user(&header, seq);
    if let Some(e) = fault {
        note(e);
    }
    let nb = not_before(
        header(h::DELAY).map(|v| (h::DELAY, v)),
        header(h::NOT_BEFORE).map(|v| (h::NOT_BEFORE, v)),
        accepted_at,
        max_delay,
    )
    .unwrap_or_else(|e| {
        note(e);
        None
    });
    let callback = header(h::CALLBACK).and_then(|c| check_callback(h::CALLBACK, c, rules).map_err(&mut note).ok());
    let traceparent = header(h::TRACEPARENT).and_then(|t| check_traceparent(t).map_err(&mut note).ok());
    let content_type =
        header(h::CONTENT_TYPE).and_then(|c| check_content_type(h::CONTENT_TYPE, c).map_err(&mut note).ok());
    if input.len() > max_payload {
        note(field_error(
            "input",
            format!("{} bytes is over limits.max_payload = {max_payload}", input.len()),
        ));
    }
    Parsed {
        task: NewTask {
            id,
            function: function.to_string(),
            user,
            seq,
            not_before: nb,
            input: input.to_vec(),
            content_type,
            traceparent,
            callback,
            replay_of: header(h::REPLAY_OF).filter(|v| valid_task_id(v)).map(str::to_string),
            triggered_by: header(h::TRIGGERED_BY).filter(|v| valid_task_id(v)).map(str::to_string),
        },
        invalid,
    }
}

/// The user of a submission whose subject names one (see [`crate::core::subjects::submit_parts`]):
/// NATS vouches for that user, so it is the task's user, and a `Jetask-User` header naming
/// anyone else is refused rather than ignored — a client sending it believes it acts for that
/// user, and silently running the task as someone else would hide the mistake.
pub fn vouched_user(vouched: &str, header_user: Option<&str>) -> Result<String, FieldError> {
    check_user("subject", vouched)?;
    match header_user {
        Some(claimed) if claimed != vouched => Err(field_error(
            h::USER,
            format!(
                "{claimed:?} is not the user NATS authenticated this submission for ({vouched:?}); \
                 leave the header out or name that user"
            ),
        )),
        _ => Ok(vouched.to_string()),
    }
}

/// [`id_and_user`] of a message on `subject`: the user the subject vouches for, when it names
/// one, wins over the header.
pub fn id_and_user_on<'a>(
    subject: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    seq: u64,
) -> (String, String, Option<FieldError>) {
    let (id, user, fault) = id_and_user(&header, seq);
    match crate::core::subjects::submit_parts(subject).1 {
        None => (id, user, fault),
        Some(vouched) => match vouched_user(vouched, header(h::USER)) {
            Ok(u) => (id, u, fault),
            Err(e) => {
                let owner = if valid_user(vouched) {
                    vouched.to_string()
                } else {
                    "default".to_string()
                };
                (id, owner, Some(e))
            }
        },
    }
}

/// [`from_message`] of a message on `subject`, whose user is the one the subject vouches for
/// when it names one (a forged `Jetask-User` makes the task `Invalid`, naming the header).
#[allow(clippy::too_many_arguments)]
pub fn from_message_on<'a>(
    subject: &str,
    function: &str,
    header: impl Fn(&str) -> Option<&'a str>,
    input: &[u8],
    seq: u64,
    accepted_at: Timestamp,
    max_delay: Duration,
    max_payload: usize,
    rules: &Rules<'_>,
) -> Parsed {
    let mut parsed = from_message(
        function,
        &header,
        input,
        seq,
        accepted_at,
        max_delay,
        max_payload,
        rules,
    );
    if crate::core::subjects::submit_parts(subject).1.is_some() {
        let (_, user, fault) = id_and_user_on(subject, &header, seq);
        parsed.task.user = user;
        // The vouched user's refusal comes first: it is the fault that matters most.
        if let Some(e) = fault.filter(|e| e.field != h::MSG_ID) {
            parsed.invalid = Some(e.to_string());
        }
        // Only jetask itself, in its own account, sets these; from a tenant they would be a
        // claim about someone else's task.
        parsed.task.replay_of = None;
        parsed.task.triggered_by = None;
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const WEEK: Duration = Duration::from_secs(7 * 86400);
    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn parse(headers: &[(&str, &str)]) -> Parsed {
        // A submission on a subject that names no user: `from_message` as it stands.
        parse_on("jetask.submit.f", headers)
    }

    #[test]
    fn a_bare_message_gets_an_id_from_its_sequence() {
        let p = parse(&[]);
        assert_eq!(p.task.id, "seq-42");
        assert_eq!(p.task.user, "default");
        assert!(p.invalid.is_none() && p.task.not_before.is_none());
    }

    #[test]
    fn headers_set_id_user_delay_and_pass_through_fields() {
        let p = parse(&[
            ("Nats-Msg-Id", "job-1"),
            ("Jetask-User", "alice"),
            ("Jetask-Delay", "1500ms"),
            ("Content-Type", "text/plain"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("Jetask-Callback", "nats:done"),
        ]);
        assert!(p.invalid.is_none(), "{:?}", p.invalid);
        assert_eq!((p.task.id.as_str(), p.task.user.as_str()), ("job-1", "alice"));
        assert_eq!(p.task.not_before, Some(Timestamp(NOW.0 + 1500)));
        assert_eq!(p.task.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.task.callback.as_deref(), Some("nats:done"));
    }

    #[test]
    fn a_bad_header_makes_the_task_invalid_naming_it() {
        for (k, v) in [
            ("Jetask-Delay", "soon"),
            ("Jetask-Delay", "8d"),
            ("Jetask-Not-Before", "tomorrow"),
            ("Jetask-User", "a.b"),
            ("Nats-Msg-Id", "has space"),
            ("Jetask-Callback", "ftp://x"),
            ("Jetask-Callback", "nats:$KV.JETASK_TASKS.t1"),
            ("Jetask-Callback", "nats:_INBOX.x"),
            ("Jetask-Callback", "nats:jetask.control.stop"),
            ("Jetask-Callback", "nats:elsewhere"),
            ("Jetask-Callback", "http://169.254.169.254/"),
            ("traceparent", "xyz"),
            ("Content-Type", &"a".repeat(2000)),
            ("Content-Type", "text/\u{7f}"),
        ] {
            let p = parse(&[(k, v)]);
            let reason = p.invalid.unwrap_or_else(|| panic!("{k}: {v} accepted"));
            assert!(reason.starts_with(k), "{reason}");
        }
    }

    fn parse_on(subject: &str, headers: &[(&str, &str)]) -> Parsed {
        let map: HashMap<String, String> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let allow = [destination::SubjectPattern::try_from("done".to_string()).unwrap()];
        let egress = crate::core::egress::Policy::default();
        let rules = Rules {
            nats_allow: &allow,
            egress: &egress,
        };
        from_message_on(
            subject,
            "f",
            |k| map.get(k).map(String::as_str),
            b"in",
            42,
            NOW,
            WEEK,
            1024,
            &rules,
        )
    }

    #[test]
    fn a_user_in_the_subject_is_the_tasks_user() {
        let p = parse_on("jetask.submit.f.alice", &[("Nats-Msg-Id", "job-1")]);
        assert!(p.invalid.is_none(), "{:?}", p.invalid);
        assert_eq!((p.task.id.as_str(), p.task.user.as_str()), ("job-1", "alice"));
        let p = parse_on(
            "jetask.submit.f.alice",
            &[("Jetask-User", "alice"), ("Jetask-Replay-Of", "bobs-task")],
        );
        assert!(p.invalid.is_none(), "{:?}", p.invalid);
        assert_eq!(p.task.replay_of, None, "a tenant cannot claim to replay a task");
        let p = parse_on("jetask.submit.f", &[("Jetask-User", "bob")]);
        assert_eq!((p.task.user.as_str(), p.invalid), ("bob", None));
    }

    #[test]
    fn a_header_claiming_another_user_than_the_subject_makes_the_task_invalid() {
        let p = parse_on(
            "jetask.submit.f.alice",
            &[("Jetask-User", "bob"), ("Jetask-Delay", "soon")],
        );
        assert_eq!(p.task.user, "alice");
        let reason = p.invalid.expect("refused");
        assert!(reason.starts_with("Jetask-User: \"bob\" is not the user"), "{reason}");
        let p = parse_on("jetask.submit.f.a.b", &[]);
        assert_eq!(p.task.user, "default");
        assert!(p.invalid.expect("refused").starts_with("subject: "));
        let (_, user, fault) = id_and_user_on("jetask.submit.f.alice", |k| (k == "Jetask-User").then_some("bob"), 1);
        assert_eq!(
            (user.as_str(), fault.map(|e| e.field)),
            ("alice", Some("Jetask-User".into()))
        );
    }

    #[test]
    fn not_before_in_the_past_runs_at_once() {
        let p = parse(&[("Jetask-Not-Before", "2020-01-01T00:00:00Z")]);
        assert!(p.invalid.is_none());
        assert_eq!(p.task.not_before, None);
        let p = parse(&[("Jetask-Delay", "1s"), ("Jetask-Not-Before", "2030-01-01T00:00:00Z")]);
        assert!(p.invalid.is_some());
    }
}
