//! `jetask submit` and `jetask task …`: tasks through the HTTP API.

use super::args::{BulkFilter, SubmitArgs, TaskCommand};
use super::client::{urlencode, Client};
use super::render::{bulk_text, line, list_text, print, s, task_text};
use crate::core::duration::Dur;
use crate::core::task::Status;
use anyhow::{bail, Context as _};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// Runs a `task` command; the exit code is the caller's.
pub(super) async fn run(c: &Client, cmd: TaskCommand, json: bool) -> anyhow::Result<i32> {
    match cmd {
        TaskCommand::Wait { id, status, timeout } => return wait(c, &id, status, timeout, json).await,
        TaskCommand::Get { id, include_input } => {
            let v = c.get(&format!("/v1/tasks/{id}?include_input={include_input}")).await?;
            print(json, &v, task_text);
        }
        TaskCommand::List {
            function,
            status,
            user,
            limit,
            cursor,
        } => {
            let mut q = Vec::new();
            for (k, v) in [
                ("function", function),
                ("status", status),
                ("user", user),
                ("limit", limit.map(|l| l.to_string())),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let v = c.get(&format!("/v1/tasks?{}", q.join("&"))).await?;
            print(json, &v, list_text);
        }
        TaskCommand::Replay { id: None, filter, .. } => bulk(c, "replay", "replayed", filter, json).await?,
        TaskCommand::Stop { id: None, filter } => bulk(c, "stop", "stopped", filter, json).await?,
        TaskCommand::Replay {
            id: Some(id), print_id, ..
        } => {
            let (_, v) = c.send(c.http.post(format!("{}/v1/tasks/{id}/replay", c.base))).await?;
            if print_id {
                line(&s(&v["task_id"]));
                return Ok(0);
            }
            print(json, &v, |v| {
                format!(
                    "task {} {} (replay of {})",
                    s(&v["task_id"]),
                    s(&v["status"]),
                    s(&v["replay_of"])
                )
            });
        }
        TaskCommand::Stop { id: Some(id), .. } => {
            let (_, v) = c.send(c.http.post(format!("{}/v1/tasks/{id}/stop", c.base))).await?;
            print(json, &v, |v| format!("task {} is {}", s(&v["id"]), s(&v["status"])));
        }
    }
    Ok(0)
}

/// `jetask task wait`: polls the record until its history has `status` (exit 0), it ended
/// without it (exit 1), or `timeout` passed (an error).
async fn wait(c: &Client, id: &str, status: Status, timeout: Option<Dur>, json: bool) -> anyhow::Result<i32> {
    let since = std::time::Instant::now();
    let t = poll(
        c,
        id,
        None,
        |t| {
            reached(t, status)
                || t["status"]
                    .as_str()
                    .and_then(Status::parse)
                    .is_some_and(Status::is_terminal)
        },
        timeout.map(|d| d.0),
    )
    .await?;
    let Some(t) = t else {
        let now = match c.get(&format!("/v1/tasks/{id}")).await {
            Ok(t) => s(&t["status"]),
            Err(e) if e.to_string().contains("(HTTP 404)") => bail!("no task {id}"),
            Err(e) => return Err(e),
        };
        bail!(
            "task {id} did not reach {status} within {:.1}s: it is {now}",
            since.elapsed().as_secs_f64()
        );
    };
    print(json, &t, task_text);
    Ok(if reached(&t, status) { 0 } else { 1 })
}

/// Whether the record is in `status` or its history went through it.
fn reached(t: &Value, status: Status) -> bool {
    t["status"].as_str() == Some(status.as_str())
        || t["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["status"].as_str() == Some(status.as_str()))
}

/// `POST /v1/tasks:<verb>` with the filter.
async fn bulk(c: &Client, verb: &str, done: &str, filter: BulkFilter, json: bool) -> anyhow::Result<()> {
    let req = c.http.post(format!("{}/v1/tasks:{verb}", c.base)).json(&filter.body());
    let (_, v) = c.send(req).await?;
    print(json, &v, |v| bulk_text(done, v));
    Ok(())
}

/// Submits a task; with `--wait`, waits for its end and exits 0 only when it succeeded.
pub(super) async fn submit(c: &Client, a: SubmitArgs, json: bool) -> anyhow::Result<i32> {
    let mut req = c
        .http
        .post(format!("{}/v1/functions/{}/tasks", c.base, a.function))
        .body(read_input(a.payload.as_deref())?);
    for (name, value) in [
        ("Idempotency-Key", &a.id),
        ("Jetask-Delay", &a.delay),
        ("Jetask-Not-Before", &a.at),
        ("Content-Type", &a.content_type),
    ] {
        if let Some(v) = value {
            req = req.header(name, v);
        }
    }
    let (_, accepted) = c.send(req).await?;
    if a.print_id {
        line(&s(&accepted["task_id"]));
        return Ok(0);
    }
    if !a.wait {
        print(json, &accepted, |v| {
            let dup = if v["duplicate"] == Value::Bool(true) {
                " (duplicate: nothing new runs)"
            } else {
                ""
            };
            format!("task {} {}{dup}", s(&v["task_id"]), s(&v["status"]))
        });
        return Ok(0);
    }
    let t = wait_for_end(c, &s(&accepted["task_id"]), &a.function).await?;
    let status = s(&t["status"]);
    if json {
        print(true, &t, |_| String::new());
    } else if status == "Succeeded" {
        line(t["result"].as_str().or(t["result_base64"].as_str()).unwrap_or(""));
    } else {
        eprintln!("{}", task_text(&t));
    }
    Ok(if status == "Succeeded" { 0 } else { 1 })
}

/// The input: the argument, standard input for `-`, or nothing.
pub(super) fn read_input(payload: Option<&str>) -> anyhow::Result<Vec<u8>> {
    Ok(match payload {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
        Some(p) => p.as_bytes().to_vec(),
        None => Vec::new(),
    })
}

/// Polls the task's record, backing off to 500 ms, until it is in a final state.
async fn wait_for_end(c: &Client, id: &str, function: &str) -> anyhow::Result<Value> {
    let end = |t: &Value| {
        t["status"]
            .as_str()
            .and_then(Status::parse)
            .is_some_and(Status::is_terminal)
    };
    poll(c, id, Some(function), end, None).await?.context("no record")
}

/// Polls the task's record, backing off to 500 ms, until `done` says so (`Some(record)`) or
/// `limit` passes (`None`). A missing record is waited for 5 seconds (it may not be indexed
/// yet); for a task of `function`, the error then names task mode.
async fn poll(
    c: &Client,
    id: &str,
    function: Option<&str>,
    done: impl Fn(&Value) -> bool,
    limit: Option<Duration>,
) -> anyhow::Result<Option<Value>> {
    let mut delay = Duration::from_millis(20);
    let since = std::time::Instant::now();
    loop {
        let t = match c.get(&format!("/v1/tasks/{id}")).await {
            Ok(t) => Some(t),
            // No record: the function runs with task mode off, and there is nothing to wait on.
            Err(e) if e.to_string().contains("(HTTP 404)") && since.elapsed() < Duration::from_secs(5) => None,
            Err(e) if e.to_string().contains("(HTTP 404)") => match function {
                Some(function) => bail!("task {id} has no record to wait on (is task_mode off for {function}?)"),
                None => bail!("no task {id}"),
            },
            Err(e) if e.to_string().contains("(HTTP 5") || e.to_string().contains("cannot reach") => None,
            Err(e) => return Err(e),
        };
        if let Some(t) = t {
            if done(&t) {
                return Ok(Some(t));
            }
        }
        if limit.is_some_and(|l| since.elapsed() >= l) {
            return Ok(None);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
