//! `nats:` destinations cannot write into jetask's state or NATS's internals (issue 15 §2):
//! each attack of the issue, over HTTP, over NATS, at `PUT` of a function and at delivery of a
//! function stored before the rule; ordinary destinations and the operator's allow list.
#![allow(clippy::unwrap_used)]

mod support;

use jetask::core::destination::SubjectPattern;
use jetask::core::function::{self, Function};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);
const WEEK: Duration = Duration::from_secs(7 * 86400);

/// The subjects the issue used, and the other kinds the rule refuses.
const FORBIDDEN: [&str; 9] = [
    "$KV.JETASK_TASKS.{victim}",
    "$KV.JETASK_FUNCTIONS.{fn}",
    "$JS.API.STREAM.PURGE.JETASK_SUBMIT",
    "_INBOX.x",
    "jetask.control.stop",
    "jetask.submit.{fn}",
    "orders.*",
    "orders.>",
    "orders..eu",
];

fn forbidden(victim: &str, func: &str) -> Vec<String> {
    FORBIDDEN
        .iter()
        .map(|s| format!("nats:{}", s.replace("{victim}", victim).replace("{fn}", func)))
        .collect()
}

fn message(a: &Answer) -> String {
    a.body["error"]["message"].as_str().unwrap_or_default().to_string()
}

/// A function stored as a spec written before the rule would be: straight into the bucket,
/// past the checks of `PUT`.
async fn store_unchecked(app: &App, name: &str, spec: Value, on_success: &str) {
    let mut spec = function::resolve(&spec, &json!({}), WEEK).unwrap();
    spec.on_success = Some(on_success.to_string());
    let f = Function {
        name: name.to_string(),
        spec,
    };
    app.svc.as_ref().unwrap().ctx.put_function(&f).await.unwrap();
}

/// Waits until task `id`'s delivery is settled (`Delivered` or `Failed`), and returns it.
async fn settled_delivery(app: &App, id: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let d = app.task(id).await.unwrap()["destination"].clone();
        if d["status"] == "Delivered" || d["status"] == "Failed" {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery of {id} not settled: {d}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_http_submission_with_a_forbidden_nats_callback_is_a_400_naming_the_header() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let victim = app.submit("f", "mine", &[("Jetask-User", "alice")]).await;
    let before = app.wait_status(&victim, "Succeeded", T).await;
    for dest in forbidden(&victim, "f") {
        let a = app
            .post("/v1/functions/f/tasks", "x", &[("Jetask-Callback", dest.as_str())])
            .await;
        assert_eq!(a.status, 400, "{dest}: {}", a.body);
        assert!(message(&a).starts_with("Jetask-Callback: "), "{dest}: {}", a.body);
        // The batch endpoint takes the same header.
        let a = app
            .post(
                "/v1/functions/f/tasks:batch",
                json!([{"input": "x"}]).to_string(),
                &[("Jetask-Callback", dest.as_str()), ("Content-Type", "application/json")],
            )
            .await;
        assert_eq!(a.status, 400, "batch {dest}: {}", a.body);
        assert!(message(&a).contains("Jetask-Callback"), "batch {dest}: {}", a.body);
    }
    assert_eq!(rx.count(), 1, "no refused submission ran");
    assert_eq!(
        app.task(&victim).await.unwrap(),
        before,
        "the victim's record is untouched"
    );
    assert_eq!(app.get("/v1/functions").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_nats_submission_with_a_forbidden_callback_becomes_invalid_naming_the_header() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let victim = app.submit("f", "mine", &[]).await;
    let before = app.wait_status(&victim, "Succeeded", T).await;
    let js = nats.jetstream().await;
    let dests = forbidden(&victim, "f");
    for (i, dest) in dests.iter().enumerate() {
        let id = format!("bad-callback-{i}");
        publish(
            &js,
            "f",
            b"x",
            &[("Nats-Msg-Id", id.as_str()), ("Jetask-Callback", dest.as_str())],
        )
        .await;
    }
    for (i, dest) in dests.iter().enumerate() {
        let t = app.wait_status(&format!("bad-callback-{i}"), "Invalid", T).await;
        let why = t["error"]["message"].as_str().unwrap();
        assert!(why.starts_with("Jetask-Callback: "), "{dest}: {why}");
    }
    assert_eq!(rx.count(), 1, "no invalid task ran");
    assert_eq!(app.task(&victim).await.unwrap(), before);
    app.stop().await;
}

#[tokio::test]
async fn put_of_a_function_refuses_forbidden_destinations_naming_the_key() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    for key in ["on_success", "on_failure"] {
        for dest in forbidden("some-task", "g") {
            let a = app
                .send(
                    app.http
                        .put(format!("{}/v1/functions/g", app.base))
                        .json(&json!({"endpoint": rx.url(), key: dest})),
                )
                .await;
            assert_eq!(a.status, 400, "{key} = {dest}: {}", a.body);
            assert!(
                message(&a).starts_with(&format!("{key}: ")),
                "{key} = {dest}: {}",
                a.body
            );
        }
    }
    // The same through the NATS micro API.
    let (code, body) = nats
        .api(
            "jetask.api.fn.put",
            json!({"name": "g", "endpoint": rx.url(), "on_success": "nats:$KV.JETASK_FUNCTIONS.g"}),
        )
        .await;
    assert_eq!(code.as_deref(), Some("400"), "{body}");
    assert_eq!(app.get("/v1/functions/g").await.status, 404, "nothing was stored");
    assert_eq!(app.get("/v1/functions").await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_forbidden_destination_stored_before_the_rule_is_refused_at_delivery_and_never_published() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("plain", json!({"endpoint": rx.url()})).await;
    let victim = app.submit("plain", "mine", &[]).await;
    let before = app.wait_status(&victim, "Succeeded", T).await;

    let attacks = [
        format!("nats:$KV.JETASK_TASKS.{victim}"),
        "nats:$KV.JETASK_FUNCTIONS.plain".to_string(),
        "nats:$JS.API.STREAM.PURGE.JETASK_SUBMIT".to_string(),
        "nats:jetask.control.stop".to_string(),
        "nats:_INBOX.x".to_string(),
    ];
    // A plain subscriber on each subject sees whatever jetask would publish there. Intake's own
    // late create of the victim's record (refused: it exists) is a publish on its subject too, so
    // the listeners start once intake is done with every submission so far.
    wait_consumer_idle(&nats.jetstream().await, "intake", T).await;
    let client = nats.client().await;
    let mut listeners = Vec::new();
    for dest in &attacks {
        let subject = dest.strip_prefix("nats:").unwrap().to_string();
        listeners.push(client.subscribe(subject).await.unwrap());
    }
    client.flush().await.unwrap();
    for (i, dest) in attacks.iter().enumerate() {
        let name = format!("old{i}");
        store_unchecked(&app, &name, json!({"endpoint": rx.url()}), dest).await;
        let id = app.submit(&name, "x", &[]).await;
        app.wait_status(&id, "Succeeded", T).await;
        let d = settled_delivery(&app, &id).await;
        assert_eq!(d["status"], "Failed", "{dest}: {d}");
        assert_eq!(d["attempts"], 1, "a refusal is not retried: {d}");
        let why = d["last_error"].as_str().unwrap();
        assert!(why.contains(&format!("invalid destination {dest:?}")), "{why}");
    }
    // Nothing reached the subjects (a refusal is recorded after the point where the publish
    // would have been): the victim's record and the functions are as they were.
    assert_eq!(app.task(&victim).await.unwrap(), before);
    assert_eq!(app.get("/v1/functions").await.status, 200);
    assert_eq!(app.get("/v1/functions/plain").await.status, 200);
    client.flush().await.unwrap();
    for (dest, sub) in attacks.iter().zip(listeners.iter_mut()) {
        let heard = tokio::time::timeout(Duration::from_millis(100), futures::StreamExt::next(sub)).await;
        assert!(heard.is_err(), "{dest} got a message: {heard:?}");
    }
    let m = app.metrics().await;
    assert_eq!(
        sample(&m, r#"jetask_callback_deliveries_total{kind="nats",outcome="failed"}"#),
        Some(attacks.len() as f64),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test]
async fn ordinary_subjects_and_the_results_prefix_are_still_delivered() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let client = nats.client().await;
    let mut results = client.subscribe("jetask.results.>").await.unwrap();
    let mut plain = client.subscribe("orders.done").await.unwrap();
    client.flush().await.unwrap();
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn(
        "f",
        json!({"endpoint": rx.url(), "on_success": "nats:jetask.results.f"}),
    )
    .await;
    let a = app.submit("f", "x", &[]).await;
    let b = app.submit("f", "x", &[("Jetask-Callback", "nats:orders.done")]).await;
    for (id, sub) in [(&a, &mut results), (&b, &mut plain)] {
        let m = tokio::time::timeout(T, futures::StreamExt::next(sub))
            .await
            .unwrap()
            .unwrap();
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["task"]["id"], id.as_str());
        assert_eq!(settled_delivery(&app, id).await["status"], "Delivered");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_operator_allow_list_narrows_nats_destinations_everywhere() {
    let nats = NatsServer::start();
    let mut c = config(&nats);
    c.destinations.nats_allow = vec![SubjectPattern::try_from("orders.>".to_string()).unwrap()];
    let app = start_app(c).await;
    let client = nats.client().await;
    let mut orders = client.subscribe("orders.>").await.unwrap();
    client.flush().await.unwrap();
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;

    let a = app
        .send(
            app.http
                .put(format!("{}/v1/functions/f", app.base))
                .json(&json!({"endpoint": rx.url(), "on_failure": "nats:alerts"})),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).starts_with("on_failure: "), "{}", a.body);
    assert!(message(&a).contains("destinations.nats_allow"), "{}", a.body);

    app.put_fn("f", json!({"endpoint": rx.url(), "on_success": "nats:orders.created"}))
        .await;
    let a = app
        .post("/v1/functions/f/tasks", "x", &[("Jetask-Callback", "nats:alerts")])
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).starts_with("Jetask-Callback: "), "{}", a.body);

    publish(
        &nats.jetstream().await,
        "f",
        b"x",
        &[("Nats-Msg-Id", "off-list"), ("Jetask-Callback", "nats:alerts")],
    )
    .await;
    let t = app.wait_status("off-list", "Invalid", T).await;
    assert!(t["error"]["message"].as_str().unwrap().starts_with("Jetask-Callback: "));

    let ok = app.submit("f", "x", &[]).await;
    let m = tokio::time::timeout(T, futures::StreamExt::next(&mut orders))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "orders.created");
    assert_eq!(settled_delivery(&app, &ok).await["status"], "Delivered");

    store_unchecked(&app, "old", json!({"endpoint": rx.url()}), "nats:alerts").await;
    let id = app.submit("old", "x", &[]).await;
    let d = settled_delivery(&app, &id).await;
    assert_eq!(d["status"], "Failed", "{d}");
    assert!(
        d["last_error"].as_str().unwrap().contains("destinations.nats_allow"),
        "{d}"
    );
    app.stop().await;
}
