//! The raw limit the bench compares jetask with: JetStream alone, on the same server.

use super::pipeline::Pipeline;
use super::report::bar;
use super::{STALL, WINDOW};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use std::time::Instant;

/// The raw limit: N publishes (with message IDs, pipelined) then N pulls with plain acks, on a
/// scratch stream of the same server, same payload size.
pub struct Raw {
    pub publish_per_s: f64,
    pub consume_per_s: f64,
    /// N / (publish time + consume time).
    pub per_s: f64,
}

pub(super) async fn measure(
    client: &async_nats::Client,
    n: usize,
    payload: &bytes::Bytes,
    hidden: bool,
) -> anyhow::Result<Raw> {
    let js = jetstream::new(client.clone());
    let run = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("JETASK_BENCH_RAW_{run}");
    let subject = format!("jetask-bench-raw.{run}");
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("cannot create the raw benchmark stream")?;
    let mut pipe = Pipeline::new(client, WINDOW, bar(n, "raw pub", hidden)).await?;
    let subject = async_nats::Subject::from(subject);
    let start = Instant::now();
    for i in 0..n {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("r{run}-{i}").as_str());
        pipe.publish(&subject, h, payload).await?;
    }
    pipe.finish().await?;
    let publish = start.elapsed();
    let c = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let pb = bar(n, "raw sub", hidden);
    let start = Instant::now();
    let mut messages = c.messages().await?;
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(STALL, messages.next()).await {
            Ok(Some(Ok(m))) => {
                m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                got += 1;
                pb.inc(1);
            }
            Ok(Some(Err(e))) => return Err(anyhow::anyhow!(e)),
            _ => anyhow::bail!("raw consume stalled after {got} of {n} messages"),
        }
    }
    let consume = start.elapsed();
    pb.finish_and_clear();
    drop(messages);
    let _ = js.delete_stream(&name).await;
    Ok(Raw {
        publish_per_s: n as f64 / publish.as_secs_f64(),
        consume_per_s: n as f64 / consume.as_secs_f64(),
        per_s: n as f64 / (publish + consume).as_secs_f64(),
    })
}
