//! The command line against a running instance: readable output, `--json`, exit codes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};
use support::*;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[tokio::test]
async fn functions_and_tasks_are_managed_from_the_command_line() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let ok = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: c.body.to_ascii_uppercase(),
        headers: vec![],
    })
    .await;
    let bad = Receiver::start(|_, _| Reply::code(400)).await;
    let cli = Cli::new(&app);

    let put = cli
        .run(&["fn", "put", "shout", "--endpoint", &ok.url(), "--max-attempts", "2"])
        .await;
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    assert!(stdout(&put).contains("signing_secret: whsec_"));
    let got = cli.run(&["fn", "get", "shout", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(v["max_attempts"], 2);
    assert!(stdout(&cli.run(&["fn", "list"]).await).contains("shout"));

    let done = cli.run(&["submit", "shout", "hello", "--id", "cli-1", "--wait"]).await;
    assert!(done.status.success());
    assert_eq!(stdout(&done).trim(), "HELLO");
    let again = cli.run(&["submit", "shout", "hello", "--id", "cli-1"]).await;
    assert!(stdout(&again).contains("duplicate"));

    assert!(cli
        .run(&["fn", "put", "reject", "--endpoint", &bad.url()])
        .await
        .status
        .success());
    let failed = cli.run(&["submit", "reject", "x", "--wait"]).await;
    assert_eq!(failed.status.code(), Some(1), "--wait exits 0 only on Succeeded");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("Failed"));

    // IDs for scripts: --print-id prints the ID alone, --json has it as task_id.
    let id = stdout(&cli.run(&["submit", "reject", "y", "--print-id"]).await);
    let id = id.trim();
    assert!(!id.is_empty() && !id.contains(' '), "{id:?}");
    let json = cli.run(&["submit", "reject", "y", "--id", "cli-2", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["task_id"], "cli-2");
    let both = cli.run(&["submit", "reject", "y", "--print-id", "--json"]).await;
    assert_eq!(both.status.code(), Some(2), "--print-id and --json are a usage error");
    // task wait: exit 0 once the history holds the state, 1 when the task ended without it.
    let waited = cli.run(&["task", "wait", id, "--status", "Failed"]).await;
    assert_eq!(
        waited.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(stdout(&waited).contains("status: Failed"));
    let passed = cli.run(&["task", "wait", id, "--status", "running"]).await;
    assert_eq!(passed.status.code(), Some(0), "a state the task went through counts");
    let never = cli.run(&["task", "wait", id]).await;
    assert_eq!(never.status.code(), Some(1), "it ended Failed, never Succeeded");
    let missing = cli.run(&["task", "wait", "no-such-task", "--timeout", "1s"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no task no-such-task"));
    let bad = cli.run(&["task", "wait", id, "--status", "Done"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("one of Enqueued"));
    let replayed = stdout(&cli.run(&["task", "replay", id, "--print-id"]).await);
    let shown = stdout(&cli.run(&["task", "get", replayed.trim(), "--json"]).await);
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(v["replay_of"], id);

    // jetask nats req: the micro service's answers, and its errors with exit 1.
    let nats_url = ("JETASK_NATS_URL", nats.url.as_str());
    let got = cli
        .run_with(&["nats", "req", "jetask.api.task.get", r#"{"id": "cli-1"}"#], nats_url)
        .await;
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    let v: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["result"].as_str()), (Some("cli-1"), Some("HELLO")));
    let unknown = cli
        .run_with(&["nats", "req", "jetask.api.task.get", r#"{"id": "nope"}"#], nats_url)
        .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("(NATS error code 404)"));
    let ack = cli
        .run_with(
            &[
                "nats",
                "req",
                "jetask.submit.reject",
                "over nats",
                "-H",
                "Nats-Msg-Id: cli-3",
            ],
            nats_url,
        )
        .await;
    assert!(stdout(&ack).contains(r#""stream":"JETASK_SUBMIT""#), "{}", stdout(&ack));
    let nobody = cli.run_with(&["nats", "req", "jetask.api.nope"], nats_url).await;
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("nothing answers on jetask.api.nope"));

    let shown = stdout(&cli.run(&["task", "get", "cli-1"]).await);
    assert!(
        shown.contains("Succeeded") && shown.contains("HELLO") && shown.contains("attempt 1"),
        "{shown}"
    );
    let listed = cli.run(&["task", "list", "--function", "shout", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v["tasks"][0]["id"], "cli-1");

    let stop = cli.run(&["task", "stop", "cli-1"]).await;
    assert_eq!(stop.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stop.stderr).contains("cannot be stopped"));
    let unknown = cli.run(&["submit", "nope", "x"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no function \"nope\""));
    let bad_delay = cli.run(&["submit", "shout", "x", "--delay", "soon"]).await;
    assert!(String::from_utf8_lossy(&bad_delay.stderr).contains("Jetask-Delay"));
    assert!(cli.run(&["fn", "delete", "reject"]).await.status.success());
    app.stop().await;
}

#[tokio::test]
async fn a_client_command_without_a_service_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jetask.toml"), "[http]\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .args(["task", "list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9"));
}

/// `jetask bench --json` (CONTRACT §9, §12 "Cost") against an existing server, with `jetask serve`
/// as a child process: every task finishes, and the report has the rates, the ratio to the raw
/// rate, the latency percentiles of that run and the CPU per task of each process.
#[tokio::test]
async fn bench_runs_every_task_and_reports_the_run_as_json() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--nats-url",
        &nats.url,
        "--tasks",
        "500",
        "--http-tasks",
        "50",
        "--json",
    ];
    let out = run_jetask(dir.path(), &args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tasks"], 500);
    assert_eq!(r["finished"], 500, "every task submitted over NATS finished: {r}");
    let rate = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {r}"));
    for k in ["submit_per_s", "http_submit_per_s", "e2e_per_s", "raw_per_s", "rss_mb"] {
        assert!(rate(k) > 0.0, "{k}: {r}");
    }
    let ratio = rate("e2e_per_s") / rate("raw_per_s");
    assert!((rate("ratio") - ratio).abs() < 0.002, "ratio is e2e over raw: {r}");
    for phase in ["queue", "run", "e2e"] {
        let l = &r["latency_ms"][phase];
        let (p50, p99, max) = (
            l["p50"].as_f64().unwrap(),
            l["p99"].as_f64().unwrap(),
            l["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{phase}: {l}");
    }
    assert_eq!(r["in_process"], false, "jetask runs as a child by default: {r}");
    let cpu = r["cpu_us_per_task"]
        .as_object()
        .unwrap_or_else(|| panic!("cpu_us_per_task: {r}"));
    let mut keys: Vec<&str> = cpu.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["client", "jetask", "nats_server"], "{r}");
    for k in ["jetask", "client"] {
        assert!(cpu[k].as_f64().is_some_and(|us| us > 0.0), "{k} CPU per task: {r}");
    }
    // The server was not started by the bench: its pid is unknown, so its CPU is not reported.
    assert!(
        cpu["nats_server"].is_null() || cpu["nats_server"].as_f64().is_some_and(|us| us > 0.0),
        "nats_server CPU per task: {r}"
    );
}
