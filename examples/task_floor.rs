//! The JetStream floor of a task: the server operations one task of task mode costs, done by
//! hand with no jetask logic, no HTTP call and no list index, as fast as this machine allows.
//! `cargo run --release --example task_floor -- NATS_URL COUNT [--no-intake] [--no-running]`.
//!
//! Per task: a publish with `Nats-Msg-Id`; intake's delivery, record create and ack; the
//! dispatcher's delivery, `Running` write with its two events, final write with its event, and
//! ack; and one watcher following the bucket (what every replica's list index follows). The
//! flags drop intake's record or the `Running` write, to price those two product decisions.
//! Record sizes are about those jetask writes for a 256-byte input (985 bytes once finished).

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WINDOW: usize = 4000;
const CONCURRENCY: usize = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count, flags @ ..] = args.as_slice() else {
        return Err("usage: task_floor NATS_URL COUNT [--no-intake] [--no-running]".into());
    };
    let n: usize = count.parse()?;
    let intake = !flags.iter().any(|f| f == "--no-intake");
    let running = !flags.iter().any(|f| f == "--no-running");
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
    let bucket = js
        .create_key_value(kv::Config {
            bucket: format!("FLOOR_{run}"),
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

    // The list index's share: every replica follows every write.
    let mut watch = bucket.watch_all().await?;
    // A watcher behind the writes skips values already overwritten, as the index does.
    let final_len = finished.len();
    let watcher = tokio::spawn(async move {
        let (mut seen, mut finals) = (0, 0);
        while finals < n {
            match watch.next().await {
                Some(Ok(e)) => {
                    seen += 1;
                    finals += usize::from(e.value.len() == final_len);
                }
                _ => break,
            }
        }
        seen
    });

    let intake_task = intake.then(|| {
        let bucket = bucket.clone();
        tokio::spawn(async move {
            let mut msgs = intake_c.messages().await?;
            let mut done = 0;
            let mut work = futures::stream::FuturesUnordered::new();
            while done < n {
                tokio::select! {
                    Some(m) = msgs.next(), if work.len() < 512 => {
                        let m = m?;
                        let id = id_of(&m);
                        let bucket = bucket.clone();
                        let value = enqueued.clone();
                        work.push(async move {
                            let _ = bucket.create(&id, value).await;
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
        let (bucket, client) = (bucket.clone(), client.clone());
        async move {
            let mut msgs = dispatch_c.messages().await?;
            let gate = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
            let mut work = tokio::task::JoinSet::new();
            let (mut received, mut done) = (0, 0);
            while done < n {
                tokio::select! {
                    Ok(permit) = gate.clone().acquire_owned(), if received < n => {
                        let Some(m) = msgs.next().await else { break };
                        received += 1;
                        let m = m?;
                        let id = id_of(&m);
                        let (bucket, client) = (bucket.clone(), client.clone());
                        let (started, finished, event) = (started.clone(), finished.clone(), event.clone());
                        work.spawn(async move {
                            if running {
                                bucket.put(&id, started).await?;
                                client.publish("floor.events.Dequeued", event.clone()).await?;
                                client.publish("floor.events.Running", event.clone()).await?;
                            }
                            bucket.put(&id, finished).await?;
                            client.publish("floor.events.Succeeded", event).await?;
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
    if let Some(t) = intake_task {
        t.await??;
    }
    let followed = tokio::time::timeout(Duration::from_secs(30), watcher).await??;
    println!(
        "floor: {n} tasks in {:.2}s = {:.0} tasks/s (submissions {:.0}/s; intake {intake}, running write {running}; {followed} writes followed)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        n as f64 / publish.as_secs_f64(),
    );
    let _ = js.delete_stream(format!("FLOOR_{run}")).await;
    let _ = js.delete_key_value(format!("FLOOR_{run}")).await;
    Ok(())
}

fn id_of(m: &jetstream::Message) -> String {
    m.headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}
