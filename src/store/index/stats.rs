//! The overview's figures of one function ([`super::Index::stats`]): what the index keeps to
//! answer them in time independent of how many tasks it holds, and how they are read back.
//!
//! Outcomes are counted per 10-second slot and durations per minute, in two small tables that
//! each transaction of the index adds to as tasks are first seen started and finished (see
//! `table.rs`), once for every user together and once per user. Durations go into logarithmic buckets (eight per
//! doubling, so a percentile is within about 5% of the exact figure).

/// Outcomes are counted per slot of this many milliseconds.
pub const SLOT_MS: i64 = 10_000;
/// Durations are counted per minute.
pub const MINUTE_MS: i64 = 60_000;
/// Minutes of the per-minute series (the last hour).
pub const SERIES_MINUTES: usize = 60;
/// How far back the index keeps figures: a task that started or finished before is not counted.
pub const HORIZON_MS: i64 = 2 * 3_600_000;
/// The key under which the counts of every user together are kept (not a valid user name).
pub const ALL_USERS: &str = "*";

/// Tasks that reached each final state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub succeeded: u64,
    pub failed: u64,
    pub stopped: u64,
    pub expired: u64,
    pub invalid: u64,
}

impl Outcomes {
    pub fn add(&mut self, o: &Outcomes) {
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.stopped += o.stopped;
        self.expired += o.expired;
        self.invalid += o.invalid;
    }

    pub fn total(&self) -> u64 {
        self.succeeded + self.failed + self.stopped + self.expired + self.invalid
    }
}

/// The median and 99th percentile of some durations, and how many there were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
}

/// One function's figures, for every user or for one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Due and waiting for a slot (`Enqueued`, `Dequeued` or `Retrying`, not waiting for a moment).
    pub queued: u64,
    /// Waiting for a moment: a not-before or a retry's backoff.
    pub delayed: u64,
    /// `Running` or `Stopping`.
    pub running: u64,
    /// Of the waiting tasks, those held back by a throttle (429/503 or a rate limit).
    pub throttled: u64,
    /// Finished in the current 10-second slot and the five before it.
    pub last_minute: Outcomes,
    /// Finished in the current minute and the 59 before it.
    pub last_hour: Outcomes,
    /// From due to first start, of tasks that started in the last hour.
    pub queue_ms: Percentiles,
    /// The last attempt's duration, of tasks that finished in the last hour.
    pub run_ms: Percentiles,
    /// Per minute, oldest first, the last one the current minute: what finished then.
    pub series: Vec<Outcomes>,
    /// The start of the series' first minute, in ms.
    pub series_start: i64,
}

/// The bucket of a duration: 0 for 0 ms, else `1 + floor(8 · log2(ms))`.
pub fn bucket(ms: u64) -> i64 {
    if ms == 0 {
        return 0;
    }
    // f64 is exact enough: a day is 2^26.4 ms.
    1 + (8.0 * (ms as f64).log2()).floor() as i64
}

/// A duration that stands for bucket `b`: the geometric middle of its bounds.
pub fn bucket_value(b: i64) -> u64 {
    if b <= 0 {
        return 0;
    }
    2f64.powf((b as f64 - 0.5) / 8.0).round() as u64
}

/// The median and 99th percentile of `(bucket, count)` pairs, in any order.
pub fn percentiles(mut buckets: Vec<(i64, u64)>) -> Percentiles {
    buckets.sort_unstable();
    let count: u64 = buckets.iter().map(|(_, n)| n).sum();
    let at = |q: f64| -> Option<u64> {
        if count == 0 {
            return None;
        }
        // The smallest bucket by which at least q of the durations are counted.
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        buckets.iter().find_map(|(b, n)| {
            seen += n;
            (seen >= rank).then(|| bucket_value(*b))
        })
    };
    Percentiles {
        count,
        p50: at(0.5),
        p99: at(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_five_percent() {
        for ms in [1u64, 2, 3, 7, 10, 99, 250, 1_000, 12_345, 86_400_000] {
            let v = bucket_value(bucket(ms)) as f64;
            let err = (v - ms as f64).abs() / ms as f64;
            assert!(err <= 0.05, "{ms} ms stands as {v} ({err})");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket_value(0), 0);
        assert!(bucket(1_001) >= bucket(1_000));
    }

    #[test]
    fn percentiles_pick_the_bucket_at_each_rank() {
        // 98 fast calls and 2 slow ones: the median is fast, the 99th percentile slow.
        let p = percentiles(vec![(bucket(2_000), 2), (bucket(10), 98)]);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50, Some(10));
        assert_eq!(p.p99, Some(bucket_value(bucket(2_000))));
        assert_eq!(percentiles(vec![]), Percentiles::default());
        let one = percentiles(vec![(bucket(40), 1)]);
        assert_eq!((one.p50, one.p99), (Some(40), Some(40)));
    }
}
