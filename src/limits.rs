//! How replicas share a function's limits, and when a user's throttled task may run: pure
//! arithmetic, no I/O (the replica view comes from [`crate::replicas`]).
//!
//! Concurrency: each live replica gets a share of `concurrency.max` by the rank of its ID, and
//! never uses more than what the others leave: `max − Σ others' holdings`, where a replica's
//! holding is the larger of its limit and its attempts in flight. A replica that joins starts
//! from the others' published holdings, so the sum stays within `max` while shares move.
//!
//! Rates: each live replica enforces `per_second / n` with a burst of `⌈burst / n⌉`.

use crate::function::RateLimit;
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
pub fn concurrency(total: u32, function: &str, me: &str, others: &[Peer]) -> u32 {
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
        assert_eq!(concurrency(4, "f", "b", &[peer("a", "f", 4)]), 0);
        // a sees b: a's share is 2, and b holds 0 so far.
        assert_eq!(concurrency(4, "f", "a", &[peer("b", "f", 0)]), 2);
        // a's attempts drain to 2 and it says so: b may take its 2.
        assert_eq!(concurrency(4, "f", "b", &[peer("a", "f", 2)]), 2);
        // Other functions are not affected.
        assert_eq!(concurrency(4, "g", "b", &[peer("a", "f", 4)]), 2);
    }

    #[test]
    fn no_interleaving_of_two_replicas_exceeds_the_total() {
        // Every pair of published holdings each replica may see: what both may run together.
        for total in 1..8u32 {
            for ha in 0..=total {
                for hb in 0..=total {
                    let a = concurrency(total, "f", "a", &[peer("b", "f", hb)]);
                    let b = concurrency(total, "f", "b", &[peer("a", "f", ha)]);
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
}
