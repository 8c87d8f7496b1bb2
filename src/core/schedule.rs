//! Recurring schedules (`PUT /v1/schedules/{name}`): a function, a `cron` expression or an
//! `every` interval, an optional time zone, and the input of each firing. Pure: which moment is
//! due, and whether to run or skip it, are decided from `now` and the last firing.
//!
//! Each firing is an ordinary task whose ID is derived from the schedule and the fire time, so
//! that any number of replicas firing the same moment run it once.

use crate::core::duration::Dur;
use crate::core::function::PolicyError;
use crate::core::task::valid_function_name;
use crate::core::time::Timestamp;
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Schedule {
    pub name: String,
    pub function: String,
    pub cron: Option<String>,
    pub every: Option<Dur>,
    pub time_zone: Option<String>,
    /// The input of each firing: a string is sent as is, other JSON as JSON.
    pub input: Value,
    pub enabled: bool,
    /// After downtime, run the latest missed firing once (`true`) or skip it.
    pub catch_up: bool,
    /// Occurrences at or before this moment never fire; `every` counts from it.
    pub created_at: Timestamp,
}

fn perr(key: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// How late a firing may be and still count as on time rather than missed.
pub const GRACE: Duration = Duration::from_secs(1);

/// The longest `every`: ten years. Longer ones put the next firing past any date a record can
/// show (and once overflowed the arithmetic of firing times).
pub const MAX_EVERY: Duration = Duration::from_secs(3650 * 86_400);

/// What to do about a schedule now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fire {
    /// Nothing is due.
    Idle,
    /// Run the firing of this moment.
    Run(Timestamp),
    /// Record this moment as handled without running it (missed with `catch_up = false`, or
    /// the schedule is disabled).
    Skip(Timestamp),
}

impl Schedule {
    /// Validates a request body (`{function, cron | every, time_zone?, input?, enabled?,
    /// catch_up?}`) into a schedule. `created_at` is kept from an existing schedule.
    pub fn resolve(name: &str, body: &Value, created_at: Timestamp) -> Result<Schedule, PolicyError> {
        if !valid_function_name(name) {
            return Err(perr("name", "schedule names are [A-Za-z0-9_-]{1,64}"));
        }
        let obj = known_keys(name, body)?;
        let function =
            string(obj, "function")?.ok_or_else(|| perr("function", "required: the function each firing runs"))?;
        if !valid_function_name(&function) {
            return Err(perr("function", format!("{function:?} is not a function name")));
        }
        let (cron, every) = timing(obj)?;
        let time_zone = time_zone(obj, every)?;
        let s = Schedule {
            name: name.to_string(),
            function,
            cron,
            every,
            time_zone,
            input: obj.get("input").cloned().unwrap_or(Value::Null),
            enabled: boolean(obj, "enabled")?,
            catch_up: boolean(obj, "catch_up")?,
            created_at,
        };
        // A cron expression with no moment to come (`0 0 31 2 *`, a year gone by) would never
        // fire, and looking for its next moment is a search through the whole calendar each
        // time the scheduler wakes.
        if let Some(c) = &s.cron {
            if s.next_after(created_at).is_none() {
                return Err(perr("cron", format!("{c:?} has no moment after {created_at}")));
            }
        }
        Ok(s)
    }

    fn tz(&self) -> chrono_tz::Tz {
        self.time_zone
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(chrono_tz::UTC)
    }

    fn cron(&self) -> Option<croner::Cron> {
        self.cron.as_deref().and_then(|c| croner::Cron::from_str(c).ok())
    }

    fn zoned(&self, t: Timestamp) -> Option<chrono::DateTime<chrono_tz::Tz>> {
        Utc.timestamp_millis_opt(t.millis())
            .single()
            .map(|u| u.with_timezone(&self.tz()))
    }

    /// The latest occurrence `t` with `after < t <= now`.
    pub fn latest_due(&self, after: Timestamp, now: Timestamp) -> Option<Timestamp> {
        let t = match (self.every, self.cron()) {
            (Some(d), _) => {
                let step = i64::try_from(d.as_millis()).ok()?.max(1);
                let k = now.millis().checked_sub(self.created_at.millis())?.div_euclid(step);
                let t = k
                    .checked_mul(step)
                    .and_then(|o| self.created_at.millis().checked_add(o));
                (k >= 1).then_some(Timestamp(t?))?
            }
            (None, Some(c)) => {
                let prev = c.find_previous_occurrence(&self.zoned(now)?, true).ok()?;
                Timestamp(prev.timestamp_millis())
            }
            _ => return None,
        };
        (t > after && t > self.created_at).then_some(t)
    }

    /// The first occurrence after `now`.
    pub fn next_after(&self, now: Timestamp) -> Option<Timestamp> {
        match (self.every, self.cron()) {
            (Some(d), _) => {
                let step = i64::try_from(d.as_millis()).ok()?.max(1);
                let k = now.millis().checked_sub(self.created_at.millis())?.div_euclid(step) + 1;
                let t = k
                    .max(1)
                    .checked_mul(step)
                    .and_then(|o| self.created_at.millis().checked_add(o));
                Some(Timestamp(t?))
            }
            (None, Some(c)) => {
                let next = c.find_next_occurrence(&self.zoned(now)?, false).ok()?;
                Some(Timestamp(next.timestamp_millis()))
            }
            _ => None,
        }
    }

    /// What to do at `now`, given the last handled firing.
    pub fn decide(&self, last: Option<Timestamp>, now: Timestamp) -> Fire {
        let after = last.unwrap_or(self.created_at).max(self.created_at);
        match self.latest_due(after, now) {
            None => Fire::Idle,
            Some(t) if !self.enabled => Fire::Skip(t),
            Some(t) if !self.catch_up && now.since(t) > GRACE.as_millis() as u64 => Fire::Skip(t),
            Some(t) => Fire::Run(t),
        }
    }

    /// The task ID of the firing at `t`: the same on every replica.
    pub fn task_id(&self, t: Timestamp) -> String {
        format!("sched-{}-{}", self.name, t.millis())
    }

    /// The input bytes and content type of a firing.
    pub fn input_bytes(&self) -> (Vec<u8>, &'static str) {
        match &self.input {
            Value::Null => (Vec::new(), "application/octet-stream"),
            Value::String(s) => (s.as_bytes().to_vec(), "text/plain; charset=utf-8"),
            other => (serde_json::to_vec(other).unwrap_or_default(), "application/json"),
        }
    }
}

/// The body as an object of schedule keys only; a `name` in it must be the one in the path.
fn known_keys<'a>(name: &str, body: &'a Value) -> Result<&'a Map<String, Value>, PolicyError> {
    let obj: &Map<String, Value> = body
        .as_object()
        .ok_or_else(|| perr("schedule", "expected a JSON object"))?;
    const KEYS: [&str; 8] = [
        "function",
        "cron",
        "every",
        "time_zone",
        "input",
        "enabled",
        "catch_up",
        "name",
    ];
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(perr(
            &crate::core::function::shown_key(k),
            format!("unknown key; expected one of {}", KEYS[..7].join(", ")),
        ));
    }
    if obj.get("name").is_some_and(|n| n != name) {
        return Err(perr("name", "differs from the name in the path"));
    }
    Ok(obj)
}

fn string(obj: &Map<String, Value>, k: &str) -> Result<Option<String>, PolicyError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(perr(k, "expected a string")),
    }
}

/// A flag that is on unless the body turns it off.
fn boolean(obj: &Map<String, Value>, k: &str) -> Result<bool, PolicyError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(perr(k, "expected true or false")),
    }
}

/// When the schedule fires: exactly one of a valid `cron` expression or an `every` of at least 1s.
fn timing(obj: &Map<String, Value>) -> Result<(Option<String>, Option<Dur>), PolicyError> {
    let cron = string(obj, "cron")?;
    let every = string(obj, "every")?
        .map(|e| e.parse::<Dur>().map_err(|err| perr("every", err.to_string())))
        .transpose()?;
    match (&cron, every) {
        (Some(_), Some(_)) => return Err(perr("every", "give either cron or every, not both")),
        (None, None) => return Err(perr("cron", "required: a cron expression, or every")),
        (Some(c), None) => {
            croner::Cron::from_str(c).map_err(|e| perr("cron", format!("{c:?}: {e}")))?;
        }
        (None, Some(d)) if d.0 < Duration::from_secs(1) => return Err(perr("every", "must be at least 1s")),
        (None, Some(d)) if d.0 > MAX_EVERY => return Err(perr("every", format!("must be at most {}", Dur(MAX_EVERY)))),
        _ => {}
    }
    Ok((cron, every))
}

/// An IANA time zone, which only a cron schedule has: an `every` interval is the same in any zone.
fn time_zone(obj: &Map<String, Value>, every: Option<Dur>) -> Result<Option<String>, PolicyError> {
    let time_zone = string(obj, "time_zone")?;
    if let Some(tz) = &time_zone {
        if every.is_some() {
            return Err(perr("time_zone", "applies to cron schedules only"));
        }
        tz.parse::<chrono_tz::Tz>()
            .map_err(|_| perr("time_zone", format!("{tz:?} is not an IANA time zone")))?;
    }
    Ok(time_zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn every(d: &str) -> Schedule {
        Schedule::resolve("s", &json!({"function": "f", "every": d}), t("2026-11-28T10:00:00Z")).unwrap()
    }

    #[test]
    fn every_fires_on_multiples_of_its_interval_after_creation() {
        let s = every("10s");
        assert_eq!(s.latest_due(s.created_at, t("2026-11-28T10:00:09Z")), None);
        assert_eq!(
            s.latest_due(s.created_at, t("2026-11-28T10:00:25Z")),
            Some(t("2026-11-28T10:00:20Z"))
        );
        assert_eq!(s.latest_due(t("2026-11-28T10:00:20Z"), t("2026-11-28T10:00:25Z")), None);
        assert_eq!(s.next_after(t("2026-11-28T10:00:25Z")), Some(t("2026-11-28T10:00:30Z")));
        assert_eq!(s.next_after(t("2026-11-28T09:00:00Z")), Some(t("2026-11-28T10:00:10Z")));
    }

    #[test]
    fn cron_follows_its_time_zone() {
        let s = Schedule::resolve(
            "daily",
            &json!({"function": "f", "cron": "0 9 * * *", "time_zone": "Europe/Paris"}),
            t("2026-11-01T00:00:00Z"),
        )
        .unwrap();
        // 09:00 in Paris is 08:00 UTC in November.
        assert_eq!(s.next_after(t("2026-11-28T07:00:00Z")), Some(t("2026-11-28T08:00:00Z")));
        assert_eq!(
            s.latest_due(t("2026-11-27T08:00:00Z"), t("2026-11-28T08:30:00Z")),
            Some(t("2026-11-28T08:00:00Z"))
        );
    }

    #[test]
    fn after_downtime_only_the_latest_missed_firing_runs_or_none_without_catch_up() {
        let s = every("10s");
        let last = Some(t("2026-11-28T10:00:10Z"));
        let now = t("2026-11-28T10:01:05Z");
        assert_eq!(s.decide(last, now), Fire::Run(t("2026-11-28T10:01:00Z")));
        let no_catch_up = Schedule {
            catch_up: false,
            ..s.clone()
        };
        assert_eq!(no_catch_up.decide(last, now), Fire::Skip(t("2026-11-28T10:01:00Z")));
        assert_eq!(
            no_catch_up.decide(last, t("2026-11-28T10:01:00.500Z")),
            Fire::Run(t("2026-11-28T10:01:00Z"))
        );
        let disabled = Schedule {
            enabled: false,
            ..s.clone()
        };
        assert_eq!(disabled.decide(last, now), Fire::Skip(t("2026-11-28T10:01:00Z")));
        assert_eq!(s.decide(Some(t("2026-11-28T10:01:00Z")), now), Fire::Idle);
    }

    #[test]
    fn firing_times_that_do_not_fit_are_none_not_an_overflow() {
        // As stored before `every` was bounded: 106751991167d is near i64::MAX milliseconds.
        let s = Schedule {
            every: Some(Dur::from_secs(106_751_991_167 * 86_400)),
            ..every("1m")
        };
        assert_eq!(s.next_after(t("2026-11-28T10:00:01Z")), None);
        assert_eq!(s.latest_due(s.created_at, t("2026-11-28T10:00:01Z")), None);
        assert_eq!(s.decide(None, Timestamp(i64::MAX)), Fire::Idle);
        assert_eq!(every("1m").next_after(Timestamp(i64::MIN)), None);
    }

    #[test]
    fn firing_ids_are_derived_from_schedule_and_time() {
        let s = every("1m");
        assert_eq!(s.task_id(t("2026-11-28T10:01:00Z")), "sched-s-1795860060000");
        assert!(crate::core::task::valid_task_id(&s.task_id(Timestamp(i64::MAX))));
    }

    #[test]
    fn bad_schedules_name_the_key() {
        let now = Timestamp(0);
        let key = |v: Value| Schedule::resolve("s", &v, now).unwrap_err().key;
        assert_eq!(key(json!({"cron": "* * * * *"})), "function");
        assert_eq!(key(json!({"function": "f"})), "cron");
        assert_eq!(key(json!({"function": "f", "cron": "61 * * * *"})), "cron");
        assert_eq!(
            key(json!({"function": "f", "cron": "* * * * *", "every": "1m"})),
            "every"
        );
        assert_eq!(key(json!({"function": "f", "every": "500ms"})), "every");
        assert_eq!(
            key(json!({"function": "f", "cron": "* * * * *", "time_zone": "Mars/Olympus"})),
            "time_zone"
        );
        assert_eq!(
            key(json!({"function": "f", "every": "1m", "enabled": "yes"})),
            "enabled"
        );
        assert_eq!(key(json!({"function": "f", "every": "1m", "colour": 1})), "colour");
        // Longer than ten years; a cron expression with no moment to come.
        assert_eq!(key(json!({"function": "f", "every": "3651d"})), "every");
        assert_eq!(key(json!({"function": "f", "cron": "0 0 31 2 *"})), "cron");
        assert_eq!(key(json!({"function": "f", "cron": "* * * * * * 1969"})), "cron");
        assert_eq!(
            Schedule::resolve("a.b", &json!({"function": "f", "every": "1m"}), now)
                .unwrap_err()
                .key,
            "name"
        );
    }
}
