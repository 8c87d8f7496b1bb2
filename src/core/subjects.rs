//! Every subject, stream, consumer, bucket and header name jetask uses, built in one place.

/// Stream holding submissions until intake has recorded them and a dispatcher has finished them.
pub const SUBMIT_STREAM: &str = "JETASK_SUBMIT";
/// Subjects of that stream.
pub const SUBMIT_ALL: &str = "jetask.submit.>";
/// Durable consumer of intake: sees every submission once, to record it.
pub const INTAKE_CONSUMER: &str = "intake";
/// Bucket of task records, keyed by task ID.
pub const TASKS_BUCKET: &str = "JETASK_TASKS";
/// Bucket of function specs, keyed by function name.
pub const FUNCTIONS_BUCKET: &str = "JETASK_FUNCTIONS";
/// Bucket of recurring schedules, keyed by schedule name.
pub const SCHEDULES_BUCKET: &str = "JETASK_SCHEDULES";
/// Bucket of each schedule's last handled moment (milliseconds since the epoch).
pub const FIRES_BUCKET: &str = "JETASK_SCHEDULE_FIRES";
/// Which replicas are alive and what they hold of each function's concurrency.
pub const REPLICAS_BUCKET: &str = "JETASK_REPLICAS";
/// Work-queue stream of result deliveries (webhooks, NATS subjects, chained functions).
pub const CALLBACK_STREAM: &str = "JETASK_CALLBACKS";
pub const CALLBACK_DELIVER: &str = "jetask.callback.deliver";
/// Durable consumer of deliveries, shared by every replica.
pub const CALLBACK_CONSUMER: &str = "deliver";
/// Core-NATS subject on which stop requests reach the replica holding an attempt.
pub const CONTROL_STOP: &str = "jetask.control.stop";
/// Core-NATS subject telling the replica holding a long attempt that its record changed
/// (completed through another replica).
pub const CONTROL_WAKE: &str = "jetask.control.wake";
pub const CONTROL_ALL: &str = "jetask.control.*";

pub fn submit(function: &str) -> String {
    format!("jetask.submit.{function}")
}

/// What a submission subject has after `jetask.submit.` (a function name when well formed).
pub fn after_submit(subject: &str) -> &str {
    subject.strip_prefix("jetask.submit.").unwrap_or_default()
}

/// A submission subject's function and, when it has a token after the function, the user NATS
/// vouches for. Under the shipped authorization (nats-config/auth.conf) a tenant account's
/// `jetask.submit.<function>` reaches jetask's account as `jetask.submit.<function>.<tenant>`
/// through its service import, so only that tenant (and jetask's own account) can publish
/// there: a header could be forged, the subject cannot. The user is the rest of the subject,
/// checked by the caller (`a.b` is not a user name).
pub fn submit_parts(subject: &str) -> (&str, Option<&str>) {
    let rest = after_submit(subject);
    match rest.split_once('.') {
        Some((function, user)) => (function, Some(user)),
        None => (rest, None),
    }
}

/// The submission subject of `function` as a tenant `user`'s import delivers it.
pub fn submit_as(function: &str, user: &str) -> String {
    format!("jetask.submit.{function}.{user}")
}

/// Durable dispatch consumer of one function, shared by every replica.
pub fn dispatch_consumer(function: &str) -> String {
    format!("fn-{function}")
}

pub fn function_of_consumer(consumer: &str) -> Option<&str> {
    consumer.strip_prefix("fn-")
}

/// A task of `function` named for a head start on its queue (see [`crate::engine::fair`]).
pub fn expedite(function: &str) -> String {
    format!("jetask.expedite.{function}")
}

pub fn event(function: &str, status: crate::core::task::Status) -> String {
    format!("jetask.events.{function}.{status}")
}

/// The same event on a subject that names its user, so that the shipped authorization can give
/// each tenant account its own events only: the account imports `jetask.user.<tenant>.events.>`
/// as its `jetask.events.>` (nats-config/auth.conf).
pub fn user_event(user: &str, function: &str, status: crate::core::task::Status) -> String {
    format!("jetask.user.{user}.events.{function}.{status}")
}

/// The subject a record is written to in the KV stream.
pub fn task_key_subject(id: &str) -> String {
    format!("$KV.{TASKS_BUCKET}.{id}")
}

/// Headers of submissions (CONTRACT §3.1) and of calls (§5).
pub mod headers {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const DELAY: &str = "Jetask-Delay";
    pub const NOT_BEFORE: &str = "Jetask-Not-Before";
    pub const USER: &str = "Jetask-User";
    /// Added by nats-server to a request that crossed a service import (JSON naming the
    /// requester's account, `acc`); the server overwrites any value the requester sent.
    pub const REQUEST_INFO: &str = "Nats-Request-Info";
    pub const CALLBACK: &str = "Jetask-Callback";
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TASK_ID: &str = "Jetask-Task-Id";
    pub const FUNCTION: &str = "Jetask-Function";
    pub const ATTEMPT: &str = "Jetask-Attempt";
    pub const DEADLINE: &str = "Jetask-Deadline";
    pub const ASYNC: &str = "Jetask-Async";
    /// Set on the submission of a replay: the task it replays.
    pub const REPLAY_OF: &str = "Jetask-Replay-Of";
    /// Set on the submission made by a `function:` destination: the task that triggered it.
    pub const TRIGGERED_BY: &str = "Jetask-Triggered-By";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_subjects_round_trip() {
        assert_eq!(after_submit(&submit("resize")), "resize");
        assert_eq!(after_submit("jetask.submit.a.b"), "a.b");
        assert_eq!(submit_parts(&submit("resize")), ("resize", None));
        assert_eq!(submit_parts(&submit_as("resize", "alice")), ("resize", Some("alice")));
        assert_eq!(submit_parts("jetask.submit.a.b.c"), ("a", Some("b.c")));
        assert_eq!(
            user_event("alice", "resize", crate::core::task::Status::Succeeded),
            "jetask.user.alice.events.resize.Succeeded"
        );
        assert_eq!(function_of_consumer(&dispatch_consumer("resize")), Some("resize"));
        assert_eq!(
            event("resize", crate::core::task::Status::Succeeded),
            "jetask.events.resize.Succeeded"
        );
    }
}
