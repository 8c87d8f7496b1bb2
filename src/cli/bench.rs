//! `jetask bench` (CONTRACT §9): in one run, the raw JetStream publish+consume rate of the
//! NATS server (the physical limit), then N tasks submitted over NATS (pipelined publishes) to a
//! no-op function with task mode on, then tasks submitted over HTTP `:batch`; it reports
//! submission rates, end-to-end throughput, queue/run/end-to-end latency percentiles, the ratio
//! to the raw rate, the bench process's peak RSS and the CPU time per task of nats-server,
//! jetask and the bench itself.
//!
//! By default jetask runs as `jetask serve` child processes (this binary, a generated config
//! file), so that its CPU is measured apart from the load generator's; `--in-process` runs it
//! inside the bench process instead, as the bench did first.
//!
//! Latencies are measured by the bench's own clock: submission (or the due moment, with
//! `--due-in`) → the call reaching the no-op endpoint (queue) → the task's final event reaching
//! the bench (run) ; end to end is the sum. With `--endpoint`, the calls are not seen, and queue
//! and run come from the records' `queue_ms` and `duration_ms`.

use crate::core::config::Config;
use crate::core::duration::Dur;
use crate::service;
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub tasks: usize,
    pub payload: usize,
    pub nats_url: Option<String>,
    /// Call this endpoint instead of the built-in no-op one.
    pub endpoint: Option<String>,
    pub json: bool,
    /// All tasks due at the same moment, this long after the run starts (`Jetask-Not-Before`):
    /// latency is then counted from that moment.
    pub due_in: Option<Dur>,
    /// Submit at this steady rate (tasks/s) instead of as fast as possible.
    pub rate: Option<f64>,
    /// Tasks then submitted over HTTP `:batch` (0: skip).
    pub http_tasks: usize,
    /// The function's `concurrency.max`.
    pub concurrency: u32,
    /// Skip the raw JetStream measurement.
    pub no_raw: bool,
    /// jetask replicas to run, sharing the function's consumer.
    pub replicas: usize,
    /// Run jetask inside the bench process rather than as `jetask serve` children.
    pub in_process: bool,
    /// Start a 3-node cluster on loopback and run on it with R3 streams and buckets.
    pub cluster: bool,
}

/// Publishes in flight at once.
const WINDOW: usize = 2_000;
/// Items per HTTP `:batch` request, and requests in flight.
const HTTP_BATCH: usize = 1_000;
const HTTP_IN_FLIGHT: usize = 4;
/// The run gives up when no task finishes for this long.
const STALL: Duration = Duration::from_secs(60);

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({"p50": r(pct(&v, 0.5)), "p99": r(pct(&v, 0.99)), "max": r(pct(&v, 1.0))})
}

/// This process's resident memory now and at its peak, in MB (Linux; 0 elsewhere).
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn bar(total: usize, what: &str, hidden: bool) -> ProgressBar {
    let pb = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// JetStream publishes as a fast client sends them: plain publishes whose acknowledgements all
/// come back on one inbox, at most `window` awaited at once, counted on a progress bar.
/// async-nats' `jetstream::Context::publish` gives each publish a reply subject, a channel and a
/// timer, and parses its acknowledgement through an untagged enum: on a shared 2-core box that
/// client's CPU (a tenth of all of it during a burst) was taken from the server being measured.
struct Pipeline {
    client: async_nats::Client,
    inbox: async_nats::Subject,
    acks: async_nats::Subscriber,
    out: usize,
    window: usize,
    bar: ProgressBar,
}

/// A JetStream publish acknowledgement, as far as the bench reads it.
#[derive(Deserialize)]
struct PubAck {
    #[serde(default)]
    error: Option<PubAckError>,
}

#[derive(Deserialize)]
struct PubAckError {
    #[serde(default)]
    description: String,
    #[serde(default)]
    err_code: u64,
}

/// How long the bench waits for any acknowledgement before it gives up.
const ACK_WAIT: Duration = Duration::from_secs(30);

impl Pipeline {
    async fn new(client: &async_nats::Client, window: usize, bar: ProgressBar) -> anyhow::Result<Pipeline> {
        let inbox = async_nats::Subject::from(client.new_inbox());
        let acks = client.subscribe(inbox.clone()).await?;
        Ok(Pipeline {
            client: client.clone(),
            inbox,
            acks,
            out: 0,
            window: window.max(1),
            bar,
        })
    }

    async fn publish(
        &mut self,
        subject: &async_nats::Subject,
        headers: async_nats::HeaderMap,
        payload: &bytes::Bytes,
    ) -> anyhow::Result<()> {
        self.client
            .publish_with_reply_and_headers(subject.clone(), self.inbox.clone(), headers, payload.clone())
            .await?;
        self.out += 1;
        while self.out >= self.window {
            self.settle_one().await?;
        }
        Ok(())
    }

    async fn settle_one(&mut self) -> anyhow::Result<()> {
        let m = tokio::time::timeout(ACK_WAIT, self.acks.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no JetStream acknowledgement for {ACK_WAIT:?} with {} publishes outstanding",
                    self.out
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the NATS connection closed the acknowledgement subscription"))?;
        if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            anyhow::bail!("no JetStream stream takes the bench's subject (no responders)");
        }
        let ack: PubAck = serde_json::from_slice(&m.payload).with_context(|| {
            format!(
                "unreadable JetStream acknowledgement {:?}",
                String::from_utf8_lossy(&m.payload)
            )
        })?;
        if let Some(e) = ack.error {
            anyhow::bail!(
                "JetStream refused a publish: {} (err_code {})",
                e.description,
                e.err_code
            );
        }
        self.out -= 1;
        self.bar.inc(1);
        Ok(())
    }

    /// Awaits the acknowledgements still out.
    async fn finish(mut self) -> anyhow::Result<()> {
        while self.out > 0 {
            self.settle_one().await?;
        }
        self.bar.finish_and_clear();
        Ok(())
    }
}

/// The raw limit: N publishes (with message IDs, pipelined) then N pulls with plain acks, on a
/// scratch stream of the same server, same payload size.
pub struct Raw {
    pub publish_per_s: f64,
    pub consume_per_s: f64,
    /// N / (publish time + consume time).
    pub per_s: f64,
}

async fn measure_raw(
    client: &async_nats::Client,
    n: usize,
    payload: &bytes::Bytes,
    hidden: bool,
) -> anyhow::Result<Raw> {
    let js = jetstream::new(client.clone());
    let run = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("JETASK_BENCH_RAW_{run}");
    let subject = format!("jetask-bench-raw.{run}");
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("cannot create the raw benchmark stream")?;
    let mut pipe = Pipeline::new(client, WINDOW, bar(n, "raw pub", hidden)).await?;
    let subject = async_nats::Subject::from(subject);
    let start = Instant::now();
    for i in 0..n {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("r{run}-{i}").as_str());
        pipe.publish(&subject, h, payload).await?;
    }
    pipe.finish().await?;
    let publish = start.elapsed();
    let c = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let pb = bar(n, "raw sub", hidden);
    let start = Instant::now();
    let mut messages = c.messages().await?;
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(STALL, messages.next()).await {
            Ok(Some(Ok(m))) => {
                m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                got += 1;
                pb.inc(1);
            }
            Ok(Some(Err(e))) => return Err(anyhow::anyhow!(e)),
            _ => anyhow::bail!("raw consume stalled after {got} of {n} messages"),
        }
    }
    let consume = start.elapsed();
    pb.finish_and_clear();
    drop(messages);
    let _ = js.delete_stream(&name).await;
    Ok(Raw {
        publish_per_s: n as f64 / publish.as_secs_f64(),
        consume_per_s: n as f64 / consume.as_secs_f64(),
        per_s: n as f64 / (publish + consume).as_secs_f64(),
    })
}

/// What a task's final event tells the bench.
#[derive(Deserialize)]
struct Final {
    id: String,
    queue_ms: Option<u64>,
    duration_ms: Option<u64>,
}

#[derive(Clone, Copy)]
struct Finish {
    at: Instant,
    queue_ms: Option<u64>,
    duration_ms: Option<u64>,
}

/// What the bench learns per task, indexed by the task's number, so that memory stays small
/// next to the service's (the RSS reported is the whole process's).
struct Seen {
    /// Task IDs are `<prefix><n>`.
    prefix: String,
    called: Vec<Option<Instant>>,
    finished: Vec<Option<Finish>>,
    /// Tasks submitted over HTTP that finished.
    others: usize,
}

impl Seen {
    fn number(&self, id: &str) -> Option<usize> {
        id.strip_prefix(&self.prefix)?
            .parse()
            .ok()
            .filter(|n| *n < self.called.len())
    }
}

/// A `jetask serve` child process; stopped (SIGTERM, then killed if it lingers) when dropped, so
/// that an error in the bench leaves no service running.
struct ServeChild {
    child: Child,
    http: String,
    log: std::path::PathBuf,
}

/// How long a child gets to become ready, and to exit after SIGTERM.
const CHILD_READY: Duration = Duration::from_secs(60);
const CHILD_STOP: Duration = Duration::from_secs(10);

impl ServeChild {
    /// Starts `jetask serve` with a config file written to `dir`: this NATS URL (R3 streams and
    /// buckets on a cluster) and the HTTP API on a free loopback port.
    fn spawn(dir: &std::path::Path, n: usize, url: &str, replicated: bool) -> anyhow::Result<ServeChild> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut toml = format!("[nats]\nurl = {}\n", toml_str(url));
        if replicated {
            toml.push_str("replicas = 3\n");
        }
        toml.push_str(&format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
        let conf = dir.join(format!("jetask-{n}.toml"));
        std::fs::write(&conf, toml)?;
        let log = dir.join(format!("jetask-{n}.log"));
        let exe = std::env::current_exe().context("cannot find the jetask binary to run `jetask serve`")?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(&conf)
            .arg("serve")
            // What the file sets is the child's, whatever the bench's own environment says (a
            // shell that talks to a `jetask dev` elsewhere has JETASK_HTTP_LISTEN set).
            .env_remove("JETASK_NATS_URL")
            .env_remove("JETASK_NATS_REPLICAS")
            .env_remove("JETASK_HTTP_LISTEN")
            // The bench's stdout is its report (`--json`): the child writes only to its log.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start `jetask serve`")?;
        Ok(ServeChild {
            child,
            http: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + CHILD_READY;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "`jetask serve` exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.http)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("`jetask serve` not ready after {CHILD_READY:?}:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM (a clean stop, as `serve` handles it), then a kill if it has not exited in time.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + CHILD_STOP;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The jetask under test: services in this process, or `jetask serve` children.
enum Jetask {
    InProcess(Vec<service::Service>),
    Children(Vec<ServeChild>),
}

impl Jetask {
    /// The HTTP API of the first replica.
    fn http_base(&self) -> String {
        match self {
            Jetask::InProcess(s) => format!("http://{}", s[0].http_addr),
            Jetask::Children(c) => c[0].http.clone(),
        }
    }

    /// The processes whose CPU is jetask's alone: none when it runs in the bench's.
    fn pids(&self) -> Vec<u32> {
        match self {
            Jetask::InProcess(_) => Vec::new(),
            Jetask::Children(c) => c.iter().map(|c| c.child.id()).collect(),
        }
    }

    /// Registers the function: directly in process, else with `PUT /v1/functions/{name}`, as a
    /// user would.
    async fn put_function(
        &self,
        http: &reqwest::Client,
        name: &str,
        body: &serde_json::Value,
        config: &Config,
    ) -> anyhow::Result<()> {
        match self {
            Jetask::InProcess(s) => {
                let f = crate::core::function::Function {
                    name: name.to_string(),
                    spec: crate::core::function::resolve(body, &json!({}), config.retention())
                        .map_err(|e| anyhow::anyhow!(e))?,
                };
                s[0].ctx.put_function(&f).await.map_err(|e| anyhow::anyhow!(e))
            }
            Jetask::Children(_) => {
                let r = http
                    .put(format!("{}/v1/functions/{name}", self.http_base()))
                    .json(body)
                    .send()
                    .await?;
                let status = r.status();
                anyhow::ensure!(
                    status.is_success(),
                    "PUT /v1/functions/{name} answered {status}: {}",
                    r.text().await.unwrap_or_default()
                );
                Ok(())
            }
        }
    }

    async fn stop(self, http: &reqwest::Client, function: &str) {
        match self {
            Jetask::InProcess(services) => {
                let _ = services[0].ctx.functions.delete(function).await;
                for s in services {
                    s.stop().await;
                }
            }
            Jetask::Children(mut children) => {
                let _ = http
                    .delete(format!("{}/v1/functions/{function}", children[0].http))
                    .send()
                    .await;
                for c in &mut children {
                    c.stop();
                }
            }
        }
    }
}

/// The server's `in_msgs` and `out_msgs` counters (`/varz`): `None` without a monitoring URL
/// or when it cannot be read.
async fn varz(http: &reqwest::Client, url: Option<&str>) -> Option<(u64, u64)> {
    #[derive(Deserialize)]
    struct Varz {
        in_msgs: u64,
        out_msgs: u64,
    }
    let v: Varz = http.get(url?).send().await.ok()?.json().await.ok()?;
    Some((v.in_msgs, v.out_msgs))
}

/// CPU time so far of nats-server, jetask and the bench process, in microseconds.
#[derive(Clone, Copy)]
struct Cpu {
    nats_server: Option<f64>,
    jetask: Option<f64>,
    client: Option<f64>,
}

impl Cpu {
    fn now(nats: &[u32], jetask: &[u32]) -> Cpu {
        Cpu {
            nats_server: crate::cli::proc_cpu::sum_us(nats),
            jetask: crate::cli::proc_cpu::sum_us(jetask),
            client: crate::cli::proc_cpu::sum_us(&[std::process::id()]),
        }
    }

    /// Microseconds per task between two readings, rounded to 0.1 µs.
    fn per_task(self, end: Cpu, tasks: usize) -> serde_json::Value {
        let per = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .filter(|_| tasks > 0)
                .map(|(a, b)| ((b - a) / tasks as f64 * 10.0).round() / 10.0)
        };
        json!({
            "nats_server": per(self.nats_server, end.nats_server),
            "jetask": per(self.jetask, end.jetask),
            "client": per(self.client, end.client),
        })
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut _children = Vec::new();
    // The monitoring `/varz` of the one server the bench started, for messages per task.
    let mut monitor = None;
    let url = match &args.nats_url {
        Some(u) => u.clone(),
        None if args.cluster => {
            let (children, url) = crate::cli::dev::spawn_cluster(&dir)?;
            _children = children;
            url
        }
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let m = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            _children.push(crate::cli::dev::spawn_nats_monitored(&dir, port, Some(m))?);
            monitor = Some(format!("http://127.0.0.1:{m}/varz"));
            format!("nats://127.0.0.1:{port}")
        }
    };
    let mut config = Config::from_toml("").map_err(|e| anyhow::anyhow!(e))?;
    config.nats.url = url.clone();
    config.http.listen = "127.0.0.1:0".into();
    let replicated = args.cluster || url.contains(',');
    if replicated {
        config.nats.replicas = 3;
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let jetask = if args.in_process {
        let mut services = Vec::new();
        for _ in 0..args.replicas.max(1) {
            services.push(
                service::start(config.clone())
                    .await
                    .context("cannot start jetask for the benchmark")?,
            );
        }
        Jetask::InProcess(services)
    } else {
        let mut children = Vec::new();
        for n in 0..args.replicas.max(1) {
            children.push(ServeChild::spawn(&dir, n, &url, replicated)?);
        }
        for c in &mut children {
            c.ready(&http).await?;
        }
        Jetask::Children(children)
    };
    let nats_pids: Vec<u32> = _children.iter().map(|c| c.0.id()).collect();
    let jetask_pids = jetask.pids();
    let hidden = args.json;
    let client = crate::store::setup::connect(&config).await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);

    let raw = if args.no_raw {
        None
    } else {
        Some(measure_raw(&client, args.tasks, &payload, hidden).await?)
    };

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let seen = Arc::new(Mutex::new(Seen {
        prefix: format!("b{run_id}-"),
        called: vec![None; args.tasks],
        finished: vec![None; args.tasks],
        others: 0,
    }));
    // The no-op function notes when each task's call arrives.
    let endpoint = match &args.endpoint {
        Some(e) => e.clone(),
        None => {
            let seen = seen.clone();
            let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    let now = Instant::now();
                    if let Some(id) = headers.get("jetask-task-id").and_then(|v| v.to_str().ok()) {
                        if let Ok(mut s) = seen.lock() {
                            if let Some(n) = s.number(id) {
                                s.called[n].get_or_insert(now);
                            }
                        }
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            format!("http://{addr}/noop")
        }
    };
    let function = format!("bench-{}", &run_id[run_id.len() - 8..]);
    // A fixed limit: latency on a CPU-bound box says nothing about the no-op endpoint.
    let spec = json!({"endpoint": endpoint, "concurrency": {"max": args.concurrency, "adaptive": false}});
    jetask.put_function(&http, &function, &spec, &config).await?;

    // Final events of the run's tasks, as they arrive.
    let total = args.tasks + args.http_tasks;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let mut subs = Vec::new();
    for state in ["Succeeded", "Failed", "Expired", "Invalid", "Stopped"] {
        subs.push(client.subscribe(format!("jetask.events.{function}.{state}")).await?);
    }
    client.flush().await?;
    let collector = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut events = futures::stream::select_all(subs);
            let mut count = 0;
            while let Some(m) = events.next().await {
                let at = Instant::now();
                if let Ok(f) = serde_json::from_slice::<Final>(&m.payload) {
                    if let Ok(mut s) = seen.lock() {
                        let finish = Finish {
                            at,
                            queue_ms: f.queue_ms,
                            duration_ms: f.duration_ms,
                        };
                        match s.number(&f.id) {
                            Some(n) if s.finished[n].is_none() => {
                                s.finished[n] = Some(finish);
                                count += 1;
                            }
                            Some(_) => {}
                            None => {
                                s.others += 1;
                                count += 1;
                            }
                        }
                    }
                }
                if progress_tx.send(count).is_err() {
                    return;
                }
            }
        }
    });
    let wait_finished = |progress: &mut tokio::sync::watch::Receiver<usize>, n: usize, pb: ProgressBar| {
        let mut progress = progress.clone();
        async move {
            loop {
                let now = *progress.borrow_and_update();
                pb.set_position(now as u64);
                if now >= n {
                    break;
                }
                if tokio::time::timeout(STALL, progress.changed()).await.is_err() {
                    break;
                }
            }
            pb.finish_and_clear();
        }
    };

    // NATS: pipelined publishes, or paced at --rate.
    let subject = async_nats::Subject::from(crate::core::subjects::submit(&function));
    let start = Instant::now();
    let due = args
        .due_in
        .map(|d| (start + d.0, crate::core::time::Timestamp::now().plus(d.0).to_string()));
    let mut submitted: Vec<Instant> = Vec::with_capacity(args.tasks);
    // Paced, each publish is acknowledged before the next: its latency is a light load's.
    let window = if args.rate.is_some() { 1 } else { WINDOW };
    let mut pipe = Pipeline::new(&client, window, bar(args.tasks, "submit", hidden)).await?;
    // CPU per task is counted over the NATS tasks' end-to-end interval.
    let cpu_start = Cpu::now(&nats_pids, &jetask_pids);
    let msgs_start = varz(&http, monitor.as_deref()).await;
    for i in 0..args.tasks {
        if let Some(rate) = args.rate {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let id = format!("b{run_id}-{i}");
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        if let Some((_, at)) = &due {
            h.insert("Jetask-Not-Before", at.as_str());
        }
        submitted.push(Instant::now());
        pipe.publish(&subject, h, &payload).await?;
    }
    pipe.finish().await?;
    let submit_secs = start.elapsed().as_secs_f64();
    wait_finished(&mut progress, args.tasks, bar(args.tasks, "finish", hidden)).await;
    let cpu_per_task = cpu_start.per_task(Cpu::now(&nats_pids, &jetask_pids), args.tasks);
    let msgs_per_task = msgs_start
        .zip(varz(&http, monitor.as_deref()).await)
        .filter(|_| args.tasks > 0)
        .map(|((in0, out0), (in1, out1))| {
            let per = |a: u64, b: u64| (b.saturating_sub(a) as f64 / args.tasks as f64 * 10.0).round() / 10.0;
            json!({"in": per(in0, in1), "out": per(out0, out1)})
        });
    let (finished, last) = {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let done = s.finished.iter().flatten();
        (done.clone().count(), done.map(|f| f.at).max())
    };
    let e2e_secs = last.unwrap_or_else(Instant::now).duration_since(start).as_secs_f64();

    // Latencies of the NATS-submitted tasks.
    let (mut queue, mut run, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    {
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for (n, t) in submitted.iter().enumerate() {
            let Some(f) = s.finished[n] else { continue };
            let from = due.as_ref().map_or(*t, |(d, _)| (*d).max(*t));
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            e2e.push(ms(f.at.saturating_duration_since(from)));
            match s.called[n] {
                Some(called) => {
                    queue.push(ms(called.saturating_duration_since(from)));
                    run.push(ms(f.at.saturating_duration_since(called)));
                }
                None => {
                    queue.extend(f.queue_ms.map(|q| q as f64));
                    run.extend(f.duration_ms.map(|d| d as f64));
                }
            }
        }
    }

    // HTTP `:batch`.
    let http_submit_per_s = if args.http_tasks > 0 {
        let url = format!("{}/v1/functions/{function}/tasks:batch", jetask.http_base());
        let input = String::from_utf8_lossy(&payload).to_string();
        let pb = bar(args.http_tasks, "http", hidden);
        let start = Instant::now();
        let chunks: Vec<std::ops::Range<usize>> = (0..args.http_tasks)
            .step_by(HTTP_BATCH)
            .map(|s| s..(s + HTTP_BATCH).min(args.http_tasks))
            .collect();
        let results = futures::stream::iter(chunks)
            .map(|range| {
                let body: Vec<serde_json::Value> = range
                    .clone()
                    .map(|i| json!({"id": format!("h{run_id}-{i}"), "input": input}))
                    .collect();
                let (http, url, pb) = (http.clone(), url.clone(), pb.clone());
                async move {
                    let resp = http.post(&url).json(&body).send().await?;
                    anyhow::ensure!(resp.status().is_success(), "batch answered {}", resp.status());
                    pb.inc(range.len() as u64);
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(HTTP_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        wait_finished(&mut progress, total, bar(total, "finish", hidden)).await;
        Some(args.http_tasks as f64 / secs)
    } else {
        None
    };
    collector.abort();

    let (rss_now, rss_peak) = rss_mb();
    let e2e_per_s = finished as f64 / e2e_secs;
    let report = json!({
        "tasks": args.tasks,
        "finished": finished,
        "payload_bytes": args.payload,
        "rate": args.rate,
        "due_in": args.due_in.map(|d| d.to_string()),
        "submit_per_s": (args.tasks as f64 / submit_secs).round(),
        "http_submit_per_s": http_submit_per_s.map(f64::round),
        "e2e_per_s": e2e_per_s.round(),
        "raw_per_s": raw.as_ref().map(|r| r.per_s.round()),
        "raw_publish_per_s": raw.as_ref().map(|r| r.publish_per_s.round()),
        "raw_consume_per_s": raw.as_ref().map(|r| r.consume_per_s.round()),
        "ratio": raw.as_ref().map(|r| ((e2e_per_s / r.per_s) * 1000.0).round() / 1000.0),
        "latency_ms": {"queue": summary(queue), "run": summary(run), "e2e": summary(e2e)},
        "rss_mb": rss_peak.round(),
        "rss_end_mb": rss_now.round(),
        "in_process": args.in_process,
        "cpu_us_per_task": cpu_per_task,
        "nats_msgs_per_task": msgs_per_task,
    });
    if args.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    jetask.stop(&http, &function).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print_table(r: &serde_json::Value) {
    let n = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
    println!(
        "tasks                {} ({} finished), {} B payload, task mode on{}",
        r["tasks"],
        r["finished"],
        r["payload_bytes"],
        r["rate"]
            .as_f64()
            .map(|x| format!(", paced at {x}/s"))
            .unwrap_or_default()
    );
    println!("submissions/s NATS   {}", n(&r["submit_per_s"]));
    println!("submissions/s HTTP   {}", n(&r["http_submit_per_s"]));
    println!("end-to-end tasks/s   {}", n(&r["e2e_per_s"]));
    println!(
        "raw JetStream/s      {}  (publish {}, consume {})",
        n(&r["raw_per_s"]),
        n(&r["raw_publish_per_s"]),
        n(&r["raw_consume_per_s"])
    );
    println!(
        "ratio to raw         {}",
        r["ratio"].as_f64().map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
    );
    println!("latency ms           p50        p99        max");
    for k in ["queue", "run", "e2e"] {
        let l = &r["latency_ms"][k];
        println!(
            "  {k:<18} {:<10} {:<10} {}",
            l["p50"].as_f64().unwrap_or(0.0),
            l["p99"].as_f64().unwrap_or(0.0),
            l["max"].as_f64().unwrap_or(0.0)
        );
    }
    let in_process = r["in_process"].as_bool().unwrap_or(false);
    println!(
        "peak RSS MB          {}  (the bench process: {}client and no-op endpoint)",
        n(&r["rss_mb"]),
        if in_process { "jetask, " } else { "" }
    );
    let cpu = &r["cpu_us_per_task"];
    let us = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    let msgs = &r["nats_msgs_per_task"];
    println!(
        "NATS msgs per task   {}",
        if msgs.is_null() {
            "-".to_string()
        } else {
            format!("{} in, {} out (nats-server /varz)", msgs["in"], msgs["out"])
        }
    );
    println!("CPU µs per task");
    println!("  nats-server        {}", us(&cpu["nats_server"]));
    println!(
        "  jetask             {}",
        if in_process {
            "- (in the bench process)".to_string()
        } else {
            us(&cpu["jetask"])
        }
    );
    println!(
        "  client             {}  (the bench process: {}publisher and no-op endpoint)",
        us(&cpu["client"]),
        if in_process { "jetask, " } else { "" }
    );
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("jetask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
