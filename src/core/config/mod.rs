//! Configuration: one typed struct, defaults in one place, loaded from `jetask.toml` then
//! `JETASK_<SECTION>_<KEY>` environment variables, validated once with errors naming the key.
//!
//! [`sections`] holds each section's struct and defaults, [`env`] the environment overlay,
//! [`validate`] the checks that name the key at fault.

mod env;
mod sections;
mod validate;

pub use env::apply_env;
pub use sections::*;

use crate::core::destination::Rules;
use crate::core::egress;
use crate::core::function::{self, Function};
use crate::core::task::valid_function_name;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::duration::Dur;

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
        assert_eq!(c.nats.user_events, Some(false));
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let doc = include_str!("../../../docs/configuration.md");
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
