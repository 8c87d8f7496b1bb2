//! `docker-compose.yml` cannot run on the CI machine (no container engine), so this checks it
//! against what it mounts: every node's config in `nats-config/cluster/` listens where the
//! compose file and the replicas expect it, routes to all three nodes, and the replicas use all
//! three nodes with R3 streams.

mod support;

use serde_yaml::Value;
use std::collections::BTreeSet;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose() -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/docker-compose.yml")).expect("docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    v.apply_merge().expect("YAML merge keys");
    v
}

/// The value of `key: value` at the top level or in a block of a nats-server config.
fn conf_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')
                .map(|v| v.trim().trim_matches('"').to_string())
        })
        .collect()
}

fn port_of(addr: &str) -> String {
    addr.rsplit(':').next().unwrap_or_default().to_string()
}

#[test]
fn the_compose_file_runs_three_nodes_as_nats_config_cluster_describes_them() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for n in ["n1", "n2", "n3"] {
        let svc = &c["services"][n];
        assert!(!svc.is_null(), "service {n}");
        // The whole of nats-config/ is mounted, so that a node's `include ../auth.conf` resolves.
        let volumes: Vec<&str> = svc["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            volumes.contains(&"./nats-config:/etc/nats:ro"),
            "{n} mounts nats-config/: {volumes:?}"
        );
        let command: Vec<&str> = svc["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(command, ["--config", &format!("/etc/nats/cluster/{n}.conf")]);

        let conf = std::fs::read_to_string(format!("{ROOT}/nats-config/cluster/{n}.conf")).unwrap();
        for include in conf.lines().filter_map(|l| l.trim().strip_prefix("include ")) {
            let path = format!("{ROOT}/nats-config/cluster/{}", include.trim().trim_matches('"'));
            assert!(
                std::path::Path::new(&path).exists(),
                "{n}.conf includes {include}, which is missing"
            );
        }
        assert_eq!(conf_values(&conf, "server_name"), [n], "{n}.conf server_name");
        let listens = conf_values(&conf, "listen");
        assert_eq!(
            listens.len(),
            2,
            "{n}.conf: a client listen and a cluster listen: {listens:?}"
        );
        assert_eq!(port_of(&listens[0]), "4222", "{n}.conf client port");
        assert_eq!(port_of(&listens[1]), "6222", "{n}.conf cluster port");
        let routes: BTreeSet<String> = conf
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("nats://"))
            .map(str::to_string)
            .collect();
        let want: BTreeSet<String> = ["n1", "n2", "n3"].iter().map(|m| format!("nats://{m}:6222")).collect();
        assert_eq!(routes, want, "{n}.conf routes to all three nodes");
        assert_eq!(
            port_of(&conf_values(&conf, "http")[0]),
            "8222",
            "{n}.conf monitoring port"
        );
        let health = format!("{:?}", svc["healthcheck"]["test"]);
        assert!(
            health.contains("127.0.0.1:8222/healthz"),
            "{n}'s health check uses the monitoring port: {health}"
        );
        assert!(
            !conf_values(&conf, "max_payload").is_empty(),
            "{n}.conf sets max_payload"
        );
        assert!(conf.contains("jetstream"), "{n}.conf enables JetStream");
    }
    let replicas: Vec<&str> = services
        .keys()
        .filter_map(Value::as_str)
        .filter(|k| k.starts_with("jetask"))
        .collect();
    assert!(replicas.len() >= 2, "two jetask replicas: {replicas:?}");
    for r in replicas {
        let env = &c["services"][r]["environment"];
        let urls: BTreeSet<&str> = env["JETASK_NATS_URL"].as_str().unwrap().split(',').collect();
        let want: BTreeSet<&str> = ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"].into();
        assert_eq!(urls, want, "{r} connects to all three nodes");
        assert_eq!(
            env["JETASK_NATS_REPLICAS"].as_str(),
            Some("3"),
            "{r} uses R3 streams and buckets"
        );
        assert_eq!(
            env["JETASK_NATS_USER"].as_str(),
            Some("jetask"),
            "{r} connects as the jetask service user"
        );
        assert!(
            env["JETASK_NATS_PASSWORD"].as_str().is_some(),
            "{r} has the service user's password"
        );
    }
}

#[tokio::test]
async fn a_stock_nats_server_with_its_1mb_max_payload_just_works() {
    // No max_payload in the server's config: nats-server's default of 1 MB.
    let nats = support::NatsServer::start_with("");
    let app = support::start_app(support::config(&nats)).await;
    let fun = support::Receiver::start(|_, _| support::Reply::ok("ok")).await;
    app.put_fn("echo", serde_json::json!({"endpoint": fun.url()})).await;
    let id = app.submit("echo", "hello", &[]).await;
    app.wait_status(&id, "Succeeded", std::time::Duration::from_secs(10))
        .await;
    // The fitted input limit is in force: an input over it is refused, naming the limit.
    let big = vec![b'x'; 600 * 1024];
    let a = app.post("/v1/functions/echo/tasks", big, &[]).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.to_string().contains("limits.max_payload"), "{}", a.body);
}

#[tokio::test]
async fn explicit_limits_that_do_not_fit_a_stock_server_stop_start_up_naming_the_key() {
    let nats = support::NatsServer::start_with("");
    let mut config = support::config(&nats);
    config.limits.max_payload = 900 * 1024;
    config.limits.max_payload_set = true;
    let err = jetask::service::start(config).await.err().expect("start-up refused");
    assert!(err.to_string().contains("limits.max_payload"), "{err}");
}
