//! Fairness between users of one function. A function's queue is a JetStream consumer, served in
//! order: behind one user's flood of 100,000 tasks, another user's task would wait for all of
//! them. So intake, which records every submission within milliseconds whatever the backlog,
//! spots a task whose user has few tasks in a long queue and names it on core NATS
//! (`jetask.expedite.<function>`); a dispatcher of the function runs it in its next free slot,
//! from its record, ahead of the queue. Its submission, reached later in order, finds the task
//! finished (or running, and waits) and is acknowledged. The hint is best effort: lost, the task
//! simply runs in its turn.

use crate::engine::ctx::Ctx;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Below this many undelivered submissions the queue is short enough to serve in order.
pub const MIN_BACKLOG: u64 = 100;
/// A user whose recent submissions are under this share of the backlog jumps it.
pub const MAX_SHARE: f64 = 0.1;
/// Recent submissions count half after this long.
const HALF_LIFE: Duration = Duration::from_secs(5);
/// How long a queue length read from JetStream is reused.
const BACKLOG_TTL: Duration = Duration::from_millis(50);

/// Whether a task of a user with `recent` submissions jumps its function's queue of `backlog`
/// undelivered submissions, while intake has `unrecorded` submissions still to go through.
/// Intake records in order, so those are behind this task: the queue ahead of it is the
/// difference (else a flood still being recorded would look like a small user of its own queue).
pub fn jumps(recent: f64, backlog: u64, unrecorded: u64) -> bool {
    let ahead = backlog.saturating_sub(unrecorded);
    ahead >= MIN_BACKLOG && recent < MAX_SHARE * ahead as f64
}

/// A count that halves every [`HALF_LIFE`].
fn decayed(count: f64, since: Duration) -> f64 {
    count * 0.5f64.powf(since.as_secs_f64() / HALF_LIFE.as_secs_f64())
}

/// A figure read from JetStream at an instant: reused while younger than [`BACKLOG_TTL`]. Once
/// stale, the first caller is told to read it again (`None`) and the figure is marked fresh, so
/// that the others keep using it until that read answers. Intake records hundreds of tasks at
/// once: without this, every one of them asked JetStream for the consumer's info whenever the
/// figure went stale, a load on the server in the middle of a burst.
fn reuse(reading: &mut (u64, Instant), now: Instant) -> Option<u64> {
    let (value, at) = reading;
    if now.duration_since(*at) < BACKLOG_TTL {
        return Some(*value);
    }
    *at = now;
    None
}

#[derive(Default)]
pub struct Fair {
    /// Per (function, user): recent submissions, as of an instant.
    recent: Mutex<HashMap<(String, String), (f64, Instant)>>,
    /// Per consumer of the submission stream: its undelivered submissions, as of an instant.
    pending: Mutex<HashMap<String, (u64, Instant)>>,
    pruned: Mutex<Option<Instant>>,
}

impl Fair {
    /// Counts a submission of `user` to `function`; its recent submissions, this one included.
    pub fn note(&self, function: &str, user: &str) -> f64 {
        let now = Instant::now();
        let mut m = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        if pruned.is_none_or(|at| now.duration_since(at) > Duration::from_secs(60)) {
            m.retain(|_, (c, at)| decayed(*c, now.duration_since(*at)) >= 0.5);
            *pruned = Some(now);
        }
        let e = m.entry((function.to_string(), user.to_string())).or_insert((0.0, now));
        e.0 = decayed(e.0, now.duration_since(e.1)) + 1.0;
        e.1 = now;
        e.0
    }

    /// The submissions a consumer of the submission stream has yet to be delivered (its
    /// `num_pending`), as last read from JetStream. `unknown` stands in until the first answer
    /// and when JetStream cannot say: a figure on which nothing jumps.
    async fn pending(&self, ctx: &Ctx, consumer: &str, unknown: u64) -> u64 {
        let now = Instant::now();
        {
            let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match m.get_mut(consumer) {
                Some(reading) => {
                    if let Some(n) = reuse(reading, now) {
                        return n;
                    }
                }
                None => {
                    m.insert(consumer.to_string(), (unknown, now));
                }
            }
        }
        let n = match ctx.nats.submit.consumer_info(consumer).await {
            Ok(info) => info.num_pending,
            Err(_) => unknown,
        };
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(consumer.to_string(), (n, now));
        n
    }

    /// Called once a task is recorded: names it for a head start if its user is a small part
    /// of a long queue.
    pub async fn recorded(&self, ctx: &Ctx, record: &crate::core::task::TaskRecord) {
        if record.status != crate::core::task::Status::Enqueued || record.waiting_until().is_some() {
            return;
        }
        // Rate-limited functions are paced by their limits; a head start would bypass them.
        let limited = ctx
            .registry
            .get(&record.function)
            .is_none_or(|s| s.is_paced() || !s.task_mode);
        if limited {
            return;
        }
        let recent = self.note(&record.function, &record.user);
        // Not delivered to any dispatcher of the function; unknown, no queue.
        let backlog = self
            .pending(ctx, &crate::core::subjects::dispatch_consumer(&record.function), 0)
            .await;
        if backlog < MIN_BACKLOG {
            return;
        }
        // Not recorded by intake yet (all functions); unknown, all of the queue.
        let unrecorded = self
            .pending(ctx, crate::core::subjects::INTAKE_CONSUMER, u64::MAX)
            .await;
        if !jumps(recent, backlog, unrecorded) {
            return;
        }
        ctx.metrics.expedited(&record.function);
        let subject = crate::core::subjects::expedite(&record.function);
        if let Err(e) = ctx.nats.client.publish(subject, record.id.clone().into()).await {
            tracing::debug!(error = %e, "cannot name a task for a head start; it runs in its turn");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_user_jumps_a_long_queue_only() {
        assert!(jumps(1.0, 100_000, 0));
        assert!(!jumps(1.0, 50, 0), "a short queue is served in order");
        assert!(!jumps(20_000.0, 100_000, 0), "the flooding user waits its turn");
        assert!(jumps(9_999.0, 100_000, 0));
        // A flood being recorded: most of the backlog is behind the task being recorded.
        assert!(!jumps(5_000.0, 60_000, 55_000), "the flood's own tasks do not jump it");
        assert!(
            jumps(1.0, 98_000, 50_000),
            "another user's task does, while intake catches up"
        );
    }

    #[test]
    fn recent_counts_add_up_and_fade() {
        let f = Fair::default();
        for _ in 0..9 {
            f.note("f", "ann");
        }
        assert!((f.note("f", "ann") - 10.0).abs() < 0.01);
        assert!((f.note("f", "bob") - 1.0).abs() < 0.01);
        assert!((f.note("g", "ann") - 1.0).abs() < 0.01, "per function");
        assert!((decayed(10.0, HALF_LIFE) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn one_caller_rereads_a_stale_figure_and_the_others_reuse_it() {
        let t0 = Instant::now();
        let mut reading = (120, t0);
        assert_eq!(reuse(&mut reading, t0 + BACKLOG_TTL / 2), Some(120), "fresh");
        let stale = t0 + BACKLOG_TTL;
        assert_eq!(
            reuse(&mut reading, stale),
            None,
            "the first caller past the TTL reads again"
        );
        for _ in 0..500 {
            assert_eq!(reuse(&mut reading, stale), Some(120), "the others, meanwhile, reuse it");
        }
        assert_eq!(
            reuse(&mut reading, stale + BACKLOG_TTL),
            None,
            "and it goes stale again"
        );
    }
}
