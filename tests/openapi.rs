//! The OpenAPI document (`GET /openapi.json`, CONTRACT §12) against a real nats-server and a real
//! jetask: it is OpenAPI 3.1, an independent validator (openapi-spec-validator) accepts it, it
//! names every route the router serves and docs/api.md lists, and a property-based tester
//! (schemathesis) sending what the document allows, with a token, finds no server error and no
//! answer (status, content type, body) that the document does not describe.
//!
//! The Python tools are pinned in `.ci/run`: `pip install openapi-spec-validator==0.9.0
//! schemathesis==4.32.5`.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every row of the route table of docs/api.md.
fn documented_routes() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let table = text.split("## Routes").nth(1).unwrap().split("\n## ").next().unwrap();
    table
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?.split('`').next()?;
            let (method, path) = cell.split_once(' ')?;
            METHODS
                .contains(&method.to_lowercase().as_str())
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect()
}

/// A command of a pip-installed tool: on `PATH`, else in Python's scripts folder.
fn python_tool(name: &str) -> PathBuf {
    let on_path = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return PathBuf::from(name);
    }
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .expect("python3");
    let candidate = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(name);
    assert!(
        candidate.exists(),
        "{name} is not installed: pip install openapi-spec-validator==0.9.0 schemathesis==4.32.5 (as .ci/run does)"
    );
    candidate
}

/// Runs `cmd` to its end or until `within` passes (then kills it and fails); its exit status
/// and its output (stdout and stderr together).
fn run_bounded(mut cmd: Command, within: Duration) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the tool");
    let Some(status) = exited_within(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "still running after {within:?}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Fetches `/openapi.json` (without a token: it needs none) and checks what holds of it alone.
async fn fetch_document(app: &App) -> Value {
    let resp = app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0", "an OpenAPI 3.1 document");
    assert_eq!(
        doc,
        jetask::api::openapi(),
        "the served document is the one the code makes"
    );
    doc
}

/// A configuration with auth on and egress only to `localhost`: what schemathesis makes up as
/// endpoints and webhooks is refused at `PUT` and never called, and no host name is looked up.
fn test_config(nats: &NatsServer) -> jetask::core::config::Config {
    let mut c = config(nats);
    c.auth.tokens.insert("openapi-test-token".into(), "alice".into());
    c.egress.allow = vec!["localhost".parse().unwrap()];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1_and_names_every_route() {
    let nats = NatsServer::start();
    let app = start_app(test_config(&nats)).await;
    let doc = fetch_document(&app).await;

    // The router adds routes only through `routes!`, which documents each one: a plain
    // `.route(` in it would serve a path the document does not name.
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/mod.rs")).unwrap();
    let router_src = src
        .split("fn routes()")
        .nth(1)
        .unwrap()
        .split("pub fn starting_router")
        .next()
        .unwrap()
        // The console's page and assets: HTML for browsers, not API (tests/console.rs).
        .replace(".merge(console::routes())", "");
    for plain in [".route(", ".route_service(", ".nest(", ".nest_service(", ".merge("] {
        assert!(
            !router_src.contains(plain),
            "src/api/mod.rs adds a route with {plain} in routes()/router(): use .routes(routes!(handler)) so that it is documented"
        );
    }

    // docs/api.md's route table and the document name the same operations.
    let ops = operations(&doc);
    let mut api_routes = documented_routes();
    assert!(
        api_routes.remove(&("GET".to_string(), "/".to_string())),
        "the console's row"
    );
    assert_eq!(
        ops, api_routes,
        "the document's operations vs docs/api.md's route table"
    );

    // Every documented operation is served: none falls through to the router's 404 or a 405.
    let token = "openapi-test-token";
    for (method, path) in &ops {
        let url = format!("{}{}", app.base, path.replace("{name}", "nope").replace("{id}", "nope"));
        let req = app
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}");
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && body["error"]["code"] != "not_found",
            "{method} {path}: {status} {body}"
        );
        let documented = doc["paths"][path][method.to_lowercase()]["responses"]
            .as_object()
            .unwrap()
            .contains_key(&status.to_string());
        assert!(
            documented,
            "{method} {path} answered {status}, which its entry does not list"
        );
    }
    // Answers the fuzzer cannot provoke (it sends valid UTF-8) or that it found once: errors
    // are JSON bodies with the route's own code, never plain text or a dropped connection.
    let authed = App::at(&app.base).with_token(token);
    for (path, code) in [
        ("/v1/tasks/%FF", "invalid_request"),
        ("/v1/functions/caf%E9", "invalid_function_name"),
        ("/v1/schedules/%C3%28", "invalid_schedule"),
    ] {
        let a = authed.get(path).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}: {}",
            a.body
        );
    }
    for body in [
        json!({"function": "f", "every": "106751991167d"}),
        json!({"function": "f", "cron": "0 0 31 2 *"}),
    ] {
        let a = authed
            .send(authed.http.put(format!("{}/v1/schedules/s", app.base)).json(&body))
            .await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (400, Some("invalid_schedule")),
            "{body}: {}",
            a.body
        );
    }

    // Under auth, /v1/ asks for the token; the document says so.
    let a = app.get("/v1/tasks").await;
    assert_eq!(a.status, 401);
    assert_eq!(
        doc["paths"]["/v1/tasks"]["get"]["security"],
        json!([{"bearer": []}, {}])
    );

    // The independent validator.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let mut cmd = Command::new(python_tool("openapi-spec-validator"));
    cmd.args(["--schema", "3.1", "--validation-errors", "all"]).arg(&file);
    let (status, out) = run_bounded(cmd, Duration::from_secs(60));
    assert!(status.success(), "openapi-spec-validator refused the document:\n{out}");
    assert!(out.contains("OK"), "{out}");
    app.stop().await;
}

/// Seeds what schemathesis's examples name (`resize`, `job-42`, `nightly-report`), so that its
/// requests reach real records: a function calling a local receiver, a failed task `job-42`
/// (replayable), a long task held `Running` (heartbeat, complete), a succeeded one, a schedule.
async fn seed(app: &App, receiver: &Receiver) {
    let endpoint = format!("http://localhost:{}/fn", receiver.addr.port());
    app.put_fn(
        "resize",
        json!({"endpoint": endpoint, "max_attempts": 1, "concurrency": {"min": 1, "max": 4, "adaptive": false}}),
    )
    .await;
    let failed = app.submit("resize", "x.png", &[("Idempotency-Key", "job-42")]).await;
    let long = app.submit("resize", "long", &[("Idempotency-Key", "job-long")]).await;
    let done = app.submit("resize", "ok", &[("Idempotency-Key", "job-ok")]).await;
    app.wait_status(&failed, "Failed", Duration::from_secs(20)).await;
    app.wait_status(&long, "Running", Duration::from_secs(20)).await;
    app.wait_status(&done, "Succeeded", Duration::from_secs(20)).await;
    let a = app
        .send(
            app.http
                .put(format!("{}/v1/schedules/nightly-report", app.base))
                .json(&json!({"function": "resize", "cron": "0 2 * * *", "input": {"scope": "all"}})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let nats = NatsServer::start();
    let app = start_app(test_config(&nats)).await.with_token("openapi-test-token");
    // Only `job-42` fails: its replays (and bulk replays of them) succeed, so that replaying
    // every failed task does not double them on each try.
    let receiver = Receiver::start(|call, _| match call.body.as_slice() {
        _ if call.task_id() == "job-42" => Reply::code(400),
        b"long" => Reply::code(202).with_header("Jetask-Async", "true"),
        _ => Reply::ok("done"),
    })
    .await;
    seed(&app, &receiver).await;
    let base = app.base.clone();

    // Bounded: examples per operation and a time budget for the whole run; the process is
    // killed (and the test fails) should it overrun that by far. One worker: with two,
    // hypothesis's `ast.parse` from two threads trips CPython 3.11's "AST constructor recursion
    // depth mismatch" now and then, an error of the tool, not of jetask.
    let max_time = std::env::var("JETASK_SCHEMATHESIS_SECONDS").unwrap_or_else(|_| "40".into());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python_tool("schemathesis"));
    cmd.current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["--header", "Authorization: Bearer openapi-test-token"])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25", "--max-time", &max_time, "--workers", "1"])
        .args(["--generation-database", "none", "--request-timeout", "20", "--no-color"]);
    if let Ok(seed) = std::env::var("JETASK_SCHEMATHESIS_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let started = Instant::now();
    let budget = Duration::from_secs(max_time.parse::<u64>().unwrap_or(40) + 60);
    let (status, out) = tokio::task::spawn_blocking(move || run_bounded(cmd, budget))
        .await
        .unwrap();
    eprintln!("schemathesis ran {:?}:\n{out}", started.elapsed());
    assert!(status.success(), "schemathesis found failures (output above)");
    assert!(!out.contains("No operations"), "schemathesis tested nothing");
    app.stop().await;
}
