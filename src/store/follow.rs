//! Long-running readers of JetStream, resubscribing after errors until shutdown: bucket
//! followers (every replica's view of functions and schedules) and the loops over the durable
//! consumers shared by all replicas (intake, result delivery).

use async_nats::jetstream::{self, kv, stream};
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A change seen in a followed bucket: a value under a key, or its removal.
pub enum Followed<T> {
    Put(T),
    Removed(String),
}

/// Follows every key of a bucket of JSON values until `shutdown` — current values first, then
/// changes — resubscribing after errors. Unreadable values are skipped with a warning.
pub async fn follow_bucket<T: serde::de::DeserializeOwned>(
    store: kv::Store,
    what: &str,
    shutdown: CancellationToken,
    mut apply: impl FnMut(Followed<T>),
) {
    loop {
        let mut watch = match store.watch_with_history(">").await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch {what}; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let entry = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = watch.next() => e,
            };
            match entry {
                Some(Ok(e)) => match e.operation {
                    kv::Operation::Put => match serde_json::from_slice::<T>(&e.value) {
                        Ok(v) => apply(Followed::Put(v)),
                        Err(err) => tracing::warn!(key = %e.key, error = %err, "ignoring unreadable {what}"),
                    },
                    kv::Operation::Delete | kv::Operation::Purge => apply(Followed::Removed(e.key)),
                },
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "{what} watch failed; resubscribing");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Handles the messages of the durable pull consumer `name` of `stream`, `in_flight` at once,
/// until `shutdown`.
pub async fn consume<F, Fut>(
    stream: &stream::Stream,
    name: &str,
    in_flight: usize,
    shutdown: CancellationToken,
    handle: F,
) where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    while !shutdown.is_cancelled() {
        let messages = match stream.get_consumer::<jetstream::consumer::pull::Config>(name).await {
            Ok(c) => c
                .stream()
                .max_messages_per_batch(in_flight)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer = name, error = %e, "cannot consume; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        messages
            .take_until(shutdown.clone().cancelled_owned())
            .for_each_concurrent(in_flight, |m| async {
                match m {
                    Ok(m) => handle(m).await,
                    Err(e) => tracing::warn!(consumer = name, error = %e, "consumer message error"),
                }
            })
            .await;
    }
}
