//! Smaller defects found by trying jetask as an adversarial user would (issue 15 §5): oversized
//! headers, nonsense `Retry-After`, endpoint URLs the URL parser forgives, replay idempotency.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::Duration;
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

#[tokio::test]
async fn a_nonsense_retry_after_falls_back_to_a_backoff_that_grows() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::code(503).with_header("Retry-After", "-5")).await;
    app.put_fn(
        "busy",
        json!({"endpoint": rx.url(), "backoff": {"initial": "100ms", "multiplier": 2, "max": "10s", "jitter": false}}),
    )
    .await;
    let id = app.submit("busy", "x", &[]).await;
    // Backoffs of 0.1, 0.2, 0.4, 0.8 s: five calls in about 1.5 s (a fixed 0.1 s would make
    // fifteen).
    let calls = rx.wait_calls(5, T).await;
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps[3] >= gaps[0] * 4,
        "gaps do not grow: {gaps:?}; {}",
        app.task(&id).await.unwrap()
    );
    assert!(gaps[3] >= Duration::from_millis(700), "{gaps:?}");
    app.stop().await;
}

#[tokio::test]
async fn endpoint_urls_the_url_parser_would_forgive_are_refused_naming_the_key() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let huge = format!("http://x.test/{}", "a".repeat(3 << 20));
    for url in [
        "http:///x",
        " http://x.test/",
        "http://x.test/ ",
        "http://",
        huge.as_str(),
    ] {
        let a = app
            .send(
                app.http
                    .put(format!("{}/v1/functions/f", app.base))
                    .json(&json!({ "endpoint": url })),
            )
            .await;
        assert_eq!(a.status, 400, "{}: {}", &url[..url.len().min(30)], a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("endpoint"), "{message}");
        assert!(message.len() < 300, "the answer quotes a {} byte URL", url.len());
    }
    app.stop().await;
}

#[tokio::test]
async fn replays_with_one_idempotency_key_make_one_task() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|c, _| {
        if c.body == b"fail" {
            Reply::code(400)
        } else {
            Reply::ok("ok")
        }
    })
    .await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = app.submit("f", "fail", &[]).await;
    app.wait_status(&id, "Failed", T).await;
    let path = format!("/v1/tasks/{id}/replay");

    // Twenty at once with one key: one new task, every answer naming it.
    let answers = futures::future::join_all((0..20).map(|_| app.post(&path, "", &[("Idempotency-Key", "k1")]))).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|a| {
            assert!((200..300).contains(&a.status), "{} {}", a.status, a.body);
            a.body["task_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let new_id = ids.into_iter().next().unwrap();
    assert_ne!(new_id, id);
    app.wait_status(&new_id, "Failed", T).await;
    // Later, the same key answers the same task, as a duplicate submission does.
    let again = app.post(&path, "", &[("Idempotency-Key", "k1")]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["task_id"], new_id.as_str());
    assert_eq!(again.body["duplicate"], true);
    // Another key is another replay; no key, a new one each time.
    let other = app.post(&path, "", &[("Idempotency-Key", "k2")]).await;
    assert_eq!(other.status, 202);
    assert_ne!(other.body["task_id"], new_id.as_str());
    let bad = app.post(&path, "", &[("Idempotency-Key", "no spaces")]).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Idempotency-Key"));
    // Exactly three calls: the original, the k1 replay, the k2 replay.
    wait_for("three tasks listed", T, || async {
        app.get("/v1/tasks?function=f&limit=100").await.body["tasks"]
            .as_array()
            .unwrap()
            .len()
            >= 3
    })
    .await;
    let lists = app.get("/v1/tasks?function=f&limit=100").await;
    let replays = lists.body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["replay_of"] == id.as_str())
        .count();
    assert_eq!(replays, 2, "{}", lists.body);
    app.stop().await;
}
