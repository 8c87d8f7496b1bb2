//! The command line against a running instance: readable output, `--json`, exit codes.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};
use support::*;

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new(app: &App) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let listen = app.base.trim_start_matches("http://");
        std::fs::write(
            dir.path().join("jetask.toml"),
            format!("[http]\nlisten = \"{listen}\"\n"),
        )
        .unwrap();
        Cli { dir }
    }

    async fn run(&self, args: &[&str]) -> Output {
        jetask(self.dir.path(), args).await
    }
}

/// Runs the binary in `dir` to its end.
async fn jetask(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jetask"));
    cmd.args(args).current_dir(dir);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

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
    let out = jetask(dir.path(), &args).await;
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
