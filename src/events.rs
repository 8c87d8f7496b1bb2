//! State changes published on `jetask.events.<function>.<status>` (CONTRACT §7), the record
//! without input as body, so that any NATS client can follow tasks.

use crate::subjects;
use crate::task::{Status, TaskRecord};

pub async fn emit(client: &async_nats::Client, record: &TaskRecord, status: Status) {
    // A submission to a malformed subject names no function that could carry events.
    if !crate::task::valid_function_name(&record.function) {
        return;
    }
    let mut view = record.to_view(false);
    // A batch of transitions is written at once; each event shows the state it announces.
    if status != record.status {
        view["status"] = serde_json::Value::String(status.to_string());
    }
    let body = serde_json::to_vec(&view).unwrap_or_default();
    if let Err(e) = client
        .publish(subjects::event(&record.function, status), body.into())
        .await
    {
        tracing::warn!(task_id = %record.id, error = %e, "cannot publish event");
    }
}
