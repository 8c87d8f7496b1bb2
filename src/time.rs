//! Wall-clock instants as milliseconds since the Unix epoch, shown as RFC 3339 with millisecond
//! precision (`2026-11-28T10:00:00.000Z`). Pure code takes `now` as an argument of this type.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr, time::Duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }
    pub fn millis(&self) -> i64 {
        self.0
    }
    pub fn plus(&self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// How long from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(&self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0 - self.0).unwrap_or(0))
    }
    /// Milliseconds from `earlier` to `self`, zero when negative.
    pub fn since(&self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0 - earlier.0).unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: expected RFC 3339, e.g. \"2026-11-28T10:00:00Z\"")]
pub struct TimeError(pub String);

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|_| TimeError(s.to_string()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339_with_millis() {
        let t: Timestamp = "2026-11-28T10:00:00.123Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-28T10:00:00.123Z");
        let offset: Timestamp = "2026-11-28T11:00:00+01:00".parse().unwrap();
        assert_eq!(offset.to_string(), "2026-11-28T10:00:00.000Z");
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}
