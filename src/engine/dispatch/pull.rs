//! The pull loop of one function on one replica: free concurrency slots, the function's rate
//! tokens and each user's start times decide how many submissions are pulled; a submission not
//! yet due, or whose user's turn has not come, is parked in JetStream (a delayed redelivery).

use super::delivery::{expedite, handle, load_or_create};
use super::MAX_BATCH;
use crate::core::function::{FunctionSpec, RateLimit};
use crate::core::limits::{self, Reservations};
use crate::core::machine;
use crate::core::subjects;
use crate::core::submission;
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use crate::store::kv::StoreError;
use crate::store::replicas::Slots;
use crate::store::setup;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
    let header = |k: &str| msg.headers.as_ref().and_then(|h| h.get_str(k)).map(|v| v.as_str());
    let (id, user, _) = submission::id_and_user_on(msg.subject.as_str(), header, seq);
    (id, user)
}

/// Parks a submission in JetStream for `wait` (a delayed redelivery): no slot, no read.
pub(super) fn park(msg: jetstream::Message, wait: Duration) {
    tokio::spawn(async move {
        if let Err(e) = msg.ack_with(AckKind::Nak(Some(wait))).await {
            tracing::warn!(error = %e, "cannot park a task; it comes back after the ack wait");
        }
    });
}

/// Notes in a waiting task's record why it waits (once: the same note is not repeated).
/// The record may not exist yet (intake records a submission in parallel with its first
/// delivery): it is created from the submission, as a first delivery does.
pub(super) async fn note_wait(ctx: &Ctx, parsed: submission::Parsed, accepted_at: Timestamp, why: &str) {
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

/// A pulled submission as a task (see [`crate::engine::intake::read`]).
pub(super) fn parse(
    ctx: &Ctx,
    function: &str,
    msg: &async_nats::Message,
    info: &jetstream::message::Info,
) -> submission::Parsed {
    let accepted_at = Timestamp(info.published.timestamp_millis());
    crate::engine::intake::read(ctx, function, msg, info.stream_sequence, accepted_at)
}

pub(super) async fn function_loop(ctx: Arc<Ctx>, name: String, stop: CancellationToken, attempts: TaskTracker) {
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
    let slot = Slot {
        ctx: &ctx,
        name: &name,
        slots: &slots,
        attempts: &attempts,
    };
    let mut consumer = None;
    while !stop.is_cancelled() {
        let c = match &consumer {
            Some(c) => c,
            None => match open_consumer(&ctx, &name, ack_wait, &stop).await {
                Some(c) => consumer.insert(c),
                None => return,
            },
        };
        let spec = ctx.registry.get(&name);
        let limit = replica_limit(&ctx, &name, &slots, spec.as_deref());
        if shown_limit != Some(limit) {
            ctx.metrics.set_concurrency_limit(&name, limit as usize);
            shown_limit = Some(limit);
        }
        let free = limit.saturating_sub(slots.in_flight.load(Ordering::Acquire)) as usize;
        let free = slot.start_head_starts(&mut lane, free);
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
        let rate_limit = spec.as_deref().and_then(|s| s.rate_limit.clone());
        let Some(pull) = pull_size(&ctx, &name, &mut rate, rate_limit.as_ref(), free, &stop).await else {
            return;
        };
        let batch = c.batch().max_messages(pull.want).expires(pull.expires).messages().await;
        let batch = match batch {
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
        if !slot
            .take_batch(batch, spec.as_deref(), &mut users, pull.waited, &stop)
            .await
        {
            return;
        }
    }
}

/// The function's durable consumer, created when missing; `None` once stopped.
async fn open_consumer(
    ctx: &Ctx,
    name: &str,
    ack_wait: Duration,
    stop: &CancellationToken,
) -> Option<jetstream::consumer::PullConsumer> {
    loop {
        match setup::ensure_dispatch_consumer(&ctx.nats.submit, name, ack_wait).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(function = %name, error = %e, "cannot create dispatch consumer; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// How many messages one pull asks for, for how long, and the rate wait they cost.
struct Pull {
    want: usize,
    expires: Duration,
    waited: Option<Duration>,
}

/// Pulls no more than the rate allows now (messages held back would time out): with a
/// `rate_limit`, waits for tokens and pulls with a short expiry. `None` once stopped.
async fn pull_size(
    ctx: &Ctx,
    name: &str,
    rate: &mut FunctionRate,
    rate_limit: Option<&RateLimit>,
    free: usize,
    stop: &CancellationToken,
) -> Option<Pull> {
    let want = free.min(MAX_BATCH);
    let Some(rl) = rate_limit else {
        return Some(Pull {
            want,
            expires: Duration::from_secs(5),
            waited: None,
        });
    };
    let (want, waited) = take_rate_tokens(ctx, name, rate, rl, want, stop).await?;
    Some(Pull {
        want,
        expires: Duration::from_secs(1),
        waited,
    })
}

/// This replica's part of the function's concurrency, given what the others hold.
fn replica_limit(ctx: &Ctx, name: &str, slots: &Slots, spec: Option<&FunctionSpec>) -> u32 {
    let total = spec.map_or(16, |s| s.concurrency.max).max(1);
    let range = spec
        .filter(|s| s.concurrency.adaptive)
        .map(|s| (s.concurrency.min.clamp(1, total), total));
    let cap = slots.adaptive_limit(range).unwrap_or(total);
    ctx.replicas.concurrency(name, total, cap)
}

/// Pull no more than the rate allows now (messages held back would time out): how many of
/// `want` may be pulled, waiting for the first token when there is none, and how long it
/// waited. `None`: stopped while waiting.
async fn take_rate_tokens(
    ctx: &Ctx,
    name: &str,
    rate: &mut FunctionRate,
    rl: &RateLimit,
    want: usize,
    stop: &CancellationToken,
) -> Option<(usize, Option<Duration>)> {
    let mut waited = None;
    let limiter = rate.limiter(rl, ctx.replicas.count());
    if limiter.check().is_err() {
        ctx.metrics.throttled(name, "function");
        let since = Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = limiter.until_ready() => {}
        }
        waited = Some(since.elapsed());
    }
    let mut n = 1;
    while n < want && limiter.check().is_ok() {
        n += 1;
    }
    Some((n, waited))
}

/// What starting a task in one of the function's slots on this replica needs.
struct Slot<'a> {
    ctx: &'a Arc<Ctx>,
    name: &'a str,
    slots: &'a Arc<Slots>,
    attempts: &'a TaskTracker,
}

impl Slot<'_> {
    /// Tasks named for a head start take free slots before the queue does: starts those
    /// waiting, up to `free`, and returns the slots still free.
    fn start_head_starts(&self, lane: &mut Option<async_nats::Subscriber>, mut free: usize) -> usize {
        while free > 0 {
            let Some(Some(m)) = lane.as_mut().map(|l| l.next().now_or_never().flatten()) else {
                break;
            };
            let id = String::from_utf8_lossy(&m.payload).to_string();
            free -= 1;
            self.ctx.replicas.attempt(self.slots, true);
            let (ctx, name, slots) = (self.ctx.clone(), self.name.to_string(), self.slots.clone());
            self.attempts.spawn(async move {
                expedite(&ctx, &name, &id).await;
                ctx.replicas.attempt(&slots, false);
            });
        }
        free
    }

    /// Takes the messages of one pull as they come, until the pull ends; `false` once stopped.
    async fn take_batch(
        &self,
        mut batch: jetstream::consumer::pull::Batch,
        spec: Option<&FunctionSpec>,
        users: &mut UserRates,
        waited: Option<Duration>,
        stop: &CancellationToken,
    ) -> bool {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return false,
                m = batch.next() => m,
            };
            match next {
                Some(Ok(msg)) => self.take(spec, users, msg, waited),
                Some(Err(e)) => {
                    tracing::debug!(function = %self.name, error = %e, "pull batch ended");
                    return true;
                }
                None => return true,
            }
        }
    }

    /// Takes one pulled submission: parks it while it is not due or its user's turn has not
    /// come, else handles it in a slot.
    fn take(
        &self,
        spec: Option<&FunctionSpec>,
        users: &mut UserRates,
        msg: jetstream::Message,
        waited: Option<Duration>,
    ) {
        let (ctx, name) = (self.ctx, self.name);
        // A task not yet due waits in JetStream, holding no slot and costing no read.
        if let Some(wait) = not_yet_due(ctx, &msg) {
            park(msg, wait);
            return;
        }
        // Unreadable headers name no user to charge: such a task is only recorded.
        let readable = crate::engine::poison::flagged(msg.headers.as_ref()).is_none();
        if let Some(per_user) = spec.and_then(|s| s.user_rate_limit.as_ref()).filter(|_| readable) {
            let (id, user) = id_and_user(&msg);
            let first = !users.parked.contains_key(&id);
            if let Some(wait) = users.wait(&id, &user, per_user, ctx.replicas.count()) {
                ctx.metrics.throttled(name, "user");
                if let (true, Ok(info)) = (first, msg.info()) {
                    let parsed = parse(ctx, name, &msg, &info);
                    let accepted_at = Timestamp(info.published.timestamp_millis());
                    let ctx = ctx.clone();
                    let why = format!("waiting for user_rate_limit of user {user}");
                    tokio::spawn(async move { note_wait(&ctx, parsed, accepted_at, &why).await });
                }
                park(msg, wait);
                return;
            }
        }
        ctx.replicas.attempt(self.slots, true);
        let (ctx, name, slots) = (ctx.clone(), name.to_string(), self.slots.clone());
        self.attempts.spawn(async move {
            handle(&ctx, &name, msg, waited).await;
            ctx.replicas.attempt(&slots, false);
        });
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
    let delay = headers
        .get_str(crate::core::subjects::headers::DELAY)
        .map(|v| v.as_str());
    let at = headers
        .get_str(crate::core::subjects::headers::NOT_BEFORE)
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
