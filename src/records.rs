//! Carrying out the state machine's decisions: apply events to a record, write it with a
//! revision check, then publish its events. The shell never re-decides a transition.

use crate::events;
use crate::machine::{self, Effect, Event, InvalidTransition};
use crate::store::{StoreError, TaskStore, Versioned};
use crate::time::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `events` in order at `now`, writes the result once over `current`'s revision (or not
/// at all when `persist` is false: task mode off), and publishes one event per transition.
pub async fn commit(
    store: &TaskStore,
    client: &async_nats::Client,
    current: &Versioned,
    events: Vec<Event>,
    now: Timestamp,
    persist: bool,
) -> Result<(Versioned, Vec<Effect>), CommitError> {
    let mut record = current.record.clone();
    let mut effects = Vec::new();
    for ev in events {
        let t = machine::apply(&record, ev, now)?;
        record = t.record;
        effects.extend(t.effects);
    }
    let revision = if persist {
        store.update(&record, current.revision).await?
    } else {
        current.revision
    };
    publish(client, &record, &effects).await;
    Ok((Versioned { record, revision }, effects))
}

/// Publishes the `Emit` effects of a written record.
pub async fn publish(client: &async_nats::Client, record: &crate::task::TaskRecord, effects: &[Effect]) {
    for e in effects {
        if let Effect::Emit(status) = e {
            events::emit(client, record, *status).await;
        }
    }
}
