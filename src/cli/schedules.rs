//! `jetask schedule …`: schedules through the HTTP API.

use super::args::ScheduleCommand;
use super::client::Client;
use super::render::{print, schedule_text};
use serde_json::Value;

pub(super) async fn run(c: &Client, cmd: ScheduleCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::Put {
            name,
            function,
            cron,
            every,
            time_zone,
            input,
            disabled,
            no_catch_up,
        } => {
            let input = input.map(|i| serde_json::from_str::<Value>(&i).unwrap_or(Value::String(i)));
            let body = serde_json::json!({
                "function": function, "cron": cron, "every": every, "time_zone": time_zone,
                "input": input, "enabled": !disabled, "catch_up": !no_catch_up,
            });
            let (_, v) = c
                .send(c.http.put(format!("{}/v1/schedules/{name}", c.base)).json(&body))
                .await?;
            print(json, &v, schedule_text);
        }
        ScheduleCommand::Get { name } => {
            let v = c.get(&format!("/v1/schedules/{name}")).await?;
            print(json, &v, schedule_text);
        }
        ScheduleCommand::List => {
            let v = c.get("/v1/schedules").await?;
            print(json, &v, |v| {
                v["schedules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(schedule_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ScheduleCommand::Delete { name } => {
            c.send(c.http.delete(format!("{}/v1/schedules/{name}", c.base))).await?;
            if json {
                super::render::line(&serde_json::json!({"deleted": name}).to_string());
            } else {
                super::render::line(&format!("schedule {name} deleted"));
            }
        }
    }
    Ok(())
}
