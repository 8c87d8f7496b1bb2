//! Submission over NATS and HTTP: headers, IDs, deduplication for the whole retention, bad input.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_nats_submission_carries_its_headers_into_the_record() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("ok")).await;
    app.put_fn("resize", json!({"endpoint": rx.url()})).await;
    let js = nats.jetstream().await;
    let ack = publish(
        &js,
        "resize",
        b"img",
        &[
            ("Nats-Msg-Id", "job-1"),
            ("Jetask-User", "alice"),
            ("Content-Type", "image/png"),
        ],
    )
    .await;
    assert!(!ack.duplicate);
    let t = app.wait_status("job-1", "Succeeded", T).await;
    assert_eq!(t["user"], "alice");
    assert_eq!(t["function"], "resize");
    assert_eq!(rx.calls()[0].header("content-type"), Some("image/png"));

    // Without Nats-Msg-Id the ID comes from the stream sequence: stable across redeliveries.
    let ack = publish(&js, "resize", b"img", &[]).await;
    let id = format!("seq-{}", ack.sequence);
    let t = app.wait_status(&id, "Succeeded", T).await;
    assert_eq!(t["user"], "default");
    app.stop().await;
}

#[tokio::test]
async fn a_resubmitted_id_never_runs_twice_inside_or_after_the_duplicate_window() {
    let nats = NatsServer::start();
    let mut c = config(&nats);
    c.nats.duplicate_window = jetask::core::duration::Dur::from_secs(1);
    let app = start_app(c).await;
    let rx = Receiver::start(|_, _| Reply::ok("ok")).await;
    app.put_fn("once", json!({"endpoint": rx.url()})).await;
    let js = nats.jetstream().await;

    let first = publish(&js, "once", b"a", &[("Nats-Msg-Id", "same")]).await;
    let again = publish(&js, "once", b"a", &[("Nats-Msg-Id", "same")]).await;
    assert!(
        !first.duplicate && again.duplicate,
        "JetStream deduplicates inside its window"
    );
    app.wait_status("same", "Succeeded", T).await;

    // Past the window JetStream stores the copy again; the record drops it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let late = publish(&js, "once", b"a", &[("Nats-Msg-Id", "same")]).await;
    assert!(!late.duplicate);
    let over_http = app
        .post("/v1/functions/once/tasks", "a", &[("Idempotency-Key", "same")])
        .await;
    assert_eq!(over_http.status, 200);
    assert_eq!(
        over_http.body,
        json!({"task_id": "same", "status": "Succeeded", "duplicate": true})
    );

    // The late copy is consumed and dropped: wait until the function's consumer has nothing left.
    wait_consumer_idle(&js, "fn-once", T).await;
    assert_eq!(rx.count(), 1, "ran exactly once");
    app.stop().await;
}

#[tokio::test]
async fn http_submission_answers_202_then_200_for_a_duplicate() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let a = app
        .post("/v1/functions/f/tasks", "x", &[("Idempotency-Key", "k1")])
        .await;
    assert_eq!(
        (a.status, a.body.clone()),
        (202, json!({"task_id": "k1", "status": "Enqueued", "duplicate": false}))
    );
    // Readable at once: the record is written before the answer.
    assert_eq!(app.task("k1").await.unwrap()["id"], "k1");
    let b = app
        .post("/v1/functions/f/tasks", "x", &[("Idempotency-Key", "k1")])
        .await;
    assert_eq!(b.status, 200);
    assert_eq!(b.body["duplicate"], true);
    // A generated ID is a UUIDv7 in simple form.
    let id = app.submit("f", "x", &[]).await;
    assert_eq!(id.len(), 32);
    assert!(uuid::Uuid::parse_str(&id).is_ok_and(|u| u.get_version_num() == 7));
}

#[tokio::test]
async fn bad_http_submissions_are_refused_naming_the_field() {
    let nats = NatsServer::start();
    let mut c = config(&nats);
    c.limits.max_payload = 1000;
    let app = start_app(c).await;
    app.put_fn("f", json!({"endpoint": "http://127.0.0.1:9/"})).await;
    let cases: [(&str, &str, u16, &str); 7] = [
        ("Idempotency-Key", "has space", 400, "Idempotency-Key"),
        ("Idempotency-Key", &"x".repeat(129), 400, "Idempotency-Key"),
        ("Jetask-Delay", "soon", 400, "Jetask-Delay"),
        ("Jetask-Delay", "8d", 400, "7d"),
        ("Jetask-Not-Before", "tomorrow", 400, "Jetask-Not-Before"),
        ("Jetask-Callback", "ftp://x", 400, "Jetask-Callback"),
        ("traceparent", "zz", 400, "traceparent"),
    ];
    for (k, v, code, mentions) in cases {
        let a = app.post("/v1/functions/f/tasks", "x", &[(k, v)]).await;
        assert_eq!(a.status, code, "{k}: {v} → {}", a.body);
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(mentions), "{k}: message {msg:?} should mention {mentions}");
        assert!(a.body["error"]["code"].is_string());
    }
    let big = app.post("/v1/functions/f/tasks", "x".repeat(1001), &[]).await;
    assert_eq!(big.status, 413);
    assert!(big.body["error"]["message"].as_str().unwrap().contains("max_payload"));
    let unknown = app.post("/v1/functions/nope/tasks", "x", &[]).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body["error"]["code"], "function_not_found");
    let ok = app.post("/v1/functions/f/tasks", "x".repeat(1000), &[]).await;
    assert_eq!(ok.status, 202, "exactly max_payload is accepted");
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_header_over_nats_makes_the_task_invalid_naming_it() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let js = nats.jetstream().await;
    publish(
        &js,
        "f",
        b"x",
        &[("Nats-Msg-Id", "bad-delay"), ("Jetask-Delay", "tomorrow")],
    )
    .await;
    publish(
        &js,
        "f",
        b"x",
        &[("Nats-Msg-Id", "bad-time"), ("Jetask-Not-Before", "2026-13-45")],
    )
    .await;
    let t = app.wait_status("bad-delay", "Invalid", T).await;
    assert!(t["error"]["message"].as_str().unwrap().starts_with("Jetask-Delay"));
    let t = app.wait_status("bad-time", "Invalid", T).await;
    assert!(t["error"]["message"].as_str().unwrap().starts_with("Jetask-Not-Before"));
    assert_eq!(rx.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_delayed_task_starts_no_earlier_than_asked() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("later", json!({"endpoint": rx.url()})).await;
    let submitted = Instant::now();
    let id = app.submit("later", "x", &[("Jetask-Delay", "1200ms")]).await;
    let now_id = app.submit("later", "y", &[]).await;
    let t = app.wait_status(&id, "Succeeded", T).await;
    assert!(
        rx.calls()[0].task_id() == now_id,
        "an undelayed task is not held up behind a delayed one"
    );
    let call = rx.calls().into_iter().find(|c| c.task_id() == id).unwrap();
    assert!(call.at - submitted >= Duration::from_millis(1200));
    assert!(t["not_before"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn a_batch_answers_one_result_per_item_in_order() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: c.body.clone(),
        headers: vec![],
    })
    .await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let items = json!([
        {"id": "b-1", "input": "text"},
        {"id": "b-2", "input": {"n": 2}},
        {"id": "b-3", "input_base64": "/wA="},
        {"id": "bad id", "input": "x"},
        {"id": "b-1", "input": "again"},
        {"input": "x", "delay": "forever"}
    ]);
    let a = app
        .send(
            app.http
                .post(format!("{}/v1/functions/f/tasks:batch", app.base))
                .json(&items),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = a.body["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert_eq!(r[0]["task_id"], "b-1");
    assert_eq!(r[1]["task_id"], "b-2");
    assert!(r[3]["error"]["message"].as_str().unwrap().contains("[3].id"));
    assert_eq!(r[4]["duplicate"], true);
    assert!(r[5]["error"]["message"].as_str().unwrap().contains("delay"));
    assert_eq!(app.wait_status("b-2", "Succeeded", T).await["result"], "{\"n\":2}");
    assert_eq!(app.wait_status("b-3", "Succeeded", T).await["result_base64"], "/wA=");
    assert_eq!(app.wait_status("b-1", "Succeeded", T).await["result"], "text");
    let content_type = |id: &str| {
        rx.calls()
            .into_iter()
            .find(|c| c.task_id() == id)
            .unwrap()
            .header("content-type")
            .unwrap()
            .to_string()
    };
    assert_eq!(content_type("b-1"), "text/plain; charset=utf-8");
    assert_eq!(content_type("b-2"), "application/json");
    assert_eq!(content_type("b-3"), "application/octet-stream");
    app.stop().await;
}

#[tokio::test]
async fn a_nats_submission_is_visible_within_a_second_while_its_function_holds_100k_tasks() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::Hang).await;
    app.put_fn("deep", json!({"endpoint": rx.url(), "concurrency": {"max": 1}}))
        .await;
    let js = nats.jetstream().await;
    // Pipelined publishes, a bounded window of PubAck futures in flight.
    let mut inflight = futures::stream::FuturesUnordered::new();
    for i in 0..100_000u32 {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("deep-{i}").as_str());
        inflight.push(std::future::IntoFuture::into_future(
            js.publish_with_headers("jetask.submit.deep", h, "x".into())
                .await
                .unwrap(),
        ));
        if inflight.len() >= 2000 {
            futures::StreamExt::next(&mut inflight).await.unwrap().unwrap();
        }
    }
    while let Some(a) = futures::StreamExt::next(&mut inflight).await {
        a.unwrap();
    }
    wait_consumer_idle(&js, "intake", Duration::from_secs(120)).await;
    let stream = js.get_stream("JETASK_SUBMIT").await.unwrap();
    let mut c: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("fn-deep").await.unwrap();
    assert!(
        c.info().await.unwrap().num_pending > 99_000,
        "the function's queue is deep"
    );
    let start = Instant::now();
    publish(&js, "deep", b"x", &[("Nats-Msg-Id", "the-new-one")]).await;
    app.wait_status("the-new-one", "Enqueued", Duration::from_secs(1)).await;
    println!("visible as Enqueued after {:?} behind 100k queued", start.elapsed());
}
