//! Start-up: connect to NATS and create or update, idempotently, every stream, consumer and
//! bucket jetask needs, so that any number of replicas may start at once.

use crate::config::Config;
use crate::subjects;
use async_nats::jetstream::{self, consumer, kv, stream};
use std::time::Duration;

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

/// Bytes a record may need: input and result, escaped or base64 in JSON, plus the rest.
pub fn record_size_needed(config: &Config) -> usize {
    2 * config.limits.max_payload + 2 * config.limits.max_result + 64 * 1024
}

fn js_err(what: impl Into<String>) -> impl FnOnce(String) -> SetupError {
    let what = what.into();
    move |reason| SetupError::JetStream { what, reason }
}

/// Connects and makes sure every stream, consumer and bucket exists with the right settings.
pub async fn setup(config: &Config) -> Result<Nats, SetupError> {
    let client = connect(config).await?;
    let server = client.server_info().max_payload;
    let needed = record_size_needed(config);
    if server < needed {
        return Err(SetupError::PayloadTooSmall {
            server,
            needed,
            max_payload: config.limits.max_payload,
            max_result: config.limits.max_result,
        });
    }
    let js = jetstream::new(client.clone());
    let replicas = config.nats.replicas;
    let retention = config.retention();

    let submit = ensure_stream(
        &js,
        stream::Config {
            name: subjects::SUBMIT_STREAM.into(),
            description: Some("jetask submissions, kept until recorded and finished".into()),
            subjects: vec![subjects::SUBMIT_ALL.into()],
            // Interest retention: a submission stays until intake and its function's dispatch
            // consumer have both acknowledged it.
            retention: stream::RetentionPolicy::Interest,
            storage: stream::StorageType::File,
            max_age: retention,
            duplicate_window: config.nats.duplicate_window.0,
            max_message_size: i32::try_from(config.limits.max_payload + 64 * 1024).unwrap_or(i32::MAX),
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    submit
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::INTAKE_CONSUMER.into()),
            description: Some("jetask intake: records every submission".into()),
            filter_subject: subjects::SUBMIT_ALL.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 50_000,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("intake consumer")(e.to_string()))?;

    let bucket = |name: &str, description: &str, history: i64, max_age: Duration| kv::Config {
        bucket: name.into(),
        description: description.into(),
        history,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let forever = Duration::ZERO;
    let tasks = ensure_bucket(&js, bucket(subjects::TASKS_BUCKET, "jetask task records", 1, retention)).await?;
    let functions = ensure_bucket(&js, bucket(subjects::FUNCTIONS_BUCKET, "jetask functions", 5, forever)).await?;
    let schedules = ensure_bucket(
        &js,
        bucket(subjects::SCHEDULES_BUCKET, "jetask recurring schedules", 1, forever),
    )
    .await?;
    let fires = ensure_bucket(
        &js,
        bucket(
            subjects::FIRES_BUCKET,
            "jetask schedules: last handled firing",
            1,
            forever,
        ),
    )
    .await?;

    // Presence only: a minute of history is plenty (replicas rewrite their key twice a second).
    let presence = ensure_bucket(
        &js,
        bucket(
            subjects::REPLICAS_BUCKET,
            "jetask replicas alive and their concurrency holdings",
            1,
            Duration::from_secs(60),
        ),
    )
    .await?;

    let callbacks = ensure_stream(
        &js,
        stream::Config {
            name: subjects::CALLBACK_STREAM.into(),
            description: Some("jetask result deliveries".into()),
            subjects: vec![subjects::CALLBACK_DELIVER.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: retention,
            duplicate_window: config.nats.duplicate_window.0,
            num_replicas: replicas,
            ..Default::default()
        },
    )
    .await?;
    callbacks
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::CALLBACK_CONSUMER.into()),
            description: Some("jetask: delivers results".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 100_000,
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("deliveries consumer")(e.to_string()))?;

    Ok(Nats {
        client,
        js,
        tasks,
        functions,
        schedules,
        fires,
        replicas: presence,
        submit,
        callbacks,
    })
}

/// Creates or updates a stream and returns its handle.
async fn ensure_stream(js: &jetstream::Context, config: stream::Config) -> Result<stream::Stream, SetupError> {
    let name = config.name.clone();
    js.create_or_update_stream(config)
        .await
        .map_err(|e| js_err(format!("stream {name}"))(e.to_string()))?;
    js.get_stream(&name)
        .await
        .map_err(|e| js_err(format!("stream {name}"))(e.to_string()))
}

/// Creates or updates a KV bucket.
async fn ensure_bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, SetupError> {
    let name = config.bucket.clone();
    js.create_or_update_key_value(config)
        .await
        .map_err(|e| js_err(format!("bucket {name}"))(e.to_string()))
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
