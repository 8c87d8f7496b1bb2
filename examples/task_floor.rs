//! The JetStream floor of a task: the server operations one task of task mode costs, done by
//! hand with no jetask logic and no list index, as fast as this machine allows.
//! `cargo run --release --example task_floor -- NATS_URL COUNT [--no-intake] [--no-running]
//! [--stream-index] [--http] [--due-in SECS] [--user-events] [--nats-pid PID]`.
//!
//! Per task: a publish with `Nats-Msg-Id`; intake's delivery, record create (checked to be new),
//! `Enqueued` event and ack; the dispatcher's delivery, `Running` write with its two events,
//! final write with its event, and ack; and one headers-only consumer following the bucket (what
//! every replica's list index follows). Record writes carry the index header jetask's do. Each
//! event goes out once, as jetask's do against a server without authorization (the floor's
//! server, and `jetask bench`'s); `--user-events` publishes each twice, as jetask does where
//! NATS asks for credentials (`nats.user_events`). The
//! flags drop intake's record or the `Running` write, to price those two product decisions.
//! Record sizes are about those jetask writes for a 256-byte input (985 bytes once finished).
//! Every write after the first is checked against the revision the previous one got
//! (`Nats-Expected-Last-Subject-Sequence`), as jetask writes records.
//!
//! `--nats-pid PID` (the server's process) adds CPU per task, as `jetask bench` reports it:
//! `utime + stime` from `/proc` of the server and of this process, from the first publish to
//! the last task's final write, divided by the tasks.
//!
//! `--stream-index` prices a design jetask does not have: queued tasks listed from the
//! submissions themselves (a headers-only follower of the submission stream, as each replica's
//! index would run) instead of from a record intake writes for each. Intake then only publishes
//! `Enqueued` and acks, and the dispatcher's `Running` write creates the record.
//!
//! `--http` adds what no design that calls functions over HTTP can skip: a POST of the input to
//! a no-op endpoint in this process (axum, called with reqwest, as jetask's bench does) between
//! the two writes. `--due-in SECS` makes every task due at the same moment, as `jetask bench
//! --due-in` does: each first delivery is parked with a delayed nak until then, and the run
//! prints how late the tasks start after it (after the `Running` write, or where the endpoint
//! receives the call with `--http`).

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use jetask::cli::bench::proc_cpu;

const WINDOW: usize = 4000;
const CONCURRENCY: usize = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count, flags @ ..] = args.as_slice() else {
        return Err(
            "usage: task_floor NATS_URL COUNT [--no-intake] [--no-running] [--stream-index] [--http] [--due-in SECS] [--user-events] [--nats-pid PID]"
                .into(),
        );
    };
    let n: usize = count.parse()?;
    if n == 0 {
        return Err("COUNT must be at least 1".into());
    }
    let intake = !flags.iter().any(|f| f == "--no-intake");
    let running = !flags.iter().any(|f| f == "--no-running");
    let stream_index = flags.iter().any(|f| f == "--stream-index");
    USER_EVENTS.store(flags.iter().any(|f| f == "--user-events"), Ordering::Relaxed);
    let due_in: Option<u64> = flag_value(flags, "--due-in", "a whole number of seconds")?;
    let nats_pid: Option<u32> = flag_value(flags, "--nats-pid", "the server's process ID")?;
    let cpu = move || {
        let own = proc_cpu::cpu_us(std::process::id()).ok();
        let server = nats_pid.and_then(|p| proc_cpu::cpu_us(p).ok());
        (server, own)
    };
    let due = due_in.map(|s| SystemTime::now() + Duration::from_secs(s));
    let late_by = move |due: SystemTime| SystemTime::now().duration_since(due).unwrap_or_default();
    let late = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    // With `--http`, each task also calls a no-op endpoint between its two writes, as jetask
    // calls a function; lateness is then taken where the endpoint receives the call.
    let http = flags.iter().any(|f| f == "--http");
    let endpoint = if http {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let late = late.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |_body: bytes::Bytes| {
                if let Some(due) = due {
                    late.lock().unwrap_or_else(|e| e.into_inner()).push(late_by(due));
                }
                async {}
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Some(url)
    } else {
        None
    };
    let http_client = reqwest::Client::new();
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let run = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("floor.{run}");
    let s = js
        .create_stream(stream::Config {
            name: format!("FLOOR_{run}"),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await?;
    let kv = format!("FLOOR_{run}");
    js.create_key_value(kv::Config {
        bucket: kv.clone(),
        history: 1,
        ..Default::default()
    })
    .await?;
    let pull = |name: &str| consumer::pull::Config {
        durable_name: Some(name.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        max_ack_pending: 100_000,
        ..Default::default()
    };
    let intake_c = s.create_consumer(pull("intake")).await?;
    let dispatch_c = s.create_consumer(pull("dispatch")).await?;
    let input = "x".repeat(256);
    let record = |size: usize| {
        bytes::Bytes::from(format!(
            "{{\"input\":\"{input}\",\"pad\":\"{}\"}}",
            "y".repeat(size - 280)
        ))
    };
    let (enqueued, started, finished, event) = (record(650), record(820), record(985), record(720));

    // The list index's share: every replica follows every write, headers only.
    let final_len = finished.len().to_string();
    let mut finals = 0;
    let kv_stream = js.get_stream(format!("KV_{kv}")).await?;
    let watcher = follow(&kv_stream, format!("$KV.{kv}.>"), move |m| {
        let size = m.headers.as_ref().and_then(|h| h.get("Nats-Msg-Size"));
        finals += usize::from(size.is_some_and(|v| v.as_str() == final_len));
        finals == n
    })
    .await?;
    // With `--stream-index`, the list index's share of the queue: every submission, headers only.
    let mut listed = 0;
    let submission_follower = if stream_index {
        Some(
            follow(&s, String::new(), move |_| {
                listed += 1;
                listed == n
            })
            .await?,
        )
    } else {
        None
    };

    // The revision of each record intake created, for the dispatcher's checked write over it
    // (jetask's dispatcher knows it the same way, `store::revisions`).
    let revisions: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>> = Default::default();
    let intake_task = intake.then(|| {
        let (js, client, kv) = (js.clone(), client.clone(), kv.clone());
        let revisions = revisions.clone();
        let event = event.clone();
        tokio::spawn(async move {
            let mut msgs = intake_c.messages().await?;
            let mut done = 0;
            let mut work = futures::stream::FuturesUnordered::new();
            while done < n {
                tokio::select! {
                    Some(m) = msgs.next(), if work.len() < 512 => {
                        let m = m?;
                        let id = id_of(&m);
                        let (js, client, kv) = (js.clone(), client.clone(), kv.clone());
                        let (value, event) = (enqueued.clone(), event.clone());
                        let revisions = revisions.clone();
                        work.push(async move {
                            if !stream_index {
                                if let Ok(rev) = write(&js, &kv, &id, "Enqueued", Some(0), value).await {
                                    revisions.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), rev);
                                }
                            }
                            let _ = emit(&client, "Enqueued", event).await;
                            m.ack().await
                        });
                    }
                    Some(r) = work.next() => { r?; done += 1; }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
    });

    let dispatcher = tokio::spawn({
        let (js, kv, client, late) = (js.clone(), kv.clone(), client.clone(), late.clone());
        let (endpoint, http_client) = (endpoint.clone(), http_client.clone());
        let revisions = revisions.clone();
        async move {
            let mut msgs = dispatch_c.messages().await?;
            let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut work = tokio::task::JoinSet::new();
            let (mut received, mut done) = (0, 0);
            while done < n {
                tokio::select! {
                    Ok(permit) = gate.clone().acquire_owned(), if received < n => {
                        let Some(m) = msgs.next().await else { break };
                        let m = m?;
                        // Parked until due, as jetask parks a delayed task from its headers.
                        if let (Some(due), 1) = (due, m.info()?.delivered) {
                            let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                            m.ack_with(jetstream::AckKind::Nak(Some(wait))).await?;
                            continue;
                        }
                        received += 1;
                        let id = id_of(&m);
                        let late = late.clone();
                        let (js, kv, client) = (js.clone(), kv.clone(), client.clone());
                        let (endpoint, http_client) = (endpoint.clone(), http_client.clone());
                        let (started, finished, event) = (started.clone(), finished.clone(), event.clone());
                        // Intake's revision when it has written the record by now; else this
                        // write creates it (jetask's dispatcher does the same, then intake's
                        // create fails, which the floor does not re-enact).
                        let created = revisions.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        work.spawn(async move {
                            let mut rev = created;
                            if running {
                                rev = Some(write_over(&js, &kv, &id, "Running", created, started).await?);
                                emit(&client, "Dequeued", event.clone()).await?;
                                emit(&client, "Running", event.clone()).await?;
                            }
                            if let Some(url) = endpoint {
                                let body = bytes::Bytes::from(vec![b'x'; 256]);
                                http_client.post(url).body(body).send().await?.bytes().await?;
                            } else if let Some(due) = due {
                                late.lock().unwrap_or_else(|e| e.into_inner()).push(late_by(due));
                            }
                            write_over(&js, &kv, &id, "Succeeded", rev, finished).await?;
                            emit(&client, "Succeeded", event).await?;
                            m.ack().await?;
                            drop(permit);
                            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                        });
                    }
                    Some(r) = work.join_next() => { r??; done += 1; }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Instant::now())
        }
    });
    let start = Instant::now();
    let cpu_before = cpu();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..n {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("t{i}").as_str());
        let payload = bytes::Bytes::from(vec![b'x'; 256]);
        acks.push(
            js.publish_with_headers(subject.clone(), h, payload)
                .await?
                .into_future(),
        );
        while acks.len() >= WINDOW {
            acks.next().await.transpose()?;
        }
    }
    while acks.next().await.transpose()?.is_some() {}
    let publish = start.elapsed();
    let total = dispatcher.await??.duration_since(start);
    let cpu_after = cpu();
    if let Some(t) = intake_task {
        t.await??;
    }
    let followed = tokio::time::timeout(Duration::from_secs(30), watcher).await???;
    if let Some(f) = submission_follower {
        let listed = tokio::time::timeout(Duration::from_secs(30), f).await???;
        if listed < n {
            return Err(format!("the submission follower saw {listed} of {n} submissions").into());
        }
    }
    let mut late = late.lock().unwrap_or_else(|e| e.into_inner()).clone();
    late.sort();
    if !late.is_empty() {
        let q = |p: f64| late[((late.len() - 1) as f64 * p) as usize].as_secs_f64() * 1000.0;
        println!(
            "floor: {n} tasks due at once; due → start ms: p50 {:.1}, p99 {:.1}, max {:.1} (intake {intake}, http {http})",
            q(0.5),
            q(0.99),
            q(1.0)
        );
    } else {
        let (secs, submitted) = (total.as_secs_f64(), n as f64 / publish.as_secs_f64());
        println!(
            "floor: {n} tasks in {secs:.2}s = {:.0} tasks/s (submissions {submitted:.0}/s; \
             intake {intake}, running write {running}, stream index {stream_index}; {followed} writes followed)",
            n as f64 / secs,
        );
    }
    let per_task = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) / n as f64);
    if let Some(server) = per_task(cpu_before.0, cpu_after.0) {
        let own = per_task(cpu_before.1, cpu_after.1).unwrap_or(f64::NAN);
        println!("floor: CPU per task: nats-server {server:.1} µs, the floor's process {own:.1} µs");
    }
    let _ = js.delete_stream(format!("FLOOR_{run}")).await;
    let _ = js.delete_key_value(format!("FLOOR_{run}")).await;
    Ok(())
}

/// The value after flag `name`, if the flag is given; an error saying it needs `what` when
/// that value is missing or unreadable.
fn flag_value<T: std::str::FromStr>(flags: &[String], name: &str, what: &str) -> Result<Option<T>, String> {
    match flags.iter().position(|f| f == name) {
        Some(i) => flags
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or(format!("{name} needs {what}")),
        None => Ok(None),
    }
}

fn id_of(m: &jetstream::Message) -> String {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

/// `--user-events`: each event also on the user's subject.
static USER_EVENTS: AtomicBool = AtomicBool::new(false);

/// An event, published as jetask publishes it: on the all-users subject, and with
/// `--user-events` again on the user's (`nats.user_events`).
async fn emit(client: &async_nats::Client, status: &str, event: bytes::Bytes) -> Result<(), async_nats::PublishError> {
    client.publish(format!("floor.events.{status}"), event.clone()).await?;
    if USER_EVENTS.load(Ordering::Relaxed) {
        client
            .publish(format!("floor.user.default.events.{status}"), event)
            .await?;
    }
    Ok(())
}

/// A record write as jetask makes it: to the bucket's subject, with the list index's header,
/// checked against the revision `expect` (0: the key is new); answers the write's revision.
async fn write(
    js: &jetstream::Context,
    kv: &str,
    id: &str,
    status: &str,
    expect: Option<u64>,
    value: bytes::Bytes,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let mut h = async_nats::HeaderMap::new();
    if let Some(seq) = expect {
        h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
    }
    // What jetask's writes carry for the list index: one header (see `store::index::header`).
    h.insert(
        jetask::store::index::header::NAME,
        format!("{status};1764374400000;;;floor;default").as_str(),
    );
    let ack = js
        .publish_with_headers(format!("$KV.{kv}.{id}"), h, value)
        .await?
        .await?;
    Ok(ack.sequence)
}

/// A dispatcher's write over revision `known` (`None`: the key is thought new). When intake's
/// create has landed meanwhile (the check fails), the write goes over what is there, as jetask's
/// does after reading the record back.
async fn write_over(
    js: &jetstream::Context,
    kv: &str,
    id: &str,
    status: &str,
    known: Option<u64>,
    value: bytes::Bytes,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    if let Ok(rev) = write(js, kv, id, status, Some(known.unwrap_or(0)), value.clone()).await {
        return Ok(rev);
    }
    let last = js.get_key_value(kv).await?.entry(id).await?.map(|e| e.revision);
    write(js, kv, id, status, Some(last.unwrap_or(0)), value).await
}

type Follower = tokio::task::JoinHandle<Result<usize, Box<dyn std::error::Error + Send + Sync>>>;

/// Follows `stream` (`filter` empty: all of it) with headers only, as a list index does, until
/// `last` says the message it is given was the last one; the follower answers how many it saw.
async fn follow(
    stream: &stream::Stream,
    filter: String,
    mut last: impl FnMut(&jetstream::Message) -> bool + Send + 'static,
) -> Result<Follower, Box<dyn std::error::Error + Send + Sync>> {
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            headers_only: true,
            ..Default::default()
        })
        .await?;
    let mut msgs = c.messages().await?;
    Ok(tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(m)) = msgs.next().await {
            seen += 1;
            if last(&m) {
                break;
            }
        }
        Ok(seen)
    }))
}
