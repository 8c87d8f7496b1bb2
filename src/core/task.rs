//! The task record: what jetask knows of one task, stored in the `JETASK_TASKS` bucket under the
//! task ID (CONTRACT §4), and the names that identify tasks, functions and users.

use crate::core::time::Timestamp;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The states of CONTRACT §4.1. Who moves a task into and out of each one is in [`crate::core::machine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Status {
    /// Accepted and waiting, also while delayed. In: intake (or the dispatcher when it sees the
    /// submission first). Out: the dispatcher (`Dequeued`, `Expired`, `Invalid`) or a stop.
    Enqueued,
    /// Taken by a dispatcher, waiting for a concurrency or rate slot. Out: `Running`, a stop, age.
    Dequeued,
    /// An attempt is in flight. Out: the attempt's outcome, or a stop (`Stopping`).
    Running,
    /// The last attempt failed or was throttled; waiting for the backoff. Out: like `Enqueued`.
    Retrying,
    /// Stop requested while running; the dispatcher holding the attempt aborts it.
    Stopping,
    Succeeded,
    Failed,
    Stopped,
    Expired,
    Invalid,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Enqueued,
        Status::Dequeued,
        Status::Running,
        Status::Retrying,
        Status::Stopping,
        Status::Succeeded,
        Status::Failed,
        Status::Stopped,
        Status::Expired,
        Status::Invalid,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Stopped | Status::Expired | Status::Invalid
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enqueued => "Enqueued",
            Status::Dequeued => "Dequeued",
            Status::Running => "Running",
            Status::Retrying => "Retrying",
            Status::Stopping => "Stopping",
            Status::Succeeded => "Succeeded",
            Status::Failed => "Failed",
            Status::Stopped => "Stopped",
            Status::Expired => "Expired",
            Status::Invalid => "Invalid",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[A-Za-z0-9_-]{1,max}`: the alphabet of task IDs, function names and users in subjects and keys.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn valid_task_id(id: &str) -> bool {
    is_name(id, 128)
}

pub fn valid_function_name(name: &str) -> bool {
    is_name(name, 64)
}

pub fn valid_user(user: &str) -> bool {
    is_name(user, 128)
}

/// A new time-ordered task ID (UUIDv7, simple form).
pub fn new_task_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The ID of a task submitted over NATS without `Nats-Msg-Id`: derived from its stream sequence,
/// so that every redelivery of the message names the same task.
pub fn id_from_sequence(seq: u64) -> String {
    format!("seq-{seq}")
}

/// The error kinds of CONTRACT §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ErrorType {
    FunctionError,
    Timeout,
    Unreachable,
    Throttled,
    Stopped,
    Expired,
    Invalid,
}

/// A task's last failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskError {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
}

impl TaskError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
        }
    }
}

/// One timestamped transition in a record's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventEntry {
    pub status: Status,
    pub at: Timestamp,
    pub detail: Option<String>,
}

/// Bytes shown as UTF-8 text when they are, base64 otherwise (CONTRACT §4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub text: Option<String>,
    pub base64: Option<String>,
    pub truncated: bool,
}

impl Encoded {
    /// Encodes `bytes`, cut to `cap` bytes first when longer (a UTF-8 cut backs off to a character
    /// boundary so that text stays text).
    pub fn encode(bytes: &[u8], cap: usize) -> Encoded {
        let truncated = bytes.len() > cap;
        let mut cut = &bytes[..bytes.len().min(cap)];
        if truncated {
            if let Err(e) = std::str::from_utf8(cut) {
                if e.error_len().is_none() && std::str::from_utf8(&cut[..e.valid_up_to()]).is_ok() {
                    cut = &cut[..e.valid_up_to()];
                }
            }
        }
        match std::str::from_utf8(cut) {
            Ok(s) => Encoded {
                text: Some(s.to_string()),
                base64: None,
                truncated,
            },
            Err(_) => Encoded {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(cut)),
                truncated,
            },
        }
    }

    pub fn decode(text: Option<&str>, b64: Option<&str>) -> Vec<u8> {
        match (text, b64) {
            (Some(t), _) => t.as_bytes().to_vec(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The stored record of a task. Fields after `events` are jetask's own bookkeeping: they are kept
/// in the bucket so that any replica can carry the task on, and left out of API answers (see
/// [`TaskRecord::to_view`]); the OpenAPI schema (`Task`) is the view, so it ignores them too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Task)]
pub struct TaskRecord {
    pub id: String,
    pub function: String,
    pub user: String,
    pub status: Status,
    pub created_at: Timestamp,
    pub not_before: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub attempts: u32,
    pub duration_ms: Option<u64>,
    pub queue_ms: Option<u64>,
    pub input_size: usize,
    pub result: Option<String>,
    pub result_base64: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub result_truncated: bool,
    pub error: Option<TaskError>,
    /// Where the finished task is delivered, and how that went (written by the delivery).
    #[schema(schema_with = destination_schema)]
    pub destination: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    /// Last heartbeat of a long task's attempt (CONTRACT §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Timestamp>,
    pub events: Vec<EventEntry>,

    /// Stream sequence of the submission that owns this record: another message carrying the
    /// same ID is a duplicate.
    #[schema(ignore)]
    pub seq: u64,
    /// When the next attempt may start (backoff or `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub next_attempt_at: Option<Timestamp>,
    /// Start of the attempt in flight, for `duration_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub attempt_started_at: Option<Timestamp>,
    /// The attempt in flight answered `202` + `Jetask-Async: true`: the function reports its end.
    #[serde(default, skip_serializing_if = "is_false")]
    #[schema(ignore)]
    pub async_attempt: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub callback: Option<String>,
    /// The replica running the attempt in flight: a delivery of the submission that finds the
    /// task `Running` waits while that replica is alive, instead of taking the attempt as lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub holder: Option<String>,
    /// Only with `?include_input=true`: the input when it is UTF-8 (else `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Only with `?include_input=true`: the input as base64 when it is not UTF-8 (else `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_base64: Option<String>,
}

/// The schema of a record's `destination`: `null`, or the delivery's target and outcome.
fn destination_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let delivery = ObjectBuilder::new()
        .property("target", ObjectBuilder::new().schema_type(Type::String))
        .required("target")
        .property(
            "status",
            ObjectBuilder::new().schema_type(Type::String).enum_values(Some([
                "Pending",
                "Retrying",
                "Delivered",
                "Failed",
            ])),
        )
        .required("status")
        .property(
            "attempts",
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)),
        )
        .required("attempts")
        .property("last_error", ObjectBuilder::new().schema_type(Type::String))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(delivery)
        .into()
}

/// Bookkeeping fields that API answers never show.
const INTERNAL_FIELDS: [&str; 8] = [
    "seq",
    "async_attempt",
    "holder",
    "next_attempt_at",
    "attempt_started_at",
    "content_type",
    "traceparent",
    "callback",
];

impl TaskRecord {
    /// The moment a waiting task (delayed, or backing off between attempts) is next due.
    pub fn waiting_until(&self) -> Option<Timestamp> {
        match self.status {
            Status::Enqueued | Status::Dequeued | Status::Retrying => self.next_attempt_at.or(self.not_before),
            _ => None,
        }
    }

    /// The record as clients see it: without bookkeeping, and with the input only when asked.
    pub fn to_view(&self, include_input: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = v.as_object_mut() {
            for k in INTERNAL_FIELDS {
                map.remove(k);
            }
            if include_input {
                map.entry("input").or_insert(serde_json::Value::Null);
                map.entry("input_base64").or_insert(serde_json::Value::Null);
            } else {
                map.remove("input");
                map.remove("input_base64");
            }
        }
        v
    }

    /// The record serialized once for one write: the value stored (see [`Serialized::record`])
    /// and the bodies of all its events, which are the record without bookkeeping and input and
    /// differ only in `status`, each naming its own state (see [`Serialized::event`]).
    /// Serialized directly, without an intermediate JSON tree: this is on every write's path.
    pub fn serialized(&self) -> Serialized {
        // Every field by name: one added to the record does not compile here until it is placed
        // in one of the three objects below (left out, it would silently never be stored).
        let TaskRecord {
            id,
            function,
            user,
            status,
            created_at,
            not_before,
            started_at,
            finished_at,
            attempts,
            duration_ms,
            queue_ms,
            input_size,
            result,
            result_base64,
            result_truncated,
            error,
            destination,
            replay_of,
            triggered_by,
            heartbeat_at,
            events,
            seq,
            next_attempt_at,
            attempt_started_at,
            async_attempt,
            content_type,
            traceparent,
            callback,
            holder,
            input,
            input_base64,
        } = self;
        #[derive(Serialize)]
        struct Head<'a> {
            id: &'a str,
            function: &'a str,
            user: &'a str,
        }
        /// What follows `status`, in the record's order.
        #[derive(Serialize)]
        struct Rest<'a> {
            created_at: Timestamp,
            not_before: Option<Timestamp>,
            started_at: Option<Timestamp>,
            finished_at: Option<Timestamp>,
            attempts: u32,
            duration_ms: Option<u64>,
            queue_ms: Option<u64>,
            input_size: usize,
            result: &'a Option<String>,
            result_base64: &'a Option<String>,
            #[serde(skip_serializing_if = "is_false")]
            result_truncated: bool,
            error: &'a Option<TaskError>,
            destination: &'a Option<serde_json::Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            replay_of: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            triggered_by: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            heartbeat_at: Option<Timestamp>,
            events: &'a [EventEntry],
        }
        let mut head = Vec::with_capacity(64 + id.len() + function.len() + user.len());
        let head_written = serde_json::to_writer(&mut head, &Head { id, function, user });
        let mut rest = Vec::with_capacity(512 + 96 * events.len());
        let rest_written = serde_json::to_writer(
            &mut rest,
            &Rest {
                created_at: *created_at,
                not_before: *not_before,
                started_at: *started_at,
                finished_at: *finished_at,
                attempts: *attempts,
                duration_ms: *duration_ms,
                queue_ms: *queue_ms,
                input_size: *input_size,
                result,
                result_base64,
                result_truncated: *result_truncated,
                error,
                destination,
                replay_of,
                triggered_by,
                heartbeat_at: *heartbeat_at,
                events,
            },
        );
        /// The bookkeeping and the input, after `events`: the fields only the stored value has,
        /// with [`TaskRecord`]'s own rules for leaving them out.
        #[derive(Serialize)]
        struct Tail<'a> {
            seq: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_attempt_at: Option<Timestamp>,
            #[serde(skip_serializing_if = "Option::is_none")]
            attempt_started_at: Option<Timestamp>,
            #[serde(skip_serializing_if = "is_false")]
            async_attempt: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            content_type: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            traceparent: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            callback: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            holder: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            input: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            input_base64: &'a Option<String>,
        }
        let input_len = input.as_ref().or(input_base64.as_ref()).map_or(0, String::len);
        let mut tail = Vec::with_capacity(128 + input_len);
        let tail_written = serde_json::to_writer(
            &mut tail,
            &Tail {
                seq: *seq,
                next_attempt_at: *next_attempt_at,
                attempt_started_at: *attempt_started_at,
                async_attempt: *async_attempt,
                content_type,
                traceparent,
                callback,
                holder,
                input,
                input_base64,
            },
        );
        Serialized {
            status: *status,
            head,
            rest,
            tail,
            error: [head_written, rest_written, tail_written]
                .into_iter()
                .find_map(Result::err)
                .map(|e| e.to_string()),
        }
    }

    pub fn input_bytes(&self) -> Vec<u8> {
        Encoded::decode(self.input.as_deref(), self.input_base64.as_deref())
    }

    pub fn last_event(&self) -> Option<&EventEntry> {
        self.events.last()
    }
}

/// A record serialized once for one write (see [`TaskRecord::serialized`]), in three JSON
/// objects: the fields before `status` (`{"id":…,"user":…}`), those after it that events show
/// (`{"created_at":…,"events":[…]}`), and the bookkeeping and input only the stored value has
/// (`{"seq":…}`). Joined, they are exactly what serializing the whole record gives.
pub struct Serialized {
    status: Status,
    head: Vec<u8>,
    rest: Vec<u8>,
    tail: Vec<u8>,
    /// Why serializing failed, if it did (no field of a record can fail today; a value that is
    /// not whole JSON must still never be stored).
    error: Option<String>,
}

impl Serialized {
    /// Why the record could not be serialized: then [`Self::record`] is not to be stored.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The event body announcing `status`: the record without bookkeeping and input, with
    /// `status` between the first two objects.
    pub fn event(&self, status: Status) -> Vec<u8> {
        self.join(status, None)
    }

    /// The value stored: the whole record.
    pub fn record(&self) -> Vec<u8> {
        self.join(self.status, Some(&self.tail))
    }

    fn join(&self, status: Status, tail: Option<&[u8]>) -> Vec<u8> {
        let head = self.head.strip_suffix(b"}").unwrap_or(b"{");
        let rest = self.rest.strip_prefix(b"{").unwrap_or(b"}");
        let tail = tail.map(|t| t.strip_prefix(b"{").unwrap_or(b"}"));
        let mut out = Vec::with_capacity(head.len() + rest.len() + tail.map_or(0, <[u8]>::len) + 32);
        out.extend_from_slice(head);
        out.extend_from_slice(b",\"status\":");
        let _ = serde_json::to_writer(&mut out, &status);
        out.push(b',');
        match tail {
            // `rest` ends with its closing brace, where the tail's fields go on.
            Some(tail) => {
                out.extend_from_slice(rest.strip_suffix(b"}").unwrap_or(rest));
                out.push(b',');
                out.extend_from_slice(tail);
            }
            None => out.extend_from_slice(rest),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract_alphabet() {
        assert!(valid_task_id("job-42_A"));
        assert!(valid_task_id(&"a".repeat(128)));
        assert!(!valid_task_id(&"a".repeat(129)));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a.b"));
        assert!(!valid_task_id("a b"));
        assert!(valid_function_name(&"f".repeat(64)));
        assert!(!valid_function_name(&"f".repeat(65)));
        assert!(!valid_function_name("a>"));
    }

    #[test]
    fn generated_ids_are_valid_and_time_ordered() {
        let a = new_task_id();
        let b = new_task_id();
        assert!(valid_task_id(&a) && a.len() == 32);
        assert!(a < b || a[..12] == b[..12]);
    }

    #[test]
    fn results_are_text_when_utf8_and_base64_otherwise() {
        let e = Encoded::encode(b"hello", 100);
        assert_eq!(e.text.as_deref(), Some("hello"));
        assert!(e.base64.is_none() && !e.truncated);
        let e = Encoded::encode(&[0xff, 0x00, 0x01], 100);
        assert_eq!(e.base64.as_deref(), Some("/wAB"));
        assert_eq!(Encoded::decode(None, e.base64.as_deref()), vec![0xff, 0, 1]);
    }

    #[test]
    fn results_over_the_cap_are_cut_and_marked() {
        let e = Encoded::encode("ééé".as_bytes(), 3);
        assert_eq!(e.text.as_deref(), Some("é"));
        assert!(e.truncated);
    }

    #[test]
    fn events_show_what_the_api_shows_with_their_own_status() {
        let r = crate::core::machine::create(
            crate::core::machine::NewTask {
                content_type: Some("text/plain".into()),
                ..crate::core::machine::NewTask::new("t", "f", "u", 9, b"secret input".to_vec())
            },
            None,
            Timestamp(0),
        )
        .record;
        let bodies = r.serialized();
        let event: serde_json::Value = serde_json::from_slice(&bodies.event(Status::Dequeued)).unwrap();
        let mut view = r.to_view(false);
        view["status"] = "Dequeued".into();
        assert_eq!(event, view);
        assert!(event.get("input").is_none() && event.get("seq").is_none());
        // Byte for byte, in the record's order: the body is spliced around `status`.
        let body = String::from_utf8(bodies.event(Status::Dequeued)).unwrap();
        assert_eq!(body, serde_json::to_string(&view).unwrap());
        for s in Status::ALL {
            view["status"] = s.as_str().into();
            assert_eq!(bodies.event(s), serde_json::to_vec(&view).unwrap(), "{s}");
        }
    }

    #[test]
    fn the_stored_value_is_the_record_serialized_whole() {
        let new = |input: Vec<u8>| {
            crate::core::machine::create(
                crate::core::machine::NewTask::new("t", "f", "u", 9, input),
                None,
                Timestamp(0),
            )
            .record
        };
        let bare = new(Vec::new());
        let mut full = new(vec![0xff, 0x00]);
        full.status = Status::Running;
        full.next_attempt_at = Some(Timestamp(5));
        full.attempt_started_at = Some(Timestamp(6));
        full.async_attempt = true;
        full.content_type = Some("text/\"plain\"".into());
        full.traceparent = Some("00-ab-cd-01".into());
        full.callback = Some("nats:done".into());
        full.holder = Some("replica-1".into());
        full.result_truncated = true;
        full.heartbeat_at = Some(Timestamp(7));
        full.replay_of = Some("t0".into());
        full.error = Some(TaskError::new(ErrorType::Timeout, "slow"));
        let mut text = new("hello \u{e9} \"quoted\"".as_bytes().to_vec());
        text.input_base64 = None;
        for r in [bare, full, text] {
            let stored = r.serialized().record();
            assert_eq!(
                String::from_utf8(stored.clone()).unwrap(),
                serde_json::to_string(&r).unwrap()
            );
            let back: TaskRecord = serde_json::from_slice(&stored).unwrap();
            assert_eq!(serde_json::to_vec(&back).unwrap(), stored);
        }
    }

    #[test]
    fn status_names_parse_back() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("nope"), None);
    }
}
