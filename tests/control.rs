//! Control of running work: long tasks with heartbeats and completion (over HTTP and NATS),
//! stopping them, stop across replicas, and replay.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

fn accepted() -> Reply {
    Reply::code(202).with_header("Jetask-Async", "true")
}

#[tokio::test]
async fn a_long_task_stays_running_through_heartbeats_until_completed_over_nats() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| accepted()).await;
    app.put_fn("render", json!({"endpoint": rx.url(), "heartbeat_timeout": "3s"}))
        .await;
    let id = app.submit("render", "frame", &[]).await;
    rx.wait_calls(1, T).await;
    // Past ack_wait (2s in tests) and past the first heartbeat timeout: heartbeats keep it alive.
    for _ in 0..3 {
        let hb = app.post(&format!("/v1/tasks/{id}/heartbeat"), "", &[]).await;
        assert_eq!(hb.status, 200, "{}", hb.body);
        let t = app.task(&id).await.unwrap();
        assert_eq!(t["status"], "Running");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let (code, hb) = nats
        .api("jetask.api.task.heartbeat", json!({"id": id, "attempt": 1}))
        .await;
    assert_eq!(code, None, "{hb}");
    // A report naming another attempt (a late one, after a timeout) settles nothing.
    let (code, stale) = nats
        .api(
            "jetask.api.task.complete",
            json!({"id": id, "status": "Failed", "attempt": 2}),
        )
        .await;
    assert_eq!(code.as_deref(), Some("409"), "{stale}");
    let stale = app
        .post(&format!("/v1/tasks/{id}/heartbeat"), "", &[("Jetask-Attempt", "3")])
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(app.task(&id).await.unwrap()["status"], "Running");
    let (code, done) = nats
        .api(
            "jetask.api.task.complete",
            json!({"id": id, "status": "Succeeded", "result": "rendered"}),
        )
        .await;
    assert_eq!(code, None, "{done}");
    assert_eq!(done["status"], "Succeeded");
    let t = app.wait_status(&id, "Succeeded", T).await;
    assert_eq!(t["result"], "rendered");
    assert_eq!(rx.count(), 1, "never redelivered while in flight");
    let late = app.post(&format!("/v1/tasks/{id}/heartbeat"), "", &[]).await;
    assert_eq!(late.status, 409);
    let (code, _) = nats
        .api("jetask.api.task.complete", json!({"id": id, "status": "Failed"}))
        .await;
    assert_eq!(code.as_deref(), Some("409"));
    // The slot and the message were released: the next task runs.
    let next = app.submit("render", "frame 2", &[]).await;
    rx.wait_calls(2, T).await;
    let a = app
        .post(
            &format!("/v1/tasks/{next}/complete"),
            r#"{"status": "Failed", "error": "gpu on fire"}"#,
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t = app.wait_status(&next, "Failed", T).await;
    assert_eq!(t["error"]["message"], "gpu on fire");
    app.stop().await;
}

#[tokio::test]
async fn a_long_task_without_heartbeats_fails_its_attempt_after_heartbeat_timeout() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| accepted()).await;
    app.put_fn(
        "silent",
        json!({"endpoint": rx.url(), "heartbeat_timeout": "1s", "max_attempts": 2, "backoff": {"initial": "10ms"}}),
    )
    .await;
    let id = app.submit("silent", "x", &[]).await;
    let t = app.wait_status(&id, "Failed", T).await;
    assert_eq!(t["error"]["type"], "Timeout");
    assert_eq!(t["error"]["message"], "no heartbeat within 1s");
    assert_eq!(rx.calls().iter().map(|c| c.attempt()).collect::<Vec<_>>(), [1, 2]);
    app.stop().await;
}

#[tokio::test]
async fn stopping_a_long_task_stops_it_at_once_and_its_heartbeats_get_409() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| accepted()).await;
    app.put_fn("long", json!({"endpoint": rx.url(), "concurrency": {"max": 1}}))
        .await;
    let id = app.submit("long", "x", &[]).await;
    rx.wait_calls(1, T).await;
    wait_for("the 202 to be recorded", T, || async {
        app.post(&format!("/v1/tasks/{id}/heartbeat"), "", &[]).await.status == 200
    })
    .await;
    let (code, stopped) = nats.api("jetask.api.task.stop", json!({"id": id})).await;
    assert_eq!(code, None, "{stopped}");
    let t = app.wait_status(&id, "Stopped", Duration::from_secs(2)).await;
    assert_eq!(t["error"]["type"], "Stopped");
    let hb = app.post(&format!("/v1/tasks/{id}/heartbeat"), "", &[]).await;
    assert_eq!(hb.status, 409);
    assert!(hb.body["error"]["message"].as_str().unwrap().contains("Stopped"));
    // Its concurrency slot is free again.
    let next = app.submit("long", "y", &[]).await;
    rx.wait_calls(2, T).await;
    assert_eq!(rx.calls()[1].task_id(), next);
}

#[tokio::test]
async fn a_stop_reaches_the_attempt_on_another_replica() {
    let nats = NatsServer::start();
    let (a, b) = tokio::join!(start_app(config(&nats)), start_app(config(&nats)));
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    a.put_fn("hang", json!({"endpoint": rx.url()})).await;
    let id = a.submit("hang", "x", &[]).await;
    rx.wait_calls(1, T).await;
    a.wait_status(&id, "Running", T).await;
    let holds_a = a.svc.as_ref().unwrap().ctx.control.inflight() == 1;
    let other = if holds_a { &b } else { &a };
    let holder = if holds_a { &a } else { &b };
    assert_eq!(holder.svc.as_ref().unwrap().ctx.control.inflight(), 1);
    let started = std::time::Instant::now();
    let s = other.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await;
    assert_eq!(s.body["status"], "Stopping");
    other.wait_status(&id, "Stopped", Duration::from_secs(1)).await;
    wait_for(
        "the endpoint to see its connection closed",
        Duration::from_secs(1),
        || async { rx.aborted() == 1 },
    )
    .await;
    println!("stop through the other replica took {:?}", started.elapsed());
}

#[tokio::test]
async fn failed_expired_and_stopped_tasks_can_be_replayed_as_new_tasks() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healthy.clone();
    let rx = Receiver::start(move |c, _| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::Status {
                code: 200,
                body: c.body.clone(),
                headers: vec![],
            }
        } else {
            Reply::code(400)
        }
    })
    .await;
    app.put_fn("fragile", json!({"endpoint": rx.url()})).await;
    let id = app
        .submit("fragile", "payload", &[("Content-Type", "text/plain")])
        .await;
    app.wait_status(&id, "Failed", T).await;
    // The dead-letter view.
    app.wait_listed_first("/v1/tasks?status=Failed&function=fragile", &id)
        .await;

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = app.post(&format!("/v1/tasks/{id}/replay"), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["replay_of"], id.as_str());
    let new_id = r.body["task_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    let t = app.wait_status(&new_id, "Succeeded", T).await;
    assert_eq!(t["replay_of"], id.as_str());
    assert_eq!(t["result"], "payload");
    assert_eq!(rx.calls().last().unwrap().header("content-type"), Some("text/plain"));
    assert_eq!(
        app.task(&id).await.unwrap()["status"],
        "Failed",
        "the old record stays as it was"
    );

    let again = app.post(&format!("/v1/tasks/{new_id}/replay"), "", &[]).await;
    assert_eq!(again.status, 409, "a Succeeded task is not replayed");
    let stopped = app.submit("fragile", "later", &[("Jetask-Delay", "1h")]).await;
    app.post(&format!("/v1/tasks/{stopped}/stop"), "", &[]).await;
    let (code, r) = nats.api("jetask.api.task.replay", json!({"id": stopped})).await;
    assert_eq!(code, None, "{r}");
    assert_eq!(r["replay_of"], stopped.as_str());
    app.wait_status(r["task_id"].as_str().unwrap(), "Succeeded", T).await;
    app.stop().await;
}

/// Stops sent while tasks are being taken off the queue — some before their record exists,
/// some as their first write races, some while they run — never let a task stopped while
/// waiting reach the endpoint, and never run a task twice: whichever write wins, the other
/// side sees it.
#[tokio::test]
async fn stops_racing_dispatch_never_call_a_stopped_task_and_never_run_one_twice() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    // 100 tasks/s at most: the queue builds up behind the first tasks, so that the stops meet
    // tasks in every state, from not yet recorded to running.
    let rx = Receiver::start(|_, _| Reply::After(Duration::from_millis(20), Box::new(Reply::ok("")))).await;
    app.put_fn(
        "race",
        json!({"endpoint": rx.url(), "concurrency": {"max": 2, "adaptive": false}}),
    )
    .await;
    let js = nats.jetstream().await;
    let n = 120;
    let ids: Vec<String> = (0..n).map(|i| format!("race-{i}")).collect();
    let stopper = {
        let app = App::at(&app.base);
        let ids = ids.clone();
        tokio::spawn(async move {
            // Every other task, in submission order, as soon as it is submitted.
            for id in ids.iter().step_by(2) {
                loop {
                    let a = app.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await;
                    match a.status {
                        200 | 409 => break,
                        // Not recorded yet.
                        404 => tokio::time::sleep(Duration::from_millis(1)).await,
                        other => panic!("stop {id}: {other} {}", a.body),
                    }
                }
            }
        })
    };
    for id in &ids {
        publish(&js, "race", b"x", &[("Nats-Msg-Id", id)]).await;
    }
    stopper.await.unwrap();
    let mut finished = Vec::new();
    for id in &ids {
        finished.push(app.wait_status_in(id, &["Succeeded", "Stopped"], T).await);
    }
    let calls = rx.calls();
    let mut stopped_waiting = 0;
    for (i, t) in finished.iter().enumerate() {
        let id = &ids[i];
        let called = calls.iter().filter(|c| c.task_id() == *id).count();
        assert!(called <= 1, "{id} was called {called} times");
        let states = states(t);
        if i % 2 == 1 {
            assert_eq!(t["status"], "Succeeded", "{id}: {t}");
            assert_eq!(called, 1, "{id}");
        } else if t["status"] == "Stopped" && !states.iter().any(|s| s == "Running") {
            stopped_waiting += 1;
            assert_eq!(called, 0, "{id} was stopped while waiting, yet called: {states:?}");
        } else {
            assert!(
                states.iter().any(|s| s == "Running"),
                "{id} ran without a Running record: {states:?}"
            );
        }
    }
    println!("{stopped_waiting} of {} stopped before they ran", n / 2);
    assert!(
        stopped_waiting > 0,
        "no stop reached a waiting task: the test raced nothing"
    );
    app.stop().await;
}
