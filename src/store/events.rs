//! State changes published on `jetask.events.<function>.<status>` (CONTRACT §7), the record
//! without input as body, so that any NATS client can follow tasks; and again on
//! `jetask.user.<user>.events.<function>.<status>`, so that NATS authorization can give each
//! tenant only its own.

use crate::core::subjects;
use crate::core::task::{Serialized, Status, TaskRecord};

/// Publishes the event of `record` reaching `status`, its body from `bodies` (the record as
/// written, serialized once for the write and all its events); `per_user`: also on the user's
/// subject.
pub async fn emit(
    client: &async_nats::Client,
    record: &TaskRecord,
    bodies: &Serialized,
    status: Status,
    per_user: bool,
) {
    // A submission to a malformed subject names no function that could carry events.
    if !crate::core::task::valid_function_name(&record.function) {
        return;
    }
    // A write may carry several transitions; each event shows the state it announces.
    let body: bytes::Bytes = bodies.event(status).into();
    if let Err(e) = client
        .publish(subjects::event(&record.function, status), body.clone())
        .await
    {
        tracing::warn!(task_id = %record.id, error = %e, "cannot publish event");
    }
    // The copy that names the user is what a tenant account imports (nats-config/auth.conf):
    // `jetask.events.>` itself carries every user's tasks. The body is shared, not copied.
    if per_user && crate::core::task::valid_user(&record.user) {
        if let Err(e) = client
            .publish(subjects::user_event(&record.user, &record.function, status), body)
            .await
        {
            tracing::warn!(task_id = %record.id, error = %e, "cannot publish user event");
        }
    }
}
