//! Readable text for the API's answers (the default output; `--json` prints them as they are).

use serde_json::Value;

/// Prints `v` as pretty JSON or as `text` makes it.
pub(super) fn print(json: bool, v: &Value, text: impl FnOnce(&Value) -> String) {
    if json {
        line(&serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        line(&text(v));
    }
}

/// Prints a line on stdout. A reader that went away (`jetask task list | head -1`) is no error
/// to report: the rest of the output is not wanted.
pub(super) fn line(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// A value as text: `-` for null, strings without quotes.
pub(super) fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A task record as readable text.
pub fn task_text(t: &Value) -> String {
    let mut out = format!(
        "task {}  function {}  user {}\nstatus: {}  attempts: {}  queue: {} ms  run: {} ms\ncreated {}  started {}  finished {}\n",
        s(&t["id"]), s(&t["function"]), s(&t["user"]), s(&t["status"]), s(&t["attempts"]),
        s(&t["queue_ms"]), s(&t["duration_ms"]), s(&t["created_at"]), s(&t["started_at"]), s(&t["finished_at"])
    );
    if !t["result"].is_null() {
        out.push_str(&format!("result: {}\n", s(&t["result"])));
    } else if !t["result_base64"].is_null() {
        out.push_str(&format!("result (base64): {}\n", s(&t["result_base64"])));
    }
    if !t["error"].is_null() {
        out.push_str(&format!(
            "error: {}: {}\n",
            s(&t["error"]["type"]),
            s(&t["error"]["message"])
        ));
    }
    out.push_str("history:\n");
    for e in t["events"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {:<10} {}\n",
            s(&e["at"]),
            s(&e["status"]),
            if e["detail"].is_null() {
                String::new()
            } else {
                s(&e["detail"])
            }
        ));
    }
    out.trim_end().to_string()
}

pub(super) fn list_text(v: &Value) -> String {
    let mut out = format!(
        "{:<36} {:<16} {:<10} {:<8} {}\n",
        "ID", "FUNCTION", "STATUS", "ATTEMPTS", "CREATED"
    );
    for t in v["tasks"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<36} {:<16} {:<10} {:<8} {}\n",
            s(&t["id"]),
            s(&t["function"]),
            s(&t["status"]),
            s(&t["attempts"]),
            s(&t["created_at"])
        ));
    }
    if let Some(c) = v["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {c}\n"));
    }
    out.trim_end().to_string()
}

pub(super) fn function_text(f: &Value) -> String {
    let mut out = format!("function {}  endpoint {}\n", s(&f["name"]), s(&f["endpoint"]));
    for k in [
        "enabled",
        "task_mode",
        "timeout",
        "max_attempts",
        "max_event_age",
        "heartbeat_timeout",
        "on_success",
        "on_failure",
    ] {
        out.push_str(&format!("  {k}: {}\n", s(&f[k])));
    }
    out.push_str(&format!(
        "  backoff: {}\n  concurrency: {}\n",
        f["backoff"], f["concurrency"]
    ));
    for k in [
        "rate_limit",
        "user_rate_limit",
        "queued",
        "running",
        "delayed",
        "signing_secret",
    ] {
        if !f[k].is_null() {
            out.push_str(&format!("  {k}: {}\n", s(&f[k])));
        }
    }
    out.trim_end().to_string()
}

pub(super) fn schedule_text(v: &Value) -> String {
    let when = if v["cron"].is_null() {
        format!("every {}", s(&v["every"]))
    } else {
        format!("cron {:?} {}", s(&v["cron"]), s(&v["time_zone"]))
    };
    format!(
        "schedule {}  function {}  {when}\n  enabled: {}  catch_up: {}\n  next: {}  last: {}",
        s(&v["name"]),
        s(&v["function"]),
        s(&v["enabled"]),
        s(&v["catch_up"]),
        s(&v["next_fire_at"]),
        s(&v["last_fired_at"])
    )
}

/// What a bulk stop or replay did.
pub(super) fn bulk_text(verb: &str, v: &Value) -> String {
    let mut out = format!(
        "matched {}, {verb} {}, skipped {}, failed {}",
        v["matched"], v["acted"], v["skipped"], v["failed"]
    );
    if let Some(errors) = v["errors"].as_array() {
        for e in errors {
            out.push_str(&format!("\n  {}: {}", s(&e["task_id"]), s(&e["error"]["message"])));
        }
    }
    out
}
