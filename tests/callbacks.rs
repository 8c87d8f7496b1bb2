//! Results out: signed webhooks (checked by an independent implementation), retries until the
//! receiver takes them, NATS subjects, function chains, per-task callbacks, and the NATS API's
//! parity with HTTP.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

/// Checks a Standard Webhooks signature with Python's hmac, hashlib and base64.
fn python_verifies(secret: &str, id: &str, ts: &str, body: &[u8], signature: &str) -> bool {
    let script = r#"
import base64, hashlib, hmac, sys
secret, msg_id, ts, sig = sys.argv[1:5]
body = sys.stdin.buffer.read()
key = base64.b64decode(secret[len("whsec_"):])
mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
expected = "v1," + base64.b64encode(mac).decode()
sys.exit(0 if any(hmac.compare_digest(expected, s) for s in sig.split()) else 1)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, id, ts, signature])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[tokio::test]
async fn a_webhook_is_signed_and_retried_until_the_receiver_takes_it_once() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let hook = Receiver::start(|_, n| if n < 2 { Reply::code(500) } else { Reply::ok("thanks") }).await;
    let func = Receiver::start(|_, _| Reply::ok("the result")).await;
    let put = app
        .put_fn(
            "signed",
            json!({"endpoint": func.url(), "on_success": hook.url(), "backoff": {"initial": "100ms", "jitter": false}}),
        )
        .await;
    let secret = put.body["signing_secret"].as_str().unwrap().to_string();
    let id = app.submit("signed", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    wait_for("the delivery to be recorded", T, || async {
        app.task(&id)
            .await
            .is_some_and(|t| t["destination"]["status"] == "Delivered")
    })
    .await;
    let t = app.task(&id).await.unwrap();
    assert_eq!(
        t["destination"],
        json!({"target": hook.url(), "status": "Delivered", "attempts": 3})
    );
    let calls = hook.calls();
    assert_eq!(calls.len(), 3, "two failures, then one success: nothing after it");
    let ids: Vec<_> = calls
        .iter()
        .map(|c| c.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "every resend keeps its webhook-id");
    for c in &calls {
        let (ts, sig) = (
            c.header("webhook-timestamp").unwrap(),
            c.header("webhook-signature").unwrap(),
        );
        assert!(
            python_verifies(&secret, &ids[0], ts, &c.body, sig),
            "signature checks out independently"
        );
        assert!(!python_verifies(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &ids[0],
            ts,
            &c.body,
            sig
        ));
    }
    let body: Value = serde_json::from_slice(&calls[2].body).unwrap();
    assert_eq!(body["type"], "task.succeeded");
    assert_eq!(body["task"]["id"], id.as_str());
    assert_eq!(body["task"]["result"], "the result");
    assert!(body["task"].get("input").is_none());
    assert_eq!(calls[0].header("content-type"), Some("application/json"));
    app.stop().await;
}

#[tokio::test]
async fn on_failure_receives_failed_expired_and_stopped_tasks_on_a_nats_subject() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let client = nats.client().await;
    let mut sub = client.subscribe("results.failures").await.unwrap();
    client.flush().await.unwrap();
    let rx = Receiver::start(|_, _| Reply::code(500)).await;
    app.put_fn(
        "doomed",
        json!({"endpoint": rx.url(), "on_failure": "nats:results.failures", "max_attempts": 1}),
    )
    .await;
    app.put_fn(
        "aging",
        json!({"endpoint": rx.url(), "on_failure": "nats:results.failures", "max_event_age": "1s",
               "max_attempts": 10, "backoff": {"initial": "2s", "jitter": false}}),
    )
    .await;
    let failed = app.submit("doomed", "x", &[]).await;
    let expired = app.submit("aging", "x", &[]).await;
    let stopped = app.submit("doomed", "x", &[("Jetask-Delay", "1h")]).await;
    app.post(&format!("/v1/tasks/{stopped}/stop"), "", &[]).await;
    let mut got = std::collections::HashMap::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(T, futures::StreamExt::next(&mut sub))
            .await
            .expect("a delivery")
            .unwrap();
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        got.insert(
            body["task"]["id"].as_str().unwrap().to_string(),
            body["type"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(got[&failed], "task.failed");
    assert_eq!(got[&expired], "task.expired");
    assert_eq!(got[&stopped], "task.stopped");
    for id in [&failed, &expired, &stopped] {
        wait_for("deliveries recorded", T, || async {
            app.task(id)
                .await
                .is_some_and(|t| t["destination"]["status"] == "Delivered")
        })
        .await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_function_destination_chains_the_result_into_the_next_function() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let first = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: [c.body.as_slice(), b" then"].concat(),
        headers: vec![],
    })
    .await;
    let second = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: [c.body.as_slice(), b" done"].concat(),
        headers: vec![],
    })
    .await;
    app.put_fn("second", json!({"endpoint": second.url()})).await;
    app.put_fn(
        "first",
        json!({"endpoint": first.url(), "on_success": "function:second"}),
    )
    .await;
    let id = app.submit("first", "start", &[]).await;
    let calls = second.wait_calls(1, T).await;
    assert_eq!(calls[0].body, b"start then");
    let next_id = calls[0].task_id();
    let t = app.wait_status(&next_id, "Succeeded", T).await;
    assert_eq!(t["triggered_by"], id.as_str());
    assert_eq!(t["result"], "start then done");
    wait_for("the chain recorded", T, || async {
        app.task(&id)
            .await
            .is_some_and(|t| t["destination"]["status"] == "Delivered")
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_task_callback_overrides_the_function_destination() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let func = Receiver::start(|_, _| Reply::ok("r")).await;
    let default_hook = Receiver::start(|_, _| Reply::ok("")).await;
    let own_hook = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("f", json!({"endpoint": func.url(), "on_success": default_hook.url()}))
        .await;
    let id = app.submit("f", "x", &[("Jetask-Callback", &own_hook.url())]).await;
    own_hook.wait_calls(1, T).await;
    let plain = app.submit("f", "x", &[]).await;
    default_hook.wait_calls(1, T).await;
    assert_eq!(own_hook.count(), 1);
    assert!(serde_json::from_slice::<Value>(&own_hook.calls()[0].body).unwrap()["task"]["id"] == id.as_str());
    assert!(serde_json::from_slice::<Value>(&default_hook.calls()[0].body).unwrap()["task"]["id"] == plain.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_nats_micro_service_answers_as_http_does() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("ok")).await;
    let (code, created) = nats
        .api("jetask.api.fn.put", json!({"name": "svc", "endpoint": rx.url()}))
        .await;
    assert_eq!(code, None, "{created}");
    assert!(created["signing_secret"].as_str().unwrap().starts_with("whsec_"));
    let id = app.submit("svc", "x", &[("Idempotency-Key", "parity-1")]).await;
    app.wait_status(&id, "Succeeded", T).await;

    let (_, over_nats) = nats.api("jetask.api.task.get", json!({"id": id})).await;
    assert_eq!(over_nats, app.get(&format!("/v1/tasks/{id}")).await.body);
    // Both lists below read the list index: it must have the final write first.
    app.wait_listed_first("/v1/tasks?function=svc&status=Succeeded", &id)
        .await;
    let (_, over_nats) = nats
        .api("jetask.api.task.list", json!({"function": "svc", "limit": 5}))
        .await;
    assert_eq!(over_nats, app.get("/v1/tasks?function=svc&limit=5").await.body);
    let (_, over_nats) = nats.api("jetask.api.fn.get", json!({"name": "svc"})).await;
    assert_eq!(over_nats, app.get("/v1/functions/svc").await.body);
    let (_, over_nats) = nats.api("jetask.api.fn.list", json!({})).await;
    assert_eq!(over_nats, app.get("/v1/functions").await.body);

    for (subject, body, path, status) in [
        ("jetask.api.task.get", json!({"id": "nope"}), "/v1/tasks/nope", 404),
        ("jetask.api.task.list", json!({"limit": 0}), "/v1/tasks?limit=0", 400),
        ("jetask.api.fn.get", json!({"name": "nope"}), "/v1/functions/nope", 404),
    ] {
        let (code, over_nats) = nats.api(subject, body).await;
        let over_http = app.get(path).await;
        assert_eq!(over_http.status, status);
        assert_eq!(code.as_deref(), Some(status.to_string().as_str()));
        assert_eq!(over_nats, over_http.body, "{subject}");
    }
    let (code, stop) = nats.api("jetask.api.task.stop", json!({"id": id})).await;
    assert_eq!(code.as_deref(), Some("409"));
    assert_eq!(stop, app.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await.body);
    let (code, _) = nats.api("jetask.api.fn.delete", json!({"name": "svc"})).await;
    assert_eq!(code, None);
    assert_eq!(app.get("/v1/functions/svc").await.status, 404);

    // Discoverable as a NATS micro service.
    let client = nats.client().await;
    let ping = client.request("$SRV.PING.jetask", "".into()).await.unwrap();
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "jetask");
    let info = client.request("$SRV.INFO.jetask", "".into()).await.unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for s in [
        "jetask.api.task.get",
        "jetask.api.task.list",
        "jetask.api.task.stop",
        "jetask.api.task.heartbeat",
        "jetask.api.task.complete",
        "jetask.api.task.replay",
        "jetask.api.task.stop_many",
        "jetask.api.task.replay_many",
        "jetask.api.fn.put",
        "jetask.api.fn.get",
        "jetask.api.fn.list",
        "jetask.api.fn.delete",
    ] {
        assert!(subjects.contains(&s), "{s} missing from {subjects:?}");
    }
    let stats = client.request("$SRV.STATS.jetask", "".into()).await.unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    assert!(stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["num_requests"].as_u64().unwrap_or(0) > 0));
    app.stop().await;
}
