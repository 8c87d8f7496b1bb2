//! When the next attempt may start: exponential backoff with jitter, and `Retry-After`.
//! Pure: randomness comes in as `jitter` in `[0, 1)`.

use crate::core::function::Backoff;
use crate::core::time::Timestamp;
use std::time::Duration;

/// The wait after `attempts` failed attempts (1 after the first): `initial × multiplier^(n-1)`,
/// capped at `max`; with jitter, a uniform pick in the upper half of that, so that retries of
/// many tasks spread out but never come sooner than half the schedule.
pub fn backoff_delay(b: &Backoff, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(64) as i32;
    let base = b.initial.0.as_secs_f64() * b.multiplier.powi(exp);
    let capped = base.min(b.max.0.as_secs_f64());
    let secs = if b.jitter {
        capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    } else {
        capped
    };
    Duration::from_secs_f64(secs.max(0.0))
}

/// The longest `Retry-After` jetask honours; a function cannot park a task longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads a `Retry-After` value: delta-seconds (digits only, RFC 9110) or an HTTP date,
/// clamped to [`MAX_RETRY_AFTER`]. `None` for anything else (`-5`, `+5`, `1.5`, `soon`): the
/// caller falls back to its backoff.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    let d = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a long time".
        v.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        now.until(Timestamp(at.timestamp_millis()))
    };
    Some(d.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::duration::Dur;

    fn b(jitter: bool) -> Backoff {
        Backoff {
            initial: Dur::from_secs(1),
            max: Dur::from_secs(300),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let d: Vec<u64> = (1..=12).map(|n| backoff_delay(&b(false), n, 0.0).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(&b(false), 1000, 0.0).as_secs(), 300);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        assert_eq!(backoff_delay(&b(true), 3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(&b(true), 3, 0.999_999).as_millis(), 3999);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_clamped() {
        let now: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        for nonsense in [
            "-5",
            "+5",
            "1.5",
            "",
            " ",
            "5s",
            "0x10",
            "Sat, 99 Nov 2026 10:00:30 GMT",
        ] {
            assert_eq!(parse_retry_after(nonsense, now), None, "{nonsense:?}");
        }
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(MAX_RETRY_AFTER));
    }
}
