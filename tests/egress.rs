//! Endpoints and webhooks cannot point anywhere (issue 15 §3): the `[egress]` policy at `PUT`,
//! at submission, at call time against the resolved address, for webhooks, and for redirects.
//! Every receiver is a real HTTP server on a loopback address; "denied" ones are denied by the
//! test's own `[egress]` rules.
#![allow(clippy::unwrap_used)]

mod support;

use jetask::core::config::Config;
use jetask::core::egress::Rule;
use jetask::core::function::{self, Function};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);
const WEEK: Duration = Duration::from_secs(7 * 86400);

fn message(a: &Answer) -> String {
    a.body["error"]["message"].as_str().unwrap_or_default().to_string()
}

fn rules(list: &[&str]) -> Vec<Rule> {
    list.iter().map(|r| r.parse().unwrap()).collect()
}

fn denying(nats: &NatsServer, deny: &[&str]) -> Config {
    let mut c = config(nats);
    c.egress.deny = rules(deny);
    c
}

async fn put_refused(app: &App, name: &str, spec: Value) -> Answer {
    app.send(app.http.put(format!("{}/v1/functions/{name}", app.base)).json(&spec))
        .await
}

/// A function stored as one written before the rule: straight into the bucket, past `PUT`.
async fn store_unchecked(app: &App, name: &str, spec: Value) {
    let f = Function {
        name: name.to_string(),
        spec: function::resolve(&spec, &json!({}), WEEK).unwrap(),
    };
    app.svc.as_ref().unwrap().ctx.put_function(&f).await.unwrap();
}

/// Waits until task `id` has failed, and returns its error.
async fn failure(app: &App, id: &str) -> Value {
    app.wait_status(id, "Failed", T).await["error"].clone()
}

#[tokio::test]
async fn put_refuses_metadata_and_link_local_targets_naming_the_key() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    for target in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fe80::1]/",
        "http://0.0.0.0:22/",
        "http://2852039166/",
    ] {
        let a = put_refused(&app, "f", json!({ "endpoint": target })).await;
        assert_eq!(a.status, 400, "endpoint {target}: {}", a.body);
        assert!(message(&a).starts_with("endpoint: "), "{}", a.body);
        assert!(message(&a).contains("egress policy"), "{}", a.body);
        for key in ["on_success", "on_failure"] {
            let a = put_refused(&app, "f", json!({"endpoint": rx.url(), key: target})).await;
            assert_eq!(a.status, 400, "{key} {target}: {}", a.body);
            assert!(message(&a).starts_with(&format!("{key}: ")), "{}", a.body);
            assert!(message(&a).contains("egress policy"), "{}", a.body);
        }
    }
    assert_eq!(app.get("/v1/functions/f").await.status, 404);
    // Loopback and private networks stay allowed by default.
    app.put_fn(
        "f",
        json!({"endpoint": rx.url(), "on_success": "http://10.0.0.1:9/hook"}),
    )
    .await;
    let a = app
        .post(
            "/v1/functions/f/tasks",
            "x",
            &[("Jetask-Callback", "http://169.254.169.254/latest/meta-data/")],
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).starts_with("Jetask-Callback: "), "{}", a.body);
    assert!(message(&a).contains("egress policy"), "{}", a.body);
    assert_eq!(rx.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_stored_before_the_rule_fails_unreachable_naming_the_policy() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    for (name, endpoint) in [
        ("aws", "http://169.254.169.254/latest/meta-data/"),
        ("gcp", "http://metadata.google.internal/computeMetadata/v1/"),
    ] {
        store_unchecked(&app, name, json!({"endpoint": endpoint, "max_attempts": 3})).await;
        let id = app.submit(name, "x", &[]).await;
        let e = failure(&app, &id).await;
        assert_eq!(e["type"], "Unreachable", "{e}");
        assert!(e["message"].as_str().unwrap().contains("egress policy"), "{e}");
        let t = app.task(&id).await.unwrap();
        assert_eq!(t["attempts"], 1, "a refusal is final: {t}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_name_resolving_to_a_denied_address_is_refused_at_connect_time() {
    let nats = NatsServer::start();
    let app = start_app(denying(&nats, &["127.0.0.0/8"])).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    // The literal address is refused at once; the name only once it is resolved.
    let a = put_refused(&app, "f", json!({ "endpoint": rx.url() })).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).contains("egress.deny (127.0.0.0/8)"), "{}", a.body);
    let by_name = format!("http://localhost:{}/fn", rx.addr.port());
    app.put_fn("f", json!({"endpoint": by_name, "max_attempts": 1})).await;
    let id = app.submit("f", "x", &[]).await;
    let e = failure(&app, &id).await;
    assert_eq!(e["type"], "Unreachable", "{e}");
    let why = e["message"].as_str().unwrap();
    assert!(why.contains("egress policy"), "{why}");
    assert!(why.contains("localhost resolves to a denied address"), "{why}");
    assert_eq!(rx.count(), 0, "nothing was sent");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_is_checked_at_delivery_against_its_resolved_address() {
    let nats = NatsServer::start();
    // Functions on 127.0.0.2, receivers of results on 127.0.0.1, which is denied.
    let app = start_app(denying(&nats, &["127.0.0.1/32", "::1"])).await;
    let func = Receiver::start_on("127.0.0.2", |_, _| Reply::ok("done")).await;
    let hook = Receiver::start(|_, _| Reply::ok("thanks")).await;
    let a = put_refused(&app, "f", json!({"endpoint": func.url(), "on_success": hook.url()})).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).starts_with("on_success: "), "{}", a.body);
    let by_name = format!("http://localhost:{}/hook", hook.addr.port());
    app.put_fn("f", json!({"endpoint": func.url(), "on_success": by_name}))
        .await;
    let id = app.submit("f", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    let d = settled_delivery(&app, &id).await;
    assert_eq!(d["status"], "Failed", "{d}");
    assert!(d["last_error"].as_str().unwrap().contains("egress policy"), "{d}");
    assert_eq!(hook.count(), 0, "nothing was sent");
    assert_eq!(func.count(), 1);
    app.stop().await;
}

/// Waits until task `id`'s delivery is settled (`Delivered` or `Failed`), and returns it.
async fn settled_delivery(app: &App, id: &str) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let d = app.task(id).await.unwrap()["destination"].clone();
        if d["status"] == "Delivered" || d["status"] == "Failed" {
            return d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery of {id} not settled: {d}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A receiver answering every call with a redirect to `to`.
async fn redirecting(code: u16, to: String) -> Receiver {
    Receiver::start(move |_, _| Reply::code(code).with_header("location", &to)).await
}

#[tokio::test]
async fn redirects_are_not_followed_by_default() {
    let nats = NatsServer::start();
    let app = start_app(config(&nats)).await;
    let target = Receiver::start(|_, _| Reply::ok("done")).await;
    let redirect = redirecting(307, target.url()).await;
    app.put_fn("f", json!({"endpoint": redirect.url(), "max_attempts": 1}))
        .await;
    let id = app.submit("f", "x", &[]).await;
    let e = failure(&app, &id).await;
    assert_eq!(e["message"], "HTTP 307", "{e}");
    assert_eq!(redirect.count(), 1);
    assert_eq!(target.count(), 0, "the redirect was not followed");
    app.stop().await;
}

#[tokio::test]
async fn followed_redirects_never_leave_the_policy() {
    let nats = NatsServer::start();
    let mut c = denying(&nats, &["127.0.0.2/32", "forbidden.localhost"]);
    c.egress.follow_redirects = true;
    let app = start_app(c).await;
    let allowed = Receiver::start(|_, _| Reply::ok("done")).await;
    let denied = Receiver::start_on("127.0.0.2", |_, _| Reply::ok("secret")).await;

    // Within the policy, a redirect is followed.
    let hop = redirecting(307, allowed.url()).await;
    app.put_fn("ok", json!({"endpoint": hop.url(), "max_attempts": 1}))
        .await;
    let id = app.submit("ok", "x", &[]).await;
    let t = app.wait_status(&id, "Succeeded", T).await;
    assert_eq!(t["result"], "done");

    // Out of it, by address or by name, it is refused, and the denied receiver hears nothing.
    for (name, to) in [
        ("by_address", denied.url()),
        (
            "by_name",
            format!("http://forbidden.localhost:{}/fn", denied.addr.port()),
        ),
        ("to_metadata", "http://169.254.169.254/latest/meta-data/".to_string()),
    ] {
        let hop = redirecting(302, to.clone()).await;
        app.put_fn(name, json!({"endpoint": hop.url(), "max_attempts": 1}))
            .await;
        let id = app.submit(name, "x", &[]).await;
        let e = failure(&app, &id).await;
        assert_eq!(e["type"], "Unreachable", "{to}: {e}");
        assert!(e["message"].as_str().unwrap().contains("egress policy"), "{to}: {e}");
        assert_eq!(hop.count(), 1);
    }
    assert_eq!(denied.count(), 0, "no hop reached the denied receiver");
    app.stop().await;
}

#[tokio::test]
async fn an_allow_list_admits_only_its_networks() {
    let nats = NatsServer::start();
    let mut c = config(&nats);
    c.egress.allow = rules(&["127.0.0.2/32"]);
    let app = start_app(c).await;
    let inside = Receiver::start_on("127.0.0.2", |_, _| Reply::ok("inside")).await;
    let outside = Receiver::start(|_, _| Reply::ok("outside")).await;
    let a = put_refused(&app, "f", json!({ "endpoint": outside.url() })).await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(message(&a).contains("not in egress.allow"), "{}", a.body);
    app.put_fn("f", json!({ "endpoint": inside.url() })).await;
    let id = app.submit("f", "x", &[]).await;
    assert_eq!(app.wait_status(&id, "Succeeded", T).await["result"], "inside");
    app.stop().await;
}

#[test]
fn the_egress_section_is_read_from_the_config_file_and_checked_naming_the_key() {
    let c = Config::from_toml(
        "[egress]\nallow = [\"10.0.0.0/8\", \"*.example.com\"]\ndeny = [\"10.9.0.0/16\"]\nfollow_redirects = true\n\
         [destinations]\nnats_allow = [\"orders.>\"]",
    )
    .unwrap();
    assert!(c.egress.follow_redirects);
    assert_eq!(c.egress.allow.len(), 2);
    let key = |text: &str| match Config::from_toml(text) {
        Err(jetask::core::config::ConfigError::Key { key, .. }) => key,
        other => panic!("{text}: {other:?}"),
    };
    assert!(key("[egress]\ndeny = [\"10.0.0.0/40\"]").starts_with("egress.deny"));
    assert!(key("[egress]\nallow = [\"a b\"]").starts_with("egress.allow"));
    assert!(key("[destinations]\nnats_allow = [\"a..b\"]").starts_with("destinations.nats_allow"));
    assert_eq!(
        key("[functions.meta]\nendpoint = \"http://169.254.169.254/\""),
        "functions.meta.endpoint"
    );
    assert_eq!(
        key("[destinations]\nnats_allow = [\"orders.>\"]\n[functions.f]\nendpoint = \"http://127.0.0.1:9/\"\non_success = \"nats:alerts\""),
        "functions.f.on_success"
    );
}
