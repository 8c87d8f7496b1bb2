//! The command line: `serve`, `dev`, and client commands that talk to the HTTP API at
//! `http.listen` (token from `JETASK_TOKEN`). Readable output by default, `--json` for scripts,
//! a non-zero exit with a clear message on failure. Also [`dev`] (a local server and NATS in one
//! command), [`demo`] and [`bench`](mod@bench).
//!
//! The top layer: may import anything, `service` included.

/// `println!` for commands that run servers or children (`dev`, its webhook receiver, `bench`):
/// a closed stdout (`jetask dev | head -3`) is ignored instead of panicking, so that the command
/// carries on and, when it ends, still stops what it started. One-shot commands print through
/// `render::line`, which ends the command quietly instead.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod args;
pub mod bench;
mod client;
pub mod demo;
pub mod dev;
mod functions;
mod nats;
pub mod receiver;
mod render;
mod schedules;
mod tasks;

pub use args::{BulkFilter, Cli, Command, DevArgs, FnCommand, NatsCommand, ScheduleCommand, SubmitArgs, TaskCommand};
pub use client::Client;
pub use render::task_text;

use crate::core::config::Config;

/// Runs a client command; the exit code is the caller's.
pub async fn run_client(cli: Cli, config: Config) -> anyhow::Result<i32> {
    let c = Client::new(&config);
    let json = cli.json;
    match cli.command {
        Command::Submit(a) if a.print_id && json => {
            eprintln!("error: --print-id prints only the ID, --json the whole answer: give one of them");
            return Ok(2);
        }
        Command::Submit(a) => return tasks::submit(&c, a, json).await,
        Command::Task(TaskCommand::Replay { print_id: true, .. }) if json => {
            eprintln!("error: --print-id prints only the ID, --json the whole answer: give one of them");
            return Ok(2);
        }
        Command::Task(cmd) => return tasks::run(&c, cmd, json).await,
        Command::Nats(cmd) => return nats::run(&config, cmd).await,
        Command::Schedule(cmd) => schedules::run(&c, cmd, json).await?,
        Command::Fn(cmd) => functions::run(&c, cmd, json).await?,
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
        Command::Serve | Command::Dev(_) => unreachable!("handled by main"),
    }
    Ok(0)
}
