//! `jetask bench`: N tasks submitted over NATS (pipelined publishes) to a local no-op function,
//! task mode on, measured end to end: submission rate, completion rate, and the latency from
//! submission to the function's call.

use crate::config::Config;
use crate::service;
use anyhow::Context as _;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct BenchArgs {
    pub tasks: usize,
    pub payload: usize,
    pub nats_url: Option<String>,
    pub json: bool,
    /// All tasks due at the same moment, this long after the run starts (`Jetask-Not-Before`):
    /// latency is then the lateness of each call after that moment.
    pub due_in: Option<crate::duration::Dur>,
}

/// Publishes in flight at once (async-nats allows 5,000 outstanding acks).
const WINDOW: usize = 2_000;

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let mut _child = None;
    let url = match &args.nats_url {
        Some(u) => u.clone(),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            _child = Some(crate::dev::spawn_nats(&dir, port)?);
            format!("nats://127.0.0.1:{port}")
        }
    };
    let mut config = Config::from_toml("").map_err(|e| anyhow::anyhow!(e))?;
    config.nats.url = url.clone();
    config.http.listen = "127.0.0.1:0".into();
    let deadline = Instant::now() + Duration::from_secs(10);
    let svc = loop {
        match service::start(config.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "waiting for nats-server");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("cannot start jetask for the benchmark"),
        }
    };

    // The no-op function notes when each task's call arrives.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::with_capacity(args.tasks)));
    let seen = arrivals.clone();
    let router = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = seen.clone();
        async move {
            let now = Instant::now();
            if let Some(id) = headers.get("jetask-task-id").and_then(|v| v.to_str().ok()) {
                if let Ok(mut m) = seen.lock() {
                    m.entry(id.to_string()).or_insert(now);
                }
            }
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}/noop", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let f = crate::function::Function {
        name: "bench-noop".into(),
        spec: crate::function::resolve(
            &serde_json::json!({"endpoint": endpoint, "concurrency": {"max": 256}}),
            &serde_json::json!({}),
            config.retention(),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    };
    svc.ctx.put_function(&f).await.map_err(|e| anyhow::anyhow!(e))?;

    let client = async_nats::connect(&url).await?;
    let mut done = client.subscribe("jetask.events.bench-noop.Succeeded").await?;
    client.flush().await?;
    let js = async_nats::jetstream::new(client.clone());
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut submitted: Vec<(String, Instant)> = Vec::with_capacity(args.tasks);

    let finisher = tokio::spawn({
        let n = args.tasks;
        async move {
            let mut count = 0;
            while count < n {
                match tokio::time::timeout(Duration::from_secs(60), done.next()).await {
                    Ok(Some(_)) => count += 1,
                    _ => break,
                }
            }
            (count, Instant::now())
        }
    });

    let start = Instant::now();
    let due = args
        .due_in
        .map(|d| (start + d.0, crate::time::Timestamp::now().plus(d.0).to_string()));
    let mut inflight = futures::stream::FuturesUnordered::new();
    for i in 0..args.tasks {
        let id = format!("b{run_id}-{i}");
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        if let Some((_, at)) = &due {
            h.insert("Jetask-Not-Before", at.as_str());
        }
        submitted.push((id, Instant::now()));
        let ack = js
            .publish_with_headers("jetask.submit.bench-noop", h, payload.clone())
            .await?;
        inflight.push(std::future::IntoFuture::into_future(ack));
        if inflight.len() >= WINDOW {
            if let Some(r) = inflight.next().await {
                r?;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let submit_secs = start.elapsed().as_secs_f64();
    let (finished, end) = finisher.await?;
    let e2e_secs = end.duration_since(start).as_secs_f64();

    let arrivals = arrivals.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lat: Vec<f64> = submitted
        .iter()
        .filter_map(|(id, t)| {
            let from = due.as_ref().map_or(*t, |(d, _)| (*d).max(*t));
            arrivals
                .get(id)
                .map(|a| a.saturating_duration_since(from).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let latency_name = if due.is_some() { "due_to_call" } else { "submit_to_call" };
    let report = serde_json::json!({
        "tasks": args.tasks,
        "finished": finished,
        "payload_bytes": args.payload,
        "submit_per_s": (args.tasks as f64 / submit_secs).round(),
        "e2e_per_s": (finished as f64 / e2e_secs).round(),
        "latency_ms": {latency_name: {"p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0)}},
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "tasks            {} ({} finished), {} B payload, task mode on",
            args.tasks, finished, args.payload
        );
        println!("submissions/s    {}", report["submit_per_s"]);
        println!("end-to-end/s     {}", report["e2e_per_s"]);
        println!(
            "{} ms   p50 {:.2}  p99 {:.2}  max {:.2}",
            if due.is_some() {
                "due→call   "
            } else {
                "submit→call"
            },
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    }
    svc.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("jetask-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
