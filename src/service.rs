//! The running service: connects, sets up JetStream, starts intake, dispatch, the followers and
//! the HTTP API, and shuts them down in order. `start` returns once it is serving, so tests run
//! whole instances in-process.

use crate::api;
use crate::core::config::Config;
use crate::engine::control::Control;
use crate::engine::ctx::Ctx;
use crate::engine::dispatch;
use crate::engine::intake;
use crate::store::index::Index;
use crate::store::kv::{FunctionStore, TaskStore};
use crate::store::registry::Registry;
use crate::store::setup::{self, SetupError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// A started instance.
pub struct Service {
    pub http_addr: SocketAddr,
    pub ctx: Arc<Ctx>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Stops taking work, lets in-flight attempts finish within the grace period, and returns
    /// when everything has stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }
}

pub async fn start(config: Config) -> Result<Service, StartError> {
    let config = Arc::new(config);
    // Listening from the start, so that `/readyz` says what start-up waits for (a cluster
    // still forming can take a while) instead of refusing connections.
    let addr = config.listen_addr().map_err(|e| StartError::Config(e.to_string()))?;
    let listen_err = |source| StartError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let http_addr = listener.local_addr().map_err(listen_err)?;
    let progress = Arc::new(setup::Progress::default());
    let starting = CancellationToken::new();
    let early = {
        let l = tokio::net::TcpListener::from_std(listener.try_clone().map_err(listen_err)?).map_err(listen_err)?;
        let router = api::starting_router(progress.clone());
        let stop = starting.clone();
        tokio::spawn(async move {
            let _ = axum::serve(l, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        })
    };
    let begun = begin(config.clone(), &progress).await;
    starting.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), early).await;
    let ctx = begun?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_err)?;
    Ok(serve(ctx, listener, http_addr).await)
}

/// Sets up JetStream and the context every part shares, waiting out a forming cluster.
async fn begin(config: Arc<Config>, progress: &setup::Progress) -> Result<Arc<Ctx>, StartError> {
    let nats = setup::setup(&config, progress).await?;
    // Limits fitted to the server are the ones in force everywhere.
    let config =
        if nats.limits.max_payload != config.limits.max_payload || nats.limits.max_result != config.limits.max_result {
            let mut fitted = (*config).clone();
            fitted.limits = nats.limits.clone();
            Arc::new(fitted)
        } else {
            config
        };
    let ctx = Arc::new(Ctx {
        tasks: TaskStore::new(nats.js.clone(), nats.tasks.clone()),
        functions: FunctionStore::new(nats.functions.clone()),
        registry: Arc::new(Registry::default()),
        index: Arc::new(Index::open_temp().map_err(|e| StartError::Config(e.to_string()))?),
        control: Arc::new(Control::default()),
        schedules: Arc::new(crate::engine::scheduler::Schedules::default()),
        http: crate::engine::egress::Client::new(&config.egress),
        metrics: Arc::new(crate::engine::metrics::Metrics::new()),
        replicas: Arc::new(crate::store::replicas::Replicas::new()),
        fair: crate::engine::fair::Fair::default(),
        revisions: crate::store::revisions::Revisions::default(),
        config: config.clone(),
        nats,
    });
    for f in config
        .static_functions()
        .map_err(|e| StartError::Config(e.to_string()))?
    {
        let stored = ctx.functions.get(&f.name).await.ok().flatten();
        let mut f = f;
        if f.spec.signing_secret.is_none() {
            // A static function without a secret keeps the one it has, or gets one (set
            // `signing_secret` in the config to know it: GET never shows it).
            let kept = stored.as_ref().and_then(|s| s.spec.signing_secret.clone());
            f.spec.signing_secret = Some(kept.unwrap_or_else(crate::api::ops::new_signing_secret));
        }
        if stored.as_ref() != Some(&f) {
            setup::converge(progress, &format!("function {}", f.name), || ctx.put_function(&f)).await?;
        }
    }
    setup::converge(progress, "functions", || async {
        ctx.registry.load(&ctx.functions).await.map_err(|e| e.to_string())
    })
    .await?;
    progress.set("starting");
    Ok(ctx)
}

/// Starts every part over a set-up context, and the HTTP API on `listener`.
async fn serve(ctx: Arc<Ctx>, listener: tokio::net::TcpListener, http_addr: SocketAddr) -> Service {
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    let attempts = TaskTracker::new();
    start_listeners(&ctx, &background, &shutdown).await;
    let presence = start_presence(&ctx).await;
    start_work(&ctx, &background, &attempts, &shutdown);
    let http = start_http(&ctx, listener);
    let done = tokio::spawn(shut_down(
        ctx.clone(),
        Running {
            shutdown: shutdown.clone(),
            background,
            attempts,
            presence,
            http,
        },
    ));
    tracing::info!(http = %http_addr, "jetask serving");
    Service {
        http_addr,
        ctx,
        shutdown,
        done,
    }
}

/// Starts the parts that take things in: the control subscription and the NATS API (each
/// waited for until it is ready), the followers of functions and of the list index, and intake.
async fn start_listeners(ctx: &Arc<Ctx>, background: &TaskTracker, shutdown: &CancellationToken) {
    let (control_ready, ready) = tokio::sync::oneshot::channel();
    background.spawn(
        ctx.control
            .clone()
            .listen(ctx.nats.client.clone(), control_ready, shutdown.clone()),
    );
    let _ = ready.await;
    background.spawn(ctx.registry.clone().follow(ctx.functions.clone(), shutdown.clone()));
    background.spawn(
        ctx.index
            .clone()
            .follow(ctx.nats.js.clone(), ctx.config.retention(), shutdown.clone()),
    );
    let (api_ready, ready) = tokio::sync::oneshot::channel();
    background.spawn(crate::api::nats::run(ctx.clone(), api_ready, shutdown.clone()));
    let _ = ready.await;
    background.spawn(intake::run(ctx.clone(), shutdown.clone()));
}

/// Starts this replica's presence, which other replicas share limits by.
async fn start_presence(ctx: &Arc<Ctx>) -> Stoppable {
    // Shares of limits start from the replicas alive now.
    if let Err(e) = ctx.replicas.load(&ctx.nats.replicas).await {
        tracing::warn!(error = %e, "cannot read the other replicas; limits start as if alone");
    }
    // Presence outlives the dispatch loops: the attempts still draining at shutdown must stay
    // counted by the other replicas until they are over.
    let stop = CancellationToken::new();
    let task = tokio::spawn(ctx.replicas.clone().run(ctx.nats.replicas.clone(), stop.clone()));
    Stoppable { stop, task }
}

/// Starts the parts that run tasks and deliver results; dispatch's attempts are tracked on their
/// own, to be drained within the grace period at shutdown.
fn start_work(ctx: &Arc<Ctx>, background: &TaskTracker, attempts: &TaskTracker, shutdown: &CancellationToken) {
    background.spawn(
        ctx.schedules
            .clone()
            .follow(ctx.nats.schedules.clone(), shutdown.clone()),
    );
    background.spawn(crate::engine::scheduler::run(ctx.clone(), shutdown.clone()));
    background.spawn(crate::engine::callback::run(ctx.clone(), shutdown.clone()));
    background.spawn(dispatch::run(ctx.clone(), shutdown.clone(), attempts.clone()));
}

fn start_http(ctx: &Arc<Ctx>, listener: tokio::net::TcpListener) -> Stoppable {
    let stop = CancellationToken::new();
    let router = api::router(ctx.clone());
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        }
    });
    Stoppable { stop, task }
}

/// A part stopped on its own, not by the shutdown token: at its own moment of the shutdown.
struct Stoppable {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Stoppable {
    async fn stop_within(self, patience: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(patience, self.task).await;
    }
}

/// What `serve` started, for [`shut_down`] to stop in order.
struct Running {
    shutdown: CancellationToken,
    background: TaskTracker,
    attempts: TaskTracker,
    presence: Stoppable,
    http: Stoppable,
}

/// Waits for `shutdown`, then stops in order: no new work, the attempts in flight (within the
/// grace period), presence, the background parts, and last the HTTP API.
async fn shut_down(ctx: Arc<Ctx>, running: Running) {
    let grace = ctx.config.dispatch.shutdown_grace.0;
    running.shutdown.cancelled().await;
    tracing::info!("shutting down: no new work; waiting for attempts in flight");
    running.attempts.close();
    if tokio::time::timeout(grace, running.attempts.wait()).await.is_err() {
        tracing::warn!("grace period over; unfinished attempts are left to redelivery");
    }
    running.presence.stop_within(Duration::from_secs(2)).await;
    ctx.replicas.leave(&ctx.nats.replicas).await;
    running.background.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), running.background.wait()).await;
    running.http.stop_within(Duration::from_secs(2)).await;
    let _ = ctx.nats.client.flush().await;
    ctx.index.discard();
}
