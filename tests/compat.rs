//! Compatibility with NATS clients that know nothing of jetask: nats-py submits with plain
//! JetStream publishes and follows the event subjects.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn a_python_nats_client_submits_and_follows_a_task() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: [b"py:".as_slice(), &c.body].concat(),
        headers: vec![],
    })
    .await;
    app.put_fn("pyfn", json!({"endpoint": rx.url()})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/submit.py");
    let url = nats.url.clone();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args([script, &url, "pyfn", "py-1", "hello"])
            .output(),
    )
    .await
    .expect("python client finished")
    .expect("python3 runs (nats-py is installed by .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["puback"]["stream"], "JETASK_SUBMIT");
    assert_eq!(lines[0]["puback"]["duplicate"], false);
    let events: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(events.first(), Some(&"Enqueued"));
    assert_eq!(events.last(), Some(&"Succeeded"));
    let record = &lines.last().unwrap()["record"];
    assert_eq!(record["result"], "py:hello");
    assert_eq!(record["user"], "py");
    assert_eq!(rx.calls()[0].header("content-type"), Some("text/plain"));
    app.stop().await;
}
