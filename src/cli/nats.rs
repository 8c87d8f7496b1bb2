//! `jetask nats req`: a request over NATS, as `nats req` of the NATS CLI makes it, for those
//! who do not have that CLI. It connects to `nats.url` with the configured credentials; where
//! none are configured and `jetask dev` left `.jetask-dev/nats.env` in the current directory,
//! with the dev server's user `jetask` (or the one `--user` names) and its password from there.

use super::args::NatsCommand;
use crate::cli::dev::DevCredentials;
use crate::core::config::Config;
use anyhow::{bail, Context as _};
use std::path::Path;
use std::time::Duration;

/// Where `jetask dev` keeps its server's passwords.
const DEV_DIR: &str = ".jetask-dev";

pub(super) async fn run(config: &Config, cmd: NatsCommand) -> anyhow::Result<i32> {
    let NatsCommand::Req {
        subject,
        payload,
        header,
        user,
        timeout,
    } = cmd;
    if subject.is_empty() || subject.contains(char::is_whitespace) {
        bail!("{subject:?} is no NATS subject (tokens separated by dots, no spaces)");
    }
    let config = with_credentials(config, user.as_deref(), Path::new(DEV_DIR))?;
    let client = tokio::time::timeout(Duration::from_secs(10), crate::store::setup::connect(&config))
        .await
        .map_err(|_| anyhow::anyhow!("cannot reach NATS at {} within 10s", config.nats.url))??;
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in &header {
        headers.insert(name.as_str(), value.as_str());
    }
    let body = super::tasks::read_input(payload.as_deref())?;
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body.into())
        .timeout(Some(timeout.0));
    let answer = client.send_request(subject.clone(), request).await.map_err(|e| {
        use async_nats::RequestErrorKind as K;
        match e.kind() {
            K::NoResponders => anyhow::anyhow!(
                "nothing answers on {subject} (is jetask running, and may user {} publish there?)",
                config.nats.user.as_deref().unwrap_or("-")
            ),
            K::TimedOut => anyhow::anyhow!("no answer on {subject} within {}", timeout),
            _ => anyhow::anyhow!("request on {subject}: {e}"),
        }
    })?;
    let text = String::from_utf8_lossy(&answer.payload);
    super::render::line(&text);
    // An error of the micro service carries its code in a header; one of JetStream (a refused
    // publish) only in the body.
    let service_error = answer
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.to_string());
    let body: serde_json::Value = serde_json::from_slice(&answer.payload).unwrap_or_default();
    if service_error.is_some() || !body["error"].is_null() {
        let e = &body["error"];
        let message = e["message"]
            .as_str()
            .or(e["description"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        let code = service_error.unwrap_or_else(|| e["code"].to_string());
        eprintln!("error: {message} (NATS error code {code})");
        return Ok(1);
    }
    Ok(0)
}

/// The configuration to connect with: `--user` takes that user's password from the dev
/// server's file; without it, configured credentials win, else the dev server's `jetask`.
fn with_credentials(config: &Config, user: Option<&str>, dev_dir: &Path) -> anyhow::Result<Config> {
    let mut config = config.clone();
    let env = dev_dir.join("nats.env");
    let dev = || -> anyhow::Result<Option<DevCredentials>> {
        if !env.exists() {
            return Ok(None);
        }
        DevCredentials::read(dev_dir)
            .with_context(|| format!("cannot read {}", env.display()))
            .map(Some)
    };
    let n = &config.nats;
    let configured = n.user.is_some()
        || n.password.is_some()
        || n.creds_file.is_some()
        || n.nkey_file.is_some()
        || n.token.is_some();
    match user {
        Some(user) => {
            let Some(creds) = dev()? else {
                bail!(
                    "--user {user} takes its password from {}, which does not exist here (run this where \
                     `jetask dev` runs, or give nats.user and nats.password instead)",
                    env.display()
                );
            };
            let Some(password) = creds.password(user) else {
                let known: Vec<&str> = creds.users.iter().map(|(u, _, _)| u.as_str()).collect();
                bail!("no user {user} in {}: one of {}", env.display(), known.join(", "));
            };
            config.nats.user = Some(user.to_string());
            config.nats.password = Some(password.to_string());
            config.nats.creds_file = None;
            config.nats.nkey_file = None;
            config.nats.token = None;
        }
        None if configured => {}
        None => {
            if let Some(password) = dev()?.as_ref().and_then(|c| c.password("jetask")) {
                config.nats.user = Some("jetask".into());
                config.nats.password = Some(password.to_string());
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            dir.path().join("nats.env"),
            "JETASK_NATS_USER=jetask\nJETASK_NATS_PASSWORD=pj\nJETASK_ALICE_PASSWORD=pa\nJETASK_BOB_PASSWORD=pb\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn the_dev_servers_passwords_are_taken_when_none_are_configured() {
        let dir = dev_dir();
        let c = with_credentials(&Config::default(), None, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.nats.user.as_deref(), c.nats.password.as_deref()),
            (Some("jetask"), Some("pj"))
        );
        let c = with_credentials(&Config::default(), Some("alice"), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.nats.user.as_deref(), c.nats.password.as_deref()),
            (Some("alice"), Some("pa"))
        );
        let mut configured = Config::default();
        configured.nats.token = Some("t".into());
        let c = with_credentials(&configured, None, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.nats.user, c.nats.token.as_deref()), (None, Some("t")));
    }

    #[test]
    fn an_unknown_user_or_a_missing_file_is_a_clear_error() {
        let dir = dev_dir();
        let e = with_credentials(&Config::default(), Some("carol"), dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("no user carol") && e.to_string().contains("alice"),
            "{e}"
        );
        let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let e = with_credentials(&Config::default(), Some("alice"), empty.path()).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let c = with_credentials(&Config::default(), None, empty.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.nats.user, None,
            "no file, nothing configured: connect without credentials"
        );
    }
}
