//! Submits tasks over plain NATS, as any NATS client can, and follows their events:
//! `cargo run --example submit_nats -- FUNCTION [COUNT] [NATS_URL]`; a server with
//! authorization takes the user and password in the URL (`nats://alice:PASSWORD@host:4222`).
//!
//! Each task is a JetStream publish on `jetask.submit.<function>` with its ID as `Nats-Msg-Id`;
//! the PubAck means it is durably accepted. Events arrive on `jetask.events.<function>.<state>`.

use futures::StreamExt;
use std::collections::HashSet;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let function = args.next().ok_or("usage: submit_nats FUNCTION [COUNT] [NATS_URL]")?;
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(3);
    let url = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());

    // async-nats does not send the credentials of a URL by itself.
    let addr: async_nats::ServerAddr = url.parse()?;
    let options = match (addr.username(), addr.password()) {
        (Some(u), Some(p)) => async_nats::ConnectOptions::with_user_and_password(u.into(), p.into()),
        _ => async_nats::ConnectOptions::new(),
    };
    let client = options.connect(addr).await?;
    let mut events = client.subscribe(format!("jetask.events.{function}.>")).await?;
    client.flush().await?;
    let js = async_nats::jetstream::new(client);

    let mut pending = HashSet::new();
    for i in 0..count {
        let id = format!("example-{}-{i}", std::process::id());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        headers.insert("Content-Type", "text/plain");
        let ack = js
            .publish_with_headers(
                format!("jetask.submit.{function}"),
                headers,
                format!("hello {i}").into(),
            )
            .await?
            .await?;
        println!(
            "submitted {id} (stream sequence {}, duplicate: {})",
            ack.sequence, ack.duplicate
        );
        pending.insert(id);
    }
    while !pending.is_empty() {
        let Some(msg) = events.next().await else { break };
        let record: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        let id = record["id"].as_str().unwrap_or_default().to_string();
        let status = record["status"].as_str().unwrap_or_default();
        println!("{id}: {status}");
        if matches!(status, "Succeeded" | "Failed" | "Stopped" | "Expired" | "Invalid") {
            if let Some(r) = record["result"].as_str() {
                println!("  result: {r}");
            }
            pending.remove(&id);
        }
    }
    Ok(())
}
