//! How replicas share a function's limits, and when a user's throttled task may run: pure
//! arithmetic, no I/O (the replica view comes from [`crate::store::replicas`]).
//!
//! Concurrency: each live replica gets a share of `concurrency.max` by the rank of its ID, and
//! never uses more than what the others leave: `max − Σ others' holdings`, where a replica's
//! holding is the larger of its limit and its attempts in flight. A replica that joins starts
//! from the others' published holdings, so the sum stays within `max` while shares move.
//!
//! Rates: each live replica enforces `per_second / n` with a burst of `⌈burst / n⌉`.

use crate::core::function::RateLimit;
use std::collections::HashMap;
use std::time::Duration;

/// A replica as the others see it: its ID, and what it holds of each function's concurrency.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub holding: HashMap<String, u32>,
}

/// This replica's share of `total` among `members` (its own ID included), by rank of ID: the
/// first `total % n` ranks get one more.
pub fn share(total: u32, me: &str, members: &[&str]) -> u32 {
    let mut ids: Vec<&str> = members.to_vec();
    if !ids.contains(&me) {
        ids.push(me);
    }
    ids.sort_unstable();
    ids.dedup();
    let n = ids.len() as u32;
    let rank = ids.iter().position(|id| *id == me).unwrap_or(0) as u32;
    total / n + u32::from(rank < total % n)
}

/// The attempts of `function` this replica may run now.
pub fn concurrency(total: u32, function: &str, me: &str, others: &[&Peer]) -> u32 {
    let members: Vec<&str> = others.iter().map(|p| p.id.as_str()).collect();
    let mine = share(total, me, &members);
    let held: u32 = others
        .iter()
        .map(|p| p.holding.get(function).copied().unwrap_or(0))
        .sum();
    mine.min(total.saturating_sub(held))
}

/// This replica's part of a rate limit shared by `replicas` replicas.
pub fn rate_share(limit: &RateLimit, replicas: usize) -> RateLimit {
    let n = replicas.max(1) as u32;
    RateLimit {
        per_second: limit.per_second / f64::from(n),
        burst: limit.burst.div_ceil(n).max(1),
    }
}

/// A governor quota for a rate.
pub fn quota(limit: &RateLimit) -> governor::Quota {
    let period = Duration::from_secs_f64(1.0 / limit.per_second.max(1e-9)).max(Duration::from_nanos(1));
    let burst = std::num::NonZeroU32::new(limit.burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::with_period(period)
        .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Per-key rate limits that hand out future start times instead of refusals (GCRA, the
/// algorithm governor implements, in its reservation form): a throttled task is parked until
/// its own slot, so a backlog of one user's tasks comes back one at a time at the user's rate,
/// instead of all at once to be refused again.
#[derive(Debug)]
pub struct Reservations {
    interval: Duration,
    /// How far ahead of the theoretical schedule a key may run: the burst.
    tolerance: Duration,
    /// Each key's theoretical arrival time, as time since `origin`.
    tat: HashMap<String, Duration>,
}

impl Reservations {
    pub fn new(limit: &RateLimit) -> Reservations {
        let interval = Duration::from_secs_f64(1.0 / limit.per_second.max(1e-9));
        Reservations {
            interval,
            tolerance: interval * limit.burst.saturating_sub(1),
            tat: HashMap::new(),
        }
    }

    /// Takes the next slot of `key` at `now` (time since a fixed origin); how long until it.
    pub fn reserve(&mut self, key: &str, now: Duration) -> Duration {
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let start = tat.saturating_sub(self.tolerance).max(now);
        self.tat.insert(key.to_string(), tat + self.interval);
        start - now
    }

    /// Forgets keys whose schedule is in the past: they behave as new.
    pub fn prune(&mut self, now: Duration) {
        self.tat.retain(|_, t| *t > now);
    }

    pub fn len(&self) -> usize {
        self.tat.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}

/// How an attempt's answer bears on the endpoint's capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Answered (any 2xx or 4xx): its latency says how loaded the endpoint is.
    Answered,
    /// 429/503 or a timeout: the endpoint is past its capacity.
    Overloaded,
    /// Says nothing about load (a connection refused, a 500).
    Neutral,
}

/// Adaptive concurrency (`concurrency.adaptive`), AIMD in the style of Netflix's
/// concurrency-limits: while the limit is in use (work is queued) and the latency holds near the
/// best recently seen, the limit grows — by one per answer at first (doubling per round trip),
/// then by one per limit's worth of answers; an overload answer cuts it by 30%, a smoothed
/// latency past twice the baseline by 10%, at most once per round trip. Time is passed in, as
/// time since a fixed origin.
#[derive(Clone, Debug)]
pub struct Adaptive {
    min: f64,
    max: f64,
    limit: f64,
    /// Doubling until the first sign of load.
    slow_start: bool,
    /// The best latency of the current and the previous window: the endpoint unloaded.
    baseline: Option<Duration>,
    window_best: Option<Duration>,
    window_start: Duration,
    /// Smoothed latency (EWMA).
    smoothed: Option<f64>,
    last_cut: Option<Duration>,
    /// The last answer or change: probing starts after [`PROBE`] of silence.
    last_news: Duration,
}

/// How long a baseline latency is trusted before the next window's best replaces it.
const BASELINE_WINDOW: Duration = Duration::from_secs(10);
/// Latency within this factor of the baseline (plus [`LATENCY_SLACK`]) "holds".
const TOLERANCE: f64 = 2.0;
const LATENCY_SLACK: Duration = Duration::from_millis(5);
/// With every slot busy and no answer for this long (calls that last minutes, or hang), the
/// limit grows by one: answers cannot tell the latency, so it is probed one slot at a time.
pub const PROBE: Duration = Duration::from_secs(1);

impl Adaptive {
    /// Starts at `initial` within `min..=max`.
    pub fn new(min: u32, max: u32, initial: u32) -> Adaptive {
        let (min, max) = (f64::from(min.max(1)), f64::from(max.max(min).max(1)));
        Adaptive {
            min,
            max,
            limit: f64::from(initial).clamp(min, max),
            slow_start: true,
            baseline: None,
            window_best: None,
            window_start: Duration::ZERO,
            smoothed: None,
            last_cut: None,
            last_news: Duration::ZERO,
        }
    }

    /// Time passes with `in_flight` attempts running and work queued: after [`PROBE`] without
    /// any answer while the limit is full, one more slot.
    pub fn tick(&mut self, now: Duration, in_flight: u32) {
        if f64::from(in_flight) >= self.limit.floor() && now.saturating_sub(self.last_news) >= PROBE {
            self.limit = (self.limit + 1.0).min(self.max);
            self.last_news = now;
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit.floor() as u32
    }

    fn cut(&mut self, now: Duration, factor: f64, spacing: Duration) {
        if self.last_cut.is_some_and(|at| now.saturating_sub(at) < spacing) {
            return;
        }
        self.limit = (self.limit * factor).max(self.min);
        self.slow_start = false;
        self.last_cut = Some(now);
        self.last_news = now;
    }

    /// An attempt ended at `now` after `latency`, with `in_flight` attempts running when it
    /// started (itself included).
    pub fn sample(&mut self, now: Duration, latency: Duration, signal: Signal, in_flight: u32) {
        let spacing = self.baseline.unwrap_or(latency).max(Duration::from_millis(10));
        if signal != Signal::Neutral {
            self.last_news = now;
        }
        match signal {
            Signal::Neutral => {}
            Signal::Overloaded => self.cut(now, 0.7, spacing),
            Signal::Answered => {
                if now.saturating_sub(self.window_start) > BASELINE_WINDOW {
                    self.baseline = self.window_best.or(self.baseline);
                    self.window_best = None;
                    self.window_start = now;
                }
                self.window_best = Some(self.window_best.map_or(latency, |b| b.min(latency)));
                let baseline = self.baseline.map_or(latency, |b| b.min(latency));
                self.baseline = Some(baseline);
                let ms = latency.as_secs_f64() * 1000.0;
                let smoothed = self.smoothed.map_or(ms, |s| 0.8 * s + 0.2 * ms);
                self.smoothed = Some(smoothed);
                let bound = (baseline.as_secs_f64() * TOLERANCE + LATENCY_SLACK.as_secs_f64()) * 1000.0;
                if smoothed > bound {
                    self.cut(now, 0.9, spacing.max(latency));
                } else if f64::from(in_flight) * 2.0 >= self.limit {
                    // The limit is in use (as Netflix's AIMD judges it): room to grow.
                    self.limit += if self.slow_start { 1.0 } else { 1.0 / self.limit };
                    self.limit = self.limit.min(self.max);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, f: &str, holding: u32) -> Peer {
        Peer {
            id: id.into(),
            holding: [(f.to_string(), holding)].into(),
        }
    }

    #[test]
    fn shares_add_up_to_the_total_whatever_the_number_of_replicas() {
        for total in 0..20 {
            for n in 1..6 {
                let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let sum: u32 = ids.iter().map(|me| share(total, me, &refs)).sum();
                assert_eq!(sum, total, "total {total}, {n} replicas");
                for me in &ids {
                    let s = share(total, me, &refs);
                    assert!(s == total / n as u32 || s == total / n as u32 + 1);
                }
            }
        }
    }

    #[test]
    fn a_lone_replica_has_everything() {
        assert_eq!(share(5, "a", &[]), 5);
        assert_eq!(concurrency(5, "f", "a", &[]), 5);
    }

    #[test]
    fn a_joining_replica_waits_for_what_the_others_still_hold() {
        // a held all 4; b joins: b's share is 2, but a still holds 4 until it shrinks.
        assert_eq!(concurrency(4, "f", "b", &[&peer("a", "f", 4)]), 0);
        // a sees b: a's share is 2, and b holds 0 so far.
        assert_eq!(concurrency(4, "f", "a", &[&peer("b", "f", 0)]), 2);
        // a's attempts drain to 2 and it says so: b may take its 2.
        assert_eq!(concurrency(4, "f", "b", &[&peer("a", "f", 2)]), 2);
        // Other functions are not affected.
        assert_eq!(concurrency(4, "g", "b", &[&peer("a", "f", 4)]), 2);
    }

    #[test]
    fn no_interleaving_of_two_replicas_exceeds_the_total() {
        // Every pair of published holdings each replica may see: what both may run together.
        for total in 1..8u32 {
            for ha in 0..=total {
                for hb in 0..=total {
                    let a = concurrency(total, "f", "a", &[&peer("b", "f", hb)]);
                    let b = concurrency(total, "f", "b", &[&peer("a", "f", ha)]);
                    // Each publishes at least its limit, so a's view of b is ≥ b's limit when
                    // b's limit was set from a view of a that a's holding covers.
                    if hb >= b && ha >= a {
                        assert!(a + b <= total, "total {total}: a {a} (sees {hb}), b {b} (sees {ha})");
                    }
                }
            }
        }
    }

    #[test]
    fn rates_split_evenly_and_bursts_round_up() {
        let r = rate_share(
            &RateLimit {
                per_second: 100.0,
                burst: 5,
            },
            2,
        );
        assert_eq!(r.per_second, 50.0);
        assert_eq!(r.burst, 3);
        let one = rate_share(
            &RateLimit {
                per_second: 1.0,
                burst: 1,
            },
            3,
        );
        assert_eq!(one.burst, 1);
        assert!((one.per_second - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn reservations_let_the_burst_through_then_space_tasks_at_the_rate() {
        let mut r = Reservations::new(&RateLimit {
            per_second: 10.0,
            burst: 3,
        });
        let t0 = Duration::from_secs(100);
        let waits: Vec<Duration> = (0..6).map(|_| r.reserve("ann", t0)).collect();
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(ms, [0, 0, 0, 100, 200, 300]);
        // Another user is not behind ann.
        assert_eq!(r.reserve("bob", t0), Duration::ZERO);
        // Once the schedule has passed, ann starts afresh.
        let later = t0 + Duration::from_secs(10);
        r.prune(later);
        assert_eq!(r.len(), 0);
        assert_eq!(r.reserve("ann", later), Duration::ZERO);
    }

    #[test]
    fn over_any_window_reservations_hold_the_rate() {
        let mut r = Reservations::new(&RateLimit {
            per_second: 50.0,
            burst: 10,
        });
        let t0 = Duration::from_secs(1);
        let starts: Vec<Duration> = (0..1000).map(|_| t0 + r.reserve("u", t0)).collect();
        // In any 1 s window: at most rate + burst.
        for (i, s) in starts.iter().enumerate() {
            let n = starts[i..]
                .iter()
                .take_while(|x| **x < *s + Duration::from_secs(1))
                .count();
            assert!(n <= 60, "{n} starts within 1 s of start {i}");
        }
    }

    /// A simulated endpoint: `base` latency up to `capacity` calls at once, then `extra` more per
    /// call beyond. Runs closed-loop with plenty of work queued and returns the limits seen.
    fn simulate(
        a: &mut Adaptive,
        capacity: u32,
        base: f64,
        extra: f64,
        rounds: usize,
        overload_from: Option<usize>,
    ) -> Vec<u32> {
        let mut now = Duration::from_secs(1);
        let mut seen = Vec::new();
        for round in 0..rounds {
            let n = a.limit();
            let ms = base + extra * f64::from(n.saturating_sub(capacity));
            let latency = Duration::from_secs_f64(ms / 1000.0);
            now += latency;
            let overloaded = overload_from.is_some_and(|from| (from..from + 20).contains(&round));
            for _ in 0..n {
                let signal = if overloaded {
                    Signal::Overloaded
                } else {
                    Signal::Answered
                };
                a.sample(now, latency, signal, n);
            }
            seen.push(a.limit());
        }
        seen
    }

    #[test]
    fn the_limit_settles_near_where_latency_starts_to_climb() {
        let mut a = Adaptive::new(1, 64, 1);
        let seen = simulate(&mut a, 8, 20.0, 20.0, 300, None);
        let tail = &seen[200..];
        let (lo, hi) = (*tail.iter().min().unwrap(), *tail.iter().max().unwrap());
        assert!(lo >= 5 && hi <= 12, "settled between {lo} and {hi}: {:?}", &seen[..40]);
    }

    #[test]
    fn the_limit_climbs_to_max_while_latency_holds() {
        let mut a = Adaptive::new(1, 50, 1);
        let seen = simulate(&mut a, 1000, 20.0, 0.0, 40, None);
        assert_eq!(*seen.last().unwrap(), 50, "{seen:?}");
        // Slow start: doubling per round trip.
        assert!(seen[4] >= 16, "{seen:?}");
    }

    #[test]
    fn overload_answers_cut_the_limit_which_then_recovers() {
        let mut a = Adaptive::new(2, 40, 40);
        let seen = simulate(&mut a, 1000, 10.0, 0.0, 400, Some(10));
        assert_eq!(seen[5], 40);
        let low = *seen[10..40].iter().min().unwrap();
        assert!(low <= 5, "cut to {low}: {:?}", &seen[..40]);
        assert!(low >= 2, "never below min");
        assert_eq!(*seen.last().unwrap(), 40, "recovered: {:?}", &seen[300..]);
    }

    #[test]
    fn a_limit_not_in_use_does_not_grow() {
        let mut a = Adaptive::new(1, 100, 10);
        for i in 0..1000 {
            a.sample(Duration::from_millis(i), Duration::from_millis(5), Signal::Answered, 2);
        }
        assert_eq!(a.limit(), 10);
    }

    #[test]
    fn calls_that_do_not_answer_are_probed_one_more_slot_per_second() {
        let mut a = Adaptive::new(1, 3, 1);
        let s = |ms: u64| Duration::from_millis(ms);
        a.tick(s(500), 1);
        assert_eq!(a.limit(), 1, "not before a second of silence");
        a.tick(s(1000), 1);
        assert_eq!(a.limit(), 2);
        a.tick(s(1500), 2);
        assert_eq!(a.limit(), 2);
        a.tick(s(1200), 1);
        assert_eq!(a.limit(), 2, "not while slots are free");
        a.tick(s(2000), 2);
        a.tick(s(3000), 3);
        a.tick(s(4000), 3);
        assert_eq!(a.limit(), 3, "never past max");
        // An answer is news: no probe right after it.
        a.sample(s(4100), s(10), Signal::Overloaded, 3);
        assert_eq!(a.limit(), 2);
        a.tick(s(4600), 2);
        assert_eq!(a.limit(), 2);
    }
}
