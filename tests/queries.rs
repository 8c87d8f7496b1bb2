//! Reading tasks back: get, list with filters and paging, events, stop, and access by token.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn lists_filter_by_function_status_user_and_time_newest_first_in_pages() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let ok = Receiver::start(|_, _| Reply::ok("")).await;
    let bad = Receiver::start(|_, _| Reply::code(400)).await;
    app.put_fn("good", json!({"endpoint": ok.url()})).await;
    app.put_fn("bad", json!({"endpoint": bad.url()})).await;
    let js = nats.jetstream().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = format!("g{i}");
        publish(
            &js,
            "good",
            b"x",
            &[
                ("Nats-Msg-Id", &id),
                ("Jetask-User", if i % 2 == 0 { "ann" } else { "bob" }),
            ],
        )
        .await;
        app.wait_status(&id, "Succeeded", T).await;
        ids.push(id);
    }
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 0..3 {
        let id = app.submit("bad", "x", &[("Idempotency-Key", &format!("b{i}"))]).await;
        app.wait_status(&id, "Failed", T).await;
    }
    let ids_of = |v: &serde_json::Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    app.wait_listed_first("/v1/tasks?status=Failed", "b2").await;
    let all = app.get("/v1/tasks").await.body;
    assert_eq!(ids_of(&all), ["b2", "b1", "b0", "g4", "g3", "g2", "g1", "g0"]);
    assert!(all["tasks"][0].get("input").is_none());
    assert_eq!(
        ids_of(&app.get("/v1/tasks?function=good&user=ann").await.body),
        ["g4", "g2", "g0"]
    );
    assert_eq!(
        ids_of(&app.get("/v1/tasks?status=Failed").await.body),
        ["b2", "b1", "b0"]
    );
    assert_eq!(
        ids_of(&app.get(&format!("/v1/tasks?since={between}")).await.body),
        ["b2", "b1", "b0"]
    );
    assert_eq!(
        ids_of(
            &app.get(&format!("/v1/tasks?until={between}&function=good&limit=2"))
                .await
                .body
        ),
        ["g4", "g3"]
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/tasks?limit=3&cursor={c}"),
            None => "/v1/tasks?limit=3".to_string(),
        };
        let page = app.get(&q).await.body;
        seen.extend(ids_of(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["b2", "b1", "b0", "g4", "g3", "g2", "g1", "g0"]);

    for bad_q in [
        "limit=0",
        "limit=101",
        "status=Done",
        "since=yesterday",
        "cursor=zz",
        "colour=red",
    ] {
        let a = app.get(&format!("/v1/tasks?{bad_q}")).await;
        assert_eq!(a.status, 400, "{bad_q}: {}", a.body);
        assert_eq!(a.body["error"]["code"], "invalid_query");
    }
    assert_eq!(app.get("/v1/tasks/nope").await.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn every_transition_is_published_on_its_event_subject() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let client = nats.client().await;
    let mut sub = client.subscribe("jetask.events.ev.>").await.unwrap();
    client.flush().await.unwrap();
    let rx = Receiver::start(|_, n| if n == 0 { Reply::code(500) } else { Reply::ok("r") }).await;
    app.put_fn("ev", json!({"endpoint": rx.url(), "backoff": {"initial": "10ms"}}))
        .await;
    let id = app.submit("ev", "x", &[]).await;
    let mut got = Vec::new();
    while got.last().map(|(s, _): &(String, serde_json::Value)| s.as_str()) != Some("jetask.events.ev.Succeeded") {
        let m = tokio::time::timeout(T, futures::StreamExt::next(&mut sub))
            .await
            .expect("event")
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        got.push((m.subject.to_string(), body));
    }
    let subjects: Vec<_> = got
        .iter()
        .map(|(s, _)| s.trim_start_matches("jetask.events.ev.").to_string())
        .collect();
    assert_eq!(
        subjects,
        [
            "Enqueued",
            "Dequeued",
            "Running",
            "Retrying",
            "Dequeued",
            "Running",
            "Succeeded"
        ]
    );
    for (s, body) in &got {
        assert_eq!(body["id"], id.as_str());
        assert!(
            s.ends_with(body["status"].as_str().unwrap()),
            "{s} carries {}",
            body["status"]
        );
        assert!(body.get("input").is_none());
    }
    app.stop().await;
}

#[tokio::test]
async fn stopping_a_queued_task_means_it_never_runs_and_a_finished_one_answers_409() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = app.submit("f", "x", &[("Jetask-Delay", "2s")]).await;
    let a = app.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "Stopped");
    let other = app.submit("f", "y", &[("Jetask-Delay", "2100ms")]).await;
    app.wait_status(&other, "Succeeded", T).await;
    assert!(
        rx.calls().iter().all(|c| c.task_id() != id),
        "a stopped task is never called"
    );
    let t = app.task(&id).await.unwrap();
    assert_eq!(t["status"], "Stopped");
    assert_eq!(t["error"]["type"], "Stopped");
    let again = app.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await;
    assert_eq!(again.status, 409);
    assert!(again.body["error"]["message"].as_str().unwrap().contains("Stopped"));
    app.stop().await;
}

#[tokio::test]
async fn stopping_a_running_task_aborts_its_request() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    app.put_fn("long", json!({"endpoint": rx.url()})).await;
    let id = app.submit("long", "x", &[]).await;
    rx.wait_calls(1, T).await;
    app.wait_status(&id, "Running", T).await;
    let a = app.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await;
    assert_eq!(a.body["status"], "Stopping");
    let t = app.wait_status(&id, "Stopped", Duration::from_secs(1)).await;
    wait_for(
        "the endpoint to see its connection closed",
        Duration::from_secs(1),
        || async { rx.aborted() == 1 },
    )
    .await;
    let states = states(&t);
    assert_eq!(states[states.len() - 2..], ["Stopping", "Stopped"]);
    app.stop().await;
}

#[tokio::test]
async fn with_tokens_every_route_but_health_needs_one_and_users_see_only_their_tasks() {
    let nats = NatsServer::start();
    let (app, alice, bob) = start_app_for_alice_and_bob(&nats).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/v1/tasks").await.status, 401);
    assert_eq!(app.get("/v1/functions").await.status, 401);
    let stranger = App::at(&app.base).with_token("not-a-token-at-all");
    assert_eq!(stranger.get("/v1/tasks").await.status, 403);
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    alice.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = alice
        .submit("f", "x", &[("Idempotency-Key", "alices"), ("Jetask-User", "bob")])
        .await;
    let t = alice.wait_status(&id, "Running", T).await;
    assert_eq!(t["user"], "alice", "the token decides the user");
    assert_eq!(bob.get(&format!("/v1/tasks/{id}")).await.status, 404);
    assert_eq!(bob.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await.status, 404);
    assert!(bob.get("/v1/tasks").await.body["tasks"].as_array().unwrap().is_empty());
    assert!(bob.get("/v1/tasks?user=alice").await.body["tasks"]
        .as_array()
        .unwrap()
        .is_empty());
    let taken = bob
        .post("/v1/functions/f/tasks", "x", &[("Idempotency-Key", "alices")])
        .await;
    assert_eq!(taken.status, 409);
    assert_eq!(taken.body["error"]["code"], "id_taken");
    assert!(
        !taken.body.to_string().contains("Running"),
        "reveals nothing of the task"
    );
    alice.wait_listed_first("/v1/tasks", "alices").await;
    assert_eq!(alice.post(&format!("/v1/tasks/{id}/stop"), "", &[]).await.status, 200);
}
