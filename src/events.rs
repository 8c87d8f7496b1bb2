//! State changes published on `jetask.events.<function>.<status>` (CONTRACT §7), the record
//! without input as body, so that any NATS client can follow tasks.

use crate::subjects;
use crate::task::{Status, TaskRecord};

pub async fn emit(client: &async_nats::Client, record: &TaskRecord, status: Status) {
    // A submission to a malformed subject names no function that could carry events.
    if !crate::task::valid_function_name(&record.function) {
        return;
    }
    // A write may carry several transitions; each event shows the state it announces.
    let body = record.event_json(status);
    if let Err(e) = client
        .publish(subjects::event(&record.function, status), body.into())
        .await
    {
        tracing::warn!(task_id = %record.id, error = %e, "cannot publish event");
    }
}
