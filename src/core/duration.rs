//! Durations as they appear in headers, JSON and TOML: an integer and a unit
//! (`ms`, `s`, `m`, `h`, `d`), e.g. `"1500ms"`, `"30s"`, `"7d"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{fmt, str::FromStr, time::Duration};

/// A duration written as `<integer><unit>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected an integer and a unit (ms, s, m, h, d), e.g. \"30s\"")]
pub struct DurationError {
    pub input: String,
}

impl Dur {
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError { input: s.to_string() };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() || num.len() > 15 {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        Ok(Dur(Duration::from_millis(n.checked_mul(ms_per).ok_or_else(err)?)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms != 0 && ms.is_multiple_of(per) {
                return write!(f, "{}{}", ms / per, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: the string form, an integer and a unit.
impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]+(ms|s|m|h|d)$"))
            .description(Some("a duration: an integer and a unit, ms, s, m, h or d"))
            .examples([serde_json::json!("30s")])
            .into()
    }
}

impl utoipa::ToSchema for Dur {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!("1500ms".parse::<Dur>().unwrap(), Dur::from_millis(1500));
        assert_eq!("30s".parse::<Dur>().unwrap(), Dur::from_secs(30));
        assert_eq!("15m".parse::<Dur>().unwrap(), Dur::from_secs(900));
        assert_eq!("2h".parse::<Dur>().unwrap(), Dur::from_secs(7200));
        assert_eq!("7d".parse::<Dur>().unwrap(), Dur::from_secs(7 * 86400));
    }

    #[test]
    fn refuses_what_is_not_integer_and_unit() {
        for bad in ["", "s", "10", "1.5s", "-1s", "10 parsecs", "5w", "99999999999999999d"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        for s in ["100ms", "2s", "15m", "2h", "7d", "1500ms", "0ms"] {
            assert_eq!(s.parse::<Dur>().unwrap().to_string(), s);
        }
    }
}
