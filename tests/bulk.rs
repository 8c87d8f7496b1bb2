//! Bulk operations (CONTRACT §12): stop and replay every task a list filter matches, over HTTP
//! (`POST /v1/tasks:stop`, `POST /v1/tasks:replay`), NATS (`jetask.api.task.stop_many`,
//! `jetask.api.task.replay_many`) and the command line.
#![allow(clippy::unwrap_used)]

mod support;

use jetask::core::time::Timestamp;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

/// Waits until `GET /v1/tasks?{query}` lists `n` tasks (the index follows records shortly after).
async fn wait_listed(app: &App, query: &str, n: usize) {
    wait_for(&format!("{n} tasks listed for {query}"), T, || async {
        app.get(&format!("/v1/tasks?limit=100&{query}")).await.body["tasks"]
            .as_array()
            .is_some_and(|t| t.len() == n)
    })
    .await;
}

/// Runs bulk `op` (`stop` or `replay`) over HTTP with `filter`, expecting 200 with `n` tasks
/// matched and acted on; the answer.
async fn bulk(app: &App, op: &str, filter: Value, n: u64) -> support::Answer {
    let a = app.post(&format!("/v1/tasks:{op}"), filter.to_string(), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["matched"].as_u64(), a.body["acted"].as_u64()),
        (Some(n), Some(n)),
        "{}",
        a.body
    );
    a
}

/// A bulk answer's `matched`, `acted` and `skipped`.
fn matched_acted_skipped(v: &Value) -> (Option<u64>, Option<u64>, Option<u64>) {
    (v["matched"].as_u64(), v["acted"].as_u64(), v["skipped"].as_u64())
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_bulk_replay_replays_exactly_the_failed_tasks_over_http_and_nats() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|c, _| {
        if c.body == b"fail" {
            Reply::code(500)
        } else {
            Reply::ok("done")
        }
    })
    .await;
    app.put_fn("flaky", json!({"endpoint": rx.url(), "max_attempts": 1}))
        .await;
    app.put_fn("other", json!({"endpoint": rx.url(), "max_attempts": 1}))
        .await;
    let mut failed = BTreeSet::new();
    for input in ["fail", "ok", "fail", "ok", "fail"] {
        let id = app.submit("flaky", input, &[]).await;
        if input == "fail" {
            failed.insert(id);
        }
    }
    let elsewhere = app.submit("other", "fail", &[]).await;
    app.wait_status(&elsewhere, "Failed", T).await;
    wait_listed(&app, "function=flaky&status=Failed", 3).await;
    wait_listed(&app, "function=flaky&status=Succeeded", 2).await;

    let a = bulk(&app, "replay", json!({"function": "flaky", "status": "Failed"}), 3).await;
    assert_eq!(a.body["skipped"], 0);
    let new = ids(&a.body["task_ids"]);
    assert_eq!(new.len(), 3);
    let mut originals = BTreeSet::new();
    for id in &new {
        // The replays fail again, as their input still says so.
        let t = app.wait_status(id, "Failed", T).await;
        assert_eq!(t["function"], "flaky");
        originals.insert(t["replay_of"].as_str().unwrap().to_string());
    }
    assert_eq!(originals, failed, "exactly the failed ones were replayed");
    assert_eq!(
        rx.count(),
        6 + 3,
        "the succeeded ones and the other function's ran once"
    );

    // Over NATS, with an idempotency key: sent twice, the same replays.
    wait_listed(&app, "function=flaky&status=Failed", 6).await;
    let until = Timestamp::now().to_string();
    let body = json!({"function": "flaky", "status": "Failed", "until": until, "idempotency_key": "retry-1"});
    let (code, first) = nats.api("jetask.api.task.replay_many", body.clone()).await;
    assert_eq!(code, None, "{first}");
    assert_eq!(
        (first["matched"].as_u64(), first["acted"].as_u64()),
        (Some(6), Some(6)),
        "{first}"
    );
    let (code, again) = nats.api("jetask.api.task.replay_many", body).await;
    assert_eq!(code, None, "{again}");
    assert_eq!(again["acted"], 6);
    assert_eq!(ids(&first["task_ids"]), ids(&again["task_ids"]));

    // Succeeded tasks are matched but not replayed.
    let (code, mixed) = nats
        .api(
            "jetask.api.task.replay_many",
            json!({"function": "flaky", "status": "Succeeded"}),
        )
        .await;
    assert_eq!(code, None, "{mixed}");
    assert_eq!(matched_acted_skipped(&mixed), (Some(2), Some(0), Some(2)));
    app.stop().await;
}

#[tokio::test]
async fn a_bulk_stop_stops_every_delayed_task_and_bad_filters_are_refused() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("later", json!({"endpoint": rx.url()})).await;
    let mut delayed = Vec::new();
    for i in 0..5 {
        delayed.push(app.submit("later", &format!("t{i}"), &[("Jetask-Delay", "1h")]).await);
    }
    wait_listed(&app, "function=later&status=Enqueued", 5).await;

    bulk(&app, "stop", json!({"function": "later", "status": "Enqueued"}), 5).await;
    for id in &delayed {
        assert_eq!(app.task(id).await.unwrap()["status"], "Stopped");
    }
    // Stopped tasks cannot be stopped again: matched, skipped.
    wait_listed(&app, "function=later&status=Stopped", 5).await;
    let (code, again) = nats
        .api("jetask.api.task.stop_many", json!({"function": "later"}))
        .await;
    assert_eq!(code, None, "{again}");
    assert_eq!(matched_acted_skipped(&again), (Some(5), Some(0), Some(5)));
    assert_eq!(rx.count(), 0);

    for (body, names) in [
        (json!({"fucntion": "later"}), "fucntion"),
        (json!({}), "give at least one filter"),
        (json!({"status": "Sleeping"}), "status"),
        (json!({"function": "later", "since": "yesterday"}), "since"),
        (json!({"function": 7}), "function"),
        (json!({"function": "later", "limit": "5"}), "limit"),
    ] {
        let a = app.post("/v1/tasks:stop", body.to_string(), &[]).await;
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(names), "{body}: {message}");
    }
    let (code, e) = nats
        .api("jetask.api.task.replay_many", json!({"fucntion": "later"}))
        .await;
    assert_eq!(code.as_deref(), Some("400"), "{e}");
    // The single-task routes are still themselves.
    let one = app.post(&format!("/v1/tasks/{}/stop", delayed[0]), "", &[]).await;
    assert_eq!(one.status, 409, "{}", one.body);
    app.stop().await;
}

#[tokio::test]
async fn with_tokens_a_bulk_operation_acts_only_on_the_callers_tasks() {
    let nats = NatsServer::start();
    let (app, alice, bob) = start_app_for_alice_and_bob(&nats).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    alice.put_fn("later", json!({"endpoint": rx.url()})).await;
    let mut alices = Vec::new();
    for i in 0..3 {
        alices.push(alice.submit("later", &format!("a{i}"), &[("Jetask-Delay", "1h")]).await);
    }
    let mut bobs = Vec::new();
    for i in 0..2 {
        bobs.push(bob.submit("later", &format!("b{i}"), &[("Jetask-Delay", "1h")]).await);
    }
    wait_listed(&alice, "function=later", 3).await;
    wait_listed(&bob, "function=later", 2).await;

    // Asking for another user's tasks finds none of them.
    let none = alice
        .post("/v1/tasks:stop", json!({"user": "bob"}).to_string(), &[])
        .await;
    assert_eq!(none.status, 200, "{}", none.body);
    assert_eq!(none.body["matched"], 0);
    let a = alice
        .post("/v1/tasks:stop", json!({"function": "later"}).to_string(), &[])
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (a.body["matched"].as_u64(), a.body["acted"].as_u64()),
        (Some(3), Some(3)),
        "{}",
        a.body
    );
    for id in &alices {
        assert_eq!(alice.task(id).await.unwrap()["status"], "Stopped");
    }
    for id in &bobs {
        assert_eq!(bob.task(id).await.unwrap()["status"], "Enqueued");
    }
    let anonymous = App::at(&app.base)
        .post("/v1/tasks:stop", json!({"function": "later"}).to_string(), &[])
        .await;
    assert_eq!(anonymous.status, 401);
    // Bob replays his own after stopping them; alice's stopped ones stay as they are.
    let b = bob
        .post("/v1/tasks:stop", json!({"function": "later"}).to_string(), &[])
        .await;
    assert_eq!(b.body["acted"], 2, "{}", b.body);
    wait_listed(&bob, "function=later&status=Stopped", 2).await;
    let r = bob
        .post("/v1/tasks:replay", json!({"status": "Stopped"}).to_string(), &[])
        .await;
    assert_eq!(
        (r.body["matched"].as_u64(), r.body["acted"].as_u64()),
        (Some(2), Some(2)),
        "{}",
        r.body
    );
    for id in ids(&r.body["task_ids"]) {
        assert_eq!(bob.task(&id).await.unwrap()["user"], "bob");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_command_line_stops_and_replays_by_filter() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("later", json!({"endpoint": rx.url()})).await;
    for i in 0..2 {
        app.submit("later", &format!("t{i}"), &[("Jetask-Delay", "1h")]).await;
    }
    wait_listed(&app, "function=later&status=Enqueued", 2).await;
    let cli = Cli::new(&app);
    let o = cli
        .run(&["task", "stop", "--function", "later", "--status", "Enqueued"])
        .await;
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("matched 2, stopped 2"), "{out}");
    wait_listed(&app, "function=later&status=Stopped", 2).await;
    let o = cli.run(&["--json", "task", "replay", "--function", "later"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["matched"].as_u64(), v["acted"].as_u64()), (Some(2), Some(2)), "{v}");
    // Neither an ID nor a filter: refused by the command line itself.
    let o = cli.run(&["task", "stop"]).await;
    assert!(!o.status.success());
    app.stop().await;
}
