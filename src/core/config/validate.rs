//! The checks a configuration passes once loaded, section by section; each error names its key.

use super::{key_err, Config, ConfigError};
use crate::core::function;
use crate::core::task::valid_user;
use std::time::Duration;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.validate_nats()?;
        self.listen_addr()?;
        self.validate_auth()?;
        self.validate_limits()?;
        self.validate_dispatch()?;
        self.validate_defaults()?;
        self.static_functions()?;
        Ok(())
    }

    fn validate_nats(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_dispatch(&self) -> Result<(), ConfigError> {
        if self.dispatch.ack_wait.0 < Duration::from_secs(1) || self.dispatch.ack_wait.0 > Duration::from_secs(300) {
            return Err(key_err("dispatch.ack_wait", "must be between 1s and 5m"));
        }
        if self.dispatch.shutdown_grace.0 > Duration::from_secs(3600) {
            return Err(key_err("dispatch.shutdown_grace", "must be at most 1h"));
        }
        Ok(())
    }

    /// `[defaults]`: any key of a function but `endpoint`, each with a valid value.
    fn validate_defaults(&self) -> Result<(), ConfigError> {
        function::check_partial(&self.defaults).map_err(|e| key_err(format!("defaults.{}", e.key), e.reason))?;
        if self.defaults.get("endpoint").is_some() {
            return Err(key_err("defaults.endpoint", "each function names its own endpoint"));
        }
        // Resolving a dummy function checks every default's value.
        let mut probe = serde_json::json!({"endpoint": "http://127.0.0.1/"});
        function::merge(&mut probe, &self.defaults);
        probe["endpoint"] = "http://127.0.0.1/".into();
        function::resolve(&probe, &serde_json::json!({}), self.retention())
            .map_err(|e| key_err(format!("defaults.{}", e.key), e.reason))?;
        Ok(())
    }
}
