//! jetask on a 3-node NATS cluster (R3) with several replicas, under the faults users meet:
//! a node killed or hung, a replica killed, every node restarted, replicas started together on a
//! forming cluster. What must hold throughout: every task JetStream acknowledged ends
//! `Succeeded`, no attempt is ever called twice, and a task run again after a crash runs under a
//! higher `Jetask-Attempt` with an `interrupted` record.
//!
//! The tests run one at a time (a 3-node cluster and two replicas fill two cores) and print
//! what they measured (time to the first PubAck after a kill, the longest gap in calls).

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::cluster::Cluster;
use support::{App, Receiver, Reply};

/// One cluster test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_config(urls: &str) -> jetask::core::config::Config {
    let mut c = jetask::core::config::Config::from_toml("").expect("default config");
    c.nats.url = urls.to_string();
    c.nats.replicas = 3;
    c.http.listen = "127.0.0.1:0".into();
    c.dispatch.ack_wait = jetask::core::duration::Dur::from_secs(2);
    c.dispatch.shutdown_grace = jetask::core::duration::Dur::from_secs(5);
    c
}

/// A receiver that answers every call after `took`.
async fn endpoint(took: Duration) -> Receiver {
    Receiver::start(move |_, _| Reply::After(took, Box::new(Reply::ok("done")))).await
}

async fn put_function(app: &App, name: &str, url: &str, concurrency: u32) {
    let put = app
        .put_fn(
            name,
            json!({"endpoint": url, "concurrency": {"max": concurrency}, "max_attempts": 10}),
        )
        .await;
    assert!(put.status < 300, "PUT function: {} {}", put.status, put.body);
}

/// Two in-process replicas on `cluster` and the function `work` they share: 20 ms calls, at
/// most 20 at once.
async fn two_replicas_calling(cluster: &Cluster) -> (App, App, Receiver) {
    let a = support::start_app(cluster_config(&cluster.urls())).await;
    let b = support::start_app(cluster_config(&cluster.urls())).await;
    let fun = endpoint(Duration::from_millis(20)).await;
    put_function(&a, "work", &fun.url(), 20).await;
    (a, b, fun)
}

/// What a paced publisher saw.
#[derive(Default)]
struct Published {
    /// IDs JetStream acknowledged.
    acked: Vec<String>,
    /// When each PubAck came back.
    ack_times: Vec<Instant>,
    /// Publishes refused or unanswered (each retried with the same `Nats-Msg-Id`).
    refused: usize,
}

/// Publishes `n` tasks to `function` at `per_second` over NATS, each with its task ID as
/// `Nats-Msg-Id`. A publish that fails (a node down, a leader being elected) is tried again with
/// the same ID until acknowledged, as a careful client does; one never acknowledged is not
/// counted as accepted.
fn publish_paced(
    urls: String,
    function: &str,
    prefix: &str,
    n: usize,
    per_second: u32,
) -> tokio::task::JoinHandle<Published> {
    let (function, prefix) = (function.to_string(), prefix.to_string());
    tokio::spawn(async move {
        let client = support::cluster::connect(&urls).await;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let mut out = Published::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        for i in 0..n {
            tick.tick().await;
            let id = format!("{prefix}-{i:05}");
            let give_up = Instant::now() + Duration::from_secs(40);
            while Instant::now() < give_up {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", id.as_str());
                let sent = js
                    .publish_with_headers(format!("jetask.submit.{function}"), h, "{}".into())
                    .await;
                let acked = match sent {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if acked {
                    out.acked.push(id.clone());
                    out.ack_times.push(Instant::now());
                    break;
                }
                out.refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        out
    })
}

/// Calls per task, each as `(attempt, when)`, in arrival order.
fn calls_by_task(r: &Receiver) -> HashMap<String, Vec<(u32, Instant)>> {
    let mut by: HashMap<String, Vec<(u32, Instant)>> = HashMap::new();
    for c in r.calls() {
        by.entry(c.task_id()).or_default().push((c.attempt(), c.at));
    }
    by
}

/// Fails when any attempt number of a task was called more than once.
fn assert_no_attempt_called_twice(calls: &HashMap<String, Vec<(u32, Instant)>>) {
    let mut twice = BTreeMap::new();
    for (id, cs) in calls {
        let mut seen = std::collections::HashSet::new();
        if cs.iter().any(|(a, _)| !seen.insert(*a)) {
            twice.insert(id.clone(), cs.iter().map(|(a, _)| *a).collect::<Vec<_>>());
        }
    }
    assert!(
        twice.is_empty(),
        "attempts called twice (task: attempts seen): {twice:?}"
    );
}

/// The longest time between two consecutive calls of the receiver.
fn longest_gap(r: &Receiver) -> Duration {
    let mut at: Vec<Instant> = r.calls().iter().map(|c| c.at).collect();
    at.sort();
    at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// Waits until every ID in `ids` reads `Succeeded` through `app`, and returns the records.
async fn wait_all_succeeded(app: &App, ids: &[String], within: Duration) -> HashMap<String, Value> {
    let deadline = Instant::now() + within;
    let mut done: HashMap<String, Value> = HashMap::new();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
        for id in pending {
            if let Some(r) = app.task(id).await {
                if r["status"] == "Succeeded" {
                    done.insert(id.clone(), r);
                }
            }
        }
        if done.len() == ids.len() {
            return done;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = ids.iter().filter(|id| !done.contains_key(*id)).take(10).collect();
            let mut states = Vec::new();
            for id in &missing {
                states.push((id.to_string(), app.task(id).await.map(|r| r["status"].clone())));
            }
            panic!(
                "{} of {} acknowledged tasks did not succeed within {within:?}; e.g. {states:?}",
                ids.len() - done.len(),
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every task called more than once was run again under a higher attempt, after an
/// `interrupted` record of the attempt before.
fn assert_reruns_are_interrupted_retries(
    calls: &HashMap<String, Vec<(u32, Instant)>>,
    records: &HashMap<String, Value>,
) {
    for (id, cs) in calls.iter().filter(|(_, cs)| cs.len() > 1) {
        let attempts: Vec<u32> = cs.iter().map(|(a, _)| *a).collect();
        assert!(
            attempts.windows(2).all(|w| w[1] > w[0]),
            "task {id} was called again without a higher attempt: {attempts:?}"
        );
        if let Some(r) = records.get(id) {
            let text = r.to_string();
            assert!(
                text.contains("interrupted") || text.contains("Retrying"),
                "task {id} ran {attempts:?} but its record shows no interrupted or failed attempt: {r}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_at_the_same_instant_on_a_forming_cluster_all_come_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    for round in 0..3 {
        let mut cluster = Cluster::start_forming();
        let env = [("JETASK_NATS_REPLICAS", "3"), ("RUST_LOG", "info")];
        let logs = tempfile::tempdir().unwrap();
        let log = |name: &str| {
            let path = logs.path().join(name);
            (Stdio::from(std::fs::File::create(&path).unwrap()), path)
        };
        let ((a_err, a_log), (b_err, b_log)) = (log("a.log"), log("b.log"));
        let mut a = support::spawn_serve(&cluster.urls(), "", &env, a_err);
        let mut b = support::spawn_serve(&cluster.urls(), "", &env, b_err);
        for (p, path) in [(&a, &a_log), (&b, &b_log)] {
            if !p.app.ready_within(Duration::from_secs(60)).await {
                let said = std::fs::read_to_string(path).unwrap_or_default();
                panic!(
                    "round {round}: {} not ready after 60 s; it logged:\n{said}\nThe cluster:\n{}",
                    path.display(),
                    cluster.logs()
                );
            }
        }
        assert!(a.child.try_wait().unwrap().is_none(), "round {round}: replica a exited");
        assert!(b.child.try_wait().unwrap().is_none(), "round {round}: replica b exited");
        // Both serve: a task submitted through one runs.
        let fun = endpoint(Duration::ZERO).await;
        put_function(&a.app, "hello", &fun.url(), 4).await;
        let id = b.app.submit("hello", "x", &[]).await;
        a.app.wait_status(&id, "Succeeded", Duration::from_secs(30)).await;
        println!("round {round}: both replicas up and serving");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_submission_streams_leader_under_load_loses_no_task() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start().await;
    let (a, b, fun) = two_replicas_calling(&cluster).await;

    let publisher = publish_paced(cluster.urls(), "work", "lead", 1000, 100);
    fun.wait_calls(300, Duration::from_secs(60)).await;
    let leader = cluster.leader_of("JETASK_SUBMIT").await;
    cluster.kill(leader);
    let killed = Instant::now();
    let calls_at_kill = fun.count();
    tokio::time::sleep(Duration::from_secs(5)).await; // the node stays down for 5 s
    cluster.restart(leader);
    let published = publisher.await.unwrap();
    let records = wait_all_succeeded(&a, &published.acked, Duration::from_secs(90)).await;

    let calls = calls_by_task(&fun);
    assert_no_attempt_called_twice(&calls);
    assert_reruns_are_interrupted_retries(&calls, &records);
    let first_ack_after = published.ack_times.iter().find(|t| **t > killed).map(|t| *t - killed);
    println!(
        "leader n{} killed after {calls_at_kill} calls: {} tasks acknowledged, {} publishes refused and retried, \
         first PubAck after the kill in {first_ack_after:?}, longest gap in calls {:?}, none lost",
        leader + 1,
        published.acked.len(),
        published.refused,
        longest_gap(&fun)
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_under_load_loses_nothing_and_reruns_carry_a_higher_attempt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start().await;
    let env = [("JETASK_NATS_REPLICAS", "3")];
    let mut doomed = support::spawn_serve(&cluster.urls(), "", &env, Stdio::null());
    let survivor = support::spawn_serve(&cluster.urls(), "", &env, Stdio::null());
    doomed.app.wait_ready(Duration::from_secs(30)).await;
    survivor.app.wait_ready(Duration::from_secs(30)).await;
    let fun = endpoint(Duration::from_millis(50)).await;
    put_function(&survivor.app, "work", &fun.url(), 20).await;

    let publisher = publish_paced(cluster.urls(), "work", "rep", 1000, 100);
    fun.wait_calls(300, Duration::from_secs(60)).await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let killed = Instant::now();
    let published = publisher.await.unwrap();
    let records = wait_all_succeeded(&survivor.app, &published.acked, Duration::from_secs(60)).await;
    let recovered = killed.elapsed();

    let calls = calls_by_task(&fun);
    assert_no_attempt_called_twice(&calls);
    assert_reruns_are_interrupted_retries(&calls, &records);
    let reruns: Vec<(&String, Vec<u32>)> = calls
        .iter()
        .filter(|(_, cs)| cs.len() > 1)
        .map(|(id, cs)| (id, cs.iter().map(|(a, _)| *a).collect()))
        .collect();
    println!(
        "replica killed: {} tasks, none lost, {} run again (all with a higher attempt): {reruns:?}; all done {recovered:?} after the kill",
        published.acked.len(),
        reruns.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_no_fault_never_call_a_task_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let nats = support::NatsServer::start();
    let a = support::start_app(support::config(&nats)).await;
    let b = support::start_app(support::config(&nats)).await;
    let fun = endpoint(Duration::from_millis(2)).await;
    put_function(&a, "work", &fun.url(), 16).await;
    // A flood from one user with many small users' tasks among it: the small ones get head
    // starts (run from their records by any replica) while their own deliveries are on the way.
    let js = nats.jetstream().await;
    let mut acks = Vec::new();
    let mut ids = Vec::new();
    for i in 0..2000 {
        let id = format!("calm-{i:05}");
        let user = if i % 10 == 0 {
            format!("small-{}", i % 70)
        } else {
            "big".to_string()
        };
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", id.as_str());
        h.insert("Jetask-User", user.as_str());
        acks.push(
            js.publish_with_headers("jetask.submit.work", h, "{}".into())
                .await
                .expect("publish"),
        );
        ids.push(id);
    }
    for ack in acks {
        ack.await.expect("PubAck");
    }
    wait_all_succeeded(&a, &ids, Duration::from_secs(120)).await;
    let calls = calls_by_task(&fun);
    let twice: Vec<_> = calls.iter().filter(|(_, cs)| cs.len() > 1).collect();
    assert!(twice.is_empty(), "tasks called more than once with no fault: {twice:?}");
    assert_eq!(calls.len(), ids.len());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hung_for_ten_seconds_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = Cluster::start().await;
    let (a, b, fun) = two_replicas_calling(&cluster).await;
    let publisher = publish_paced(cluster.urls(), "work", "hung", 800, 100);
    fun.wait_calls(150, Duration::from_secs(60)).await;
    let leader = cluster.leader_of("JETASK_SUBMIT").await;
    cluster.hang(leader);
    tokio::time::sleep(Duration::from_secs(10)).await; // hung for 10 s, then resumed
    cluster.resume(leader);
    let published = publisher.await.unwrap();
    let records = wait_all_succeeded(&a, &published.acked, Duration::from_secs(90)).await;
    let calls = calls_by_task(&fun);
    assert_no_attempt_called_twice(&calls);
    assert_reruns_are_interrupted_retries(&calls, &records);
    println!(
        "leader n{} hung 10 s: {} tasks acknowledged ({} publishes retried), none lost, longest gap in calls {:?}",
        leader + 1,
        published.acked.len(),
        published.refused,
        longest_gap(&fun)
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_node_restarts_jetask_reconnects_and_runs_queued_and_delayed_tasks() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start().await;
    let app = support::start_app(cluster_config(&cluster.urls())).await;
    let fun = endpoint(Duration::from_millis(100)).await;
    put_function(&app, "work", &fun.url(), 1).await;
    let js = async_nats::jetstream::new(cluster.client().await);
    let mut ids = Vec::new();
    for i in 0..30 {
        let id = format!("queued-{i:02}");
        support::publish(&js, "work", b"{}", &[("Nats-Msg-Id", &id)]).await;
        ids.push(id);
    }
    for i in 0..10 {
        let id = format!("delayed-{i:02}");
        support::publish(&js, "work", b"{}", &[("Nats-Msg-Id", &id), ("Jetask-Delay", "6s")]).await;
        ids.push(id);
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy(Duration::from_secs(60)).await;
    app.wait_ready(Duration::from_secs(60)).await;
    wait_all_succeeded(&app, &ids, Duration::from_secs(90)).await;
    assert_no_attempt_called_twice(&calls_by_task(&fun));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_and_restarted_runs_interrupted_tasks_under_a_higher_attempt() {
    let _one = ONE_AT_A_TIME.lock().await;
    let nats = support::NatsServer::start();
    let fun = endpoint(Duration::from_millis(50)).await;
    let mut first = support::serve_process(&nats, "", &[], Stdio::null()).await;
    put_function(&first.app, "work", &fun.url(), 10).await;
    let js = nats.jetstream().await;
    let mut ids = Vec::new();
    for i in 0..300 {
        let id = format!("restart-{i:03}");
        support::publish(&js, "work", b"{}", &[("Nats-Msg-Id", &id)]).await;
        ids.push(id);
    }
    fun.wait_calls(100, Duration::from_secs(60)).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let second = support::serve_process(&nats, "", &[], Stdio::null()).await;
    let records = wait_all_succeeded(&second.app, &ids, Duration::from_secs(60)).await;
    let calls = calls_by_task(&fun);
    assert_no_attempt_called_twice(&calls);
    assert_reruns_are_interrupted_retries(&calls, &records);
}
