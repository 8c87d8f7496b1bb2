//! A client of the HTTP API at `http.listen`, with the token from `JETASK_TOKEN`: answers of
//! 400 and above become errors carrying the API's message.

use crate::core::config::Config;
use anyhow::{bail, Context as _};
use serde_json::Value;

/// A client of the HTTP API.
pub struct Client {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    pub fn new(config: &Config) -> Client {
        Client {
            base: format!("http://{}", config.http.listen),
            http: reqwest::Client::builder().no_proxy().build().unwrap_or_default(),
            token: std::env::var("JETASK_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    pub(super) async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<(u16, Value)> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach jetask at {} (is `jetask serve` running?)", self.base))?;
        let code = resp.status().as_u16();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if code >= 400 {
            let msg = body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string());
            bail!("{msg} (HTTP {code})");
        }
        Ok((code, body))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.http.get(format!("{}{path}", self.base))).await?.1)
    }
}

/// Percent-encodes a query value.
pub(super) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
