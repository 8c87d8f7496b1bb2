//! Feeds the index from the `JETASK_TASKS` bucket: an ordered, headers-only consumer from the
//! last write of each key, resubscribed after errors, its writes gathered into transactions.

use super::{header, Change, Index, IndexError};
use crate::core::subjects;
use crate::core::time::Timestamp;
use async_nats::jetstream::{self, consumer};
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Record writes applied in one transaction at most.
const MAX_BATCH: usize = 1024;
/// How long the follower gathers writes before applying them, once caught up.
const GATHER: Duration = Duration::from_millis(10);
/// The same while writes come in by the dozen: longer than a short call takes under load
/// (15–20 ms), so that a task's start and end make one upsert. Not always: a list read just
/// after a lone write (a task seen `Failed`, then the dead-letter list) would miss it longer.
const GATHER_BUSY: Duration = Duration::from_millis(40);
/// Writes arriving at once that make the follower busy.
const BUSY: usize = 64;

type Deliveries = consumer::pull::Ordered;
type Delivery = Result<jetstream::Message, consumer::pull::OrderedError>;

impl Index {
    /// Follows the tasks bucket until `shutdown`.
    pub async fn follow(self: Arc<Self>, js: jetstream::Context, retention: Duration, shutdown: CancellationToken) {
        let prefix = format!("$KV.{}.", subjects::TASKS_BUCKET);
        let mut pruned_at = Timestamp::now();
        loop {
            let msgs = match subscribe(&js, &prefix).await {
                Ok((msgs, empty)) => {
                    if empty {
                        self.mark_ready();
                    }
                    msgs
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow task records; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut chunks = msgs.ready_chunks(MAX_BATCH);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = chunks.next() => m,
                };
                let Some(mut batch) = next else { break };
                if self.ready() && batch.len() < MAX_BATCH {
                    gather(&mut chunks, &mut batch).await;
                }
                let read = read_batch(batch, &prefix);
                self.apply_in_background(read.changes).await;
                if read.caught_up && !self.ready() {
                    self.mark_ready();
                }
                let now = Timestamp::now();
                if now.since(pruned_at) > 60_000 {
                    pruned_at = now;
                    let index = self.clone();
                    let _ = tokio::task::spawn_blocking(move || index.prune(now, retention)).await;
                }
                if read.failed {
                    break;
                }
            }
        }
    }

    /// Applies changes on a blocking thread (SQLite), logging a failure: the index is a view,
    /// and the next write of a task corrects its entry.
    async fn apply_in_background(self: &Arc<Self>, changes: Vec<Change>) {
        let index = self.clone();
        let applied = tokio::task::spawn_blocking(move || index.apply_all(&changes)).await;
        if let Ok(Err(e)) | Err(e) = applied.map_err(|e| IndexError::Io(std::io::Error::other(e))) {
            tracing::warn!(error = %e, "cannot update the task index");
        }
    }
}

/// An ordered, headers-only consumer from the last write of each record, and whether the bucket
/// was empty (then the index is ready at once: no first write will say it caught up).
async fn subscribe(js: &jetstream::Context, prefix: &str) -> Result<(Deliveries, bool), String> {
    let stream = js
        .get_stream(format!("KV_{}", subjects::TASKS_BUCKET))
        .await
        .map_err(|e| e.to_string())?;
    let empty = stream.get_info().await.map_err(|e| e.to_string())?.state.messages == 0;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: format!("{prefix}>"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let msgs = c.messages().await.map_err(|e| e.to_string())?;
    Ok((msgs, empty))
}

/// A task's writes come in quick succession (its start, then often its end): gathered a moment
/// longer, they make one upsert instead of several.
async fn gather(chunks: &mut futures::stream::ReadyChunks<Deliveries>, batch: &mut Vec<Delivery>) {
    tokio::time::sleep(if batch.len() >= BUSY { GATHER_BUSY } else { GATHER }).await;
    while batch.len() < MAX_BATCH {
        match chunks.next().now_or_never() {
            Some(Some(more)) => batch.extend(more),
            _ => break,
        }
    }
}

/// What one batch of deliveries means for the index.
struct BatchRead {
    /// The last change of each task in the batch (the earlier ones are overwritten anyway).
    changes: Vec<Change>,
    /// The consumer had nothing more pending after one of them.
    caught_up: bool,
    /// The consumer failed: resubscribe.
    failed: bool,
}

fn read_batch(batch: Vec<Delivery>, prefix: &str) -> BatchRead {
    let mut changes = Vec::with_capacity(batch.len());
    let mut caught_up = false;
    let mut failed = false;
    for m in batch {
        match m {
            Ok(msg) => {
                // The delivery's metadata is parsed from its reply subject: once, for both.
                let info = msg.info().ok();
                caught_up |= info.as_ref().is_some_and(|i| i.pending == 0);
                let updated = info.map_or_else(|| Timestamp::now().millis(), |i| i.published.timestamp_millis());
                changes.extend(change_of(&msg, prefix, updated));
            }
            Err(e) => {
                tracing::warn!(error = %e, "task record follower failed; resubscribing");
                failed = true;
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    changes.reverse();
    changes.retain(|c| seen.insert(c.id().to_string()));
    changes.reverse();
    BatchRead {
        changes,
        caught_up,
        failed,
    }
}

/// The value of header `name` of a record write: the one place that reads the index's headers
/// (so that their layout can change here alone).
fn header<'a>(msg: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref().and_then(|h| h.get_str(name)).map(|v| v.as_str())
}

/// The change a record write (headers only), stored at `updated` (ms), means for the index.
fn change_of(msg: &jetstream::Message, prefix: &str, updated: i64) -> Option<Change> {
    let id = msg.subject.as_str().strip_prefix(prefix)?.to_string();
    let get = |k: &str| header(msg, k);
    if matches!(get("KV-Operation"), Some("DEL") | Some("PURGE")) {
        return Some(Change::Remove { id });
    }
    let entry = match get(header::NAME) {
        Some(v) => header::decode(v)?,
        None => header::legacy(get)?,
    };
    Some(Change::Upsert {
        id,
        function: entry.function,
        user: entry.user,
        status: entry.status,
        created: entry.created,
        updated,
        due: entry.due,
        timing: entry.timing,
    })
}
