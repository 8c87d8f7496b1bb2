//! `jetask fn …`: functions through the HTTP API.

use super::args::FnCommand;
use super::client::Client;
use super::render::{function_text, print, s};
use anyhow::{bail, Context as _};
use serde_json::Value;

pub(super) async fn run(c: &Client, cmd: FnCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        put @ FnCommand::Put { .. } => {
            let (name, body) = put_body(put)?;
            let (_, v) = c
                .send(c.http.put(format!("{}/v1/functions/{name}", c.base)).json(&body))
                .await?;
            print(json, &v, function_text);
        }
        FnCommand::Get { name } => {
            let v = c.get(&format!("/v1/functions/{name}")).await?;
            print(json, &v, function_text);
        }
        FnCommand::List => {
            let v = c.get("/v1/functions").await?;
            print(json, &v, function_list_text);
        }
        FnCommand::Delete { name } => {
            c.send(c.http.delete(format!("{}/v1/functions/{name}", c.base))).await?;
            if json {
                super::render::line(&serde_json::json!({"deleted": name}).to_string());
            } else {
                super::render::line(&format!("function {name} deleted"));
            }
        }
    }
    Ok(())
}

/// The function's name and its `PUT` body: `--policy`'s JSON object with the flags over it.
fn put_body(cmd: FnCommand) -> anyhow::Result<(String, Value)> {
    let FnCommand::Put {
        name,
        endpoint,
        timeout,
        max_attempts,
        max_event_age,
        concurrency,
        disabled,
        no_task_mode,
        policy,
    } = cmd
    else {
        bail!("not a put");
    };
    let mut body = match policy {
        Some(p) => serde_json::from_str::<Value>(&p).context("--policy is not JSON")?,
        None => serde_json::json!({}),
    };
    if !body.is_object() {
        bail!("--policy must be a JSON object, e.g. '{{\"backoff\": {{\"initial\": \"2s\"}}}}'");
    }
    body["endpoint"] = endpoint.into();
    if let Some(t) = timeout {
        body["timeout"] = t.into();
    }
    if let Some(m) = max_attempts {
        body["max_attempts"] = m.into();
    }
    if let Some(m) = max_event_age {
        body["max_event_age"] = m.into();
    }
    if let Some(n) = concurrency {
        body["concurrency"] = serde_json::json!({"max": n});
    }
    if disabled {
        body["enabled"] = false.into();
    }
    if no_task_mode {
        body["task_mode"] = false.into();
    }
    Ok((name, body))
}

/// The function list as a table.
fn function_list_text(v: &Value) -> String {
    let mut out = format!("{:<24} {:<8} {}\n", "NAME", "ENABLED", "ENDPOINT");
    for f in v["functions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<24} {:<8} {}\n",
            s(&f["name"]),
            s(&f["enabled"]),
            s(&f["endpoint"])
        ));
    }
    out.trim_end().to_string()
}
