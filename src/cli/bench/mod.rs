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

//!
//! [`target`] runs jetask, [`pipeline`] publishes, [`raw`] measures JetStream alone, [`seen`]
//! notes calls and final events, [`cost`] reads CPU and messages per task, [`report`] prints.

mod cost;
mod pipeline;
pub mod proc_cpu;
mod raw;
mod report;
mod seen;
mod target;

use crate::cli::dev::NatsChild;
use crate::core::config::Config;
use crate::core::duration::Dur;
use cost::{varz, Cpu};
use futures::StreamExt;
use indicatif::ProgressBar;
use pipeline::Pipeline;
use report::{bar, print_table, rss_mb, summary};
use seen::{Final, Seen};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use target::{Jetask, ServeChild};

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

/// The NATS the bench runs on: servers it started (stopped when dropped), its URL, and the
/// monitoring `/varz` of the one server it started, for messages per task.
struct Nats {
    _children: Vec<NatsChild>,
    pids: Vec<u32>,
    url: String,
    monitor: Option<String>,
}

/// Latencies of the NATS-submitted tasks, in ms.
#[derive(Default)]
struct Latencies {
    queue: Vec<f64>,
    run: Vec<f64>,
    e2e: Vec<f64>,
}

/// What the NATS part of the run measured.
struct NatsRun {
    submit_secs: f64,
    e2e_secs: f64,
    finished: usize,
    cpu_per_task: serde_json::Value,
    msgs_per_task: Option<serde_json::Value>,
    latencies: Latencies,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let nats = start_nats(&args, &dir)?;
    let mut config = Config::from_toml("").map_err(|e| anyhow::anyhow!(e))?;
    config.nats.url = nats.url.clone();
    config.http.listen = "127.0.0.1:0".into();
    let replicated = args.cluster || nats.url.contains(',');
    if replicated {
        config.nats.replicas = 3;
    }
    let http = reqwest::Client::builder().no_proxy().build()?;
    let jetask = start_jetask(&args, &config, &dir, replicated, &http).await?;
    let hidden = args.json;
    let client = crate::store::setup::connect(&config).await?;
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);

    let raw = if args.no_raw {
        None
    } else {
        Some(raw::measure(&client, args.tasks, &payload, hidden).await?)
    };

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let seen = Arc::new(Mutex::new(Seen {
        prefix: format!("b{run_id}-"),
        called: vec![None; args.tasks],
        finished: vec![None; args.tasks],
        others: 0,
    }));
    let endpoint = match &args.endpoint {
        Some(e) => e.clone(),
        None => noop_endpoint(seen.clone()).await?,
    };
    let function = format!("bench-{}", &run_id[run_id.len() - 8..]);
    // A fixed limit: latency on a CPU-bound box says nothing about the no-op endpoint.
    let spec = json!({"endpoint": endpoint, "concurrency": {"max": args.concurrency, "adaptive": false}});
    jetask.put_function(&http, &function, &spec, &config).await?;

    let (collector, progress) = collect_finals(&client, &function, seen.clone()).await?;
    let measured = submit_over_nats(
        &args, &client, &http, &nats, &jetask, &function, &run_id, &payload, &seen, &progress,
    )
    .await?;
    let http_submit_per_s = if args.http_tasks > 0 {
        let url = format!("{}/v1/functions/{function}/tasks:batch", jetask.http_base());
        let per_s = submit_over_http(&args, &http, &url, &run_id, &payload).await?;
        let total = args.tasks + args.http_tasks;
        wait_finished(&progress, total, bar(total, "finish", hidden)).await;
        Some(per_s)
    } else {
        None
    };
    collector.abort();

    let report = report(&args, measured, raw.as_ref(), http_submit_per_s);
    if args.json {
        say!("{report}");
    } else {
        print_table(&report);
    }
    jetask.stop(&http, &function).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The run's report, as `--json` prints it.
fn report(
    args: &BenchArgs,
    measured: NatsRun,
    raw: Option<&raw::Raw>,
    http_submit_per_s: Option<f64>,
) -> serde_json::Value {
    let (rss_now, rss_peak) = rss_mb();
    let e2e_per_s = measured.finished as f64 / measured.e2e_secs;
    let Latencies { queue, run, e2e } = measured.latencies;
    json!({
        "tasks": args.tasks,
        "finished": measured.finished,
        "payload_bytes": args.payload,
        "rate": args.rate,
        "due_in": args.due_in.map(|d| d.to_string()),
        "submit_per_s": (args.tasks as f64 / measured.submit_secs).round(),
        "http_submit_per_s": http_submit_per_s.map(f64::round),
        "e2e_per_s": e2e_per_s.round(),
        "raw_per_s": raw.map(|r| r.per_s.round()),
        "raw_publish_per_s": raw.map(|r| r.publish_per_s.round()),
        "raw_consume_per_s": raw.map(|r| r.consume_per_s.round()),
        "ratio": raw.map(|r| ((e2e_per_s / r.per_s) * 1000.0).round() / 1000.0),
        "latency_ms": {"queue": summary(queue), "run": summary(run), "e2e": summary(e2e)},
        "rss_mb": rss_peak.round(),
        "rss_end_mb": rss_now.round(),
        "in_process": args.in_process,
        "cpu_us_per_task": measured.cpu_per_task,
        "nats_msgs_per_task": measured.msgs_per_task,
    })
}

/// The NATS at `--nats-url`, or a 3-node cluster (`--cluster`), or one server with monitoring.
fn start_nats(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<Nats> {
    let mut children = Vec::new();
    let mut monitor = None;
    let url = match &args.nats_url {
        Some(u) => u.clone(),
        None if args.cluster => {
            let (nodes, url) = crate::cli::dev::spawn_cluster(dir)?;
            children = nodes;
            url
        }
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let m = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            children.push(crate::cli::dev::spawn_nats_monitored(dir, port, Some(m))?);
            monitor = Some(format!("http://127.0.0.1:{m}/varz"));
            format!("nats://127.0.0.1:{port}")
        }
    };
    Ok(Nats {
        pids: children.iter().map(|c| c.0.id()).collect(),
        _children: children,
        url,
        monitor,
    })
}

/// `--replicas` services in this process (`--in-process`) or `jetask serve` children, ready.
async fn start_jetask(
    args: &BenchArgs,
    config: &Config,
    dir: &std::path::Path,
    replicated: bool,
    http: &reqwest::Client,
) -> anyhow::Result<Jetask> {
    if args.in_process {
        let mut services = Vec::new();
        for _ in 0..args.replicas.max(1) {
            services.push(
                crate::service::start(config.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!(e).context("cannot start jetask for the benchmark"))?,
            );
        }
        return Ok(Jetask::InProcess(services));
    }
    let mut children = Vec::new();
    for n in 0..args.replicas.max(1) {
        children.push(ServeChild::spawn(dir, n, &config.nats.url, replicated)?);
    }
    for c in &mut children {
        c.ready(http).await?;
    }
    Ok(Jetask::Children(children))
}

/// The no-op function: notes when each task's call arrives and answers 204.
async fn noop_endpoint(seen: Arc<Mutex<Seen>>) -> anyhow::Result<String> {
    let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let now = Instant::now();
            if let Some(id) = headers.get("jetask-task-id").and_then(|v| v.to_str().ok()) {
                if let Ok(mut s) = seen.lock() {
                    s.called_at(id, now);
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
    Ok(format!("http://{addr}/noop"))
}

/// Notes the final events of the run's tasks as they arrive; the watch counts them.
async fn collect_finals(
    client: &async_nats::Client,
    function: &str,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::sync::watch::Receiver<usize>)> {
    let (progress_tx, progress) = tokio::sync::watch::channel(0usize);
    let mut subs = Vec::new();
    for state in ["Succeeded", "Failed", "Expired", "Invalid", "Stopped"] {
        subs.push(client.subscribe(format!("jetask.events.{function}.{state}")).await?);
    }
    client.flush().await?;
    let collector = tokio::spawn(async move {
        let mut events = futures::stream::select_all(subs);
        let mut count = 0;
        while let Some(m) = events.next().await {
            let at = Instant::now();
            if let Ok(f) = serde_json::from_slice::<Final>(&m.payload) {
                if seen.lock().is_ok_and(|mut s| s.finished_at(f, at)) {
                    count += 1;
                }
            }
            if progress_tx.send(count).is_err() {
                return;
            }
        }
    });
    Ok((collector, progress))
}

/// Waits until `n` tasks have finished, or none has for [`STALL`].
async fn wait_finished(progress: &tokio::sync::watch::Receiver<usize>, n: usize, pb: ProgressBar) {
    let mut progress = progress.clone();
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

/// The NATS tasks: pipelined publishes (or paced at `--rate`), then their end, with the CPU and
/// messages they cost and their latencies.
#[allow(clippy::too_many_arguments)]
async fn submit_over_nats(
    args: &BenchArgs,
    client: &async_nats::Client,
    http: &reqwest::Client,
    nats: &Nats,
    jetask: &Jetask,
    function: &str,
    run_id: &str,
    payload: &bytes::Bytes,
    seen: &Mutex<Seen>,
    progress: &tokio::sync::watch::Receiver<usize>,
) -> anyhow::Result<NatsRun> {
    let hidden = args.json;
    let subject = async_nats::Subject::from(crate::core::subjects::submit(function));
    let start = Instant::now();
    let due = args
        .due_in
        .map(|d| (start + d.0, crate::core::time::Timestamp::now().plus(d.0).to_string()));
    let mut submitted: Vec<Instant> = Vec::with_capacity(args.tasks);
    // Paced, each publish is acknowledged before the next: its latency is a light load's.
    let window = if args.rate.is_some() { 1 } else { WINDOW };
    let mut pipe = Pipeline::new(client, window, bar(args.tasks, "submit", hidden)).await?;
    // CPU per task is counted over the NATS tasks' end-to-end interval.
    let jetask_pids = jetask.pids();
    let cpu_start = Cpu::now(&nats.pids, &jetask_pids);
    let msgs_start = varz(http, nats.monitor.as_deref()).await;
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
        pipe.publish(&subject, h, payload).await?;
    }
    pipe.finish().await?;
    let submit_secs = start.elapsed().as_secs_f64();
    wait_finished(progress, args.tasks, bar(args.tasks, "finish", hidden)).await;
    let cpu_per_task = cpu_start.per_task(Cpu::now(&nats.pids, &jetask_pids), args.tasks);
    let msgs_per_task = msgs_start
        .zip(varz(http, nats.monitor.as_deref()).await)
        .filter(|_| args.tasks > 0)
        .map(|((in0, out0), (in1, out1))| {
            let per = |a: u64, b: u64| (b.saturating_sub(a) as f64 / args.tasks as f64 * 10.0).round() / 10.0;
            json!({"in": per(in0, in1), "out": per(out0, out1)})
        });
    let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let done = s.finished.iter().flatten();
    let finished = done.clone().count();
    let last = done.map(|f| f.at).max();
    let e2e_secs = last.unwrap_or_else(Instant::now).duration_since(start).as_secs_f64();
    let latencies = latencies(&s, &submitted, due.as_ref().map(|(d, _)| *d));
    Ok(NatsRun {
        submit_secs,
        e2e_secs,
        finished,
        cpu_per_task,
        msgs_per_task,
        latencies,
    })
}

/// Queue, run and end-to-end latency of each finished task, counted from its submission or, with
/// `--due-in`, from its due moment.
fn latencies(s: &Seen, submitted: &[Instant], due: Option<Instant>) -> Latencies {
    let mut l = Latencies::default();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (n, t) in submitted.iter().enumerate() {
        let Some(f) = s.finished[n] else { continue };
        let from = due.map_or(*t, |d| d.max(*t));
        l.e2e.push(ms(f.at.saturating_duration_since(from)));
        match s.called[n] {
            Some(called) => {
                l.queue.push(ms(called.saturating_duration_since(from)));
                l.run.push(ms(f.at.saturating_duration_since(called)));
            }
            None => {
                l.queue.extend(f.queue_ms.map(|q| q as f64));
                l.run.extend(f.duration_ms.map(|d| d as f64));
            }
        }
    }
    l
}

/// The HTTP tasks, in `:batch` requests of [`HTTP_BATCH`], [`HTTP_IN_FLIGHT`] at once; answers
/// their submission rate.
async fn submit_over_http(
    args: &BenchArgs,
    http: &reqwest::Client,
    url: &str,
    run_id: &str,
    payload: &bytes::Bytes,
) -> anyhow::Result<f64> {
    let input = String::from_utf8_lossy(payload).to_string();
    let pb = bar(args.http_tasks, "http", args.json);
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
            let (http, pb) = (http.clone(), pb.clone());
            async move {
                let resp = http.post(url).json(&body).send().await?;
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
    Ok(args.http_tasks as f64 / secs)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("jetask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
