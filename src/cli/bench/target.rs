//! The jetask under test: `jetask serve` child processes (the default), or services in the
//! bench's own process.

use crate::core::config::Config;
use crate::service;
use anyhow::Context as _;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `jetask serve` child process; stopped (SIGTERM, then killed if it lingers) when dropped, so
/// that an error in the bench leaves no service running.
pub(super) struct ServeChild {
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
    pub(super) fn spawn(dir: &std::path::Path, n: usize, url: &str, replicated: bool) -> anyhow::Result<ServeChild> {
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

    pub(super) async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
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
pub(super) enum Jetask {
    InProcess(Vec<service::Service>),
    Children(Vec<ServeChild>),
}

impl Jetask {
    /// The HTTP API of the first replica.
    pub(super) fn http_base(&self) -> String {
        match self {
            Jetask::InProcess(s) => format!("http://{}", s[0].http_addr),
            Jetask::Children(c) => c[0].http.clone(),
        }
    }

    /// The processes whose CPU is jetask's alone: none when it runs in the bench's.
    pub(super) fn pids(&self) -> Vec<u32> {
        match self {
            Jetask::InProcess(_) => Vec::new(),
            Jetask::Children(c) => c.iter().map(|c| c.child.id()).collect(),
        }
    }

    /// Registers the function: directly in process, else with `PUT /v1/functions/{name}`, as a
    /// user would.
    pub(super) async fn put_function(
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

    pub(super) async fn stop(self, http: &reqwest::Client, function: &str) {
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
