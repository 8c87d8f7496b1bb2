//! A function: a named HTTP endpoint and its asynchronous policy (CONTRACT §6). Specs arrive as
//! JSON (HTTP, NATS) or TOML tables (config); both are merged over the defaults and validated
//! key by key, so that an error names the key at fault.

use crate::core::destination::{self, Destination, Rules};
use crate::core::duration::Dur;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backoff {
    pub initial: Dur,
    pub max: Dur,
    pub multiplier: f64,
    pub jitter: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Concurrency {
    pub min: u32,
    pub max: u32,
    pub adaptive: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// A function's full policy, every key resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionSpec {
    pub endpoint: Endpoint,
    pub timeout: Dur,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub max_event_age: Dur,
    pub concurrency: Concurrency,
    pub rate_limit: Option<RateLimit>,
    pub user_rate_limit: Option<RateLimit>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub task_mode: bool,
    pub heartbeat_timeout: Dur,
    pub enabled: bool,
    /// The Standard Webhooks secret (`whsec_` and base64): answered only by the `PUT` that
    /// generated it, never by `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// A function's URL, as given (what `GET` shows) and parsed once: parsing it for every call
/// was 1.5% of the dispatcher's time.
#[derive(Clone, Debug)]
pub struct Endpoint {
    given: String,
    url: url::Url,
}

/// Longest endpoint URL: far beyond any real one, and short enough that no spec carries
/// megabytes in it.
pub const MAX_URL_LEN: usize = 8192;

impl Endpoint {
    /// An absolute `http://` or `https://` URL with a host, exactly as given; otherwise why not.
    /// The URL parser forgives what a caller most likely did not mean (`http:///x` becomes
    /// `http://x/`, surrounding spaces are dropped), so the text is checked before it.
    pub fn parse(given: &str) -> Result<Endpoint, String> {
        if given.len() > MAX_URL_LEN {
            return Err(format!("a URL of {} bytes is over {MAX_URL_LEN}", given.len()));
        }
        let shown: String = given.chars().take(80).collect();
        let not_url = || format!("{shown:?} is not an http:// or https:// URL");
        if given.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{shown:?} has a space or control character (URL-encode it)"));
        }
        let lower = given.get(..8).unwrap_or(given).to_ascii_lowercase();
        let authority = ["http://", "https://"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| &given[p.len()..])
            .ok_or_else(not_url)?;
        if authority.is_empty() || authority.starts_with(['/', '\\', '?', '#', '@']) {
            return Err(format!("{shown:?} has no host"));
        }
        match url::Url::parse(given) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) => {
                Ok(Endpoint {
                    given: given.to_string(),
                    url,
                })
            }
            _ => Err(not_url()),
        }
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn as_str(&self) -> &str {
        &self.given
    }
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        self.given == other.given
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.given)
    }
}

/// In the OpenAPI document: the URL as given.
impl utoipa::PartialSchema for Endpoint {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uri".into())))
            .max_length(Some(MAX_URL_LEN))
            .description(Some("an absolute http:// or https:// URL"))
            .into()
    }
}

impl utoipa::ToSchema for Endpoint {}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Endpoint, D::Error> {
        let given = String::deserialize(d)?;
        Endpoint::parse(&given).map_err(serde::de::Error::custom)
    }
}

/// A stored function: its name and spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    #[serde(flatten)]
    pub spec: FunctionSpec,
}

/// A key of a spec that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PolicyError {
    pub key: String,
    pub reason: String,
}

fn perr(key: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The longest attempt a function may ask for (CONTRACT §5).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(72 * 3600);

const KEYS: [&str; 14] = [
    "endpoint",
    "timeout",
    "max_attempts",
    "backoff",
    "max_event_age",
    "concurrency",
    "rate_limit",
    "user_rate_limit",
    "on_success",
    "on_failure",
    "task_mode",
    "heartbeat_timeout",
    "enabled",
    "signing_secret",
];

/// The built-in defaults of CONTRACT §6, as JSON (every key but `endpoint`).
pub fn builtin_defaults() -> Value {
    serde_json::json!({
        "timeout": "60s",
        "max_attempts": 4,
        "backoff": {"initial": "1s", "max": "5m", "multiplier": 2.0, "jitter": true},
        "max_event_age": "24h",
        "concurrency": {"min": 1, "max": 100, "adaptive": true},
        "rate_limit": null,
        "user_rate_limit": null,
        "on_success": null,
        "on_failure": null,
        "task_mode": true,
        "heartbeat_timeout": "5m",
        "enabled": true,
    })
}

/// Overlays `top` on `base`, recursing into objects (so `{"backoff": {"max": "1m"}}` keeps the
/// other backoff keys).
pub fn merge(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

fn field<T: DeserializeOwned>(obj: &Map<String, Value>, key: &str, path: &str) -> Result<T, PolicyError> {
    let v = obj.get(key).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| perr(path, e.to_string()))
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, PolicyError> {
    v.as_object().ok_or_else(|| perr(path, "expected an object"))
}

/// An unknown key as an error names it: as it is when it looks like a key, quoted (and cut
/// short) when it is empty or anything else, so that the refusal still names something.
pub fn shown_key(k: &str) -> String {
    if !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_string()
    } else {
        format!("{:?}", k.chars().take(64).collect::<String>())
    }
}

fn check_keys(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), PolicyError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(perr(
            &format!("{prefix}{}", shown_key(k)),
            format!("unknown key; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn dur_in(d: Dur, key: &str, min: Duration, max: Duration) -> Result<(), PolicyError> {
    if d.0 < min || d.0 > max {
        return Err(perr(key, format!("{d} is out of range {}..={}", Dur(min), Dur(max))));
    }
    Ok(())
}

fn rate_limit(obj: &Map<String, Value>, key: &str) -> Result<Option<RateLimit>, PolicyError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let m = object(v, key)?;
            check_keys(m, &["per_second", "burst"], &format!("{key}."))?;
            let per_second: f64 = field(m, "per_second", &format!("{key}.per_second"))?;
            if !(per_second > 0.0 && per_second <= 1e7) {
                return Err(perr(&format!("{key}.per_second"), "must be > 0 and at most 10000000"));
            }
            let burst: u32 = match m.get("burst") {
                None | Some(Value::Null) => (per_second.ceil() as u32).max(1),
                Some(_) => field(m, "burst", &format!("{key}.burst"))?,
            };
            if burst == 0 {
                return Err(perr(&format!("{key}.burst"), "must be at least 1"));
            }
            Ok(Some(RateLimit { per_second, burst }))
        }
    }
}

fn destination(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, PolicyError> {
    let d: Option<String> = field(obj, key, key)?;
    if let Some(s) = &d {
        s.parse::<Destination>().map_err(|e| perr(key, e.to_string()))?;
    }
    Ok(d)
}

/// Checks the keys of a partial spec (`[defaults]` or a request body) without resolving it.
pub fn check_partial(partial: &Value) -> Result<(), PolicyError> {
    let obj = object(partial, "function")?;
    check_keys(obj, &KEYS, "")
}

/// Resolves `partial` over `defaults` and validates every key. `max_age` is the record
/// retention: no task may be asked to wait longer than its record lives.
pub fn resolve(partial: &Value, defaults: &Value, max_age: Duration) -> Result<FunctionSpec, PolicyError> {
    check_partial(partial)?;
    let mut merged = builtin_defaults();
    merge(&mut merged, defaults);
    merge(&mut merged, partial);
    let obj = object(&merged, "function")?;

    let endpoint = endpoint(obj)?;

    let timeout: Dur = field(obj, "timeout", "timeout")?;
    dur_in(timeout, "timeout", Duration::from_millis(1), MAX_TIMEOUT)?;
    let max_attempts: u32 = field(obj, "max_attempts", "max_attempts")?;
    if !(1..=1000).contains(&max_attempts) {
        return Err(perr("max_attempts", "must be between 1 and 1000"));
    }

    let backoff = backoff(obj, max_age)?;

    let max_event_age: Dur = field(obj, "max_event_age", "max_event_age")?;
    dur_in(max_event_age, "max_event_age", Duration::from_secs(1), max_age)?;

    let concurrency = concurrency(obj)?;

    let heartbeat_timeout: Dur = field(obj, "heartbeat_timeout", "heartbeat_timeout")?;
    dur_in(
        heartbeat_timeout,
        "heartbeat_timeout",
        Duration::from_secs(1),
        MAX_TIMEOUT,
    )?;

    let signing_secret = signing_secret(obj)?;

    Ok(FunctionSpec {
        endpoint,
        timeout,
        max_attempts,
        backoff,
        max_event_age,
        concurrency,
        rate_limit: rate_limit(obj, "rate_limit")?,
        user_rate_limit: rate_limit(obj, "user_rate_limit")?,
        on_success: destination(obj, "on_success")?,
        on_failure: destination(obj, "on_failure")?,
        task_mode: field(obj, "task_mode", "task_mode")?,
        heartbeat_timeout,
        enabled: field(obj, "enabled", "enabled")?,
        signing_secret,
    })
}

/// The one key without a default.
fn endpoint(obj: &Map<String, Value>) -> Result<Endpoint, PolicyError> {
    let endpoint: Option<String> = field(obj, "endpoint", "endpoint")?;
    let endpoint = endpoint.ok_or_else(|| perr("endpoint", "required: the URL jetask calls"))?;
    Endpoint::parse(&endpoint).map_err(|why| perr("endpoint", why))
}

/// The retry delays, each within the record retention `max_age`.
fn backoff(obj: &Map<String, Value>, max_age: Duration) -> Result<Backoff, PolicyError> {
    let b = object(obj.get("backoff").unwrap_or(&Value::Null), "backoff")?;
    check_keys(b, &["initial", "max", "multiplier", "jitter"], "backoff.")?;
    let backoff = Backoff {
        initial: field(b, "initial", "backoff.initial")?,
        max: field(b, "max", "backoff.max")?,
        multiplier: field(b, "multiplier", "backoff.multiplier")?,
        jitter: field(b, "jitter", "backoff.jitter")?,
    };
    dur_in(backoff.initial, "backoff.initial", Duration::from_millis(1), max_age)?;
    dur_in(backoff.max, "backoff.max", backoff.initial.0, max_age)?;
    if !(1.0..=100.0).contains(&backoff.multiplier) {
        return Err(perr("backoff.multiplier", "must be between 1 and 100"));
    }
    Ok(backoff)
}

fn concurrency(obj: &Map<String, Value>) -> Result<Concurrency, PolicyError> {
    let c = object(obj.get("concurrency").unwrap_or(&Value::Null), "concurrency")?;
    check_keys(c, &["min", "max", "adaptive"], "concurrency.")?;
    let concurrency = Concurrency {
        min: field(c, "min", "concurrency.min")?,
        max: field(c, "max", "concurrency.max")?,
        adaptive: field(c, "adaptive", "concurrency.adaptive")?,
    };
    if concurrency.min == 0 {
        return Err(perr("concurrency.min", "must be at least 1"));
    }
    if concurrency.max < concurrency.min || concurrency.max > 100_000 {
        return Err(perr("concurrency.max", "must be between concurrency.min and 100000"));
    }
    Ok(concurrency)
}

/// The webhook signing key, refused unless it is a `whsec_` key long enough to sign with.
fn signing_secret(obj: &Map<String, Value>) -> Result<Option<String>, PolicyError> {
    let signing_secret: Option<String> = field(obj, "signing_secret", "signing_secret")?;
    if let Some(s) = &signing_secret {
        let key = s
            .strip_prefix("whsec_")
            .map(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b));
        if !matches!(key, Some(Ok(k)) if k.len() >= 12) {
            return Err(perr(
                "signing_secret",
                "expected whsec_ followed by a base64 key of at least 12 bytes",
            ));
        }
    }
    Ok(signing_secret)
}

/// Checks what a spec points at against the operator's rules (`[egress]` for the endpoint and
/// webhooks, `[destinations]` for NATS subjects), naming the key at fault. Separate from
/// [`resolve`], which is about the spec alone: a spec stored before a rule still loads, and the
/// rule is then applied when it is called or delivered to.
pub fn check_rules(spec: &FunctionSpec, rules: &Rules<'_>) -> Result<(), PolicyError> {
    rules
        .egress
        .check_url(spec.endpoint.url())
        .map_err(|e| perr("endpoint", format!("{:?} is {e}", spec.endpoint.as_str())))?;
    for (key, d) in [("on_success", &spec.on_success), ("on_failure", &spec.on_failure)] {
        if let Some(d) = d {
            destination::check(d, rules).map_err(|e| perr(key, e.to_string()))?;
        }
    }
    Ok(())
}

impl FunctionSpec {
    /// Whether a rate limit (of the function, or per user) paces its tasks: they then start in
    /// the limit's own time, not as soon as a slot is free.
    pub fn is_paced(&self) -> bool {
        self.rate_limit.is_some() || self.user_rate_limit.is_some()
    }

    /// The spec as answered by `GET`: never the signing secret.
    pub fn public_json(&self, name: &str) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(m) = v.as_object_mut() {
            m.remove("signing_secret");
            m.insert("name".into(), Value::String(name.to_string()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WEEK: Duration = Duration::from_secs(7 * 86400);

    fn ok(v: Value) -> FunctionSpec {
        resolve(&v, &json!({}), WEEK).unwrap()
    }

    fn err_key(v: Value) -> String {
        resolve(&v, &json!({}), WEEK).unwrap_err().key
    }

    #[test]
    fn an_endpoint_alone_gets_the_contract_defaults() {
        let s = ok(json!({"endpoint": "http://127.0.0.1:9/f"}));
        assert_eq!(s.timeout, Dur::from_secs(60));
        assert_eq!(s.max_attempts, 4);
        assert_eq!(
            s.backoff,
            Backoff {
                initial: Dur::from_secs(1),
                max: Dur::from_secs(300),
                multiplier: 2.0,
                jitter: true
            }
        );
        assert_eq!(s.max_event_age, Dur::from_secs(86400));
        assert_eq!(
            s.concurrency,
            Concurrency {
                min: 1,
                max: 100,
                adaptive: true
            }
        );
        assert_eq!(s.heartbeat_timeout, Dur::from_secs(300));
        assert!(s.task_mode && s.enabled && s.rate_limit.is_none() && s.on_success.is_none());
    }

    #[test]
    fn endpoints_the_url_parser_would_forgive_are_refused() {
        for bad in [
            "http:///x".to_string(),
            "http://".to_string(),
            " http://x.test/f".to_string(),
            "http://x.test/f ".to_string(),
            "http://x.test/a b".to_string(),
            "http:\\\\x.test/".to_string(),
            "http://?x".to_string(),
            "http://x.test/\n".to_string(),
            format!("http://x.test/{}", "a".repeat(3 << 20)),
        ] {
            let e = Endpoint::parse(&bad).map(|_| ()).unwrap_err();
            assert!(e.len() < 200, "{e}");
            assert_eq!(err_key(json!({ "endpoint": bad })), "endpoint");
        }
        assert!(Endpoint::parse("HTTPS://x.test:8080/f?q=1#h").is_ok());
    }

    #[test]
    fn the_endpoint_is_stored_as_given_and_called_as_parsed() {
        // Parsing normalizes ("HTTP://…:80/a/../f" calls http://…/f); GET shows what was put.
        let given = "HTTP://Example.test:80/a/../f?x=1";
        let s = ok(json!({ "endpoint": given }));
        assert_eq!(s.endpoint.as_str(), given);
        assert_eq!(s.endpoint.url().as_str(), "http://example.test/f?x=1");
        let stored = serde_json::to_value(&s).unwrap();
        assert_eq!(stored["endpoint"], given);
        let back: FunctionSpec = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(back, s);
        // A stored spec whose endpoint is not a URL (edited by hand) is refused, naming it.
        let mut bad = stored;
        bad["endpoint"] = json!("ftp://x.test/f");
        let e = serde_json::from_value::<FunctionSpec>(bad).unwrap_err().to_string();
        assert!(
            e.contains("\"ftp://x.test/f\" is not an http:// or https:// URL"),
            "{e}"
        );
    }

    #[test]
    fn nested_keys_merge_over_defaults() {
        let defaults = json!({"backoff": {"initial": "10ms"}, "max_attempts": 2});
        let s = resolve(
            &json!({"endpoint": "http://x.test", "backoff": {"max": "1s"}}),
            &defaults,
            WEEK,
        )
        .unwrap();
        assert_eq!(s.backoff.initial, Dur::from_millis(10));
        assert_eq!(s.backoff.max, Dur::from_secs(1));
        assert_eq!(s.max_attempts, 2);
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let e = "http://x.test";
        assert_eq!(err_key(json!({})), "endpoint");
        assert_eq!(err_key(json!({"endpoint": "ftp://x"})), "endpoint");
        assert_eq!(err_key(json!({"endpoint": e, "timeout": "forever"})), "timeout");
        assert_eq!(err_key(json!({"endpoint": e, "timeout": "73h"})), "timeout");
        assert_eq!(err_key(json!({"endpoint": e, "max_attempts": 0})), "max_attempts");
        assert_eq!(
            err_key(json!({"endpoint": e, "backoff": {"multiplier": 0.5}})),
            "backoff.multiplier"
        );
        assert_eq!(
            err_key(json!({"endpoint": e, "backoff": {"speed": 1}})),
            "backoff.speed"
        );
        assert_eq!(err_key(json!({"endpoint": e, "max_event_age": "8d"})), "max_event_age");
        assert_eq!(
            err_key(json!({"endpoint": e, "concurrency": {"min": 5, "max": 2}})),
            "concurrency.max"
        );
        assert_eq!(
            err_key(json!({"endpoint": e, "concurrency": {"min": 0}})),
            "concurrency.min"
        );
        assert_eq!(
            err_key(json!({"endpoint": e, "rate_limit": {"per_second": -1}})),
            "rate_limit.per_second"
        );
        assert_eq!(
            err_key(json!({"endpoint": e, "user_rate_limit": {"per_second": 1, "burst": 0}})),
            "user_rate_limit.burst"
        );
        assert_eq!(err_key(json!({"endpoint": e, "on_success": "smtp:x"})), "on_success");
        assert_eq!(err_key(json!({"endpoint": e, "on_failure": "nats:a.*"})), "on_failure");
        assert_eq!(err_key(json!({"endpoint": e, "task_mode": "yes"})), "task_mode");
        assert_eq!(
            err_key(json!({"endpoint": e, "heartbeat_timeout": "0s"})),
            "heartbeat_timeout"
        );
        assert_eq!(err_key(json!({"endpoint": e, "enabled": 1})), "enabled");
        assert_eq!(
            err_key(json!({"endpoint": e, "signing_secret": "abc"})),
            "signing_secret"
        );
        assert_eq!(err_key(json!({"endpoint": e, "colour": "red"})), "colour");
    }

    #[test]
    fn the_operator_rules_name_the_key_they_refuse() {
        let egress: crate::core::egress::Policy = toml::from_str(r#"deny = ["10.0.0.0/8"]"#).unwrap();
        let allow = [crate::core::destination::SubjectPattern::try_from("orders.>".to_string()).unwrap()];
        let rules = Rules {
            nats_allow: &allow,
            egress: &egress,
        };
        let key = |v: Value| check_rules(&ok(v), &rules).map_err(|e| (e.key.clone(), e.to_string()));
        let e = "http://127.0.0.1:9/f";
        assert_eq!(key(json!({"endpoint": e, "on_success": "nats:orders.done"})), Ok(()));
        let (k, why) = key(json!({"endpoint": "http://169.254.169.254/"})).unwrap_err();
        assert_eq!(k, "endpoint");
        assert!(why.contains("egress policy"), "{why}");
        assert_eq!(key(json!({"endpoint": "http://10.1.1.1/"})).unwrap_err().0, "endpoint");
        assert_eq!(
            key(json!({"endpoint": e, "on_success": "http://metadata.google.internal/"}))
                .unwrap_err()
                .0,
            "on_success"
        );
        assert_eq!(
            key(json!({"endpoint": e, "on_failure": "nats:alerts"})).unwrap_err().0,
            "on_failure"
        );
        // The built-in subject rules need no configuration: resolve itself refuses them.
        assert_eq!(
            err_key(json!({"endpoint": e, "on_success": "nats:$KV.JETASK_FUNCTIONS.f"})),
            "on_success"
        );
        assert_eq!(
            err_key(json!({"endpoint": e, "on_failure": "nats:jetask.control.stop"})),
            "on_failure"
        );
    }

    #[test]
    fn rate_limits_default_their_burst_to_the_rate() {
        let s = ok(json!({"endpoint": "http://x.test", "rate_limit": {"per_second": 2.5}}));
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: 3
            })
        );
    }

    #[test]
    fn get_never_shows_the_signing_secret() {
        let s = ok(json!({"endpoint": "http://x.test", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}));
        let v = s.public_json("f");
        assert!(v.get("signing_secret").is_none());
        assert_eq!(v["name"], "f");
    }
}
