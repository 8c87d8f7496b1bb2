//! Compatibility with NATS clients that know nothing of jetask: nats-py, the official JavaScript
//! client (`@nats-io/jetstream`, run with node) and the Go client (`nats.go`, built offline from
//! Debian's package) submit with plain JetStream publishes, follow the event subjects, and (JS,
//! Go) see a duplicate PubAck and read the record over the NATS micro API. `.ci/run` installs
//! all three; a missing one fails the test, saying how to install it.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn a_python_nats_client_submits_and_follows_a_task() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|c, _| Reply::Status {
        code: 200,
        body: [b"py:".as_slice(), &c.body].concat(),
        headers: vec![],
    })
    .await;
    app.put_fn("pyfn", json!({"endpoint": rx.url()})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/submit.py");
    let url = nats.url.clone();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .args([script, &url, "pyfn", "py-1", "hello"])
            .output(),
    )
    .await
    .expect("python client finished")
    .expect("python3 runs (nats-py is installed by .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["puback"]["stream"], "JETASK_SUBMIT");
    assert_eq!(lines[0]["puback"]["duplicate"], false);
    let events: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(events.first(), Some(&"Enqueued"));
    assert_eq!(events.last(), Some(&"Succeeded"));
    let record = &lines.last().unwrap()["record"];
    assert_eq!(record["result"], "py:hello");
    assert_eq!(record["user"], "py");
    assert_eq!(rx.calls()[0].header("content-type"), Some("text/plain"));
    app.stop().await;
}

/// `tests/compat/<file>`.
fn compat_file(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat").join(file)
}

/// Runs a client program (with a 60 s limit) and returns its stdout, one JSON value a line;
/// `missing` says how to install the client when the program cannot be started.
async fn run_client(mut cmd: tokio::process::Command, what: &str, missing: &str) -> Vec<Value> {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60s"))
        .unwrap_or_else(|e| panic!("{what} cannot run ({e}): {missing}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\nstdout: {stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{what} printed {l:?}: {e}")))
        .collect()
}

/// What a JS or Go client printed for task `id` of `function`, submitted twice as `user` with
/// input `hello`: two PubAcks, the second a duplicate of the first; the task's events from
/// `Enqueued` to `Succeeded` on `jetask.events.<function>.<State>`; its record as
/// `jetask.api.task.get` answers it; and jetask's own record agreeing, with one function call.
async fn check_client_run(lines: &[Value], app: &App, rx: &Receiver, function: &str, id: &str, user: &str) {
    let acks: Vec<&Value> = lines.iter().filter_map(|l| l.get("puback")).collect();
    assert_eq!(acks.len(), 2, "{lines:?}");
    assert_eq!(acks[0]["stream"], "JETASK_SUBMIT");
    assert_eq!(acks[0]["duplicate"], false);
    assert_eq!(acks[1]["stream"], "JETASK_SUBMIT");
    assert_eq!(
        acks[1]["duplicate"], true,
        "the same Nats-Msg-Id again is a duplicate: {lines:?}"
    );
    assert_eq!(
        acks[1]["seq"], acks[0]["seq"],
        "a duplicate's PubAck names the first message"
    );
    let events: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| Some((l.get("event")?.as_str()?, l["status"].as_str()?)))
        .collect();
    assert_eq!(events.first().map(|e| e.1), Some("Enqueued"), "{events:?}");
    assert_eq!(events.last().map(|e| e.1), Some("Succeeded"), "{events:?}");
    for (subject, status) in &events {
        assert_eq!(*subject, format!("jetask.events.{function}.{status}"));
    }
    let api = &lines.last().unwrap()["record"];
    assert_eq!(api["id"], id, "jetask.api.task.get answered: {api}");
    assert_eq!(api["status"], "Succeeded");
    assert_eq!(api["result"], format!("{user}:hello"));
    assert_eq!(api["user"], user);
    let record = app.wait_status(id, "Succeeded", Duration::from_secs(10)).await;
    assert_eq!(record["result"], api["result"]);
    assert_eq!(record["user"], user);
    assert_eq!(record["function"], function);
    assert_eq!(states(&record).first().map(String::as_str), Some("Enqueued"));
    let calls = rx.calls();
    assert_eq!(calls.len(), 1, "the duplicate made no second call");
    assert_eq!(calls[0].task_id(), id);
    assert_eq!(calls[0].header("content-type"), Some("text/plain"));
    assert_eq!(calls[0].body, b"hello");
}

/// A receiver answering `<prefix>:<input>`.
async fn echo_receiver(prefix: &'static str) -> Receiver {
    Receiver::start(move |c, _| Reply::Status {
        code: 200,
        body: [prefix.as_bytes(), b":", &c.body].concat(),
        headers: vec![],
    })
    .await
}

#[tokio::test]
async fn the_javascript_nats_client_submits_dedupes_follows_and_gets_a_task() {
    let script = compat_file("submit.mjs");
    let install = "run .ci/run, or install node (v20+) and `npm ci --prefix tests/compat`";
    assert!(
        compat_file("node_modules/@nats-io/jetstream").is_dir(),
        "the NATS JavaScript client is not installed: {install}"
    );
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = echo_receiver("js").await;
    app.put_fn("jsfn", json!({"endpoint": rx.url()})).await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script).args([&nats.url, "jsfn", "js-1", "hello"]);
    let lines = run_client(cmd, "node tests/compat/submit.mjs", install).await;
    check_client_run(&lines, &app, &rx, "jsfn", "js-1", "js").await;
    app.stop().await;
}

#[tokio::test]
async fn the_go_nats_client_submits_dedupes_follows_and_gets_a_task() {
    let install = "run .ci/run, or `apt-get install golang-go golang-github-nats-io-go-nats-dev`";
    let gopath = "/usr/share/gocode";
    assert!(
        Path::new(gopath).join("src/github.com/nats-io/nats.go").is_dir(),
        "the Go NATS client is not installed in {gopath}: {install}"
    );
    // Built offline in GOPATH mode from Debian's packaged sources: no module proxy is needed.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("submit");
    let mut build = tokio::process::Command::new("go");
    build
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(compat_file("submit.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOCACHE", dir.path().join("gocache"))
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .kill_on_drop(true);
    let built = tokio::time::timeout(Duration::from_secs(300), build.output())
        .await
        .expect("go build finished within 300s")
        .unwrap_or_else(|e| panic!("go cannot run ({e}): {install}"));
    assert!(
        built.status.success(),
        "go build tests/compat/submit.go failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = echo_receiver("go").await;
    app.put_fn("gofn", json!({"endpoint": rx.url()})).await;
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args([&nats.url, "gofn", "go-1", "hello"]);
    let lines = run_client(cmd, "tests/compat/submit.go", install).await;
    check_client_run(&lines, &app, &rx, "gofn", "go-1", "go").await;
    app.stop().await;
}
