//! Property tests of every parser of outside input (issue 15 §6): whatever it is given, it
//! does not panic, and every refusal names the field, header or key at fault.
#![allow(clippy::unwrap_used)]

use jetask::core::config::{Config, ConfigError};
use jetask::core::duration::Dur;
use jetask::core::function::{self, Endpoint};
use jetask::core::header_block;
use jetask::core::retry::parse_retry_after;
use jetask::core::schedule::Schedule;
use jetask::core::submission;
use jetask::core::task::TaskRecord;
use jetask::core::time::Timestamp;
use jetask::engine::poison;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const WEEK: Duration = Duration::from_secs(7 * 86400);
const NOW: Timestamp = Timestamp(1_800_000_000_000);

/// The headers a submission reads.
const HEADERS: [&str; 10] = [
    "Nats-Msg-Id",
    "Jetask-User",
    "Jetask-Delay",
    "Jetask-Not-Before",
    "Jetask-Callback",
    "Content-Type",
    "traceparent",
    "Jetask-Replay-Of",
    "Jetask-Triggered-By",
    "X-Other",
];

/// Strings near the edge of what parsers accept: printable, unicode, control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "\\PC{0,40}",
        any::<String>(),
        "[0-9]{1,25}(ms|s|m|h|d|w|)",
        "(http|https|nats|function|ftp)(:|://)[ -~]{0,30}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(Z|\\+[0-9]{2}:[0-9]{2}|)",
    ]
}

/// A header block: mostly well formed lines with arbitrary bytes mixed in.
fn header_block_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        (prop::sample::select(HEADERS.to_vec()), text()).prop_map(|(k, v)| format!("{k}: {v}").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..40),
        text().prop_map(String::into_bytes),
    ];
    (any::<bool>(), prop::collection::vec(line, 0..8)).prop_map(|(version, lines)| {
        let mut b = if version { b"NATS/1.0\r\n".to_vec() } else { Vec::new() };
        for l in lines {
            b.extend(l);
            b.extend(b"\r\n");
        }
        b.extend(b"\r\n");
        b
    })
}

/// A JSON value of a few levels, for spec, schedule and record bodies.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::hash_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are mostly the known ones of `keys`.
fn object_with(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![4 => prop::sample::select(keys.to_vec()).prop_map(str::to_string), 1 => text()];
    prop::collection::hash_map(key, json_value(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    // No regression files: a failure prints its minimal input, to be kept as a unit test.
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_header_block_never_panics_and_its_fault_names_a_header(block in header_block_bytes()) {
        let read = header_block::read(&block);
        if let Some(f) = &read.fault {
            prop_assert!(!f.field.is_empty());
            prop_assert!(f.to_string().starts_with(&f.field));
            prop_assert!(f.to_string().len() < 400, "{}", f);
        }
        // Whatever it is, a flagged submission is Invalid, with an ID a record can have.
        let egress = jetask::core::egress::Policy::default();
        let rules = jetask::core::destination::Rules { nats_allow: &[], egress: &egress };
        let p = poison::from_block("f", &read, "unreadable", b"in", 9, NOW, WEEK, 1024, &rules);
        prop_assert!(p.invalid.is_some());
        prop_assert!(jetask::core::task::valid_task_id(&p.task.id), "{}", p.task.id);
        prop_assert!(jetask::core::task::valid_user(&p.task.user));
    }

    #[test]
    fn a_submission_never_panics_and_a_refusal_names_its_header(
        headers in prop::collection::hash_map(prop::sample::select(HEADERS.to_vec()), text(), 0..8),
        input in prop::collection::vec(any::<u8>(), 0..64),
        seq in any::<u64>(),
    ) {
        let map: HashMap<&str, String> = headers.into_iter().collect();
        let egress = jetask::core::egress::Policy::default();
        let rules = jetask::core::destination::Rules { nats_allow: &[], egress: &egress };
        let p = submission::from_message("f", |k| map.get(k).map(String::as_str), &input, seq, NOW, WEEK, 32, &rules);
        prop_assert!(jetask::core::task::valid_task_id(&p.task.id), "{}", p.task.id);
        if let Some(why) = p.invalid {
            prop_assert!(
                HEADERS.iter().any(|h| why.starts_with(&format!("{h}: "))) || why.starts_with("input: "),
                "{why}"
            );
        }
    }

    #[test]
    fn ids_users_callbacks_and_content_types_refused_name_their_field(raw in text()) {
        let egress = jetask::core::egress::Policy::default();
        let rules = jetask::core::destination::Rules { nats_allow: &[], egress: &egress };
        for (field, r) in [
            ("Idempotency-Key", submission::check_id("Idempotency-Key", &raw).map(|_| ())),
            ("Jetask-User", submission::check_user("Jetask-User", &raw).map(|_| ())),
            ("Jetask-Callback", submission::check_callback("Jetask-Callback", &raw, &rules).map(|_| ())),
            ("Content-Type", submission::check_content_type("Content-Type", &raw).map(|_| ())),
            ("traceparent", submission::check_traceparent(&raw).map(|_| ())),
        ] {
            if let Err(e) = r {
                prop_assert_eq!(e.field.as_str(), field);
            }
        }
    }

    #[test]
    fn durations_and_times_never_panic_and_a_refusal_names_the_header(raw in text()) {
        let _ = raw.parse::<Dur>();
        let _ = raw.parse::<Timestamp>();
        let _ = parse_retry_after(&raw, NOW);
        for (field, delay, at) in [("Jetask-Delay", true, false), ("Jetask-Not-Before", false, true)] {
            let r = submission::not_before(
                delay.then_some((field, raw.as_str())),
                at.then_some((field, raw.as_str())),
                NOW,
                WEEK,
            );
            if let Err(e) = r {
                prop_assert_eq!(e.field.as_str(), field);
            }
        }
    }

    #[test]
    fn a_retry_after_is_never_longer_than_the_cap(raw in text()) {
        if let Some(d) = parse_retry_after(&raw, NOW) {
            prop_assert!(d <= jetask::core::retry::MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn endpoints_never_panic_and_the_refusal_is_short(raw in prop_oneof![text(), "https?://[ -~]{0,200}"]) {
        match Endpoint::parse(&raw) {
            Ok(e) => prop_assert_eq!(e.as_str(), raw.as_str()),
            Err(why) => prop_assert!(why.len() < 400, "{}", why),
        }
    }

    #[test]
    fn a_function_spec_never_panics_and_a_refusal_names_its_key(
        body in object_with(&[
            "endpoint", "timeout", "max_attempts", "backoff", "max_event_age", "concurrency",
            "rate_limit", "user_rate_limit", "on_success", "on_failure", "task_mode",
            "heartbeat_timeout", "enabled", "signing_secret",
        ]),
    ) {
        if let Err(e) = function::resolve(&body, &json!({}), WEEK) {
            prop_assert!(!e.key.is_empty(), "{}", e);
        }
    }

    #[test]
    fn a_schedule_never_panics_and_a_refusal_names_its_key(
        body in object_with(&["function", "cron", "every", "time_zone", "input", "enabled", "catch_up"]),
        cron in "[0-9*/,\\- ]{0,30}",
    ) {
        let mut with_cron = body.clone();
        with_cron["cron"] = Value::from(cron);
        for b in [body, with_cron] {
            match Schedule::resolve("s", &b, NOW) {
                Ok(s) => {
                    // A valid schedule answers when it is next due without panicking.
                    let _ = s.next_after(NOW);
                    let _ = s.decide(None, NOW);
                }
                Err(e) => prop_assert!(!e.key.is_empty(), "{}", e),
            }
        }
    }

    #[test]
    fn a_config_never_panics_and_a_refusal_names_its_key(
        section in prop::sample::select(vec!["nats", "http", "auth", "limits", "tasks", "log", "dispatch", "defaults", "bogus"]),
        key in prop_oneof!["[a-z_]{1,16}", prop::sample::select(vec![
            "url", "listen", "tokens", "max_payload", "max_result", "retention", "level", "ack_wait",
            "duplicate_window", "replicas", "timeout",
        ]).prop_map(str::to_string)],
        value in prop_oneof![
            "[ -~]{0,20}".prop_map(|s| format!("{s:?}")),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("true".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
        ],
    ) {
        let toml = format!("[{section}]\n{key} = {value}\n");
        match Config::from_toml(&toml) {
            Ok(_) | Err(ConfigError::Syntax { .. }) => {}
            Err(ConfigError::Key { key, .. }) => prop_assert!(!key.is_empty()),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn a_stored_record_never_panics_to_decode(bytes in prop::collection::vec(any::<u8>(), 0..200), body in json_value()) {
        let _ = serde_json::from_slice::<TaskRecord>(&bytes);
        let _ = serde_json::from_value::<TaskRecord>(body.clone());
        // A real record with one key replaced by anything.
        let mut r = serde_json::to_value(record()).unwrap();
        if let (Some(obj), Some(key)) = (r.as_object_mut(), body.as_str()) {
            obj.insert(key.to_string(), body.clone());
        }
        if let Some(obj) = r.as_object_mut() {
            let first = obj.keys().next().cloned().unwrap();
            obj.insert(first, body);
        }
        if let Ok(decoded) = serde_json::from_value::<TaskRecord>(r) {
            let _ = decoded.to_view(true);
        }
    }
}

fn record() -> TaskRecord {
    let task = jetask::core::machine::NewTask::new("t-1", "f", "u", 1, b"in".to_vec());
    jetask::core::machine::create(task, None, NOW).record
}
