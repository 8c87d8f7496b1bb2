//! Start-up: connect to NATS and create or update, idempotently, every stream, consumer and
//! bucket jetask needs, so that any number of replicas may start at once.

use crate::core::config::Config;
use crate::core::subjects;
use async_nats::jetstream::{self, consumer, kv, stream};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the NATS server's max_payload is {server} bytes, but jetask needs {needed} to carry inputs up to limits.max_payload = {max_payload} and results up to limits.max_result = {max_result} in records; raise max_payload in the server config (nats-config/ sets 8MB) or lower the limits")]
    PayloadTooSmall {
        server: usize,
        needed: usize,
        max_payload: usize,
        max_result: usize,
    },
    #[error("the NATS server's max_payload of {server} bytes leaves no room for records with limits.{key} = {value}; raise max_payload in the server config or lower limits.{key}")]
    NoRoom {
        server: usize,
        key: &'static str,
        value: usize,
    },
    #[error("cannot set up JetStream {what}: {reason}")]
    JetStream { what: String, reason: String },
}

/// What a running jetask holds on to.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub tasks: kv::Store,
    pub functions: kv::Store,
    pub schedules: kv::Store,
    pub fires: kv::Store,
    pub replicas: kv::Store,
    pub submit: stream::Stream,
    pub callbacks: stream::Stream,
    /// The limits in force: as configured, or fitted to the server's `max_payload`.
    pub limits: crate::core::config::LimitsConfig,
    /// Whether events are also published on the user's subjects: `nats.user_events`, or when
    /// unset what [`user_events_in_force`] found.
    pub user_events: bool,
}

pub async fn connect(config: &Config) -> Result<async_nats::Client, SetupError> {
    let n = &config.nats;
    let err = |reason: String| SetupError::Connect {
        url: n.url.clone(),
        reason,
    };
    let mut opts = async_nats::ConnectOptions::new()
        .name("jetask")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    if let Some(path) = &n.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| err(format!("nats.creds_file: {e}")))?;
    }
    if let Some(path) = &n.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|e| err(format!("nats.nkey_file {}: {e}", path.display())))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let (Some(u), Some(p)) = (&n.user, &n.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &n.token {
        opts = opts.token(t.clone());
    }
    if let Some(ca) = &n.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&n.tls_cert, &n.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
    }
    let urls: Vec<async_nats::ServerAddr> = n
        .url
        .split(',')
        .map(|u| {
            u.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| err(format!("nats.url: {e}")))
        })
        .collect::<Result<_, _>>()?;
    opts.connect(urls).await.map_err(|e| err(e.to_string()))
}

/// How long start-up keeps trying to reach a NATS server that does not answer yet (replicas
/// started together with their servers).
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

async fn connect_patiently(config: &Config) -> Result<async_nats::Client, SetupError> {
    let began = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match connect(config).await {
            Ok(c) => return Ok(c),
            Err(e @ SetupError::Connect { .. }) if began.elapsed() < CONNECT_PATIENCE => {
                tracing::warn!(error = %e, "NATS not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Bytes a record may need: input and result, escaped or base64 in JSON, plus the rest.
pub fn record_size_needed(config: &Config) -> usize {
    size_needed(config.limits.max_payload, config.limits.max_result)
}

/// What a record needs beyond its input and result (IDs, history, headers).
const RECORD_OVERHEAD: usize = 64 * 1024;

fn size_needed(max_payload: usize, max_result: usize) -> usize {
    2 * max_payload + 2 * max_result + RECORD_OVERHEAD
}

/// The limits to run with on a server whose `max_payload` is `server`: the configured ones when
/// they fit; else, for those not set explicitly, the largest that fit (a stock nats-server
/// allows 1 MB), keeping the defaults' 4:1 ratio of input to result when neither is set.
/// Limits set explicitly that cannot fit are an error naming them.
pub fn fit_limits(
    limits: &crate::core::config::LimitsConfig,
    server: usize,
) -> Result<crate::core::config::LimitsConfig, SetupError> {
    let mut out = limits.clone();
    if server >= size_needed(limits.max_payload, limits.max_result) {
        return Ok(out);
    }
    // Input and result together, as a record holds them.
    let room = server.saturating_sub(RECORD_OVERHEAD) / 2;
    let too_small = |key, value| SetupError::NoRoom { server, key, value };
    match (limits.max_payload_set, limits.max_result_set) {
        (true, true) => {
            return Err(SetupError::PayloadTooSmall {
                server,
                needed: size_needed(limits.max_payload, limits.max_result),
                max_payload: limits.max_payload,
                max_result: limits.max_result,
            })
        }
        (true, false) => {
            out.max_result = room
                .checked_sub(limits.max_payload)
                .filter(|r| *r >= 1024)
                .ok_or_else(|| too_small("max_payload", limits.max_payload))?;
        }
        (false, true) => {
            out.max_payload = room
                .checked_sub(limits.max_result)
                .filter(|p| *p >= 1024)
                .ok_or_else(|| too_small("max_result", limits.max_result))?;
        }
        (false, false) => {
            if room < 2048 {
                return Err(too_small("max_payload", limits.max_payload));
            }
            out.max_result = room / 5;
            out.max_payload = room - out.max_result;
        }
    }
    Ok(out)
}

fn js_err(what: impl Into<String>) -> impl FnOnce(String) -> SetupError {
    let what = what.into();
    move |reason| SetupError::JetStream { what, reason }
}

/// Connects and makes sure every stream, consumer and bucket exists with the right settings,
/// waiting for as long as the cluster is forming or electing leaders.
pub async fn setup(config: &Config, progress: &Progress) -> Result<Nats, SetupError> {
    progress.set("connecting to NATS");
    let client = connect_patiently(config).await?;
    let limits = limits_in_force(&config.limits, client.server_info().max_payload)?;
    let user_events = match config.nats.user_events {
        Some(set) => set,
        None => user_events_in_force(&client).await,
    };
    let js = Handles::new(&client);
    // The streams and buckets do not depend on one another, so they are created at once: on a
    // forming cluster, or when replicas start together and their creates of one stream collide
    // (each left unanswered until it times out, see `converge`), the waits overlap instead of
    // adding up, one per stream and bucket.
    // (Boxed: joined, the steps' states would add up on the caller's stack.)
    let (submit, buckets, callbacks) = futures::try_join!(
        Box::pin(ensure_submissions(progress, &js, config, &limits)),
        Box::pin(ensure_buckets(progress, &js, config)),
        Box::pin(ensure_deliveries(progress, &js, config)),
    )?;
    Ok(Nats {
        client,
        js: js.js,
        tasks: buckets.tasks,
        functions: buckets.functions,
        schedules: buckets.schedules,
        fires: buckets.fires,
        replicas: buckets.presence,
        submit,
        callbacks,
        limits,
        user_events,
    })
}

/// Whether, with `nats.user_events` unset, every event is also published on its user's subject
/// (`jetask.user.<user>.events.…`). Those copies exist so that NATS authorization can give each
/// tenant only its own events, through an account's import or a user's subscribe permission.
/// A server that asks no credentials and puts everyone in its one global account has no way
/// to confine a subscriber, so there the copies would only double the events' cost: they are
/// left out. Anything else (credentials asked, an account of our own, or a server that does
/// not say) keeps them.
async fn user_events_in_force(client: &async_nats::Client) -> bool {
    // Asked only of a server without credentials (so with no permissions that could refuse it).
    let auth_required = client.server_info().auth_required;
    let account = if auth_required {
        None
    } else {
        connection_account(client).await
    };
    let on = user_events_needed(auth_required, account.as_deref());
    if !on {
        tracing::info!(
            "events are published on jetask.events.> only: the NATS server asks no credentials, so no \
             subscriber can be confined to one user's events (set nats.user_events = true to publish \
             jetask.user.<user>.events.> too)"
        );
    }
    on
}

/// The rule of [`user_events_in_force`]: off only for an unauthenticated connection in the global
/// account (`$G`).
fn user_events_needed(auth_required: bool, account: Option<&str>) -> bool {
    auth_required || account != Some(GLOBAL_ACCOUNT)
}

/// The account every client of a server without accounts is in.
const GLOBAL_ACCOUNT: &str = "$G";

/// The account this connection is in, as the server's `$SYS.REQ.USER.INFO` answers (any client
/// may ask it about itself); `None` when the server does not answer.
async fn connection_account(client: &async_nats::Client) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Data,
    }
    #[derive(serde::Deserialize)]
    struct Data {
        account: String,
    }
    let ask = client.request("$SYS.REQ.USER.INFO", bytes::Bytes::new());
    let reply = tokio::time::timeout(Duration::from_secs(2), ask).await.ok()?.ok()?;
    serde_json::from_slice::<Answer>(&reply.payload)
        .ok()
        .map(|a| a.data.account)
}

/// The configured limits fitted to the server's `max_payload` of `server` bytes, logged when
/// fitting changed them (an operator should know the limits are not the configured ones).
fn limits_in_force(
    limits: &crate::core::config::LimitsConfig,
    server: usize,
) -> Result<crate::core::config::LimitsConfig, SetupError> {
    let fitted = fit_limits(limits, server)?;
    if fitted.max_payload != limits.max_payload || fitted.max_result != limits.max_result {
        tracing::info!(
            server_max_payload = server,
            max_payload = fitted.max_payload,
            max_result = fitted.max_result,
            "limits not set in the config fitted to the NATS server's max_payload"
        );
    }
    Ok(fitted)
}

/// The submissions stream and its intake consumer.
async fn ensure_submissions(
    progress: &Progress,
    js: &Handles,
    config: &Config,
    limits: &crate::core::config::LimitsConfig,
) -> Result<stream::Stream, SetupError> {
    let submit = ensure_stream(
        progress,
        js,
        stream::Config {
            name: subjects::SUBMIT_STREAM.into(),
            description: Some("jetask submissions, kept until recorded and finished".into()),
            subjects: vec![subjects::SUBMIT_ALL.into()],
            // Interest retention: a submission stays until intake and its function's dispatch
            // consumer have both acknowledged it.
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            max_age: config.retention(),
            duplicate_window: config.nats.duplicate_window.0,
            max_message_size: i32::try_from(limits.max_payload + 64 * 1024).unwrap_or(i32::MAX),
            num_replicas: config.nats.replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_consumer(
        progress,
        &submit,
        "intake consumer",
        consumer::pull::Config {
            durable_name: Some(subjects::INTAKE_CONSUMER.into()),
            description: Some("jetask intake: records every submission".into()),
            filter_subject: subjects::SUBMIT_ALL.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 50_000,
            max_deliver: -1,
            ..Default::default()
        },
    )
    .await?;
    Ok(submit)
}

/// The KV buckets, as [`ensure_buckets`] returns them.
struct Buckets {
    tasks: kv::Store,
    functions: kv::Store,
    schedules: kv::Store,
    fires: kv::Store,
    presence: kv::Store,
}

/// Every KV bucket: task records, functions, schedules, their last firings, replica presence.
async fn ensure_buckets(progress: &Progress, js: &Handles, config: &Config) -> Result<Buckets, SetupError> {
    let ensure = |name: &str, description: &str, history: i64, max_age: Duration| {
        let bucket = kv::Config {
            bucket: name.into(),
            description: description.into(),
            history,
            max_age,
            storage: stream::StorageType::File,
            num_replicas: config.nats.replicas,
            ..Default::default()
        };
        Box::pin(ensure_bucket(progress, js, bucket))
    };
    let forever = Duration::ZERO;
    let (tasks, functions, schedules, fires, presence) = futures::try_join!(
        ensure(subjects::TASKS_BUCKET, "jetask task records", 1, config.retention()),
        ensure(subjects::FUNCTIONS_BUCKET, "jetask functions", 5, forever),
        ensure(subjects::SCHEDULES_BUCKET, "jetask recurring schedules", 1, forever),
        ensure(
            subjects::FIRES_BUCKET,
            "jetask schedules: last handled firing",
            1,
            forever
        ),
        // Presence only: a minute of history is plenty (replicas rewrite their key twice a second).
        ensure(
            subjects::REPLICAS_BUCKET,
            "jetask replicas alive and their concurrency holdings",
            1,
            Duration::from_secs(60),
        ),
    )?;
    Ok(Buckets {
        tasks,
        functions,
        schedules,
        fires,
        presence,
    })
}

/// The result-deliveries stream and its consumer.
async fn ensure_deliveries(progress: &Progress, js: &Handles, config: &Config) -> Result<stream::Stream, SetupError> {
    let callbacks = ensure_stream(
        progress,
        js,
        stream::Config {
            name: subjects::CALLBACK_STREAM.into(),
            description: Some("jetask result deliveries".into()),
            subjects: vec![subjects::CALLBACK_DELIVER.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: config.retention(),
            duplicate_window: config.nats.duplicate_window.0,
            num_replicas: config.nats.replicas,
            ..Default::default()
        },
    )
    .await?;
    ensure_consumer(
        progress,
        &callbacks,
        "deliveries consumer",
        consumer::pull::Config {
            durable_name: Some(subjects::CALLBACK_CONSUMER.into()),
            description: Some("jetask: delivers results".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
            max_deliver: -1,
            ..Default::default()
        },
    )
    .await?;
    Ok(callbacks)
}

/// What start-up is waiting for, for `/readyz` to show while JetStream is not ready: the stage,
/// and each set-up step still waiting (several run at once) with its last error.
#[derive(Debug, Default)]
pub struct Progress(Mutex<(String, BTreeMap<String, String>)>);

impl Progress {
    /// Sets the stage start-up is at.
    pub fn set(&self, what: impl Into<String>) {
        self.lock().0 = what.into();
    }

    /// Notes that the step `what` is waiting, and on what.
    fn waiting(&self, what: &str, on: String) {
        self.lock().1.insert(what.to_string(), on);
    }

    /// Notes that the step `what` is done.
    fn done(&self, what: &str) {
        self.lock().1.remove(what);
    }

    pub fn get(&self) -> String {
        let state = self.lock();
        if state.1.is_empty() {
            return state.0.clone();
        }
        state.1.values().cloned().collect::<Vec<_>>().join("; ")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (String, BTreeMap<String, String>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a set-up error is one a forming or failing-over cluster gives, which goes away by
/// itself: no meta leader yet, too few peers for R3, a request unanswered (nats-server 2.15
/// leaves an update unanswered while the same stream's create is in flight), a create that
/// lost a race with another replica's.
pub fn is_transient(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "timed out",
        "timeout",
        "no responders",
        "not available",
        "unavailable",
        "insufficient resources",
        "no suitable peers",
        "peer",
        "leader",
        "jetstream not enabled",
        "not enabled for account",
        "in progress",
        "already in use",
        "already exists",
        "disconnected",
        "connection",
        "broken pipe",
        "cluster",
    ]
    .iter()
    .any(|p| r.contains(p))
}

/// Longest pause between two tries of one set-up step.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long a step whose error is not known to be transient is tried before start-up fails.
const OTHER_PATIENCE: Duration = Duration::from_secs(20);

/// Runs one idempotent set-up step until it succeeds: transient errors are retried with
/// backoff for as long as they last (logged, and shown by `/readyz`), other errors for a
/// short while (a race with another replica's set-up can look like anything), then returned.
pub async fn converge<T, F, Fut>(progress: &Progress, what: &str, mut step: F) -> Result<T, SetupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    progress.waiting(what, what.to_string());
    let began = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match tokio::time::timeout(Duration::from_secs(15), step()).await {
            Ok(Ok(t)) => {
                progress.done(what);
                return Ok(t);
            }
            Ok(Err(reason)) if !is_transient(&reason) && began.elapsed() > OTHER_PATIENCE => {
                return Err(js_err(what)(reason));
            }
            Ok(Err(reason)) => {
                tracing::warn!(waiting_for = what, error = %reason, retry_in_ms = pause.as_millis() as u64, "JetStream not ready; retrying");
                progress.waiting(what, format!("{what}: {reason}"));
            }
            Err(_) => {
                tracing::warn!(waiting_for = what, "JetStream request unanswered; retrying");
                progress.waiting(what, format!("{what}: unanswered"));
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// How long one set-up request may go unanswered before it is sent again.
const SETUP_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The JetStream context for set-up requests (short timeout) and the one the handles it returns
/// keep (the ordinary timeout, for the work they do later).
struct Handles {
    quick: jetstream::Context,
    js: jetstream::Context,
}

impl Handles {
    fn new(client: &async_nats::Client) -> Handles {
        let js = jetstream::new(client.clone());
        // Set-up requests wait briefly: on a forming cluster an unanswered one is lost for good
        // (see `converge`), and trying again soon is what gets an answer.
        let mut quick = js.clone();
        quick.set_timeout(SETUP_REQUEST_TIMEOUT);
        Handles { quick, js }
    }
}

/// Creates or updates a stream and returns its handle.
async fn ensure_stream(
    progress: &Progress,
    js: &Handles,
    config: stream::Config,
) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    converge(progress, &format!("stream {name}"), || {
        let (quick, js, config, name) = (js.quick.clone(), js.js.clone(), config.clone(), name.clone());
        async move {
            quick.create_or_update_stream(config).await.map_err(|e| e.to_string())?;
            js.get_stream(&name).await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// Creates or updates a KV bucket and returns its handle.
async fn ensure_bucket(progress: &Progress, js: &Handles, config: kv::Config) -> Result<kv::Store, SetupError> {
    let name = config.bucket.clone();
    converge(progress, &format!("bucket {name}"), || {
        let (quick, js, config, name) = (js.quick.clone(), js.js.clone(), config.clone(), name.clone());
        async move {
            quick
                .create_or_update_key_value(config)
                .await
                .map_err(|e| e.to_string())?;
            js.get_key_value(&name).await.map_err(|e| e.to_string())
        }
    })
    .await
}

/// Creates or updates a consumer of `stream` described by `config`.
async fn ensure_consumer(
    progress: &Progress,
    stream: &stream::Stream,
    what: &str,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, SetupError> {
    converge(progress, what, || {
        let (stream, config) = (stream.clone(), config.clone());
        async move { stream.create_consumer(config).await.map_err(|e| e.to_string()) }
    })
    .await
}

/// Creates or updates the dispatch consumer of `function`.
pub async fn ensure_dispatch_consumer(
    submit: &stream::Stream,
    function: &str,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, SetupError> {
    submit
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::dispatch_consumer(function)),
            description: Some(format!("jetask dispatch of function {function}")),
            // Both the function's own subject and the one a tenant's import delivers to
            // (`jetask.submit.<function>.<tenant>`, see `subjects::submit_parts`).
            filter_subjects: vec![subjects::submit(function), subjects::submit_as(function, "*")],
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // Delayed and backing-off tasks are parked as pending acks (delayed naks): this
            // bounds how many may wait at once, not how many run.
            max_ack_pending: 1_000_000,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err(format!("consumer for function {function}"))(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::LimitsConfig;

    #[test]
    fn user_events_are_left_out_only_where_nobody_authenticates_into_the_global_account() {
        assert!(!user_events_needed(false, Some("$G")));
        // `no_auth_user` in an account of its own, or credentials asked: tenants may exist.
        assert!(user_events_needed(false, Some("JETASK")));
        assert!(user_events_needed(true, Some("$G")));
        assert!(user_events_needed(true, Some("JETASK")));
        // A server that did not say which account: keep them.
        assert!(user_events_needed(false, None));
    }

    const MB: usize = 1024 * 1024;

    #[test]
    fn defaulted_limits_shrink_to_a_stock_servers_max_payload() {
        let fitted = fit_limits(&LimitsConfig::default(), MB).unwrap();
        assert!(size_needed(fitted.max_payload, fitted.max_result) <= MB);
        assert!(fitted.max_payload >= 4 * fitted.max_result, "{fitted:?}");
        assert!(fitted.max_payload > 350 * 1024, "{fitted:?}");
    }

    #[test]
    fn limits_that_fit_are_kept() {
        let l = LimitsConfig::default();
        let fitted = fit_limits(&l, 8 * MB).unwrap();
        assert_eq!((fitted.max_payload, fitted.max_result), (l.max_payload, l.max_result));
    }

    #[test]
    fn explicit_limits_that_cannot_fit_are_refused_naming_the_key() {
        let mut l = LimitsConfig {
            max_payload: 600 * 1024,
            max_payload_set: true,
            ..LimitsConfig::default()
        };
        let e = fit_limits(&l, MB).unwrap_err().to_string();
        assert!(e.contains("limits.max_payload"), "{e}");
        l.max_payload = 100 * 1024;
        let fitted = fit_limits(&l, MB).unwrap();
        assert_eq!(fitted.max_payload, 100 * 1024);
        assert!(size_needed(fitted.max_payload, fitted.max_result) <= MB);
        l.max_result_set = true;
        l.max_payload = 2 * MB;
        let e = fit_limits(&l, MB).unwrap_err().to_string();
        assert!(
            e.contains("limits.max_payload") && e.contains("limits.max_result"),
            "{e}"
        );
    }
}
