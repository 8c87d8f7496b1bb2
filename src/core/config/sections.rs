//! The sections of `jetask.toml` other than functions: each a typed struct with its defaults.

use crate::core::destination::SubjectPattern;
use crate::core::duration::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated for a cluster.
    pub url: String,
    pub creds_file: Option<PathBuf>,
    /// File holding an NKey seed (`SU…`), as `nats --nkey` takes it.
    pub nkey_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// JetStream's duplicate window for `Nats-Msg-Id` (after it, the task record deduplicates).
    pub duplicate_window: Dur,
    /// Replicas of jetask's streams and buckets: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    /// Also publish each event on `jetask.user.<user>.events.…`, the subjects a tenant account
    /// imports (nats-config/auth.conf). Unset: on unless the server lets anyone in unnamed to
    /// one shared account, where no subscriber can be confined to its own user's copies (see
    /// `store::setup::user_events_in_force`); off saves a publish per event.
    pub user_events: Option<bool>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            nkey_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            duplicate_window: Dur::from_secs(120),
            replicas: 1,
            user_events: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Bearer token → user. Empty: no authentication, every task belongs to its `Jetask-User`.
    pub tokens: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest task input, in bytes.
    pub max_payload: usize,
    /// Largest result kept in a record; longer ones are cut and marked `result_truncated`.
    pub max_result: usize,
    /// Whether `max_payload` was set (file or environment) rather than defaulted: a defaulted
    /// limit is fitted to the NATS server at start-up, a set one must fit as it is.
    #[serde(skip)]
    pub max_payload_set: bool,
    #[serde(skip)]
    pub max_result_set: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_payload: 1024 * 1024,
            max_result: 256 * 1024,
            max_payload_set: false,
            max_result_set: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// How long a record lives after its last change.
    pub retention: Dur,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            retention: Dur::from_secs(7 * 86400),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `jetask=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// JetStream ack wait of dispatch consumers: a crashed replica's attempts come back after
    /// this. Running attempts are kept alive with progress acks, however long they run.
    pub ack_wait: Dur,
    /// On shutdown, how long in-flight attempts may take before they are left to redelivery.
    pub shutdown_grace: Dur,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            ack_wait: Dur::from_secs(15),
            shutdown_grace: Dur::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationsConfig {
    /// When not empty, the only subjects a `nats:` destination may name (NATS wildcards), on
    /// top of the built-in rules (no `$…`, `_INBOX…` or `jetask.…` but `jetask.results.>`).
    pub nats_allow: Vec<SubjectPattern>,
}
