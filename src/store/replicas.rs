//! Which replicas are alive, and what each holds of every function's concurrency: each replica
//! puts its record in the `JETASK_REPLICAS` bucket every half second and whenever its holdings
//! change, and follows everyone else's. A replica not heard from for [`STALE`] is taken as gone
//! (a clean shutdown deletes its key at once). The shares themselves are computed in
//! [`crate::core::limits`].

use crate::core::limits::{self, Peer};
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// Silence after which a replica is taken as gone.
pub const STALE: Duration = Duration::from_secs(3);
/// Shortest gap between two records of one replica.
const MIN_GAP: Duration = Duration::from_millis(20);

/// A replica's record in the bucket.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Record {
    id: String,
    /// Per function: the larger of its concurrency limit and its attempts in flight.
    holding: HashMap<String, u32>,
}

/// One function's slots on this replica.
#[derive(Debug)]
pub struct Slots {
    pub limit: AtomicU32,
    pub in_flight: AtomicU32,
    /// An attempt ended.
    pub freed: Notify,
    /// The adaptive limit, when the function's concurrency is adaptive, with the `(min, max)`
    /// it was made for.
    adaptive: Mutex<Option<((u32, u32), limits::Adaptive)>>,
    origin: Instant,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            limit: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            freed: Notify::new(),
            adaptive: Mutex::new(None),
            origin: Instant::now(),
        }
    }
}

impl Slots {
    /// The adaptive limit for `min..=max` (made afresh, from `min`, when they change), or
    /// `None` to turn adaptation off.
    pub fn adaptive_limit(&self, range: Option<(u32, u32)>) -> Option<u32> {
        let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        match range {
            None => {
                *a = None;
                None
            }
            Some(r) => {
                if a.as_ref().map(|(made_for, _)| *made_for) != Some(r) {
                    *a = Some((r, limits::Adaptive::new(r.0, r.1, r.0)));
                }
                a.as_ref().map(|(_, l)| l.limit())
            }
        }
    }

    /// Lets the adaptive limit probe for more while every slot is busy and nothing answers.
    pub fn tick(&self) {
        let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, l)) = a.as_mut() {
            l.tick(self.origin.elapsed(), self.in_flight.load(Ordering::Acquire));
        }
    }

    /// Feeds an attempt's answer to the adaptive limit, if any.
    pub fn sample(&self, latency: Duration, signal: limits::Signal, in_flight: u32) {
        let mut a = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, l)) = a.as_mut() {
            l.sample(self.origin.elapsed(), latency, signal, in_flight);
        }
        drop(a);
        // A new limit is read by the function's loop when it next looks for work.
        self.freed.notify_one();
    }

    /// Whether every slot of this replica's share is taken.
    pub fn is_full(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) >= self.limit.load(Ordering::Acquire)
    }

    fn holding(&self) -> u32 {
        self.limit
            .load(Ordering::Acquire)
            .max(self.in_flight.load(Ordering::Acquire))
    }
}

pub struct Replicas {
    pub id: String,
    peers: Mutex<HashMap<String, (Peer, Instant)>>,
    slots: Mutex<HashMap<String, Arc<Slots>>>,
    /// Our holdings changed: publish soon.
    dirty: Notify,
    /// Someone else's record changed: limits may have moved.
    pub peers_changed: Notify,
    /// When this replica last saw its own record come back through the bucket.
    echo: Mutex<Option<Instant>>,
}

impl Default for Replicas {
    fn default() -> Self {
        Self::new()
    }
}

impl Replicas {
    pub fn new() -> Replicas {
        Replicas {
            id: uuid::Uuid::now_v7().simple().to_string(),
            peers: Mutex::default(),
            slots: Mutex::default(),
            dirty: Notify::new(),
            peers_changed: Notify::new(),
            echo: Mutex::new(None),
        }
    }

    /// Runs `f` over the other replicas alive now, without copying them (this is asked on
    /// every pull of every function, and per task under a per-user limit).
    fn with_others<T>(&self, f: impl FnOnce(Vec<&Peer>) -> T) -> T {
        let now = Instant::now();
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        f(peers
            .values()
            .filter(|(_, seen)| now.duration_since(*seen) < STALE)
            .map(|(peer, _)| peer)
            .collect())
    }

    /// What all live replicas may run of `function` now: this one's limit and what the others
    /// hold, at most `max` (`max` until this replica's loop has set a limit).
    pub fn cluster_limit(&self, function: &str, max: u32) -> u32 {
        let mine = self.slots(function).limit.load(Ordering::Acquire);
        self.with_others(|others| {
            if mine == 0 && others.is_empty() {
                return max;
            }
            let held: u32 = others
                .iter()
                .map(|p| p.holding.get(function).copied().unwrap_or(0))
                .sum();
            (mine + held).min(max)
        })
    }

    /// Whether replica `id` is alive (this one always is).
    pub fn is_alive(&self, id: &str) -> bool {
        id == self.id || self.with_others(|others| others.iter().any(|p| p.id == id))
    }

    /// Whether this replica's view of the others is current enough to call one of them gone:
    /// its own record came back through the bucket within [`STALE`]. While NATS fails over, no
    /// record moves, and every peer would look gone though it is busy with its attempts.
    pub fn can_judge(&self) -> bool {
        self.echo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < STALE)
    }

    /// Replicas alive, this one included.
    pub fn count(&self) -> usize {
        self.with_others(|others| others.len()) + 1
    }

    pub fn slots(&self, function: &str) -> Arc<Slots> {
        let mut s = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up on every submission and attempt: no key is allocated unless it is new.
        if let Some(slots) = s.get(function) {
            return slots.clone();
        }
        s.entry(function.to_string()).or_default().clone()
    }

    /// The attempts of `function` this replica may run now, out of `total` for all replicas and
    /// at most `cap` (the adaptive limit); published as part of this replica's holding.
    pub fn concurrency(&self, function: &str, total: u32, cap: u32) -> u32 {
        let limit = self
            .with_others(|others| limits::concurrency(total, function, &self.id, &others))
            .min(cap);
        let slots = self.slots(function);
        if slots.limit.swap(limit, Ordering::AcqRel) != limit {
            self.dirty.notify_one();
        }
        limit
    }

    /// An attempt of `function` started (`+1`) or ended (`-1`).
    pub fn attempt(&self, slots: &Slots, started: bool) {
        if started {
            slots.in_flight.fetch_add(1, Ordering::AcqRel);
        } else {
            slots.in_flight.fetch_sub(1, Ordering::AcqRel);
            slots.freed.notify_one();
        }
        // Only a holding above the limit is news to the others.
        if slots.is_full() {
            self.dirty.notify_one();
        }
    }

    fn record(&self) -> Record {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Record {
            id: self.id.clone(),
            holding: slots.iter().map(|(f, s)| (f.clone(), s.holding())).collect(),
        }
    }

    fn seen(&self, r: Record) {
        if r.id == self.id {
            *self.echo.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            return;
        }
        if let Ok(mut p) = self.peers.lock() {
            p.insert(
                r.id.clone(),
                (
                    Peer {
                        id: r.id,
                        holding: r.holding,
                    },
                    Instant::now(),
                ),
            );
        }
        self.peers_changed.notify_waiters();
    }

    fn gone(&self, id: &str) {
        if let Ok(mut p) = self.peers.lock() {
            p.remove(id);
        }
        self.peers_changed.notify_waiters();
    }

    /// Reads the replicas alive now, before this one dispatches anything.
    pub async fn load(&self, kv: &kv::Store) -> Result<(), String> {
        use futures::StreamExt;
        let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| e.to_string())?;
            if let Ok(Some(entry)) = kv.entry(&k).await {
                let age = chrono::Utc::now() - entry.created;
                let fresh = age.num_milliseconds() < STALE.as_millis() as i64;
                if let (true, Ok(r)) = (fresh, serde_json::from_slice::<Record>(&entry.value)) {
                    self.seen(r);
                }
            }
        }
        self.publish(kv).await;
        Ok(())
    }

    async fn publish(&self, kv: &kv::Store) {
        let body = serde_json::to_vec(&self.record()).unwrap_or_default();
        if let Err(e) = kv.put(&self.id, body.into()).await {
            tracing::warn!(error = %e, "cannot publish this replica's presence");
        }
    }

    /// Publishes this replica's record and follows the others' until `shutdown`; then removes
    /// its record so that the others take over its shares at once.
    pub async fn run(self: Arc<Self>, kv: kv::Store, shutdown: CancellationToken) {
        let follower = tokio::spawn({
            let me = self.clone();
            let kv = kv.clone();
            let stop = shutdown.clone();
            async move {
                crate::store::follow::follow_bucket::<Record>(kv, "replicas", stop, |f| match f {
                    crate::store::follow::Followed::Put(r) => me.seen(r),
                    crate::store::follow::Followed::Removed(id) => me.gone(&id),
                })
                .await
            }
        });
        loop {
            self.publish(&kv).await;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.dirty.notified() => tokio::time::sleep(MIN_GAP).await,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
        }
        let _ = follower.await;
    }

    /// Removes this replica's record (at shutdown, once its attempts are over).
    pub async fn leave(&self, kv: &kv::Store) {
        let _ = kv.delete(&self.id).await;
    }
}
