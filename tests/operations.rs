//! Running jetask: start-up of several replicas, configuration errors, functions shared across
//! replicas, crashes and graceful shutdown of a real `jetask serve` process.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn two_replicas_starting_at_once_both_come_up_and_share_functions_within_a_second() {
    let nats = NatsServer::start();
    let (a, b) = tokio::join!(start_app(config(&nats)), start_app(config(&nats)));
    let rx = Receiver::start(|_, _| Reply::ok("from either")).await;
    a.put_fn("shared", json!({"endpoint": rx.url(), "max_attempts": 7}))
        .await;
    let started = std::time::Instant::now();
    wait_for("replica b to see the function", Duration::from_secs(1), || async {
        b.get("/v1/functions/shared").await.status == 200
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(b.get("/v1/functions/shared").await.body["max_attempts"], 7);
    let listed = b.get("/v1/functions").await.body;
    assert_eq!(listed["functions"][0]["name"], "shared");
    let id = b.submit("shared", "x", &[]).await;
    a.wait_status(&id, "Succeeded", T).await;
    assert_eq!(
        a.send(a.http.delete(format!("{}/v1/functions/shared", a.base)))
            .await
            .status,
        204
    );
    wait_for("replica b to see the deletion", Duration::from_secs(1), || async {
        b.get("/v1/functions/shared").await.status == 404
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn function_policies_are_validated_key_by_key_and_the_secret_is_shown_once() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let put = |body: serde_json::Value| {
        let app = &app;
        async move {
            app.send(app.http.put(format!("{}/v1/functions/f", app.base)).json(&body))
                .await
        }
    };
    for (body, key) in [
        (json!({"endpoint": "http://127.0.0.1:9/", "timeout": "100h"}), "timeout"),
        (
            json!({"endpoint": "http://127.0.0.1:9/", "concurrency": {"max": 0}}),
            "concurrency.max",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:9/", "rate_limit": {"per_second": 0}}),
            "rate_limit.per_second",
        ),
        (
            json!({"endpoint": "http://127.0.0.1:9/", "on_failure": "smtp://x"}),
            "on_failure",
        ),
        (json!({"endpoint": "not a url"}), "endpoint"),
        (json!({"endpoint": "http://127.0.0.1:9/", "retries": 3}), "retries"),
    ] {
        let a = put(body).await;
        assert_eq!(a.status, 400);
        assert!(
            a.body["error"]["message"].as_str().unwrap().starts_with(key),
            "{}",
            a.body
        );
    }
    let created = put(json!({"endpoint": "http://127.0.0.1:9/"})).await;
    assert_eq!(created.status, 201);
    assert!(created.body["signing_secret"].as_str().unwrap().starts_with("whsec_"));
    let got = app.get("/v1/functions/f").await.body;
    assert!(got.get("signing_secret").is_none());
    assert_eq!(got["timeout"], "1m");
    assert_eq!(got["queued"], 0);
    let updated = put(json!({"endpoint": "http://127.0.0.1:9/", "enabled": false})).await;
    assert_eq!(updated.status, 200);
    assert!(updated.body.get("signing_secret").is_none(), "kept, not shown again");
    assert_eq!(app.get("/v1/functions/f").await.body["enabled"], false);
    assert_eq!(app.get("/v1/functions/bad.name").await.status, 400);
    app.stop().await;
}

#[tokio::test]
async fn a_server_too_small_for_explicit_limits_stops_start_up_naming_both_values() {
    // Limits set in the config are kept as they are (defaulted ones would be fitted to the
    // server: see tests/deployment.rs).
    let nats = NatsServer::start_with("");
    let mut c = config(&nats);
    c.limits.max_payload_set = true;
    c.limits.max_result_set = true;
    let err = jetask::service::start(c)
        .await
        .err()
        .expect("start-up must fail")
        .to_string();
    assert!(err.contains("1048576"), "{err}");
    assert!(err.contains("max_payload"), "{err}");
}

#[tokio::test]
async fn a_bad_config_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("jetask.toml");
    std::fs::write(&conf, "[limits]\nmax_payload = \"lots\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .args(["serve", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_payload"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    std::fs::write(&conf, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .args(["serve", "--config"])
        .arg(&conf)
        .env("JETASK_HTTP_LISTEN", "everywhere")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}

#[tokio::test]
async fn killing_the_service_mid_attempt_loses_nothing_and_the_attempt_runs_again() {
    let nats = NatsServer::start();
    let rx = Receiver::start(|_, n| {
        if n == 0 {
            Reply::Hang
        } else {
            Reply::ok("second time lucky")
        }
    })
    .await;
    let first = serve_process(
        &nats,
        &format!("[functions.crashy]\nendpoint = \"{}\"\n", rx.url()),
        &[],
        Stdio::null(),
    )
    .await;
    let client = &first.app;
    let id = client.submit("crashy", "x", &[]).await;
    rx.wait_calls(1, T).await;
    drop(first); // SIGKILL while the attempt is in flight
    let second = start_app(config(&nats)).await;
    let t = second.wait_status(&id, "Succeeded", Duration::from_secs(30)).await;
    assert_eq!(rx.calls().iter().map(|c| c.attempt()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(t["attempts"], 2);
    let retry = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == "Retrying")
        .expect("Retrying event");
    assert_eq!(retry["detail"], "interrupted");
    second.stop().await;
}

#[tokio::test]
async fn sigterm_lets_the_attempt_in_flight_finish_before_exiting() {
    let nats = NatsServer::start();
    let rx = Receiver::start(|_, _| Reply::After(Duration::from_millis(1500), Box::new(Reply::ok("finished")))).await;
    let mut proc = serve_process(
        &nats,
        &format!("[functions.slowish]\nendpoint = \"{}\"\n", rx.url()),
        &[],
        Stdio::null(),
    )
    .await;
    let client = &proc.app;
    let id = client.submit("slowish", "x", &[]).await;
    rx.wait_calls(1, T).await;
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || {
        let s = proc.child.wait();
        (s, proc)
    })
    .await
    .unwrap();
    assert!(status.0.unwrap().success());
    let app = start_app(config(&nats)).await;
    let t = app.task(&id).await.unwrap();
    assert_eq!(t["status"], "Succeeded", "finished within the grace period: {t}");
    assert_eq!(rx.count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_long_attempt_is_never_redelivered_while_in_flight() {
    let nats = NatsServer::start();
    // ack_wait is 2s in tests: this attempt lasts three times that.
    let (a, b) = tokio::join!(start_app(config(&nats)), start_app(config(&nats)));
    let rx = Receiver::start(|_, _| Reply::After(Duration::from_secs(6), Box::new(Reply::ok("long")))).await;
    a.put_fn("long", json!({"endpoint": rx.url()})).await;
    let id = a.submit("long", "x", &[]).await;
    b.wait_status(&id, "Succeeded", T).await;
    assert_eq!(rx.count(), 1, "kept alive with progress acks, never run twice");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn while_nats_is_down_submissions_answer_503_and_work_resumes_when_it_returns() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("back")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let before = app.submit("f", "x", &[]).await;
    app.wait_status(&before, "Succeeded", T).await;

    let port = nats.port;
    // Stop the server, keeping its store to start it again on the same port.
    let restarted_later = nats.restart_paused();
    wait_for("readyz to notice", T, || async {
        app.get("/readyz").await.status == 503
    })
    .await;
    let a = app
        .post("/v1/functions/f/tasks", "x", &[("Idempotency-Key", "while-down")])
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nothing was accepted"));

    let nats = restarted_later.resume();
    assert_eq!(nats.port, port);
    wait_for("readyz to recover", T, || async {
        app.get("/readyz").await.status == 200
    })
    .await;
    let id = app.submit("f", "x", &[("Idempotency-Key", "after")]).await;
    app.wait_status(&id, "Succeeded", T).await;
    assert!(app.task("while-down").await.is_none(), "a 503 accepted nothing");
    app.stop().await;
}
