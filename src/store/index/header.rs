//! What a record write tells the index, in one header: `Jetask-Idx:
//! <status>;<created ms>;<due ms>;<times>;<function>;<user>`. One header rather than one per
//! field: every header is parsed into its own name and value (and a map entry) by each client
//! that reads the write, and stored and sent by the server, on every write of every task.
//!
//! - `<due ms>` is empty when the task is not waiting; `<times>` is `s=<first start>,f=<finish>,
//!   q=<queue ms>,r=<run ms>,t=1` (throttled), each part only when known.
//! - `<function>` and `<user>` have `%`, `;` and line breaks percent-encoded: the record of a
//!   submission to a malformed subject names what it was sent to, whatever that holds.
//!
//! Records written before this header (one header per field, `Jetask-Idx-Status` and so on)
//! stay in the bucket for the retention and are read by [`legacy`].

use super::Timing;
use crate::core::task::{ErrorType, Status, TaskRecord};
use std::borrow::Cow;

/// The header a record write carries for the index.
pub const NAME: &str = "Jetask-Idx";

/// What the index keeps of a record, as its write's header says.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub function: String,
    pub user: String,
    pub status: Status,
    pub created: i64,
    /// When a waiting task is next due, in ms; 0 when not waiting.
    pub due: i64,
    pub timing: Timing,
}

/// The header value for `record`.
pub fn encode(record: &TaskRecord) -> String {
    use std::fmt::Write as _;
    let mut v = String::with_capacity(96);
    let _ = write!(v, "{};{};", record.status.as_str(), record.created_at.millis());
    if let Some(due) = record.waiting_until() {
        let _ = write!(v, "{}", due.millis());
    }
    v.push(';');
    write_times(&mut v, record);
    v.push(';');
    v.push_str(&escape(&record.function));
    v.push(';');
    v.push_str(&escape(&record.user));
    v
}

/// Reads [`encode`]'s value; `None` when it is not one.
pub fn decode(value: &str) -> Option<Entry> {
    let mut parts = value.splitn(6, ';');
    let status = Status::parse(parts.next()?)?;
    let created = parts.next()?.parse::<i64>().ok()?;
    let due = match parts.next()? {
        "" => 0,
        d => d.parse().ok()?,
    };
    let timing = parse_times(parts.next()?, ',');
    let function = unescape(parts.next()?)?;
    let user = unescape(parts.next()?)?;
    Some(Entry {
        function,
        user,
        status,
        created,
        due,
        timing,
    })
}

/// The entry of a write made before [`NAME`], from its one header per field (`get` reads one).
pub fn legacy<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Entry> {
    Some(Entry {
        function: get("Jetask-Idx-Function")?.to_string(),
        user: get("Jetask-Idx-User")?.to_string(),
        status: Status::parse(get("Jetask-Idx-Status")?)?,
        created: get("Jetask-Idx-Created")?.parse().ok()?,
        due: get("Jetask-Idx-Due").and_then(|d| d.parse().ok()).unwrap_or(0),
        timing: get("Jetask-Idx-Times").map(|t| parse_times(t, ';')).unwrap_or_default(),
    })
}

fn write_times(v: &mut String, record: &TaskRecord) {
    use std::fmt::Write as _;
    let start = v.len();
    let part = |v: &mut String, k: &str, n: i64| {
        if v.len() > start {
            v.push(',');
        }
        let _ = write!(v, "{k}={n}");
    };
    if let Some(s) = record.started_at {
        part(v, "s", s.millis());
    }
    if let Some(f) = record.finished_at {
        part(v, "f", f.millis());
        if let Some(r) = record.duration_ms {
            part(v, "r", i64::try_from(r).unwrap_or(i64::MAX));
        }
    }
    if let Some(q) = record.queue_ms {
        part(v, "q", i64::try_from(q).unwrap_or(i64::MAX));
    }
    if throttled(record) {
        part(v, "t", 1);
    }
}

/// Whether a waiting task waits because of a throttle: its last call was answered 429/503
/// (`Retrying` with a `Throttled` error), or a rate limit holds it (a "waiting for …" note).
fn throttled(r: &TaskRecord) -> bool {
    let noted = r
        .last_event()
        .and_then(|e| e.detail.as_deref())
        .is_some_and(|d| d.starts_with("waiting for "));
    match r.status {
        Status::Retrying => noted || r.error.as_ref().is_some_and(|e| e.kind == ErrorType::Throttled),
        Status::Enqueued | Status::Dequeued => noted,
        _ => false,
    }
}

/// Reads the times, parts split by `sep`; unknown or unreadable parts are ignored.
fn parse_times(v: &str, sep: char) -> Timing {
    let mut t = Timing::default();
    for part in v.split(sep) {
        let Some((k, n)) = part.split_once('=') else { continue };
        let Ok(n) = n.trim().parse::<i64>() else { continue };
        match k.trim() {
            "s" => t.started = Some(n),
            "f" => t.finished = Some(n),
            "q" => t.queue_ms = u64::try_from(n).ok(),
            "r" => t.run_ms = u64::try_from(n).ok(),
            "t" => t.throttled = n != 0,
            _ => {}
        }
    }
    t
}

/// `%`, `;` and line breaks (which no header value may hold) percent-encoded.
fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', ';', '\r', '\n']) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.replace('%', "%25")
            .replace(';', "%3B")
            .replace('\r', "%0D")
            .replace('\n', "%0A"),
    )
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3)?;
        out.push(match code {
            "25" => '%',
            "3B" => ';',
            "0D" => '\r',
            "0A" => '\n',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::machine::{apply, create, Event, NewTask};
    use crate::core::task::TaskError;
    use crate::core::time::Timestamp;

    fn entry_of(r: &TaskRecord) -> Entry {
        decode(&encode(r)).expect("decodes")
    }

    #[test]
    fn a_record_round_trips_through_its_header() {
        let t0 = Timestamp(1_000);
        let mut r = create(NewTask::new("t", "f", "u", 1, vec![]), None, t0).record;
        let e = entry_of(&r);
        assert_eq!(
            (e.function.as_str(), e.user.as_str(), e.status, e.created, e.due),
            ("f", "u", Status::Enqueued, 1_000, 0)
        );
        assert_eq!(e.timing, Timing::default());
        r = apply(&r, Event::Dequeue, Timestamp(1_500)).unwrap().record;
        r = apply(&r, Event::Start { attempt: 1 }, Timestamp(2_000)).unwrap().record;
        let throttle = Event::Throttle {
            retry_at: Timestamp(9_000),
            detail: "429".into(),
        };
        r = apply(&r, throttle, Timestamp(2_300)).unwrap().record;
        let e = entry_of(&r);
        assert_eq!((e.status, e.due), (Status::Retrying, 9_000));
        assert_eq!(
            e.timing,
            Timing {
                started: Some(2_000),
                queue_ms: Some(1_000),
                throttled: true,
                ..Default::default()
            }
        );
        r = apply(&r, Event::Dequeue, Timestamp(9_000)).unwrap().record;
        r = apply(&r, Event::Start { attempt: 1 }, Timestamp(9_100)).unwrap().record;
        let fail = Event::Fail {
            error: TaskError::new(ErrorType::FunctionError, "HTTP 500"),
            retry_at: None,
            detail: "500".into(),
        };
        r = apply(&r, fail, Timestamp(9_350)).unwrap().record;
        assert_eq!(
            entry_of(&r).timing,
            Timing {
                started: Some(2_000),
                finished: Some(9_350),
                queue_ms: Some(1_000),
                run_ms: Some(250),
                throttled: false,
            }
        );
    }

    #[test]
    fn names_with_separators_and_percent_signs_round_trip() {
        let mut r = create(
            NewTask::new("t", "a;b%3B", "x;y=z%\r\nX: 1", 1, vec![]),
            None,
            Timestamp(5),
        )
        .record;
        r.status = Status::Invalid;
        let value = encode(&r);
        assert!(!value.contains(['\r', '\n']), "{value:?}");
        let e = decode(&value).expect("decodes");
        assert_eq!((e.function.as_str(), e.user.as_str()), ("a;b%3B", "x;y=z%\r\nX: 1"));
    }

    #[test]
    fn what_is_not_an_index_header_is_refused() {
        for bad in [
            "",
            "Enqueued",
            "Nope;1;;;f;u",
            "Enqueued;x;;;f;u",
            "Enqueued;1;y;;f;u",
            "Enqueued;1;;;f%zz;u",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
        // Unknown or unreadable parts of the times are ignored, not fatal.
        let e = decode("Running;1;;s=12,f=x,,q=-5,zz=1,t=1,r;f;u").unwrap();
        assert_eq!(
            e.timing,
            Timing {
                started: Some(12),
                throttled: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn writes_made_before_the_one_header_are_still_read() {
        let headers = [
            ("Jetask-Idx-Function", "f"),
            ("Jetask-Idx-Status", "Succeeded"),
            ("Jetask-Idx-User", "u"),
            ("Jetask-Idx-Created", "7"),
            ("Jetask-Idx-Times", "s=8;f=9;r=1;q=1"),
        ];
        let get = |k: &str| headers.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let e = legacy(get).unwrap();
        assert_eq!((e.status, e.created, e.due), (Status::Succeeded, 7, 0));
        assert_eq!(e.timing.finished, Some(9));
        assert_eq!(legacy(|_| None), None);
    }
}
