//! The command line's arguments (clap): every command, subcommand and flag.

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Run locally: a nats-server child if needed, demo functions, a webhook receiver, and the
    /// service.
    Dev(DevArgs),
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
    /// Talk to jetask over NATS: requests to the micro service `jetask.api.*`, submissions.
    #[command(subcommand)]
    Nats(NatsCommand),
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
    /// Print only the task ID (for `ID=$(jetask submit … --print-id)`).
    #[arg(long, conflicts_with = "wait")]
    pub print_id: bool,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address of the demo functions' server (port 0: any free port).
    #[arg(long, env = "JETASK_DEV_DEMO_LISTEN", default_value = crate::cli::dev::DEMO_LISTEN)]
    pub demo_listen: SocketAddr,
    /// Address of the webhook receiver (port 0: any free port).
    #[arg(long, env = "JETASK_DEV_RECEIVER_LISTEN", default_value = crate::cli::dev::RECEIVER_LISTEN)]
    pub receiver_listen: SocketAddr,
    /// Start neither the demo functions nor the webhook receiver.
    #[arg(long)]
    pub no_demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum NatsCommand {
    /// Send a request and print the answer, e.g. `jetask nats req jetask.api.task.get
    /// '{"id": "job-7"}'`; on a `jetask.submit.<function>` subject the answer is the PubAck.
    Req {
        subject: String,
        /// The request's body; `-` reads standard input; empty when left out.
        payload: Option<String>,
        /// A header `Name: value`, e.g. `Nats-Msg-Id: order-7` (repeatable).
        #[arg(long, short = 'H', value_parser = parse_header)]
        header: Vec<(String, String)>,
        /// Connect as this user of `jetask dev`'s server, with its password from
        /// .jetask-dev/nats.env (e.g. alice, a tenant); default: nats.user / nats.password of
        /// the configuration, else user jetask of .jetask-dev/nats.env.
        #[arg(long)]
        user: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s")]
        timeout: crate::core::duration::Dur,
    },
}

fn parse_status(s: &str) -> Result<crate::core::task::Status, String> {
    use crate::core::task::Status;
    Status::parse(s).ok_or_else(|| {
        let all: Vec<&str> = Status::ALL.iter().map(|st| st.as_str()).collect();
        format!("{s:?} is no state; one of {}", all.join(", "))
    })
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: a header is `Name: value`"))?;
    let name = name.trim();
    if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!("{s:?}: a header name is printable ASCII without spaces"));
    }
    Ok((name.to_string(), value.trim().to_string()))
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
        /// Print only the new task's ID (one ID, not with filters).
        #[arg(long, requires = "id")]
        print_id: bool,
        #[command(flatten)]
        filter: BulkFilter,
    },
    /// Wait until a task reaches a state (default: Succeeded) and print its record; exit 0 when
    /// it did, 1 when it ended in another state or the timeout passed.
    Wait {
        id: String,
        /// The state to wait for: Enqueued, Dequeued, Running, Retrying, Stopping, Succeeded,
        /// Failed, Stopped, Expired or Invalid. Reached once the task's history has it.
        #[arg(long, default_value = "Succeeded", value_parser = parse_status)]
        status: crate::core::task::Status,
        /// Give up after this long (e.g. 30s); no limit by default.
        #[arg(long)]
        timeout: Option<crate::core::duration::Dur>,
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
    pub(super) fn body(self) -> Value {
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
