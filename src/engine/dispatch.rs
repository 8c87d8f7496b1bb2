//! Dispatch: one loop per function and replica over the function's durable consumer, so that a
//! slow or failing function never holds up another. A loop pulls only as many submissions as it
//! has free concurrency slots (messages held back would time out while waiting), and each task
//! is acknowledged only once its outcome is recorded: a crash at any point loses nothing.

use crate::core::function::FunctionSpec;
use crate::core::function::RateLimit;
use crate::core::limits::{self, Reservations};
use crate::core::machine::{self, Event};
use crate::core::outcome::{self, Outcome};
use crate::core::subjects;
use crate::core::submission;
use crate::core::task::{ErrorType, Status, TaskError};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::engine::invoke::{self, Call};
use crate::engine::records::{self, CommitError};
use crate::store::kv::{StoreError, Versioned};
use crate::store::setup;
use async_nats::jetstream::{self, message::Acker, AckKind};
use futures::{FutureExt, StreamExt};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Largest pull request of one loop.
const MAX_BATCH: usize = 256;

/// Starts and stops function loops as functions come and go, until `shutdown`. In-flight
/// attempts run on `attempts`, which the caller drains within the grace period.
pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken, attempts: TaskTracker) {
    let mut loops: HashMap<String, CancellationToken> = HashMap::new();
    let mut changed = ctx.registry.subscribe();
    loop {
        let mut wanted: Vec<String> = ctx.registry.names();
        // Consumers of deleted functions are drained too: their tasks become Invalid.
        if let Ok(names) = consumer_functions(&ctx).await {
            wanted.extend(names);
        }
        for name in wanted {
            if loops.contains_key(&name) {
                continue;
            }
            let stop = shutdown.child_token();
            loops.insert(name.clone(), stop.clone());
            tokio::spawn(function_loop(ctx.clone(), name, stop, attempts.clone()));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

async fn consumer_functions(ctx: &Ctx) -> Result<Vec<String>, String> {
    let mut names = ctx.nats.submit.consumer_names();
    let mut out = Vec::new();
    while let Some(n) = names.next().await {
        let n = n.map_err(|e| e.to_string())?;
        if let Some(f) = subjects::function_of_consumer(&n) {
            out.push(f.to_string());
        }
    }
    Ok(out)
}

/// A function's `rate_limit`, this replica's share of it, enforced with governor before pulling.
#[derive(Default)]
struct FunctionRate {
    current: Option<(RateLimit, usize, Arc<DefaultDirectRateLimiter>)>,
}

impl FunctionRate {
    fn limiter(&mut self, limit: &RateLimit, replicas: usize) -> Arc<DefaultDirectRateLimiter> {
        match &self.current {
            Some((l, n, lim)) if l == limit && *n == replicas => lim.clone(),
            _ => {
                let share = limits::rate_share(limit, replicas);
                let lim = Arc::new(RateLimiter::direct(limits::quota(&share)));
                self.current = Some((limit.clone(), replicas, lim.clone()));
                lim
            }
        }
    }
}

/// A function's `user_rate_limit`: each user's tasks get start times at the user's rate (this
/// replica's share of it); a task whose time has not come is parked in JetStream until then.
struct UserRates {
    current: Option<(RateLimit, usize)>,
    reservations: Reservations,
    /// Tasks parked until their reserved start, so that they are not charged again on return.
    parked: HashMap<String, Instant>,
    origin: Instant,
    pruned: Instant,
}

impl UserRates {
    fn new() -> UserRates {
        let none = RateLimit {
            per_second: 1.0,
            burst: 1,
        };
        UserRates {
            current: None,
            reservations: Reservations::new(&none),
            parked: HashMap::new(),
            origin: Instant::now(),
            pruned: Instant::now(),
        }
    }

    /// How long task `id` of `user` must still wait; `None`: it may start now.
    fn wait(&mut self, id: &str, user: &str, limit: &RateLimit, replicas: usize) -> Option<Duration> {
        if self.current.as_ref() != Some(&(limit.clone(), replicas)) {
            self.reservations = Reservations::new(&limits::rate_share(limit, replicas));
            self.current = Some((limit.clone(), replicas));
        }
        let now = Instant::now();
        if now.duration_since(self.pruned) > Duration::from_secs(60) {
            self.pruned = now;
            self.reservations.prune(now - self.origin);
            // Parked tasks that came back to another replica.
            self.parked.retain(|_, due| *due + Duration::from_secs(60) > now);
        }
        if let Some(due) = self.parked.remove(id) {
            if due <= now + Duration::from_millis(2) {
                return None;
            }
            self.parked.insert(id.to_string(), due);
            return Some(due - now);
        }
        let wait = self.reservations.reserve(user, now - self.origin);
        if wait <= Duration::from_millis(2) {
            return None;
        }
        self.parked.insert(id.to_string(), now + wait);
        Some(wait)
    }
}

/// The task ID and user a submission names in its headers, as its record has them.
fn id_and_user(msg: &jetstream::Message) -> (String, String) {
    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
    let header = |k: &str| msg.headers.as_ref().and_then(|h| h.get(k)).map(|v| v.as_str());
    let (id, user, _) = submission::id_and_user_on(msg.subject.as_str(), header, seq);
    (id, user)
}

/// Parks a submission in JetStream for `wait` (a delayed redelivery): no slot, no read.
fn park(msg: jetstream::Message, wait: Duration) {
    tokio::spawn(async move {
        if let Err(e) = msg.ack_with(AckKind::Nak(Some(wait))).await {
            tracing::warn!(error = %e, "cannot park a task; it comes back after the ack wait");
        }
    });
}

/// Notes in a waiting task's record why it waits (once: the same note is not repeated).
/// The record may not exist yet (intake records a submission in parallel with its first
/// delivery): it is created from the submission, as a first delivery does.
async fn note_wait(ctx: &Ctx, parsed: submission::Parsed, accepted_at: Timestamp, why: &str) {
    let id = parsed.task.id.clone();
    let Ok(Some(mut v)) = load_or_create(ctx, parsed, accepted_at).await else {
        return;
    };
    for _ in 0..3 {
        let Some(noted) = machine::note_wait(&v.record, why, Timestamp::now()) else {
            return;
        };
        match ctx.tasks.update(&noted, v.revision).await {
            Err(StoreError::Conflict) => match ctx.tasks.get(&id).await {
                Ok(Some(fresh)) => v = fresh,
                _ => return,
            },
            _ => return,
        }
    }
}

/// A submission read from its message, and when JetStream accepted it.
fn parse(ctx: &Ctx, function: &str, msg: &async_nats::Message, info: &jetstream::message::Info) -> submission::Parsed {
    submission::from_message_on(
        msg.subject.as_str(),
        function,
        |k| msg.headers.as_ref().and_then(|hm| hm.get(k)).map(|v| v.as_str()),
        &msg.payload,
        info.stream_sequence,
        Timestamp(info.published.timestamp_millis()),
        ctx.config.retention(),
        ctx.config.limits.max_payload,
        &ctx.config.rules(),
    )
}

async fn function_loop(ctx: Arc<Ctx>, name: String, stop: CancellationToken, attempts: TaskTracker) {
    let ack_wait = ctx.config.dispatch.ack_wait.0;
    let slots = ctx.replicas.slots(&name);
    let mut shown_limit = None;
    let mut rate = FunctionRate::default();
    let mut users = UserRates::new();
    // Head starts (see `fair`): one replica of those following the function takes each.
    let mut lane = ctx
        .nats
        .client
        .queue_subscribe(subjects::expedite(&name), "jetask-dispatch".into())
        .await
        .ok();
    let mut consumer = None;
    while !stop.is_cancelled() {
        let c = match &consumer {
            Some(c) => c,
            None => match setup::ensure_dispatch_consumer(&ctx.nats.submit, &name, ack_wait).await {
                Ok(c) => consumer.insert(c),
                Err(e) => {
                    tracing::warn!(function = %name, error = %e, "cannot create dispatch consumer; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        // This replica's part of the function's concurrency, given what the others hold.
        let spec = ctx.registry.get(&name);
        let total = spec.as_deref().map_or(16, |s| s.concurrency.max).max(1);
        let range = spec
            .as_deref()
            .filter(|s| s.concurrency.adaptive)
            .map(|s| (s.concurrency.min.clamp(1, total), total));
        let cap = slots.adaptive_limit(range).unwrap_or(total);
        let limit = ctx.replicas.concurrency(&name, total, cap);
        if shown_limit != Some(limit) {
            ctx.metrics.set_concurrency_limit(&name, limit as usize);
            shown_limit = Some(limit);
        }
        let mut free = limit.saturating_sub(slots.in_flight.load(Ordering::Acquire)) as usize;
        // Tasks named for a head start take free slots before the queue does.
        while free > 0 {
            let Some(Some(m)) = lane.as_mut().map(|l| l.next().now_or_never().flatten()) else {
                break;
            };
            let id = String::from_utf8_lossy(&m.payload).to_string();
            free -= 1;
            ctx.replicas.attempt(&slots, true);
            let (ctx, name, slots) = (ctx.clone(), name.clone(), slots.clone());
            attempts.spawn(async move {
                expedite(&ctx, &name, &id).await;
                ctx.replicas.attempt(&slots, false);
            });
        }
        if free == 0 {
            slots.tick();
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = slots.freed.notified() => {}
                _ = ctx.replicas.peers_changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        }
        // Pull no more than the rate allows now: messages held back would time out.
        let mut want = free.min(MAX_BATCH);
        let mut waited = None;
        let rate_limit = spec.as_deref().and_then(|s| s.rate_limit.clone());
        if let Some(rl) = &rate_limit {
            let limiter = rate.limiter(rl, ctx.replicas.count());
            if limiter.check().is_err() {
                ctx.metrics.throttled(&name, "function");
                let since = Instant::now();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = limiter.until_ready() => {}
                }
                waited = Some(since.elapsed());
            }
            let mut n = 1;
            while n < want && limiter.check().is_ok() {
                n += 1;
            }
            want = n;
        }
        let expires = if rate_limit.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        let batch = c.batch().max_messages(want).expires(expires).messages().await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(function = %name, error = %e, "pull failed; retrying");
                consumer = None;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                m = batch.next() => m,
            };
            match next {
                Some(Ok(msg)) => {
                    // A task not yet due waits in JetStream, holding no slot and costing no read.
                    if let Some(wait) = not_yet_due(&ctx, &msg) {
                        park(msg, wait);
                        continue;
                    }
                    // Unreadable headers name no user to charge: such a task is only recorded.
                    let readable = crate::engine::poison::flagged(msg.headers.as_ref()).is_none();
                    if let Some(per_user) = spec
                        .as_deref()
                        .and_then(|s| s.user_rate_limit.as_ref())
                        .filter(|_| readable)
                    {
                        let (id, user) = id_and_user(&msg);
                        let first = !users.parked.contains_key(&id);
                        if let Some(wait) = users.wait(&id, &user, per_user, ctx.replicas.count()) {
                            ctx.metrics.throttled(&name, "user");
                            if let (true, Ok(info)) = (first, msg.info()) {
                                let parsed = parse(&ctx, &name, &msg, &info);
                                let accepted_at = Timestamp(info.published.timestamp_millis());
                                let ctx = ctx.clone();
                                let why = format!("waiting for user_rate_limit of user {user}");
                                tokio::spawn(async move { note_wait(&ctx, parsed, accepted_at, &why).await });
                            }
                            park(msg, wait);
                            continue;
                        }
                    }
                    ctx.replicas.attempt(&slots, true);
                    let (ctx, name, slots) = (ctx.clone(), name.clone(), slots.clone());
                    attempts.spawn(async move {
                        handle(&ctx, &name, msg, waited).await;
                        ctx.replicas.attempt(&slots, false);
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(function = %name, error = %e, "pull batch ended");
                    break;
                }
                None => break,
            }
        }
    }
}

/// How long until a submission's `Jetask-Delay` / `Jetask-Not-Before` comes due, read from its
/// headers alone; `None` when it is due (or its headers are for the record to judge).
fn not_yet_due(ctx: &Ctx, msg: &jetstream::Message) -> Option<Duration> {
    let headers = msg.headers.as_ref()?;
    // Unreadable headers are recorded at once, whatever delay the readable ones ask for.
    if crate::engine::poison::flagged(Some(headers)).is_some() {
        return None;
    }
    let delay = headers.get(crate::core::subjects::headers::DELAY).map(|v| v.as_str());
    let at = headers
        .get(crate::core::subjects::headers::NOT_BEFORE)
        .map(|v| v.as_str());
    if delay.is_none() && at.is_none() {
        return None;
    }
    let published = Timestamp(msg.info().ok()?.published.timestamp_millis());
    let due = submission::not_before(
        delay.map(|d| (crate::core::subjects::headers::DELAY, d)),
        at.map(|t| (crate::core::subjects::headers::NOT_BEFORE, t)),
        published,
        ctx.config.retention(),
    )
    .ok()??;
    let wait = Timestamp::now().until(due);
    (wait > Duration::from_millis(2)).then_some(wait)
}

/// What to tell JetStream about a submission.
enum Settle {
    /// Done for good.
    Ack,
    /// Bring it back after this long.
    Later(Duration),
    /// Never deliver it again: it cannot be processed (see [`crate::engine::poison`]).
    Terminate,
}

/// A delivery whose headers async-nats could not read: recorded `Invalid` (by this delivery or
/// intake, whichever comes first) and terminated. Only a failed read of its stored headers or
/// of the store brings it back.
async fn settle_unreadable(
    ctx: &Ctx,
    function: &str,
    msg: &jetstream::Message,
    seq: u64,
    delivered: i64,
    accepted_at: Timestamp,
    flag: &str,
) -> AckKind {
    let later = AckKind::Nak(Some(Duration::from_secs(1)));
    let parsed = match crate::engine::poison::parse(ctx, function, msg, seq, accepted_at, flag).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(stream_sequence = seq, error = %e, "cannot read a submission's headers; will retry");
            return later;
        }
    };
    let t = machine::create(parsed.task, parsed.invalid, accepted_at);
    let why = t.record.error.as_ref().map_or(String::new(), |e| e.message.clone());
    let id = t.record.id.clone();
    let persist = ctx.function(function).await.is_none_or(|s| s.task_mode);
    if !persist {
        // Task mode off: no record, only its events, once.
        if delivered == 1 {
            records::publish(ctx, &t.record, &t.effects).await;
            crate::engine::poison::report(ctx, crate::engine::poison::Kind::UnreadableHeaders, seq, &id, &why);
        }
        return AckKind::Term;
    }
    match ctx.tasks.create(&t.record).await {
        Ok(_) => {
            records::publish(ctx, &t.record, &t.effects).await;
            crate::engine::poison::report(ctx, crate::engine::poison::Kind::UnreadableHeaders, seq, &id, &why);
            AckKind::Term
        }
        Err(StoreError::Exists) => AckKind::Term,
        Err(e) => {
            tracing::warn!(stream_sequence = seq, error = %e, "cannot record a poison submission; will retry");
            later
        }
    }
}

/// Handles one delivery of a submission.
async fn handle(ctx: &Ctx, function: &str, msg: jetstream::Message, waited: Option<Duration>) {
    let Ok(info) = msg.info() else {
        // Not a JetStream delivery: nothing to run or record, and redelivery would not help.
        crate::engine::poison::report(
            ctx,
            crate::engine::poison::Kind::NoMetadata,
            0,
            "",
            "a delivery without JetStream metadata",
        );
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let (seq, delivered) = (info.stream_sequence, info.delivered);
    let accepted_at = Timestamp(info.published.timestamp_millis());
    if let Some(flag) = crate::engine::poison::flagged(msg.headers.as_ref()) {
        let settle = settle_unreadable(ctx, function, &msg, seq, delivered, accepted_at, &flag).await;
        if let Err(e) = msg.ack_with(settle).await {
            tracing::warn!(error = %e, "cannot settle submission; it will be redelivered");
        }
        return;
    }
    let parsed = parse(ctx, function, &msg, &info);
    let (_, acker) = msg.split();
    let spec = ctx.function(function).await;
    let span = tracing::info_span!("task", task_id = %parsed.task.id, function = %function);
    let persist = spec.as_ref().map(|s| s.task_mode).unwrap_or(true);
    let id = parsed.task.id.clone();
    let settle = async {
        let mut task = if persist {
            match find(ctx, parsed, accepted_at, delivered).await {
                Ok(Some(v)) if v.record.seq == seq => v,
                Ok(Some(v)) => {
                    tracing::info!(
                        seq,
                        recorded_seq = v.record.seq,
                        "not run: the task ID is recorded for another submission (a duplicate)"
                    );
                    return Settle::Ack;
                }
                Ok(None) => {
                    tracing::info!(seq, "not run: the task's record was deleted");
                    return Settle::Ack;
                }
                // Its record cannot be decoded: no delivery will change that (a few more in
                // case another replica is mid-upgrade), so it is not redelivered for ever.
                Err(e @ StoreError::Corrupt(_)) if delivered >= crate::engine::poison::MAX_FAILED_DELIVERIES => {
                    crate::engine::poison::report(
                        ctx,
                        crate::engine::poison::Kind::Unrecordable,
                        seq,
                        &id,
                        &e.to_string(),
                    );
                    return Settle::Terminate;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read task record; will retry");
                    return Settle::Later(Duration::from_secs(1));
                }
            }
        } else {
            // Task mode off: the same lifecycle, kept in memory only; attempts from deliveries.
            let t = machine::create(parsed.task, parsed.invalid, accepted_at);
            if delivered == 1 {
                records::publish(ctx, &t.record, &t.effects).await;
            }
            let mut record = t.record;
            if record.status == Status::Enqueued && delivered > 1 {
                record.status = Status::Retrying;
                record.attempts = u32::try_from(delivered - 1).unwrap_or(u32::MAX);
            }
            Versioned { record, revision: 0 }
        };
        // A wait for the function's rate limit goes into the history with the start.
        if let Some(w) = waited.filter(|w| *w >= Duration::from_millis(1)) {
            let why = format!(
                "waited {} for rate_limit",
                crate::core::duration::Dur(Duration::from_millis(w.as_millis() as u64))
            );
            if let Some(noted) = machine::note_wait(&task.record, &why, Timestamp::now()) {
                task.record = noted;
            }
        }
        drive(ctx, task, spec.as_deref(), Some(&acker), persist).await
    }
    .instrument(span)
    .await;
    let kind = match settle {
        Settle::Ack => AckKind::Ack,
        Settle::Later(d) => AckKind::Nak(Some(d.max(Duration::from_millis(1)))),
        Settle::Terminate => AckKind::Term,
    };
    if let Err(e) = acker.ack_with(kind).await {
        tracing::warn!(error = %e, "cannot settle submission; it will be redelivered");
    }
}

/// A first delivery younger than this is likely ahead of intake: its record is built from the
/// submission and created by its first write, rather than looked for first.
const FRESH: Duration = Duration::from_millis(100);

/// The record a delivery works on: read back; or rebuilt from the submission when intake has
/// just created it (see [`crate::store::revisions`]) or, on a first delivery, is likely not to have yet
/// (`revision` 0: the delivery's first write creates it, see [`records::commit`]). Either guess
/// is checked by the write's revision: a wrong one costs a failed write and a read. `None`:
/// nothing to do.
async fn find(
    ctx: &Ctx,
    parsed: submission::Parsed,
    accepted_at: Timestamp,
    delivered: i64,
) -> Result<Option<Versioned>, StoreError> {
    // Also after a park (a delayed task come due): nothing else wrote its record meanwhile.
    let known = ctx.revisions.take(&parsed.task.id, parsed.task.seq);
    let fresh = delivered == 1 && u128::from(Timestamp::now().since(accepted_at)) < FRESH.as_millis();
    if known.is_none() && !fresh {
        return load_or_create(ctx, parsed, accepted_at).await;
    }
    let t = machine::create(parsed.task, parsed.invalid, accepted_at);
    // Invalid from the start: nothing to decide, written at once.
    if known.is_none() && t.record.status.is_terminal() {
        return create_or_read(ctx, t).await;
    }
    Ok(Some(Versioned {
        record: t.record,
        revision: known.unwrap_or(0),
    }))
}

/// The record of a submission, creating it when intake has not yet. `None`: nothing to do.
async fn load_or_create(
    ctx: &Ctx,
    parsed: submission::Parsed,
    accepted_at: Timestamp,
) -> Result<Option<Versioned>, StoreError> {
    if let Some(v) = ctx.tasks.get(&parsed.task.id).await? {
        return Ok(Some(v));
    }
    create_or_read(ctx, machine::create(parsed.task, parsed.invalid, accepted_at)).await
}

/// Writes a new record, or reads the one already there.
async fn create_or_read(ctx: &Ctx, t: machine::Transition) -> Result<Option<Versioned>, StoreError> {
    match ctx.tasks.create(&t.record).await {
        Ok(revision) => {
            records::publish(ctx, &t.record, &t.effects).await;
            Ok(Some(Versioned {
                record: t.record,
                revision,
            }))
        }
        Err(StoreError::Exists) => ctx.tasks.get(&t.record.id).await,
        Err(e) => Err(e),
    }
}

/// Moves a task on until it must wait or is done.
async fn drive(
    ctx: &Ctx,
    mut v: Versioned,
    spec: Option<&FunctionSpec>,
    acker: Option<&Acker>,
    persist: bool,
) -> Settle {
    // Whether the record was read as it is (not written by this delivery).
    let mut as_found = true;
    loop {
        let now = Timestamp::now();
        let r = &v.record;
        let events = match r.status {
            s if s.is_terminal() => {
                // Found finished with its delivery pending (a crash between the write and the
                // queueing): queue it again, deduplicated. A write of this delivery queued it.
                if let Some(job) = crate::engine::callback::pending_job(r).filter(|_| as_found) {
                    if crate::engine::callback::enqueue(ctx, &job).await.is_err() {
                        return Settle::Later(Duration::from_secs(1));
                    }
                }
                if as_found {
                    tracing::info!(status = %r.status, "not run: the task is already settled");
                }
                return Settle::Ack;
            }
            Status::Stopping => vec![Event::Stop],
            Status::Running if attempt_alive(ctx, r) => {
                // Its attempt is in flight on a live replica (a head start, or another
                // replica's): wait for it to finish.
                return Settle::Later(HOLDER_WAIT);
            }
            Status::Running if !ctx.replicas.can_judge() => {
                // This replica cannot tell a busy holder from a lost one (NATS is failing
                // over, or it has only just started): look again later.
                tracing::info!(holder = ?r.holder, "attempt holder's state unknown; waiting");
                return Settle::Later(HOLDER_WAIT);
            }
            Status::Running => {
                // Delivered again while recorded Running: the attempt's replica was lost.
                let retry_at = spec.filter(|s| r.attempts < s.max_attempts).map(|_| now);
                let error = TaskError::new(
                    ErrorType::Unreachable,
                    "attempt interrupted: its dispatcher stopped before recording an outcome",
                );
                vec![Event::Fail {
                    error,
                    retry_at,
                    detail: "interrupted".into(),
                }]
            }
            Status::Enqueued | Status::Dequeued | Status::Retrying => {
                if let Some(at) = r.next_attempt_at.or(r.not_before).filter(|at| *at > now) {
                    return Settle::Later(now.until(at));
                }
                match spec {
                    Some(s) if s.enabled => {
                        if outcome::is_expired(r, s, now) {
                            vec![Event::Expire {
                                reason: format!("older than max_event_age {}", s.max_event_age),
                            }]
                        } else {
                            let start = Event::Start {
                                attempt: r.attempts + 1,
                            };
                            if r.status == Status::Dequeued {
                                vec![start]
                            } else {
                                vec![Event::Dequeue, start]
                            }
                        }
                    }
                    _ => {
                        let why = match spec {
                            Some(_) => format!("function {:?} is disabled", r.function),
                            None => format!("no such function: {:?}", r.function),
                        };
                        if r.status == Status::Enqueued {
                            vec![Event::Invalidate { reason: why }]
                        } else {
                            vec![Event::Expire {
                                reason: format!("cannot run any more: {why}"),
                            }]
                        }
                    }
                }
            }
            _ => {
                tracing::info!(status = %r.status, "not run: nothing to do in this state");
                return Settle::Ack;
            }
        };
        // An attempt is run only by the replica whose own write put the record into `Running`
        // for it: claimed here before the write (so that another delivery on this replica sees
        // it held), and run only if that write, not another writer's, is what landed.
        let start = events.iter().find_map(|e| match e {
            Event::Start { attempt } => Some(*attempt),
            _ => None,
        });
        let claim = match start {
            Some(_) => match ctx.control.claim(&v.record.id) {
                Some(guard) => Some(guard),
                // Another delivery of this task on this replica is starting it.
                None => return Settle::Later(HOLDER_WAIT),
            },
            None => None,
        };
        if start.is_some() {
            v.record.holder = Some(ctx.replicas.id.clone());
        }
        let written;
        (v, written) = match commit_or_reload(ctx, &v, events, now, persist, spec).await {
            Ok(next) => next,
            Err(settle) => return settle,
        };
        as_found = !written;
        let ours = written && v.record.status == Status::Running && Some(v.record.attempts) == start;
        if let (true, Some(guard), Some(spec)) = (ours, claim, spec) {
            (v, as_found) = match attempt(ctx, v, spec, acker, persist, guard).await {
                Ok(next) => next,
                Err(settle) => return settle,
            };
        }
    }
}

/// How long a delivery that finds its task running elsewhere waits before looking again.
const HOLDER_WAIT: Duration = Duration::from_secs(2);

/// Whether the attempt a `Running` record names is still in flight: on this replica, held in
/// its table of attempts; on another, that replica is alive.
fn attempt_alive(ctx: &Ctx, r: &crate::core::task::TaskRecord) -> bool {
    match r.holder.as_deref() {
        Some(h) if h == ctx.replicas.id => ctx.control.holds(&r.id),
        Some(h) => ctx.replicas.is_alive(h),
        None => false,
    }
}

/// Runs a task named for a head start (see [`crate::engine::fair`]) from its record, in a slot of this
/// replica: only while it is still waiting its turn and due.
async fn expedite(ctx: &Ctx, function: &str, id: &str) {
    let Ok(Some(v)) = ctx.tasks.get(id).await else { return };
    if v.record.status != Status::Enqueued || v.record.waiting_until().is_some_and(|t| t > Timestamp::now()) {
        return;
    }
    let spec = ctx.function(function).await;
    if !spec.as_deref().is_some_and(|s| s.task_mode && s.enabled) {
        return;
    }
    let span = tracing::info_span!("task", task_id = %id, function = %function, head_start = true);
    // What the submission's own delivery does next is decided when it comes: its settle here
    // has nothing to act on.
    let _ = drive(ctx, v, spec.as_deref(), None, true).instrument(span).await;
}

/// Writes `events` over `v` (creating it when `v` is not written yet): the record written and
/// `true`; or, on a lost race, the record as it now is (to be decided afresh) and `false`.
async fn commit_or_reload(
    ctx: &Ctx,
    v: &Versioned,
    events: Vec<Event>,
    now: Timestamp,
    persist: bool,
    spec: Option<&FunctionSpec>,
) -> Result<(Versioned, bool), Settle> {
    match records::commit(ctx, v, events, now, persist, spec).await {
        Ok((next, _)) => Ok((next, true)),
        Err(CommitError::Store(StoreError::Conflict)) => match ctx.tasks.get(&v.record.id).await {
            // The ID's record is another submission's: this one is a duplicate.
            Ok(Some(fresh)) if fresh.record.seq != v.record.seq => {
                tracing::info!(
                    seq = v.record.seq,
                    recorded_seq = fresh.record.seq,
                    "not run: the task ID is recorded for another submission (a duplicate)"
                );
                Err(Settle::Ack)
            }
            Ok(Some(fresh)) => Ok((fresh, false)),
            Ok(None) => {
                tracing::info!("not run: the task's record was deleted");
                Err(Settle::Ack)
            }
            Err(_) => Err(Settle::Later(Duration::from_secs(1))),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot record transition; will retry");
            Err(Settle::Later(Duration::from_secs(1)))
        }
    }
}

/// Runs one attempt of a `Running` task, which this replica's own write started and `guard`
/// holds, and records its outcome, in the attempt's log span. The record afterwards, and
/// whether it was read back (another writer's) rather than written by this attempt.
async fn attempt(
    ctx: &Ctx,
    v: Versioned,
    spec: &FunctionSpec,
    acker: Option<&Acker>,
    persist: bool,
    guard: crate::engine::control::AttemptGuard,
) -> Result<(Versioned, bool), Settle> {
    let span = tracing::info_span!("attempt", attempt = v.record.attempts, trace_id = tracing::field::Empty);
    // Deriving a trace ID costs a hash: only when the span is logged.
    if !span.is_disabled() {
        let trace = crate::core::trace::TraceContext::of_task(v.record.traceparent.as_deref(), &v.record.id);
        span.record("trace_id", tracing::field::display(&trace.trace_id));
    }
    // Before the span is entered: with OpenTelemetry on, its parent is the submitter's span.
    let traceparent = crate::core::trace::outgoing(&span, v.record.traceparent.as_deref());
    run_attempt(ctx, v, spec, acker, persist, guard, traceparent)
        .instrument(span)
        .await
}

async fn run_attempt(
    ctx: &Ctx,
    v: Versioned,
    spec: &FunctionSpec,
    acker: Option<&Acker>,
    persist: bool,
    guard: crate::engine::control::AttemptGuard,
    traceparent: Option<String>,
) -> Result<(Versioned, bool), Settle> {
    let r = &v.record;
    let _in_flight = ctx.metrics.in_flight(&r.function);
    let slots = ctx.replicas.slots(&r.function);
    let running = slots.in_flight.load(Ordering::Acquire);
    let started = std::time::Instant::now();
    let call = invoke::call(
        &ctx.http,
        Call {
            endpoint: spec.endpoint.url(),
            task_id: &r.id,
            function: &r.function,
            attempt: r.attempts,
            timeout: spec.timeout.0,
            content_type: r.content_type.as_deref(),
            traceparent: traceparent.as_deref(),
            body: r.input_bytes().into(),
            max_result: ctx.config.limits.max_result,
        },
    );
    tracing::debug!("calling function");
    let ack_wait = ctx.config.dispatch.ack_wait.0;
    let outcome = tokio::select! {
        o = keep_alive(call, acker, ack_wait) => Some(o),
        _ = guard.token.cancelled() => None,
    };
    let now = Timestamp::now();
    let signal = match &outcome {
        Some(Outcome::Success { .. } | Outcome::Fatal(_) | Outcome::Accepted) => limits::Signal::Answered,
        Some(Outcome::Throttled { .. }) => limits::Signal::Overloaded,
        Some(Outcome::Retryable(e)) if e.kind == ErrorType::Timeout => limits::Signal::Overloaded,
        _ => limits::Signal::Neutral,
    };
    slots.sample(started.elapsed(), signal, running);
    if let Some(Outcome::Throttled { .. }) = &outcome {
        ctx.metrics.throttled(&r.function, "endpoint");
    }
    if !matches!(outcome, Some(Outcome::Accepted)) || !persist {
        let label = crate::engine::metrics::outcome_label(outcome.as_ref());
        let took = started.elapsed();
        ctx.metrics.attempt(&r.function, &label, took);
        // Failures are worth a line at the default level; successes only when debugging.
        let took_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            Some(Outcome::Retryable(e) | Outcome::Fatal(e)) => {
                tracing::info!(outcome = %label, took_ms, error = %e.message, "attempt failed")
            }
            _ => tracing::debug!(outcome = %label, took_ms, "attempt finished"),
        }
    }
    let event = match outcome {
        // Aborted by a stop request: the record says Stopping; the caller finishes it.
        None => None,
        // Without a record there is nothing to complete: the 202 is the end (documented).
        Some(Outcome::Accepted) if !persist => Some(Event::Succeed {
            result: Default::default(),
            detail: "202".into(),
        }),
        Some(Outcome::Accepted) => {
            // Boxed: otherwise this rare path's future makes up most of every delivery's task (16 KB
            // of 22, allocated and copied for each delivery).
            let waiting = Box::pin(await_completion(ctx, &v, spec, &guard, persist));
            let waited = keep_alive(waiting, acker, ack_wait).await;
            let label = match &waited {
                Ok(next) if next.record.attempts == r.attempts => match next.record.status {
                    Status::Succeeded => "success",
                    Status::Stopped | Status::Stopping => "stopped",
                    _ => "async_failed",
                },
                _ => "async_unknown",
            };
            ctx.metrics.attempt(&r.function, label, started.elapsed());
            return waited.map(|next| (next, true));
        }
        Some(o) => outcome::decide(r, o, spec, ctx.config.limits.max_result, now, rand::random::<f64>()),
    };
    let Some(ev) = event else {
        drop(guard);
        return reload(ctx, &r.id).await.map(|fresh| (fresh, true));
    };
    let recorded = keep_alive(record_outcome(ctx, &v, ev, now, persist, spec), acker, ack_wait).await;
    drop(guard);
    recorded.map(|(next, written)| (next, !written))
}

/// How long an attempt's outcome is retried while JetStream cannot take it (a failover takes
/// 5–8 s), before the delivery is left to come back: given up at once, the outcome is lost and
/// the redelivery runs the task again as interrupted.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(20);

/// Writes an attempt's outcome, retrying what JetStream could not take; `(record, written)` as
/// [`commit_or_reload`].
async fn record_outcome(
    ctx: &Ctx,
    v: &Versioned,
    event: Event,
    now: Timestamp,
    persist: bool,
    spec: &FunctionSpec,
) -> Result<(Versioned, bool), Settle> {
    let deadline = Instant::now() + OUTCOME_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match commit_or_reload(ctx, v, vec![event.clone()], now, persist, Some(spec)).await {
            Err(Settle::Later(_)) if Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

async fn reload(ctx: &Ctx, id: &str) -> Result<Versioned, Settle> {
    match ctx.tasks.get(id).await {
        Ok(Some(fresh)) => Ok(fresh),
        Ok(None) => Err(Settle::Ack),
        Err(_) => Err(Settle::Later(Duration::from_secs(1))),
    }
}

/// How often a long attempt's holder reads its record even without being woken.
const LONG_TASK_POLL: Duration = Duration::from_secs(5);

/// A long task (`202` + `Jetask-Async: true`): holds the attempt, kept alive, until the function
/// completes it (through any replica), a stop, or a missed heartbeat or the attempt's timeout.
async fn await_completion(
    ctx: &Ctx,
    v: &Versioned,
    spec: &FunctionSpec,
    guard: &crate::engine::control::AttemptGuard,
    persist: bool,
) -> Result<Versioned, Settle> {
    let attempt = v.record.attempts;
    let mut current = match machine::mark_async(&v.record) {
        Ok(marked) => match commit_record(ctx, v, marked, persist).await {
            Ok(next) => next,
            Err(fresh) => fresh?,
        },
        Err(_) => v.clone(),
    };
    loop {
        let r = &current.record;
        if r.status != Status::Running || r.attempts != attempt {
            return Ok(current);
        }
        let now = Timestamp::now();
        if let Some(why) = machine::long_attempt_overdue(r, spec.heartbeat_timeout.0, spec.timeout.0, now) {
            let error = TaskError::new(ErrorType::Timeout, why);
            let ev = outcome::decide(r, Outcome::Retryable(error), spec, 0, now, rand::random::<f64>());
            return commit_or_reload(ctx, &current, ev.into_iter().collect(), now, persist, Some(spec))
                .await
                .map(|(next, _)| next);
        }
        let started = r.attempt_started_at.unwrap_or(now);
        let due = r
            .heartbeat_at
            .unwrap_or(started)
            .max(started)
            .plus(spec.heartbeat_timeout.0)
            .min(started.plus(spec.timeout.0));
        let wait = now.until(due).min(LONG_TASK_POLL) + Duration::from_millis(1);
        tokio::select! {
            _ = guard.token.cancelled() => {}
            _ = guard.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        current = reload(ctx, &r.id).await?;
    }
}

/// Writes a record changed outside the state machine (no transition); on a lost race, the
/// record as it now is.
async fn commit_record(
    ctx: &Ctx,
    v: &Versioned,
    record: crate::core::task::TaskRecord,
    persist: bool,
) -> Result<Versioned, Result<Versioned, Settle>> {
    if !persist {
        return Ok(Versioned {
            record,
            revision: v.revision,
        });
    }
    match ctx.tasks.update(&record, v.revision).await {
        Ok(revision) => Ok(Versioned { record, revision }),
        Err(_) => Err(reload(ctx, &v.record.id).await),
    }
}

/// Awaits `work`, telling JetStream every third of the ack wait that the task is still being
/// worked on, so that a long attempt is never redelivered while in flight.
async fn keep_alive<F: std::future::Future>(work: F, acker: Option<&Acker>, ack_wait: Duration) -> F::Output {
    // A task started from its record (a head start) has no delivery to keep alive.
    let Some(acker) = acker else { return work.await };
    // Not `interval`, whose first tick, though due at once, waits for the timer wheel's next
    // millisecond: that was a millisecond added to every call.
    let period = ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "cannot extend the ack wait of a running attempt");
                }
            }
        }
    }
}
