//! The list index: which tasks exist, newest first, with the fields lists filter on. Each replica
//! follows the `JETASK_TASKS` bucket with a headers-only consumer (record writes carry their
//! function, status, user and creation time as headers), so it never parses record bodies.

use crate::subjects::{self, headers as h};
use crate::task::Status;
use crate::time::Timestamp;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    function: Arc<str>,
    user: Arc<str>,
    status: Status,
    updated: i64,
}

/// Position in the newest-first order: creation time, then ID.
type Key = (i64, Arc<str>);

#[derive(Default)]
struct Inner {
    by_time: BTreeMap<Key, Entry>,
    created: HashMap<Arc<str>, i64>,
    names: HashMap<String, Arc<str>>,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(s.to_string(), a.clone());
        a
    }
}

/// A list query (CONTRACT §4 queries).
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub function: Option<String>,
    pub status: Option<Status>,
    pub user: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    pub cursor: Option<String>,
}

#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
    ready: tokio::sync::Notify,
    is_ready: std::sync::atomic::AtomicBool,
}

/// Encodes a position as an opaque, URL-safe cursor.
fn cursor_of(key: &Key) -> String {
    format!("{}_{}", key.0, key.1)
}

fn parse_cursor(c: &str) -> Option<Key> {
    let (ms, id) = c.split_once('_')?;
    Some((ms.parse().ok()?, Arc::from(id)))
}

#[derive(Debug, thiserror::Error)]
#[error("invalid cursor {0:?}: pass next_cursor from the previous page unchanged")]
pub struct CursorError(pub String);

impl Index {
    /// Records that task `id` now has these fields.
    pub fn upsert(&self, id: &str, function: &str, user: &str, status: Status, created: i64, updated: i64) {
        let Ok(mut g) = self.inner.write() else { return };
        let id: Arc<str> = Arc::from(id);
        let entry = Entry {
            function: g.intern(function),
            user: g.intern(user),
            status,
            updated,
        };
        if let Some(old) = g.created.insert(id.clone(), created) {
            if old != created {
                g.by_time.remove(&(old, id.clone()));
            }
        }
        g.by_time.insert((created, id), entry);
    }

    pub fn remove(&self, id: &str) {
        let Ok(mut g) = self.inner.write() else { return };
        if let Some(c) = g.created.remove(id) {
            g.by_time.remove(&(c, Arc::from(id)));
        }
    }

    /// Drops entries whose record has expired from the bucket (unchanged for `retention`).
    pub fn prune(&self, now: Timestamp, retention: Duration) -> usize {
        let cutoff = now.millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let Ok(mut g) = self.inner.write() else { return 0 };
        let old: Vec<Key> = g
            .by_time
            .iter()
            .filter(|(_, e)| e.updated < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            g.by_time.remove(k);
            g.created.remove(&k.1);
        }
        old.len()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|g| g.created.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many tasks of `function` are in `status`.
    pub fn count(&self, function: &str, status: Status) -> usize {
        self.inner
            .read()
            .map(|g| {
                g.by_time
                    .values()
                    .filter(|e| e.status == status && &*e.function == function)
                    .count()
            })
            .unwrap_or(0)
    }

    /// IDs matching `q`, newest first, and the cursor of the next page.
    pub fn query(&self, q: &Query) -> Result<(Vec<String>, Option<String>), CursorError> {
        let start = match &q.cursor {
            Some(c) => Some(parse_cursor(c).ok_or_else(|| CursorError(c.clone()))?),
            None => None,
        };
        let Ok(g) = self.inner.read() else {
            return Ok((vec![], None));
        };
        let upper = match (&start, q.until) {
            (Some(k), _) => std::ops::Bound::Excluded(k.clone()),
            (None, Some(u)) => std::ops::Bound::Included((u.millis(), Arc::from("\u{10ffff}"))),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let lower = match q.since {
            Some(s) => std::ops::Bound::Included((s.millis(), Arc::from(""))),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(q.limit);
        let mut next = None;
        for (key, e) in g.by_time.range((lower, upper)).rev() {
            if q.until.is_some_and(|u| key.0 > u.millis())
                || q.status.is_some_and(|s| e.status != s)
                || q.function.as_deref().is_some_and(|f| &*e.function != f)
                || q.user.as_deref().is_some_and(|u| &*e.user != u)
            {
                continue;
            }
            if out.len() == q.limit {
                next = out.last().map(|k: &Key| cursor_of(k));
                break;
            }
            out.push(key.clone());
        }
        Ok((out.into_iter().map(|k| k.1.to_string()).collect(), next))
    }

    /// Whether the first replay of the bucket has been applied.
    pub fn ready(&self) -> bool {
        self.is_ready.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn wait_ready(&self) {
        while !self.ready() {
            let n = self.ready.notified();
            if self.ready() {
                break;
            }
            n.await;
        }
    }

    fn mark_ready(&self) {
        self.is_ready.store(true, std::sync::atomic::Ordering::Release);
        self.ready.notify_waiters();
    }

    /// Follows the tasks bucket until `shutdown`.
    pub async fn follow(self: Arc<Self>, js: jetstream::Context, retention: Duration, shutdown: CancellationToken) {
        let stream_name = format!("KV_{}", subjects::TASKS_BUCKET);
        let prefix = format!("$KV.{}.", subjects::TASKS_BUCKET);
        let mut pruned_at = Timestamp::now();
        loop {
            let consumer = async {
                let stream = js.get_stream(&stream_name).await.map_err(|e| e.to_string())?;
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
                Ok::<_, String>((msgs, empty))
            }
            .await;
            let (mut msgs, empty) = match consumer {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow task records; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if empty {
                self.mark_ready();
            }
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = msgs.next() => m,
                };
                let msg = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "task record follower failed; resubscribing");
                        break;
                    }
                    None => break,
                };
                self.apply(&msg, &prefix);
                if let Ok(info) = msg.info() {
                    if info.pending == 0 && !self.ready() {
                        self.mark_ready();
                    }
                }
                let now = Timestamp::now();
                if now.since(pruned_at) > 60_000 {
                    pruned_at = now;
                    self.prune(now, retention);
                }
            }
        }
    }

    fn apply(&self, msg: &jetstream::Message, prefix: &str) {
        let Some(id) = msg.subject.as_str().strip_prefix(prefix) else {
            return;
        };
        let headers = msg.headers.as_ref();
        let get = |k: &str| headers.and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
        if matches!(get("KV-Operation").as_deref(), Some("DEL") | Some("PURGE")) {
            self.remove(id);
            return;
        }
        let (Some(function), Some(status), Some(user), Some(created)) = (
            get(h::INDEX_FUNCTION),
            get(h::INDEX_STATUS),
            get(h::INDEX_USER),
            get(h::INDEX_CREATED),
        ) else {
            return;
        };
        let (Some(status), Ok(created)) = (Status::parse(&status), created.parse::<i64>()) else {
            return;
        };
        let updated = msg
            .info()
            .map(|i| i.published.timestamp_millis())
            .unwrap_or_else(|_| Timestamp::now().millis());
        self.upsert(id, &function, &user, status, created, updated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(limit: usize) -> Query {
        Query {
            limit,
            ..Default::default()
        }
    }

    fn index() -> Index {
        let i = Index::default();
        for n in 0..10i64 {
            let status = if n % 2 == 0 { Status::Succeeded } else { Status::Failed };
            let f = if n < 5 { "a" } else { "b" };
            i.upsert(&format!("t{n}"), f, "u", status, 1000 + n, 1000 + n);
        }
        i
    }

    #[test]
    fn lists_newest_first_in_pages() {
        let i = index();
        let (page, next) = i.query(&q(4)).unwrap();
        assert_eq!(page, vec!["t9", "t8", "t7", "t6"]);
        let (page, next) = i.query(&Query { cursor: next, ..q(4) }).unwrap();
        assert_eq!(page, vec!["t5", "t4", "t3", "t2"]);
        let (page, next) = i.query(&Query { cursor: next, ..q(4) }).unwrap();
        assert_eq!(page, vec!["t1", "t0"]);
        assert_eq!(next, None);
    }

    #[test]
    fn filters_combine() {
        let i = index();
        let (page, _) = i
            .query(&Query {
                function: Some("a".into()),
                status: Some(Status::Failed),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t3", "t1"]);
        let (page, _) = i
            .query(&Query {
                since: Some(Timestamp(1003)),
                until: Some(Timestamp(1005)),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t5", "t4", "t3"]);
        let (page, _) = i
            .query(&Query {
                user: Some("nobody".into()),
                ..q(10)
            })
            .unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn a_status_change_moves_no_position() {
        let i = index();
        i.upsert("t0", "a", "u", Status::Stopped, 1000, 5000);
        let (page, _) = i
            .query(&Query {
                status: Some(Status::Stopped),
                ..q(10)
            })
            .unwrap();
        assert_eq!(page, vec!["t0"]);
        assert_eq!(i.len(), 10);
    }

    #[test]
    fn old_entries_are_pruned_and_bad_cursors_refused() {
        let i = index();
        assert_eq!(i.prune(Timestamp(1005 + 60_000), Duration::from_secs(60)), 5);
        assert_eq!(i.len(), 5);
        assert!(i
            .query(&Query {
                cursor: Some("garbage".into()),
                ..q(1)
            })
            .is_err());
    }
}
