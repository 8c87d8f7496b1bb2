//! Carrying out the state machine's decisions: apply events to a record, write it with a
//! revision check, publish its events, and hand a finished task's result to its destination.
//! The shell never re-decides a transition.

use crate::core::function::FunctionSpec;
use crate::core::machine::{self, Effect, Event, InvalidTransition};
use crate::core::task::{Serialized, TaskRecord};
use crate::core::time::Timestamp;
use crate::engine::callback;
use crate::engine::ctx::Ctx;
use crate::store::events;
use crate::store::kv::{StoreError, Versioned};

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record is written, but its result delivery could not be queued yet.
    #[error("cannot queue the result delivery: {0}")]
    Delivery(String),
}

/// Applies `events` in order at `now`, writes the result once over `current`'s revision (or not
/// at all when `persist` is false: task mode off), and publishes one event per transition. A task
/// that finishes is marked as owing its destination a delivery in the same write, and the
/// delivery is queued after it.
///
/// Revision 0 means a record not written yet (built from its submission): the write then
/// creates it, and its creation (the first state of its history) is published first.
pub async fn commit(
    ctx: &Ctx,
    current: &Versioned,
    events: Vec<Event>,
    now: Timestamp,
    persist: bool,
    spec: Option<&FunctionSpec>,
) -> Result<(Versioned, Vec<Effect>), CommitError> {
    let mut record = current.record.clone();
    let mut effects: Vec<Effect> = match (persist, current.revision) {
        (true, 0) => record
            .events
            .first()
            .map(|e| Effect::Emit(e.status))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for ev in events {
        let t = machine::apply_owned(record, ev, now)?;
        record = t.record;
        effects.extend(t.effects);
    }
    let job = if persist && effects.contains(&Effect::Finish) {
        callback::prepare(&mut record, spec)
    } else {
        None
    };
    // One serialization for the value written and the bodies of its events.
    let serialized = record.serialized();
    let revision = if persist {
        let revision = ctx.tasks.update_as(&record, &serialized, current.revision).await?;
        if current.revision == 0 {
            // Created by this write: intake need not try (see `intake::record`).
            ctx.revisions.dispatched(&record.id, record.seq);
        }
        revision
    } else {
        current.revision
    };
    publish_as(ctx, &record, &serialized, &effects).await;
    if let Some(job) = job {
        callback::enqueue(ctx, &job).await.map_err(CommitError::Delivery)?;
    }
    Ok((Versioned { record, revision }, effects))
}

/// Writes a new record (see [`crate::store::kv::TaskStore::create`]) and publishes its
/// creation's events, from one serialization. The revision written; nothing is published
/// when the write fails (`Exists`: another writer's record is there).
pub async fn create(ctx: &Ctx, t: &machine::Transition) -> Result<u64, StoreError> {
    let serialized = t.record.serialized();
    let revision = ctx.tasks.create_as(&t.record, &serialized).await?;
    publish_as(ctx, &t.record, &serialized, &t.effects).await;
    Ok(revision)
}

/// Publishes the `Emit` effects of a written record, and counts them.
pub async fn publish(ctx: &Ctx, record: &TaskRecord, effects: &[Effect]) {
    if effects.iter().any(|e| matches!(e, Effect::Emit(_))) {
        publish_as(ctx, record, &record.serialized(), effects).await;
    }
}

/// [`publish`], with the record already serialized for its write.
async fn publish_as(ctx: &Ctx, record: &TaskRecord, serialized: &Serialized, effects: &[Effect]) {
    let now = Timestamp::now();
    for e in effects {
        if let Effect::Emit(status) = e {
            ctx.metrics.transition(record, *status, now);
            events::emit(&ctx.nats.client, record, serialized, *status, ctx.nats.user_events).await;
        }
    }
}
