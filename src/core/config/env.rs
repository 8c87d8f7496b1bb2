//! The environment's part of the configuration: `JETASK_<SECTION>_<KEY>` variables.

use super::{key_err, ConfigError};

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
