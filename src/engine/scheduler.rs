//! Fires recurring schedules. Every replica follows the `JETASK_SCHEDULES` bucket and fires what
//! is due; each firing's task ID is derived from the schedule and the moment, so that however
//! many replicas fire it, it runs once. The last handled moment of each schedule is kept in
//! `JETASK_SCHEDULE_FIRES` (compare-and-swap), so that after downtime only the latest missed
//! firing runs (or none, with `catch_up = false`).

use crate::core::schedule::{Fire, Schedule};
use crate::core::submission::Options;
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::intake::{self, HttpSubmission};
use crate::store::follow::Followed;
use async_nats::jetstream::kv;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The schedules this replica knows, followed from the bucket.
#[derive(Default)]
pub struct Schedules {
    all: RwLock<HashMap<String, Schedule>>,
    changed: Notify,
}

impl Schedules {
    pub fn snapshot(&self) -> Vec<Schedule> {
        self.all
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn upsert(&self, s: Schedule) {
        if let Ok(mut m) = self.all.write() {
            m.insert(s.name.clone(), s);
        }
        self.changed.notify_one();
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.all.write() {
            m.remove(name);
        }
        self.changed.notify_one();
    }

    /// Follows the schedules bucket until `shutdown`.
    pub async fn follow(self: Arc<Self>, store: kv::Store, shutdown: CancellationToken) {
        crate::store::follow::follow_bucket(store, "schedules", shutdown, |change| match change {
            Followed::Put(s) => self.upsert(s),
            Followed::Removed(name) => self.remove(&name),
        })
        .await;
    }
}

/// The last handled moment of a schedule and its revision in the fires bucket.
async fn last_fired(fires: &kv::Store, name: &str) -> Result<(Option<Timestamp>, u64), String> {
    match fires.entry(name).await.map_err(|e| e.to_string())? {
        Some(e) if e.operation == kv::Operation::Put => {
            let ms = std::str::from_utf8(&e.value).ok().and_then(|v| v.parse::<i64>().ok());
            Ok((ms.map(Timestamp), e.revision))
        }
        Some(e) => Ok((None, e.revision)),
        None => Ok((None, 0)),
    }
}

/// Records `t` as handled unless a later moment already is; returns the moment now recorded.
async fn mark_fired(fires: &kv::Store, name: &str, t: Timestamp) -> Result<Timestamp, String> {
    loop {
        let (stored, revision) = last_fired(fires, name).await?;
        if let Some(s) = stored.filter(|s| *s >= t) {
            return Ok(s);
        }
        let value = t.millis().to_string().into_bytes().into();
        match fires.update(name, value, revision).await {
            Ok(_) => return Ok(t),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Submits the firing of `t`; `false` when it could not be accepted (it is tried again).
async fn fire(ctx: &Ctx, s: &Schedule, t: Timestamp) -> bool {
    let (input, content_type) = s.input_bytes();
    let submission = HttpSubmission {
        function: s.function.clone(),
        user: "default".into(),
        id: Some(s.task_id(t)),
        options: Options {
            content_type: Some(content_type.to_string()),
            ..Options::default()
        },
        input: input.into(),
    };
    match intake::submit(ctx, submission, false, true).await {
        Ok(a) => {
            if !a.duplicate {
                tracing::info!(schedule = %s.name, task_id = %a.task_id, at = %t, "schedule fired");
            }
            true
        }
        Err(e) => {
            tracing::warn!(schedule = %s.name, error = %e, "cannot fire schedule; will retry");
            false
        }
    }
}

/// Fires due schedules until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut last: HashMap<String, Option<Timestamp>> = HashMap::new();
    loop {
        let now = Timestamp::now();
        let schedules = ctx.schedules.snapshot();
        let mut next_wake = now.plus(Duration::from_secs(1));
        for s in &schedules {
            let known = match last.get(&s.name) {
                Some(l) => *l,
                None => match last_fired(&ctx.nats.fires, &s.name).await {
                    Ok((l, _)) => *last.entry(s.name.clone()).or_insert(l),
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "cannot read schedule state");
                        continue;
                    }
                },
            };
            let t = match s.decide(known, now) {
                Fire::Idle => None,
                // Recorded as handled only once accepted: a failed firing is tried again.
                Fire::Run(t) => fire(&ctx, s, t).await.then_some(t),
                Fire::Skip(t) => Some(t),
            };
            if let Some(t) = t {
                match mark_fired(&ctx.nats.fires, &s.name, t).await {
                    Ok(recorded) => {
                        last.insert(s.name.clone(), Some(recorded));
                    }
                    Err(e) => tracing::warn!(schedule = %s.name, error = %e, "cannot record firing"),
                }
            }
            if let Some(n) = s.next_after(now) {
                next_wake = next_wake.min(n);
            }
        }
        last.retain(|name, _| schedules.iter().any(|s| &s.name == name));
        let wait = Timestamp::now().until(next_wake);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.schedules.changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
