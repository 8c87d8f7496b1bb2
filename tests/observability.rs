//! What an operator watches: Prometheus metrics (counts, latencies, queue depths read from
//! JetStream), health and readiness.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn metrics_count_tasks_by_state_attempts_by_outcome_and_endpoint_throttling() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let throttled_once = std::sync::atomic::AtomicBool::new(false);
    let work = Receiver::start(move |call, _| match String::from_utf8_lossy(&call.body).as_ref() {
        "throttle" if !throttled_once.swap(true, std::sync::atomic::Ordering::SeqCst) => {
            Reply::code(429).with_header("Retry-After", "1")
        }
        "bad" => Reply::code(400),
        _ => Reply::ok("done"),
    })
    .await;
    app.put_fn(
        "work",
        json!({"endpoint": work.url(), "concurrency": {"max": 7, "adaptive": false}}),
    )
    .await;
    let mut ids = Vec::new();
    for input in ["a", "b", "throttle", "bad"] {
        ids.push((input, app.submit("work", input, &[]).await));
    }
    for (input, id) in &ids {
        let want = if *input == "bad" { "Failed" } else { "Succeeded" };
        app.wait_status(id, want, T).await;
    }
    let text = app.metrics().await;
    let f = "function=\"work\"";
    assert_eq!(
        sample(&text, &format!("jetask_tasks_submitted_total{{{f}}}")),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("jetask_tasks_finished_total{{{f},state=\"Succeeded\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_tasks_finished_total{{{f},state=\"Failed\"}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_attempts_total{{{f},outcome=\"success\"}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("jetask_attempts_total{{{f},outcome=\"FunctionError\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_attempts_total{{{f},outcome=\"throttled\"}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_throttled_total{{{f},scope=\"endpoint\"}}")),
        Some(1.0)
    );
    // Queue time once per task (the throttled call's retry is not a second first start);
    // run time once per call; end to end once per finished task.
    assert_eq!(
        sample(&text, &format!("jetask_queue_time_seconds_count{{{f}}}")),
        Some(4.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_run_time_seconds_count{{{f}}}")),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, &format!("jetask_end_to_end_seconds_count{{{f}}}")),
        Some(4.0)
    );
    // The throttled task waited its Retry-After second: its end to end is at least 1 s.
    let under_1s = sample(&text, &format!("jetask_end_to_end_seconds_bucket{{le=\"1.0\",{f}}}")).unwrap();
    assert!(under_1s <= 3.0, "{text}");
    assert_eq!(sample(&text, &format!("jetask_concurrency_limit{{{f}}}")), Some(7.0));
    assert_eq!(sample(&text, &format!("jetask_attempts_in_flight{{{f}}}")), Some(0.0));
    app.stop().await;
}

#[tokio::test]
async fn queue_depths_come_from_jetstream_split_into_queued_delayed_and_running() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    // One slot, held by the first call for longer than the test looks.
    let slow = Receiver::start(|_, _| Reply::After(Duration::from_secs(30), Box::new(Reply::ok("")))).await;
    app.put_fn(
        "slow",
        json!({"endpoint": slow.url(), "concurrency": {"max": 1}, "timeout": "60s"}),
    )
    .await;
    for i in 0..4 {
        app.submit("slow", &format!("{i}"), &[]).await;
    }
    for i in 0..2 {
        app.submit("slow", &format!("later{i}"), &[("Jetask-Delay", "1h")])
            .await;
    }
    slow.wait_calls(1, T).await;
    let f = "function=\"slow\"";
    let last = std::sync::Mutex::new(String::new());
    wait_for("queue gauges", T, || async {
        let text = app.metrics().await;
        let ok = sample(&text, &format!("jetask_tasks_running{{{f}}}")) == Some(1.0)
            && sample(&text, &format!("jetask_tasks_delayed{{{f}}}")) == Some(2.0)
            && sample(&text, &format!("jetask_tasks_queued{{{f}}}")) == Some(3.0)
            && sample(&text, &format!("jetask_tasks_runnable{{{f}}}")) == Some(3.0);
        *last.lock().unwrap() = text;
        ok
    })
    .await;
    let last = last.into_inner().unwrap();
    assert_eq!(sample(&last, &format!("jetask_attempts_in_flight{{{f}}}")), Some(1.0));
    // JetStream's own view: every submission is still unsettled.
    let pending = sample(&last, &format!("jetask_consumer_pending{{{f}}}")).unwrap();
    let ack_pending = sample(&last, &format!("jetask_consumer_ack_pending{{{f}}}")).unwrap();
    assert_eq!(pending + ack_pending, 6.0, "{last}");
    assert_eq!(slow.count(), 1, "one slot: one call at a time");
    // The function's own answer shows the same figures.
    let live = app.get("/v1/functions/slow").await.body;
    assert_eq!(
        (
            &live["queued"],
            &live["delayed"],
            &live["running"],
            &live["concurrency_limit"]
        ),
        (&json!(3), &json!(2), &json!(1), &json!(1)),
        "{live}"
    );
    app.stop().await;
}

#[tokio::test]
async fn health_is_alive_and_ready_only_while_jetstream_is_reachable() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    let paused = nats.restart_paused();
    wait_for("not ready", T, || async { app.get("/readyz").await.status == 503 }).await;
    assert_eq!(app.get("/healthz").await.status, 200, "alive while NATS is away");
    let _nats = paused.resume();
    wait_for("ready again", T, || async { app.get("/readyz").await.status == 200 }).await;
    app.stop().await;
}

#[tokio::test]
async fn json_logs_put_each_attempt_in_a_span_with_task_function_attempt_and_trace() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let serve = serve_process(
        &nats,
        "[log]\nformat = \"json\"\n",
        &[],
        std::fs::File::create(&log).unwrap().into(),
    )
    .await;
    let app = &serve.app;
    let broken = Receiver::start(|_, _| Reply::code(500)).await;
    app.put_fn(
        "broken",
        json!({"endpoint": broken.url(), "max_attempts": 2, "backoff": {"initial": "10ms"}}),
    )
    .await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let id = app.submit("broken", "x", &[("traceparent", tp)]).await;
    app.wait_status(&id, "Failed", T).await;
    let mut lines = Vec::new();
    wait_for("two attempt log lines", T, || {
        let found: Vec<serde_json::Value> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "attempt failed")
            .collect();
        let done = found.len() == 2;
        lines = found;
        async move { done }
    })
    .await;
    drop(serve);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["fields"]["outcome"], "FunctionError", "{line}");
        let span = &line["span"];
        assert_eq!(span["name"], "attempt", "{line}");
        assert_eq!(span["attempt"], n as u64 + 1, "{line}");
        assert_eq!(span["trace_id"], "0af7651916cd43dd8448eb211c80319c", "{line}");
        let task = line["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "task")
            .unwrap();
        assert_eq!(task["task_id"], id.as_str(), "{line}");
        assert_eq!(task["function"], "broken", "{line}");
    }
}

/// Built with `--features otel`: spans reach an OTLP/HTTP collector, each attempt a child of the
/// submitter's span, and the function is called with the attempt's span as parent.
#[cfg(feature = "otel")]
#[tokio::test]
async fn with_the_otel_feature_attempt_spans_are_exported_under_the_submitters_trace() {
    let bodies: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let seen = bodies.clone();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body.to_vec());
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let nats = NatsServer::start();
    let serve = serve_process(
        &nats,
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let app = &serve.app;
    let rx = Receiver::start(|_, _| Reply::ok("")).await;
    app.put_fn("traced", json!({"endpoint": rx.url()})).await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{trace_id}-b7ad6b7169203331-01");
    let id = app.submit("traced", "x", &[("traceparent", &tp)]).await;
    app.wait_status(&id, "Succeeded", T).await;
    let got = rx.calls()[0].header("traceparent").unwrap().to_string();
    let parts: Vec<&str> = got.split('-').collect();
    assert_eq!(parts[1], trace_id, "same trace: {got}");
    assert_ne!(
        parts[2], "b7ad6b7169203331",
        "the attempt's own span is the parent: {got}"
    );
    let raw_trace: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let raw_span: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&parts[2][2 * i..2 * i + 2], 16).unwrap())
        .collect();
    wait_for("the attempt span at the collector", T, || {
        let bodies = bodies.lock().unwrap().clone();
        let found = bodies.iter().any(|b| {
            let has = |needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
            has(b"attempt") && has(&raw_trace) && has(&raw_span)
        });
        async move { found }
    })
    .await;
}
