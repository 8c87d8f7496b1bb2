//! Recurring schedules: firings run once whatever the number of replicas, after downtime only
//! the latest missed firing runs (or none without catch-up), and bad schedules are refused.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

/// Fire moments (ms) of the schedule's tasks that reached the receiver, in call order.
fn moments(rx: &Receiver, schedule: &str) -> Vec<i64> {
    let prefix = format!("sched-{schedule}-");
    rx.calls()
        .iter()
        .filter_map(|c| c.task_id().strip_prefix(&prefix).and_then(|m| m.parse().ok()))
        .collect()
}

#[tokio::test]
async fn each_firing_runs_once_however_many_replicas_fire_it() {
    let nats = NatsServer::start();
    let (a, b) = tokio::join!(start_app(config(&nats)), start_app(config(&nats)));
    let rx = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: c.body.clone(),
        headers: vec![],
    })
    .await;
    a.put_fn("tick", json!({"endpoint": rx.url()})).await;
    let put = a
        .send(
            a.http
                .put(format!("{}/v1/schedules/every-second", a.base))
                .json(&json!({"function": "tick", "every": "1s", "input": {"n": 1}})),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert!(put.body["next_fire_at"].is_string());
    wait_for("three firings", T, || async { moments(&rx, "every-second").len() >= 3 }).await;
    let m = moments(&rx, "every-second");
    let distinct: HashSet<_> = m.iter().collect();
    assert_eq!(distinct.len(), m.len(), "no moment ran twice: {m:?}");
    let mut sorted = m.clone();
    sorted.sort();
    assert!(
        sorted.windows(2).all(|w| w[1] - w[0] == 1000),
        "one firing a second: {sorted:?}"
    );
    let call = &rx.calls()[0];
    assert_eq!(call.body, br#"{"n":1}"#);
    assert_eq!(call.header("content-type"), Some("application/json"));
    let got = b.get("/v1/schedules/every-second").await.body;
    assert!(got["last_fired_at"].is_string());
    assert_eq!(
        b.get("/v1/schedules").await.body["schedules"][0]["name"],
        "every-second"
    );

    assert_eq!(
        b.send(b.http.delete(format!("{}/v1/schedules/every-second", b.base)))
            .await
            .status,
        204
    );
    let after_delete = moments(&rx, "every-second").len();
    // A firing already submitted may still arrive; none is submitted after the deletion is seen.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(moments(&rx, "every-second").len() <= after_delete + 1);
    a.stop().await;
    b.stop().await;
}

async fn downtime(catch_up: bool) -> (Vec<i64>, i64, i64) {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("tick", json!({"endpoint": rx.url()})).await;
    let put = app
        .send(
            app.http
                .put(format!("{}/v1/schedules/s", app.base))
                .json(&json!({"function": "tick", "every": "1s", "catch_up": catch_up})),
        )
        .await;
    assert_eq!(put.status, 201, "{}", put.body);
    wait_for("a first firing", T, || async { !moments(&rx, "s").is_empty() }).await;
    app.stop().await;
    let last_before = *moments(&rx, "s").iter().max().unwrap();
    // The service is down while three firings come due.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let restarted = chrono::Utc::now().timestamp_millis();
    let app = start_app(config(&nats)).await;
    wait_for("a firing after the restart", T, || async {
        moments(&rx, "s").iter().any(|m| *m > restarted + 1000)
    })
    .await;
    app.stop().await;
    (moments(&rx, "s"), last_before, restarted)
}

#[tokio::test]
async fn after_downtime_the_latest_missed_firing_runs_once() {
    let (m, last_before, restarted) = downtime(true).await;
    let missed: Vec<_> = m
        .iter()
        .filter(|t| **t > last_before && **t < restarted - 1000)
        .collect();
    assert!(
        missed.len() <= 1,
        "only the latest missed firing runs: {missed:?} in {m:?}"
    );
    let caught_up = m.iter().filter(|t| **t > last_before && **t <= restarted).count();
    assert_eq!(
        caught_up, 1,
        "exactly one firing for the downtime: {m:?} (down from {last_before} to {restarted})"
    );
}

#[tokio::test]
async fn without_catch_up_missed_firings_are_skipped() {
    let (m, last_before, restarted) = downtime(false).await;
    let missed: Vec<_> = m
        .iter()
        .filter(|t| **t > last_before && **t < restarted - 1000)
        .collect();
    assert!(missed.is_empty(), "no missed firing runs: {missed:?} in {m:?}");
}

#[tokio::test]
async fn cron_schedules_fire_in_their_time_zone_and_bad_ones_are_refused() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("tick", json!({"endpoint": rx.url()})).await;
    let put = |name: &str, body: serde_json::Value| {
        let app = &app;
        let url = format!("{}/v1/schedules/{name}", app.base);
        async move { app.send(app.http.put(url).json(&body)).await }
    };
    let a = put(
        "cron",
        json!({"function": "tick", "cron": "* * * * * *", "time_zone": "Asia/Kolkata", "input": "hi"}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    wait_for("a cron firing", T, || async { !moments(&rx, "cron").is_empty() }).await;
    assert!(moments(&rx, "cron")[0] % 1000 == 0, "fired on a whole second");
    assert_eq!(rx.calls()[0].body, b"hi");
    for (body, key) in [
        (json!({"function": "tick", "cron": "every day"}), "cron"),
        (json!({"function": "tick", "cron": "* * * * *", "every": "1m"}), "every"),
        (
            json!({"function": "tick", "every": "1m", "time_zone": "Europe/Paris"}),
            "time_zone",
        ),
        (
            json!({"function": "tick", "cron": "0 9 * * *", "time_zone": "Nowhere/City"}),
            "time_zone",
        ),
        (json!({"function": "nope", "every": "1m"}), "function"),
        (json!({"every": "1m"}), "function"),
    ] {
        let a = put("bad", body).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(
            a.body["error"]["message"].as_str().unwrap().starts_with(key),
            "{}",
            a.body
        );
    }
    assert_eq!(app.get("/v1/schedules/bad").await.status, 404);
    app.stop().await;
}
