//! Configuration: one typed struct, defaults in one place, loaded from `jetask.toml` then
//! `JETASK_<SECTION>_<KEY>` environment variables, validated once with errors naming the key.

use crate::core::destination::{Rules, SubjectPattern};
use crate::core::duration::Dur;
use crate::core::egress;
use crate::core::function::{self, Function};
use crate::core::task::{valid_function_name, valid_user};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// imports (nats-config/auth.conf). Off saves a publish per event where no tenant follows.
    pub user_events: bool,
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
            user_events: true,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub tasks: TasksConfig,
    pub log: LogConfig,
    pub dispatch: DispatchConfig,
    pub destinations: DestinationsConfig,
    /// Where endpoints and webhooks may point.
    pub egress: egress::Policy,
    /// Function defaults: any key of a function but `endpoint`.
    pub defaults: serde_json::Value,
    /// Static functions, `[functions.NAME]`.
    pub functions: BTreeMap<String, serde_json::Value>,
}

/// A configuration that cannot be used: the key at fault and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key {key}: {reason}")]
    Key { key: String, reason: String },
}

fn key_err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        reason: reason.into(),
    }
}

const SECTIONS: [&str; 11] = [
    "nats",
    "http",
    "auth",
    "limits",
    "tasks",
    "log",
    "dispatch",
    "destinations",
    "egress",
    "defaults",
    "functions",
];

impl Config {
    /// Loads `path` (or `./jetask.toml` when it exists), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path = Path::new("jetask.toml");
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if default_path.exists() => Some(default_path.to_path_buf()),
            None => None,
        };
        let mut table = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
                    path: p.clone(),
                    message: e.message().to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, std::env::vars())?;
        Config::from_table(table)
    }

    /// Builds and validates a configuration from TOML text (no environment).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = text.parse::<toml::Table>().map_err(|e| ConfigError::Syntax {
            path: PathBuf::from("<inline>"),
            message: e.message().to_string(),
        })?;
        Config::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        let limits = table.get("limits").and_then(|l| l.as_table());
        let set = |key: &str| limits.is_some_and(|l| l.contains_key(key));
        let (payload_set, result_set) = (set("max_payload"), set("max_result"));
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            key_err(
                if path == "." { "config".to_string() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        if config.defaults.is_null() {
            config.defaults = serde_json::json!({});
        }
        config.limits.max_payload_set = payload_set;
        config.limits.max_result_set = result_set;
        config.validate()?;
        Ok(config)
    }

    /// What destinations and endpoints may name, beyond the built-in rules.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            nats_allow: &self.destinations.nats_allow,
            egress: &self.egress,
        }
    }

    /// The record retention as a duration.
    pub fn retention(&self) -> Duration {
        self.tasks.retention.0
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        use std::net::ToSocketAddrs;
        let bad = || {
            key_err(
                "http.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", self.http.listen),
            )
        };
        if let Ok(a) = self.http.listen.parse() {
            return Ok(a);
        }
        // host:port, e.g. localhost:8080
        if !self.http.listen.contains(':') {
            return Err(bad());
        }
        self.http
            .listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(bad)
    }

    /// The static `[functions.NAME]` tables, resolved over `[defaults]`.
    pub fn static_functions(&self) -> Result<Vec<Function>, ConfigError> {
        self.functions
            .iter()
            .map(|(name, partial)| {
                if !valid_function_name(name) {
                    return Err(key_err(
                        format!("functions.{name}"),
                        "function names are [A-Za-z0-9_-]{1,64}",
                    ));
                }
                function::resolve(partial, &self.defaults, self.retention())
                    .and_then(|spec| function::check_rules(&spec, &self.rules()).map(|()| spec))
                    .map(|spec| Function {
                        name: name.clone(),
                        spec,
                    })
                    .map_err(|e| key_err(format!("functions.{name}.{}", e.key), e.reason))
            })
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.nats.url.trim().is_empty() {
            return Err(key_err("nats.url", "must not be empty"));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(key_err("nats.replicas", "must be between 1 and 5"));
        }
        let retention = self.retention();
        if retention < Duration::from_secs(60) {
            return Err(key_err("tasks.retention", "must be at least 1m"));
        }
        let w = self.nats.duplicate_window.0;
        if w < Duration::from_secs(1) || w > retention {
            return Err(key_err(
                "nats.duplicate_window",
                "must be between 1s and tasks.retention",
            ));
        }
        self.listen_addr()?;
        for (token, user) in &self.auth.tokens {
            if token.len() < 8 {
                return Err(key_err("auth.tokens", "every token must be at least 8 characters"));
            }
            if !valid_user(user) {
                return Err(key_err(
                    format!("auth.tokens.{token}"),
                    format!("{user:?} is not a user name ([A-Za-z0-9_-]{{1,128}})"),
                ));
            }
        }
        if !(1..=64 * 1024 * 1024).contains(&self.limits.max_payload) {
            return Err(key_err("limits.max_payload", "must be between 1 byte and 64 MiB"));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.limits.max_result) {
            return Err(key_err("limits.max_result", "must be between 1 byte and 16 MiB"));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(key_err(
                "log.format",
                format!("{:?}: expected \"text\" or \"json\"", self.log.format),
            ));
        }
        if self.dispatch.ack_wait.0 < Duration::from_secs(1) || self.dispatch.ack_wait.0 > Duration::from_secs(300) {
            return Err(key_err("dispatch.ack_wait", "must be between 1s and 5m"));
        }
        if self.dispatch.shutdown_grace.0 > Duration::from_secs(3600) {
            return Err(key_err("dispatch.shutdown_grace", "must be at most 1h"));
        }
        function::check_partial(&self.defaults).map_err(|e| key_err(format!("defaults.{}", e.key), e.reason))?;
        if self.defaults.get("endpoint").is_some() {
            return Err(key_err("defaults.endpoint", "each function names its own endpoint"));
        }
        // Resolving a dummy function checks every default's value.
        let mut probe = serde_json::json!({"endpoint": "http://127.0.0.1/"});
        function::merge(&mut probe, &self.defaults);
        probe["endpoint"] = "http://127.0.0.1/".into();
        function::resolve(&probe, &serde_json::json!({}), retention)
            .map_err(|e| key_err(format!("defaults.{}", e.key), e.reason))?;
        self.static_functions()?;
        Ok(())
    }
}

/// Overlays `JETASK_<SECTION>_<KEY>` variables on `table`. Values are read as TOML when they
/// parse (numbers, booleans, inline tables), else as strings; `JETASK_AUTH_TOKENS` also takes
/// `token=user,token=user`.
pub fn apply_env(table: &mut toml::Table, vars: impl Iterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("JETASK_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        if key.is_empty() {
            continue;
        }
        let typed = matches!(*section, "defaults" | "functions")
            || matches!(
                (*section, key),
                ("nats", "replicas" | "user_events")
                    | ("limits", _)
                    | ("auth", "tokens")
                    | ("destinations", _)
                    | ("egress", _)
            );
        let value = if *section == "auth" && key == "tokens" && !raw.trim_start().starts_with('{') {
            let mut t = toml::Table::new();
            for pair in raw.split(',').filter(|p| !p.trim().is_empty()) {
                let (tok, user) = pair
                    .split_once('=')
                    .ok_or_else(|| key_err(name.clone(), "expected token=user pairs separated by commas"))?;
                t.insert(tok.trim().to_string(), toml::Value::String(user.trim().to_string()));
            }
            toml::Value::Table(t)
        } else if typed {
            // Numbers, booleans and inline tables where the key takes them.
            match format!("v = {raw}").parse::<toml::Table>() {
                Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.clone())),
                Err(_) => toml::Value::String(raw.clone()),
            }
        } else {
            // A string key stays a string, even when it looks like a number (a password).
            toml::Value::String(raw.clone())
        };
        let sect = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match sect {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            _ => return Err(key_err(*section, "must be a table")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str) -> String {
        match Config::from_toml(text) {
            Err(ConfigError::Key { key, .. }) => key,
            other => panic!("expected a key error, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8080");
        assert_eq!(c.nats.duplicate_window, Dur::from_secs(120));
        assert_eq!(c.limits.max_payload, 1024 * 1024);
        assert_eq!(c.limits.max_result, 256 * 1024);
        assert_eq!(c.retention(), Duration::from_secs(7 * 86400));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(key_of("[http]\nlisten = \"nowhere\""), "http.listen");
        assert_eq!(
            key_of("[nats]\nduplicate_window = \"2 minutes\""),
            "nats.duplicate_window"
        );
        assert_eq!(key_of("[nats]\nsurl = \"x\""), "nats.surl");
        assert_eq!(key_of("[limits]\nmax_payload = \"big\""), "limits.max_payload");
        assert_eq!(key_of("[log]\nformat = \"xml\""), "log.format");
        assert_eq!(key_of("[defaults]\ntimeout = \"99h\""), "defaults.timeout");
        assert_eq!(
            key_of("[functions.f]\nendpoint = \"http://x.test\"\nmax_attempts = 0"),
            "functions.f.max_attempts"
        );
        assert_eq!(
            key_of("[functions.\"a.b\"]\nendpoint = \"http://x.test\""),
            "functions.a.b"
        );
        assert_eq!(key_of("[auth.tokens]\nshort = \"alice\""), "auth.tokens");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut t: toml::Table = "[http]\nlisten = \"127.0.0.1:1\"\n[limits]\nmax_payload = 10"
            .parse()
            .unwrap();
        let vars = vec![
            ("JETASK_HTTP_LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("JETASK_LIMITS_MAX_PAYLOAD".to_string(), "2048".to_string()),
            (
                "JETASK_AUTH_TOKENS".to_string(),
                "secret-token-1=alice,secret-token-2=bob".to_string(),
            ),
            ("JETASK_TOKEN".to_string(), "not config".to_string()),
            ("JETASK_NATS_PASSWORD".to_string(), "123456".to_string()),
            ("JETASK_NATS_USER_EVENTS".to_string(), "false".to_string()),
        ];
        apply_env(&mut t, vars.into_iter()).unwrap();
        let c = Config::from_table(t).unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9999");
        assert_eq!(c.limits.max_payload, 2048);
        assert_eq!(c.auth.tokens.get("secret-token-2").map(String::as_str), Some("bob"));
        assert_eq!(c.nats.password.as_deref(), Some("123456"));
        assert!(!c.nats.user_events);
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let doc = include_str!("../../docs/configuration.md");
        let example = doc
            .split("## Example `jetask.toml`")
            .nth(1)
            .and_then(|rest| rest.split("```toml\n").nth(1))
            .and_then(|block| block.split("```").next())
            .unwrap();
        let c = Config::from_toml(example).unwrap();
        assert_eq!(c.destinations.nats_allow.len(), 2);
        assert_eq!(c.egress.allow.len(), 3);
        assert!(!c.egress.follow_redirects);
    }

    #[test]
    fn static_functions_resolve_over_defaults() {
        let c =
            Config::from_toml("[defaults]\nmax_attempts = 2\n[functions.resize]\nendpoint = \"http://127.0.0.1:9/r\"")
                .unwrap();
        let f = c.static_functions().unwrap();
        assert_eq!(f[0].name, "resize");
        assert_eq!(f[0].spec.max_attempts, 2);
    }
}
