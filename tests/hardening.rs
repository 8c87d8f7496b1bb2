//! Smaller defects found by trying jetask as an adversarial user would (issue 15 §5): oversized
//! headers, nonsense `Retry-After`, endpoint URLs the URL parser forgives, replay idempotency.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_100_kb_content_type_is_a_client_error_naming_the_header() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("ok")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let huge = format!("text/{}", "a".repeat(100 * 1024));
    let a = app.post("/v1/functions/f/tasks", "x", &[("Content-Type", &huge)]).await;
    assert!((400..500).contains(&a.status), "{} {}", a.status, a.body);
    assert!(a.body.to_string().contains("Content-Type"), "{}", a.body);
    let a = app
        .post(
            "/v1/functions/f/tasks:batch",
            "[{\"input\":1}]",
            &[("Content-Type", &huge)],
        )
        .await;
    assert!((400..500).contains(&a.status), "{} {}", a.status, a.body);
    assert!(a.body.to_string().contains("Content-Type"), "{}", a.body);
    // Over NATS (where JetStream itself refuses headers over 64 KiB), an accepted one too long
    // to pass on makes the task Invalid, naming it.
    let js = nats.jetstream().await;
    let long = format!("text/{}", "a".repeat(8 * 1024));
    publish(&js, "f", b"x", &[("Nats-Msg-Id", "big-ct"), ("Content-Type", &long)]).await;
    let t = app.wait_status("big-ct", "Invalid", T).await;
    assert!(
        t["error"]["message"].as_str().unwrap().starts_with("Content-Type"),
        "{t}"
    );
    // And an ordinary task still runs.
    let id = app.submit("f", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    app.stop().await;
}
