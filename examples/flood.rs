//! Publishes COUNT tasks as fast as JetStream takes them (a bounded window of acks in flight):
//! `cargo run --release --example flood -- NATS_URL FUNCTION COUNT [DELAY]`, e.g. with a delay
//! of `1h` to hold a million delayed tasks while measuring the service's memory. With
//! `FLOOD_USER=ann` every task is that user's (fairness measurements).

use futures::StreamExt;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, function, count, rest @ ..] = args.as_slice() else {
        return Err("usage: flood NATS_URL FUNCTION COUNT [DELAY]".into());
    };
    let count: usize = count.parse()?;
    let delay = rest.first().cloned().filter(|d| !d.is_empty());
    // FLOOD_USER=ann submits every task as that user.
    let user = std::env::var("FLOOD_USER").ok();
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await?);
    let run = std::process::id();
    let start = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    for i in 0..count {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("flood-{run}-{i}").as_str());
        if let Some(d) = &delay {
            h.insert("Jetask-Delay", d.as_str());
        }
        if let Some(u) = &user {
            h.insert("Jetask-User", u.as_str());
        }
        let ack = js
            .publish_with_headers(format!("jetask.submit.{function}"), h, vec![b'x'; 256].into())
            .await?;
        inflight.push(std::future::IntoFuture::into_future(ack));
        if inflight.len() >= 2000 {
            if let Some(r) = inflight.next().await {
                r?;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("published {count} tasks in {secs:.1}s ({:.0}/s)", count as f64 / secs);
    Ok(())
}
