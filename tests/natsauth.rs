//! NATS authorization (CONTRACT §12): the shipped `nats-config/` refuses connections without
//! credentials and confines tenant accounts to jetask's imports; over NATS a task's user is the
//! one NATS authenticated, not whatever a header says; jetask connects with user/password and
//! with TLS client certificates; `jetask dev` runs the same model.
#![allow(clippy::unwrap_used)]

mod support;

use async_nats::jetstream;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

const T: Duration = Duration::from_secs(20);

/// The three passwords `nats-config/auth.conf` reads from the environment.
const ENV: [(&str, &str); 3] = [
    ("JETASK_NATS_PASSWORD", "jetask-secret-1"),
    ("JETASK_ALICE_PASSWORD", "alice-secret-1"),
    ("JETASK_BOB_PASSWORD", "bob-secret-1"),
];

fn password(user: &str) -> &'static str {
    match user {
        "jetask" => ENV[0].1,
        "alice" => ENV[1].1,
        "bob" => ENV[2].1,
        other => panic!("no user {other}"),
    }
}

/// The shipped single-node config, as `nats-server -c nats-config/single.conf` runs it.
fn shipped() -> NatsServer {
    NatsServer::shipped("single.conf", &ENV)
}

/// jetask's config for the shipped model: its own user and password.
fn jetask_config(nats: &NatsServer) -> jetask::core::config::Config {
    let mut c = config(nats);
    c.nats.user = Some("jetask".into());
    c.nats.password = Some(password("jetask").into());
    c
}

/// A connection as `user`, and the errors the server sends it (permission violations).
struct Conn {
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Conn {
    async fn open(nats: &NatsServer, user: &str) -> Conn {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        seen.lock().unwrap().push(e.to_string().to_ascii_lowercase());
                    }
                }
            })
            .connect(&nats.url)
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
        Conn { client, errors }
    }

    /// A micro-API request: the `Nats-Service-Error-Code` (if any) and the JSON answer.
    async fn api(&self, endpoint: &str, body: Value, headers: &[(&str, &str)]) -> (Option<String>, Value) {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        let m = self
            .client
            .request_with_headers(
                format!("jetask.api.{endpoint}"),
                h,
                serde_json::to_vec(&body).unwrap().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        let code = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Service-Error-Code"))
            .map(|v| v.as_str().to_string());
        (code, serde_json::from_slice(&m.payload).unwrap())
    }

    /// Submits on `jetask.submit.<function>` as a JetStream publish; the PubAck.
    async fn submit(&self, function: &str, headers: &[(&str, &str)]) -> jetstream::publish::PublishAck {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        jetstream::new(self.client.clone())
            .publish_with_headers(format!("jetask.submit.{function}"), h, "input".into())
            .await
            .unwrap()
            .await
            .unwrap()
    }

    /// Waits until the server has refused something naming `subject`.
    async fn wait_refused(&self, subject: &str) {
        let subject = subject.to_ascii_lowercase();
        wait_for(&format!("a permissions violation for {subject}"), T, || async {
            self.errors
                .lock()
                .unwrap()
                .iter()
                .any(|e| e.contains("permissions violation") && e.contains(&format!("\"{subject}\"")))
        })
        .await;
    }
}

async fn connect_plain(nats: &NatsServer, opts: async_nats::ConnectOptions) -> Result<async_nats::Client, String> {
    tokio::time::timeout(Duration::from_secs(10), opts.connect(&nats.url))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_shipped_config_refuses_connections_without_credentials_and_jetask_connects_with_its_password() {
    let nats = shipped();
    let anonymous = connect_plain(&nats, async_nats::ConnectOptions::new()).await;
    assert!(anonymous.is_err(), "a connection without credentials was accepted");
    let wrong = connect_plain(
        &nats,
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "guess".into()),
    )
    .await;
    assert!(wrong.is_err(), "a wrong password was accepted");

    // jetask without its credentials cannot start; with them it does, and runs tasks.
    let refused = jetask::service::start(config(&nats)).await;
    assert!(refused.is_err(), "jetask started without credentials");
    let app = start_app(jetask_config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = app.submit("f", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_cannot_publish_to_jetstream_records_or_control_subjects() {
    let nats = shipped();
    let app = start_app(jetask_config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let victim = app
        .submit("f", "secret", &[("Idempotency-Key", "victim"), ("Jetask-User", "bob")])
        .await;
    let before = app.wait_status(&victim, "Succeeded", T).await;

    let alice = Conn::open(&nats, "alice").await;
    let c = &alice.client;
    c.publish("$KV.JETASK_TASKS.victim", "{}".into()).await.unwrap();
    c.publish("$KV.JETASK_FUNCTIONS.f", "{}".into()).await.unwrap();
    c.publish("$JS.API.STREAM.PURGE.JETASK_SUBMIT", "{}".into())
        .await
        .unwrap();
    c.publish("$JS.API.INFO", "".into()).await.unwrap();
    c.publish("jetask.control.stop", "victim".into()).await.unwrap();
    // Naming another tenant in the subject is not a way around the import either.
    c.publish("jetask.submit.f.bob", "x".into()).await.unwrap();
    let _sub = c.subscribe("jetask.user.bob.events.>").await.unwrap();
    c.flush().await.unwrap();
    for subject in [
        "$KV.JETASK_TASKS.victim",
        "$KV.JETASK_FUNCTIONS.f",
        "$JS.API.STREAM.PURGE.JETASK_SUBMIT",
        "$JS.API.INFO",
        "jetask.control.stop",
        "jetask.submit.f.bob",
        "jetask.user.bob.events.>",
    ] {
        alice.wait_refused(subject).await;
    }

    // And nothing reached jetask's account: the record and the function are as they were.
    let after = app.task(&victim).await.expect("record still readable");
    assert_eq!(after, before);
    assert_eq!(app.get("/v1/functions/f").await.status, 200);
    let js = jetstream::new(Conn::open(&nats, "jetask").await.client);
    let tasks = js.get_key_value("JETASK_TASKS").await.unwrap();
    assert!(tasks.get("victim").await.unwrap().is_some());
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_submits_over_nats_and_reaches_only_its_own_tasks() {
    let nats = shipped();
    let app = start_app(jetask_config(&nats)).await;
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let alice = Conn::open(&nats, "alice").await;
    let bob = Conn::open(&nats, "bob").await;
    let mut alice_events = alice.client.subscribe("jetask.events.>").await.unwrap();
    let mut bob_events = bob.client.subscribe("jetask.events.>").await.unwrap();
    alice.client.flush().await.unwrap();
    bob.client.flush().await.unwrap();

    // Submission through the import: a PubAck from jetask's stream, and deduplication.
    let ack = alice.submit("f", &[("Nats-Msg-Id", "alice-1")]).await;
    assert_eq!((ack.stream.as_str(), ack.duplicate), ("JETASK_SUBMIT", false));
    let again = alice.submit("f", &[("Nats-Msg-Id", "alice-1")]).await;
    assert!(again.duplicate, "the second submission of an ID is a duplicate");
    let record = app.wait_status("alice-1", "Succeeded", T).await;
    assert_eq!(record["user"], "alice");

    // The micro API: alice sees her task, bob gets 404 for it whatever he asks.
    let (code, got) = alice.api("task.get", json!({"id": "alice-1"}), &[]).await;
    assert_eq!((code, got["user"].as_str()), (None, Some("alice")), "{got}");
    for (endpoint, body) in [
        ("task.get", json!({"id": "alice-1"})),
        ("task.stop", json!({"id": "alice-1"})),
        ("task.heartbeat", json!({"id": "alice-1"})),
        ("task.complete", json!({"id": "alice-1", "status": "Succeeded"})),
        ("task.replay", json!({"id": "alice-1"})),
    ] {
        let (code, body) = bob.api(endpoint, body, &[]).await;
        assert_eq!(code.as_deref(), Some("404"), "bob {endpoint}: {body}");
    }
    wait_for("alice's list to show her task", T, || async {
        alice.api("task.list", json!({}), &[]).await.1["tasks"][0]["id"] == "alice-1"
    })
    .await;
    let (_, listed) = bob.api("task.list", json!({"user": "alice"}), &[]).await;
    assert_eq!(listed["tasks"], json!([]), "bob listed alice's tasks");

    // A header naming another user: 403 on the micro API, an Invalid task on submission.
    let (code, body) = alice.api("task.list", json!({}), &[("Jetask-User", "bob")]).await;
    assert_eq!(code.as_deref(), Some("403"), "{body}");
    alice
        .submit("f", &[("Nats-Msg-Id", "alice-2"), ("Jetask-User", "bob")])
        .await;
    let forged = app.wait_status("alice-2", "Invalid", T).await;
    assert_eq!(forged["user"], "alice");
    let why = forged["error"]["message"].as_str().unwrap();
    assert!(why.starts_with("Jetask-User: \"bob\""), "{why}");
    let (code, _) = bob.api("task.get", json!({"id": "alice-2"}), &[]).await;
    assert_eq!(code.as_deref(), Some("404"));

    // Functions: a tenant reads them but cannot change them.
    let (code, body) = alice.api("fn.get", json!({"name": "f"}), &[]).await;
    assert_eq!(code, None, "{body}");
    let (code, _) = alice
        .api("fn.put", json!({"name": "f", "endpoint": "http://127.0.0.1:9/"}), &[])
        .await;
    assert_eq!(code.as_deref(), Some("403"));
    let (code, _) = alice.api("fn.delete", json!({"name": "f"}), &[]).await;
    assert_eq!(code.as_deref(), Some("403"));
    assert_eq!(app.get("/v1/functions/f").await.body["endpoint"], rx.url());

    // Events: each tenant follows `jetask.events.>` and sees only its own tasks.
    bob.submit("f", &[("Nats-Msg-Id", "bob-1")]).await;
    app.wait_status("bob-1", "Succeeded", T).await;
    let seen_by_bob = events_until(&mut bob_events, "bob-1").await;
    assert!(seen_by_bob.iter().all(|id| id == "bob-1"), "{seen_by_bob:?}");
    // bob's last event is out, so alice's copy would be too: everything she got is hers.
    let mut seen_by_alice = events_until(&mut alice_events, "alice-1").await;
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(300), futures::StreamExt::next(&mut alice_events)).await
    {
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        seen_by_alice.push(v["id"].as_str().unwrap().to_string());
    }
    assert!(
        seen_by_alice.iter().all(|id| id.starts_with("alice-")),
        "alice saw another user's events: {seen_by_alice:?}"
    );
    app.stop().await;
}

/// The task IDs of the events `sub` gets, up to `last`'s `Succeeded`.
async fn events_until(sub: &mut async_nats::Subscriber, last: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let m = tokio::time::timeout(T, futures::StreamExt::next(sub))
            .await
            .expect("an event")
            .unwrap();
        assert!(m.subject.starts_with("jetask.events.f."), "{}", m.subject);
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let done = id == last && m.subject.ends_with(".Succeeded");
        ids.push(id);
        if done {
            return ids;
        }
    }
}

/// `openssl` with `args` in `dir`, asserting success.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn certificates(dir: &std::path::Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=jetask test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints=CA:FALSE\n{ext}"),
        )
        .unwrap();
        let subj = format!("/CN={name}");
        let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
        let mut req = vec!["req", "-new", "-subj", subj.as_str()];
        req.extend(ec);
        req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
        openssl(dir, &req);
        let (ext, pem) = (format!("{name}.ext"), format!("{name}.pem"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
    }
}

#[tokio::test]
async fn jetask_connects_over_tls_with_its_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    certificates(d);
    let path = |f: &str| d.join(f).display().to_string();
    let nats = NatsServer::start_with(&format!(
        "max_payload: 8MB\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem")
    ));
    let mut tls = config(&nats);
    tls.nats.tls_ca = Some(d.join("ca.pem"));

    // The server demands a client certificate: the CA alone is not enough, nor is plain text.
    assert!(
        jetask::service::start(config(&nats)).await.is_err(),
        "started without TLS"
    );
    assert!(
        jetask::service::start(tls.clone()).await.is_err(),
        "started without a client certificate"
    );

    tls.nats.tls_cert = Some(d.join("client.pem"));
    tls.nats.tls_key = Some(d.join("client.key"));
    let app = start_app(tls).await;
    let rx = Receiver::start(|_, _| Reply::ok("over tls")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = app.submit("f", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    app.stop().await;
}

#[test]
fn the_shipped_configs_are_valid_and_need_their_passwords() {
    for conf in ["single.conf", "cluster/n1.conf", "cluster/n2.conf", "cluster/n3.conf"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("nats-config")
            .join(conf);
        let check = |env: &[(&str, &str)]| {
            let mut cmd = Command::new(std::env::var_os("NATS_SERVER_BIN").unwrap_or_else(|| "nats-server".into()));
            cmd.arg("-t").arg("-c").arg(&path);
            for (k, _) in ENV {
                cmd.env_remove(k);
            }
            cmd.envs(env.iter().copied()).output().expect("nats-server runs")
        };
        let without = check(&[]);
        assert!(!without.status.success(), "{conf} is accepted without the passwords");
        let err = String::from_utf8_lossy(&without.stderr);
        assert!(err.contains("JETASK_NATS_PASSWORD"), "{conf}: {err}");
        let with = check(&ENV);
        assert!(
            with.status.success(),
            "{conf}: {}",
            String::from_utf8_lossy(&with.stderr)
        );
    }
}

/// A `jetask dev` process, stopped with SIGTERM (so that it stops its nats-server) when dropped.
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn jetask_dev_runs_its_nats_server_with_the_shipped_authorization_and_prints_the_credentials() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let ports = support::cluster::free_ports(2);
    let (nats_port, http_port) = (ports[0], ports[1]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetask"))
        .arg("dev")
        .current_dir(dir.path())
        .env("JETASK_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
        .env("JETASK_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
        // Any free ports: a `jetask dev` of someone else may hold the fixed ones.
        .env("JETASK_DEV_DEMO_LISTEN", "127.0.0.1:0")
        .env("JETASK_DEV_RECEIVER_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _dev = Dev(child);
    // Its output up to "jetask is running", read on a thread (the pipe blocks) that goes on
    // reading to the end: a pipe closed under it would make `jetask dev`'s next line fail.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let printed = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        while let Ok(line) = rx.recv_timeout(T) {
            let done = line.starts_with("jetask is running");
            lines.push(line);
            if done {
                return Some(lines);
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("jetask dev starts");
    let alice_password = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("user alice")?.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no credentials for alice in {printed:#?}"))
        .to_string();
    let env_file = std::fs::read_to_string(dir.path().join(".jetask-dev/nats.env")).unwrap();
    assert!(
        env_file.contains(&format!("JETASK_ALICE_PASSWORD={alice_password}")),
        "{env_file}"
    );

    let url = format!("nats://127.0.0.1:{nats_port}");
    let anonymous = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(&url)).await;
    assert!(
        !matches!(anonymous, Ok(Ok(_))),
        "the dev server accepted a client without credentials"
    );
    let alice = async_nats::ConnectOptions::with_user_and_password("alice".into(), alice_password)
        .connect(&url)
        .await
        .expect("alice connects with the printed password");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "dev-1");
    let ack = jetstream::new(alice)
        .publish_with_headers("jetask.submit.demo", headers, "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!ack.duplicate);
    let app = App::at(&format!("http://127.0.0.1:{http_port}"));
    let t = app.wait_status("dev-1", "Succeeded", T).await;
    assert_eq!(t["user"], "alice");
}

#[tokio::test]
async fn jetask_connects_with_an_nkey_from_nkey_file() {
    let key = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with(&format!(
        "max_payload: 8MB\nauthorization {{\n  users: [ {{ nkey: {} }} ]\n}}\n",
        key.public_key()
    ));
    assert!(
        jetask::service::start(config(&nats)).await.is_err(),
        "started without the nkey"
    );
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("jetask.nk");
    std::fs::write(&seed, format!("{}\n", key.seed().unwrap())).unwrap();
    let mut c = config(&nats);
    c.nats.nkey_file = Some(seed);
    let app = start_app(c).await;
    let rx = Receiver::start(|_, _| Reply::ok("with an nkey")).await;
    app.put_fn("f", json!({"endpoint": rx.url()})).await;
    let id = app.submit("f", "x", &[]).await;
    app.wait_status(&id, "Succeeded", T).await;
    app.stop().await;
}

/// The copies of events on `jetask.user.<user>.events.…` are what NATS authorization confines a
/// tenant to. A server that asks no credentials can confine nobody: there jetask publishes
/// `jetask.events.…` alone unless `nats.user_events = true` asks for the copies. (Against the
/// shipped authorization they are on by default: the tenant test above follows its events
/// through them.)
#[tokio::test]
async fn without_nats_authorization_events_go_out_once_unless_the_copies_are_asked_for() {
    let nats = NatsServer::start();
    let rx = Receiver::start(|_, _| Reply::ok("done")).await;
    for (configured, copies) in [(None, false), (Some(true), true), (Some(false), false)] {
        let mut c = config(&nats);
        c.nats.user_events = configured;
        let app = start_app(c).await;
        app.put_fn("f", json!({"endpoint": rx.url()})).await;
        // One connection for both, so that what jetask published first arrives first.
        let client = nats.client().await;
        let mut events = client.subscribe("jetask.events.f.>").await.unwrap();
        let mut user_copies = client.subscribe("jetask.user.*.events.f.>").await.unwrap();
        client.flush().await.unwrap();
        let id = app.submit("f", "x", &[("Jetask-User", "carol")]).await;
        loop {
            let m = next_message(&mut events).await;
            if m.subject.as_str() == "jetask.events.f.Succeeded"
                && m.payload.windows(id.len()).any(|w| w == id.as_bytes())
            {
                break;
            }
        }
        if copies {
            let mut seen = Vec::new();
            while !seen.iter().any(|s: &String| s.ends_with(".Succeeded")) {
                seen.push(next_message(&mut user_copies).await.subject.to_string());
            }
            assert_eq!(
                seen,
                ["Enqueued", "Dequeued", "Running", "Succeeded"].map(|s| format!("jetask.user.carol.events.f.{s}")),
                "user_events = {configured:?}"
            );
        } else {
            // A second task's first event comes after any copy of the first task's events would
            // have (one publisher, one connection, in order): by then none has come.
            let marker = app.submit("f", "y", &[("Jetask-User", "carol")]).await;
            loop {
                let m = next_message(&mut events).await;
                if m.payload.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                    break;
                }
            }
            let copy = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut user_copies));
            assert!(
                copy.is_none(),
                "user_events = {configured:?}: a copy was published: {:?}",
                copy.flatten().map(|m| m.subject)
            );
            app.wait_status(&marker, "Succeeded", T).await;
        }
        app.stop().await;
    }
}

/// The next message of `sub`, within [`T`].
async fn next_message(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(T, futures::StreamExt::next(sub))
        .await
        .expect("a message within 20 s")
        .expect("the subscription open")
}
