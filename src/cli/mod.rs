//! The command line: `serve`, `dev`, and client commands that talk to the HTTP API at
//! `http.listen` (token from `JETASK_TOKEN`). Readable output by default, `--json` for scripts,
//! a non-zero exit with a clear message on failure. Also [`dev`] (a local server and NATS in one
//! command), [`demo`] and [`bench`](mod@bench).
//!
//! The top layer: may import anything, `service` included.

pub mod bench;
pub mod demo;
pub mod dev;
pub mod proc_cpu;

use crate::core::config::Config;
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "jetask", version, about = "Asynchronous tasks on NATS JetStream")]
pub struct Cli {
    /// Configuration file (default: ./jetask.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service: HTTP API, intake and dispatch.
    Serve,
    /// Run locally: a nats-server child if needed, a demo function, and the service.
    Dev,
    /// Submit a task.
    Submit(SubmitArgs),
    /// Read, list and stop tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Manage functions.
    #[command(subcommand)]
    Fn(FnCommand),
    /// Manage recurring schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Measure end-to-end throughput and latency against a local no-op function.
    Bench {
        /// Number of tasks.
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        /// Input size in bytes.
        #[arg(long, default_value_t = 256)]
        payload: usize,
        /// Use this NATS server instead of starting one.
        #[arg(long)]
        nats_url: Option<String>,
        /// Make every task due at once, this long after the start (e.g. 20s), and measure how
        /// late each call comes after that moment.
        #[arg(long)]
        due_in: Option<crate::core::duration::Dur>,
        /// Submit at this steady rate (tasks/s) rather than as fast as possible: the latency of
        /// a lightly loaded service.
        #[arg(long)]
        rate: Option<f64>,
        /// Call this endpoint instead of the built-in no-op one (queue and run latencies then
        /// come from the records).
        #[arg(long)]
        endpoint: Option<String>,
        /// Tasks submitted over HTTP `:batch` after the NATS ones (default: a tenth of --tasks).
        #[arg(long)]
        http_tasks: Option<usize>,
        /// The bench function's concurrency.max.
        #[arg(long, default_value_t = 256)]
        concurrency: u32,
        /// Skip the raw JetStream publish+consume measurement.
        #[arg(long)]
        no_raw: bool,
        /// jetask replicas to run, sharing the work: `jetask serve` children, or services in the
        /// bench process with --in-process.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Run jetask inside the bench process instead of as `jetask serve` child processes
        /// (its CPU is then counted as the client's).
        #[arg(long)]
        in_process: bool,
        /// Start a 3-node NATS cluster on loopback and run on it with R3 streams and buckets.
        #[arg(long, conflicts_with = "nats_url")]
        cluster: bool,
    },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    pub function: String,
    /// The input; `-` reads standard input; empty when left out.
    pub payload: Option<String>,
    /// Task ID (deduplication key).
    #[arg(long)]
    pub id: Option<String>,
    /// Run no earlier than this long from now, e.g. 30s.
    #[arg(long)]
    pub delay: Option<String>,
    /// Run no earlier than this RFC 3339 time.
    #[arg(long)]
    pub at: Option<String>,
    /// Wait for a terminal state and print the result; exit 0 only when it Succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Content-Type passed on to the function.
    #[arg(long)]
    pub content_type: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    Get {
        id: String,
        #[arg(long)]
        include_input: bool,
    },
    List {
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Stop a task, or with filters instead of an ID every matching task.
    Stop {
        #[arg(required_unless_present_any = ["function", "status", "user", "since", "until"])]
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilter,
    },
    /// Run a Failed, Expired or Stopped task again as a new task, or with filters instead of an
    /// ID every matching one.
    Replay {
        #[arg(required_unless_present_any = ["function", "status", "user", "since", "until"])]
        id: Option<String>,
        #[command(flatten)]
        filter: BulkFilter,
    },
}

/// The list filters of a bulk stop or replay (`POST /v1/tasks:stop`, `/v1/tasks:replay`).
#[derive(clap::Args, Debug, Default)]
pub struct BulkFilter {
    #[arg(long, conflicts_with = "id")]
    pub function: Option<String>,
    #[arg(long, conflicts_with = "id")]
    pub status: Option<String>,
    #[arg(long, conflicts_with = "id")]
    pub user: Option<String>,
    /// Tasks created at or after this RFC 3339 time.
    #[arg(long, conflicts_with = "id")]
    pub since: Option<String>,
    /// Tasks created at or before this RFC 3339 time.
    #[arg(long, conflicts_with = "id")]
    pub until: Option<String>,
}

impl BulkFilter {
    fn body(self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("function", self.function),
            ("status", self.status),
            ("user", self.user),
            ("since", self.since),
            ("until", self.until),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v));
            }
        }
        Value::Object(m)
    }
}

fn bulk_text(verb: &str, v: &Value) -> String {
    let mut out = format!(
        "matched {}, {verb} {}, skipped {}, failed {}",
        v["matched"], v["acted"], v["skipped"], v["failed"]
    );
    if let Some(errors) = v["errors"].as_array() {
        for e in errors {
            out.push_str(&format!("\n  {}: {}", s(&e["task_id"]), s(&e["error"]["message"])));
        }
    }
    out
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create or replace a schedule: a function fired by `--cron` or `--every`.
    Put {
        name: String,
        #[arg(long)]
        function: String,
        /// Cron expression (5 fields, or 6 with seconds), e.g. "0 9 * * MON-FRI".
        #[arg(long, conflicts_with = "every")]
        cron: Option<String>,
        /// Interval, e.g. 30s or 1h.
        #[arg(long)]
        every: Option<String>,
        /// IANA time zone of the cron expression, e.g. Europe/Paris.
        #[arg(long)]
        time_zone: Option<String>,
        /// Input of each firing: JSON, or a plain string.
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        disabled: bool,
        /// After downtime, skip missed firings instead of running the latest once.
        #[arg(long)]
        no_catch_up: bool,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum FnCommand {
    /// Create or replace a function.
    Put {
        name: String,
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        max_event_age: Option<String>,
        #[arg(long)]
        concurrency: Option<u32>,
        #[arg(long)]
        disabled: bool,
        #[arg(long)]
        no_task_mode: bool,
        /// More policy keys as a JSON object, e.g. '{"backoff": {"initial": "2s"}}'.
        #[arg(long)]
        policy: Option<String>,
    },
    Get {
        name: String,
    },
    List,
    Delete {
        name: String,
    },
}

/// A client of the HTTP API.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    pub fn new(config: &Config) -> Client {
        Client {
            base: format!("http://{}", config.http.listen),
            http: reqwest::Client::builder().no_proxy().build().unwrap_or_default(),
            token: std::env::var("JETASK_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach jetask at {} (is `jetask serve` running?)", self.base))?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if code >= 400 {
            let msg = body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            bail!("{msg} (HTTP {code})");
        }
        Ok((code, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.http.get(format!("{}{path}", self.base))).await?.1)
    }
}

fn print(json: bool, v: &Value, text: impl FnOnce(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text(v));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A task record as readable text.
pub fn task_text(t: &Value) -> String {
    let mut out = format!(
        "task {}  function {}  user {}\nstatus: {}  attempts: {}  queue: {} ms  run: {} ms\ncreated {}  started {}  finished {}\n",
        s(&t["id"]), s(&t["function"]), s(&t["user"]), s(&t["status"]), s(&t["attempts"]),
        s(&t["queue_ms"]), s(&t["duration_ms"]), s(&t["created_at"]), s(&t["started_at"]), s(&t["finished_at"])
    );
    if !t["result"].is_null() {
        out.push_str(&format!("result: {}\n", s(&t["result"])));
    } else if !t["result_base64"].is_null() {
        out.push_str(&format!("result (base64): {}\n", s(&t["result_base64"])));
    }
    if !t["error"].is_null() {
        out.push_str(&format!(
            "error: {}: {}\n",
            s(&t["error"]["type"]),
            s(&t["error"]["message"])
        ));
    }
    out.push_str("history:\n");
    for e in t["events"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {:<10} {}\n",
            s(&e["at"]),
            s(&e["status"]),
            if e["detail"].is_null() {
                String::new()
            } else {
                s(&e["detail"])
            }
        ));
    }
    out.trim_end().to_string()
}

fn list_text(v: &Value) -> String {
    let mut out = format!(
        "{:<36} {:<16} {:<10} {:<8} {}\n",
        "ID", "FUNCTION", "STATUS", "ATTEMPTS", "CREATED"
    );
    for t in v["tasks"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<36} {:<16} {:<10} {:<8} {}\n",
            s(&t["id"]),
            s(&t["function"]),
            s(&t["status"]),
            s(&t["attempts"]),
            s(&t["created_at"])
        ));
    }
    if let Some(c) = v["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {c}\n"));
    }
    out.trim_end().to_string()
}

fn function_text(f: &Value) -> String {
    let mut out = format!("function {}  endpoint {}\n", s(&f["name"]), s(&f["endpoint"]));
    for k in [
        "enabled",
        "task_mode",
        "timeout",
        "max_attempts",
        "max_event_age",
        "heartbeat_timeout",
        "on_success",
        "on_failure",
    ] {
        out.push_str(&format!("  {k}: {}\n", s(&f[k])));
    }
    out.push_str(&format!(
        "  backoff: {}\n  concurrency: {}\n",
        f["backoff"], f["concurrency"]
    ));
    for k in [
        "rate_limit",
        "user_rate_limit",
        "queued",
        "running",
        "delayed",
        "signing_secret",
    ] {
        if !f[k].is_null() {
            out.push_str(&format!("  {k}: {}\n", s(&f[k])));
        }
    }
    out.trim_end().to_string()
}

/// Runs a client command; the exit code is the caller's.
pub async fn run_client(cli: Cli, config: Config) -> anyhow::Result<i32> {
    let c = Client::new(&config);
    let json = cli.json;
    match cli.command {
        Command::Submit(a) => return submit(&c, a, json).await,
        Command::Task(TaskCommand::Get { id, include_input }) => {
            let v = c.get(&format!("/v1/tasks/{id}?include_input={include_input}")).await?;
            print(json, &v, task_text);
        }
        Command::Task(TaskCommand::List {
            function,
            status,
            user,
            limit,
            cursor,
        }) => {
            let mut q = Vec::new();
            for (k, v) in [
                ("function", function),
                ("status", status),
                ("user", user),
                ("limit", limit.map(|l| l.to_string())),
                ("cursor", cursor),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let v = c.get(&format!("/v1/tasks?{}", q.join("&"))).await?;
            print(json, &v, list_text);
        }
        Command::Task(TaskCommand::Replay { id: None, filter }) => {
            let req = c.http.post(format!("{}/v1/tasks:replay", c.base)).json(&filter.body());
            let (_, v) = c.send(req).await?;
            print(json, &v, |v| bulk_text("replayed", v));
        }
        Command::Task(TaskCommand::Stop { id: None, filter }) => {
            let req = c.http.post(format!("{}/v1/tasks:stop", c.base)).json(&filter.body());
            let (_, v) = c.send(req).await?;
            print(json, &v, |v| bulk_text("stopped", v));
        }
        Command::Task(TaskCommand::Replay { id: Some(id), .. }) => {
            let (_, v) = c.send(c.http.post(format!("{}/v1/tasks/{id}/replay", c.base))).await?;
            print(json, &v, |v| {
                format!(
                    "task {} {} (replay of {})",
                    s(&v["task_id"]),
                    s(&v["status"]),
                    s(&v["replay_of"])
                )
            });
        }
        Command::Schedule(cmd) => schedule(&c, cmd, json).await?,
        Command::Task(TaskCommand::Stop { id: Some(id), .. }) => {
            let (_, v) = c.send(c.http.post(format!("{}/v1/tasks/{id}/stop", c.base))).await?;
            print(json, &v, |v| format!("task {} is {}", s(&v["id"]), s(&v["status"])));
        }
        Command::Fn(FnCommand::Put {
            name,
            endpoint,
            timeout,
            max_attempts,
            max_event_age,
            concurrency,
            disabled,
            no_task_mode,
            policy,
        }) => {
            let mut body = match policy {
                Some(p) => serde_json::from_str::<Value>(&p).context("--policy is not JSON")?,
                None => serde_json::json!({}),
            };
            if !body.is_object() {
                bail!("--policy must be a JSON object, e.g. '{{\"backoff\": {{\"initial\": \"2s\"}}}}'");
            }
            body["endpoint"] = endpoint.into();
            if let Some(t) = timeout {
                body["timeout"] = t.into();
            }
            if let Some(m) = max_attempts {
                body["max_attempts"] = m.into();
            }
            if let Some(m) = max_event_age {
                body["max_event_age"] = m.into();
            }
            if let Some(n) = concurrency {
                body["concurrency"] = serde_json::json!({"max": n});
            }
            if disabled {
                body["enabled"] = false.into();
            }
            if no_task_mode {
                body["task_mode"] = false.into();
            }
            let (_, v) = c
                .send(c.http.put(format!("{}/v1/functions/{name}", c.base)).json(&body))
                .await?;
            print(json, &v, function_text);
        }
        Command::Fn(FnCommand::Get { name }) => {
            let v = c.get(&format!("/v1/functions/{name}")).await?;
            print(json, &v, function_text);
        }
        Command::Fn(FnCommand::List) => {
            let v = c.get("/v1/functions").await?;
            print(json, &v, |v| {
                let mut out = format!("{:<24} {:<8} {}\n", "NAME", "ENABLED", "ENDPOINT");
                for f in v["functions"].as_array().into_iter().flatten() {
                    out.push_str(&format!(
                        "{:<24} {:<8} {}\n",
                        s(&f["name"]),
                        s(&f["enabled"]),
                        s(&f["endpoint"])
                    ));
                }
                out.trim_end().to_string()
            });
        }
        Command::Fn(FnCommand::Delete { name }) => {
            c.send(c.http.delete(format!("{}/v1/functions/{name}", c.base))).await?;
            if json {
                println!("{}", serde_json::json!({"deleted": name}));
            } else {
                println!("function {name} deleted");
            }
        }
        Command::Bench {
            tasks,
            payload,
            nats_url,
            due_in,
            rate,
            endpoint,
            http_tasks,
            concurrency,
            no_raw,
            replicas,
            in_process,
            cluster,
        } => {
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate must be a positive number of tasks per second");
            }
            crate::cli::bench::run(crate::cli::bench::BenchArgs {
                tasks,
                payload,
                nats_url,
                endpoint,
                json,
                due_in,
                rate,
                http_tasks: http_tasks.unwrap_or(tasks / 10),
                concurrency: concurrency.max(1),
                no_raw,
                replicas: replicas.clamp(1, 16),
                in_process,
                cluster,
            })
            .await?;
        }
        Command::Serve | Command::Dev => unreachable!("handled by main"),
    }
    Ok(0)
}

fn schedule_text(v: &Value) -> String {
    let when = if v["cron"].is_null() {
        format!("every {}", s(&v["every"]))
    } else {
        format!("cron {:?} {}", s(&v["cron"]), s(&v["time_zone"]))
    };
    format!(
        "schedule {}  function {}  {when}\n  enabled: {}  catch_up: {}\n  next: {}  last: {}",
        s(&v["name"]),
        s(&v["function"]),
        s(&v["enabled"]),
        s(&v["catch_up"]),
        s(&v["next_fire_at"]),
        s(&v["last_fired_at"])
    )
}

async fn schedule(c: &Client, cmd: ScheduleCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::Put {
            name,
            function,
            cron,
            every,
            time_zone,
            input,
            disabled,
            no_catch_up,
        } => {
            let input = input.map(|i| serde_json::from_str::<Value>(&i).unwrap_or(Value::String(i)));
            let body = serde_json::json!({
                "function": function, "cron": cron, "every": every, "time_zone": time_zone,
                "input": input, "enabled": !disabled, "catch_up": !no_catch_up,
            });
            let (_, v) = c
                .send(c.http.put(format!("{}/v1/schedules/{name}", c.base)).json(&body))
                .await?;
            print(json, &v, schedule_text);
        }
        ScheduleCommand::Get { name } => {
            let v = c.get(&format!("/v1/schedules/{name}")).await?;
            print(json, &v, schedule_text);
        }
        ScheduleCommand::List => {
            let v = c.get("/v1/schedules").await?;
            print(json, &v, |v| {
                v["schedules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(schedule_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        ScheduleCommand::Delete { name } => {
            c.send(c.http.delete(format!("{}/v1/schedules/{name}", c.base))).await?;
            if json {
                println!("{}", serde_json::json!({"deleted": name}));
            } else {
                println!("schedule {name} deleted");
            }
        }
    }
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn submit(c: &Client, a: SubmitArgs, json: bool) -> anyhow::Result<i32> {
    let body = match a.payload.as_deref() {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
        Some(p) => p.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let mut req = c
        .http
        .post(format!("{}/v1/functions/{}/tasks", c.base, a.function))
        .body(body);
    if let Some(id) = &a.id {
        req = req.header("Idempotency-Key", id);
    }
    if let Some(d) = &a.delay {
        req = req.header("Jetask-Delay", d);
    }
    if let Some(t) = &a.at {
        req = req.header("Jetask-Not-Before", t);
    }
    if let Some(ct) = &a.content_type {
        req = req.header("Content-Type", ct);
    }
    let (_, accepted) = c.send(req).await?;
    let id = s(&accepted["task_id"]);
    if !a.wait {
        print(json, &accepted, |v| {
            let dup = if v["duplicate"] == Value::Bool(true) {
                " (duplicate: nothing new runs)"
            } else {
                ""
            };
            format!("task {} {}{dup}", s(&v["task_id"]), s(&v["status"]))
        });
        return Ok(0);
    }
    let mut delay = Duration::from_millis(20);
    let since = std::time::Instant::now();
    loop {
        let t = match c.get(&format!("/v1/tasks/{id}")).await {
            Ok(t) => Some(t),
            // No record: the function runs with task mode off, and there is nothing to wait on.
            Err(e) if e.to_string().contains("(HTTP 404)") && since.elapsed() < Duration::from_secs(5) => None,
            Err(e) if e.to_string().contains("(HTTP 404)") => {
                bail!(
                    "task {id} has no record to wait on (is task_mode off for {}?)",
                    a.function
                )
            }
            Err(e) if e.to_string().contains("(HTTP 5") || e.to_string().contains("cannot reach") => None,
            Err(e) => return Err(e),
        };
        if let Some(t) = t {
            let status = s(&t["status"]);
            if matches!(
                status.as_str(),
                "Succeeded" | "Failed" | "Stopped" | "Expired" | "Invalid"
            ) {
                if json {
                    print(true, &t, |_| String::new());
                } else if status == "Succeeded" {
                    println!("{}", t["result"].as_str().or(t["result_base64"].as_str()).unwrap_or(""));
                } else {
                    eprintln!("{}", task_text(&t));
                }
                return Ok(if status == "Succeeded" { 0 } else { 1 });
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}
