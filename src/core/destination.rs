//! Where a task's result goes when it finishes (CONTRACT §6): a webhook, a NATS subject, or
//! another function. jetask publishes to a `nats:` destination with its own credentials, so a
//! destination is also a question of trust: the rules here keep a user's destination out of
//! jetask's state and NATS's internals (CONTRACT §12), and an operator can narrow them with
//! `[destinations] nats_allow` and the `[egress]` policy of webhooks.

use crate::core::egress;
use crate::core::task::valid_function_name;
use serde::Deserialize;
use std::{fmt, str::FromStr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Webhook(String),
    Nats(String),
    Function(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid destination {input:?}: {reason}")]
pub struct DestinationError {
    pub input: String,
    pub reason: String,
}

/// The one part of jetask's own subjects that destinations may use: results published there
/// are for subscribers, and jetask itself never listens under it.
pub const RESULTS_PREFIX: &str = "jetask.results.";

/// The longest subject a destination may have. A NATS server drops a connection whose control
/// line is over its `max_control_line` (4 KiB by default): one long destination would otherwise
/// disconnect jetask at every delivery.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// Why `subject` cannot be a destination, whoever configured it: jetask would publish there
/// with its own credentials.
pub fn subject_refusal(subject: &str) -> Option<&'static str> {
    if subject.is_empty()
        || subject.split('.').any(str::is_empty)
        || subject.contains(|c: char| c.is_whitespace() || c.is_control() || c == '*' || c == '>')
    {
        return Some("not a plain NATS subject (no wildcards * or >, no empty tokens, no spaces)");
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Some("a subject of more than 1024 bytes");
    }
    if subject.starts_with('$') {
        // $JS.API, $KV.<bucket>, $SYS, $O: a message there is a command to the server or a
        // write into a bucket (a task record, a function).
        return Some("subjects starting with $ are NATS and JetStream internals ($JS, $KV, $SYS)");
    }
    if subject.starts_with("_INBOX") {
        return Some("_INBOX subjects carry replies to other clients' requests");
    }
    if subject.split('.').next() == Some("jetask") && !subject.starts_with(RESULTS_PREFIX) {
        return Some("jetask.> subjects are jetask's own; results may go under jetask.results.>");
    }
    None
}

/// A subject with NATS wildcards (`*` one token, `>` the rest), as `[destinations] nats_allow`
/// lists them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SubjectPattern(String);

impl SubjectPattern {
    pub fn matches(&self, subject: &str) -> bool {
        let mut tokens = subject.split('.');
        for p in self.0.split('.') {
            match (p, tokens.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (p, Some(t)) if p == t => {}
                _ => return false,
            }
        }
        tokens.next().is_none()
    }
}

impl TryFrom<String> for SubjectPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let tokens: Vec<&str> = s.split('.').collect();
        let last = tokens.len() - 1;
        let token_ok = |(i, t): (usize, &&str)| {
            !t.is_empty()
                && (*t == "*" || (*t == ">" && i == last) || !t.contains(['*', '>']))
                && !t.contains(|c: char| c.is_whitespace() || c.is_control())
        };
        if tokens.iter().enumerate().all(token_ok) {
            Ok(SubjectPattern(s))
        } else {
            Err(format!(
                "{s:?} is not a NATS subject pattern (tokens separated by dots, * for one token, > last for the rest)"
            ))
        }
    }
}

impl fmt::Display for SubjectPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The operator's narrowing of destinations, over the built-in rules: every place that takes a
/// destination (submission, `PUT` of a function, delivery) checks it against these.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// When not empty, a `nats:` subject must match one of these (`destinations.nats_allow`).
    pub nats_allow: &'a [SubjectPattern],
    /// Where webhooks may go (`[egress]`).
    pub egress: &'a egress::Policy,
}

impl Destination {
    /// Whether the operator's rules let this destination be used; why not otherwise.
    pub fn permitted(&self, rules: &Rules<'_>) -> Result<(), String> {
        match self {
            Destination::Nats(subject) => {
                if rules.nats_allow.is_empty() || rules.nats_allow.iter().any(|p| p.matches(subject)) {
                    Ok(())
                } else {
                    let allowed: Vec<String> = rules.nats_allow.iter().map(|p| p.to_string()).collect();
                    Err(format!(
                        "not allowed by destinations.nats_allow ({})",
                        allowed.join(", ")
                    ))
                }
            }
            Destination::Webhook(url) => match url::Url::parse(url) {
                Ok(u) => rules.egress.check_url(&u).map_err(|e| e.to_string()),
                Err(_) => Err("not a valid URL".into()),
            },
            Destination::Function(_) => Ok(()),
        }
    }
}

/// Parses `raw` and checks it against the operator's rules.
pub fn check(raw: &str, rules: &Rules<'_>) -> Result<Destination, DestinationError> {
    let dest: Destination = raw.parse()?;
    dest.permitted(rules).map_err(|reason| DestinationError {
        input: raw.to_string(),
        reason,
    })?;
    Ok(dest)
}

impl FromStr for Destination {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| DestinationError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(subject) = s.strip_prefix("nats:") {
            return match subject_refusal(subject) {
                None => Ok(Destination::Nats(subject.to_string())),
                Some(why) => Err(err(why)),
            };
        }
        if let Some(name) = s.strip_prefix("function:") {
            return if valid_function_name(name) {
                Ok(Destination::Function(name.to_string()))
            } else {
                Err(err("not a function name ([A-Za-z0-9_-]{1,64})"))
            };
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return match url::Url::parse(s) {
                Ok(u) if u.host().is_some() => Ok(Destination::Webhook(s.to_string())),
                _ => Err(err("not a valid URL")),
            };
        }
        Err(err("expected https://…, http://…, nats:SUBJECT or function:NAME"))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Webhook(u) => f.write_str(u),
            Destination::Nats(s) => write!(f, "nats:{s}"),
            Destination::Function(n) => write!(f, "function:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            "https://x.test/cb".parse(),
            Ok(Destination::Webhook("https://x.test/cb".into()))
        );
        assert_eq!(
            "nats:results.resize".parse(),
            Ok(Destination::Nats("results.resize".into()))
        );
        assert_eq!("function:thumb".parse(), Ok(Destination::Function("thumb".into())));
    }

    #[test]
    fn refuses_the_rest_with_a_reason() {
        for bad in ["ftp://x", "nats:a.>", "nats:", "function:a.b", "http://", "mailto:x"] {
            assert!(bad.parse::<Destination>().is_err(), "{bad} accepted");
        }
    }

    fn reason(raw: &str) -> String {
        match raw.parse::<Destination>() {
            Err(e) => e.reason,
            Ok(d) => panic!("{raw} accepted as {d:?}"),
        }
    }

    #[test]
    fn a_nats_destination_cannot_reach_jetask_state_or_nats_internals() {
        for bad in [
            "nats:$KV.JETASK_TASKS.someone-elses-task",
            "nats:$KV.JETASK_FUNCTIONS.resize",
            "nats:$JS.API.STREAM.PURGE.JETASK_SUBMIT",
            "nats:$SYS.REQ.SERVER.PING",
        ] {
            assert!(reason(bad).contains("starting with $"), "{bad}");
        }
        assert!(reason("nats:_INBOX.x").contains("_INBOX"));
        assert!(reason("nats:_INBOXES").contains("_INBOX"));
        for bad in [
            "nats:jetask.control.stop",
            "nats:jetask.submit.f",
            "nats:jetask",
            "nats:jetask.results",
        ] {
            assert!(reason(bad).contains("jetask's own"), "{bad}");
        }
        for bad in [
            "nats:a.*",
            "nats:>",
            "nats:a..b",
            "nats:.a",
            "nats:a.",
            "nats:a b",
            "nats:a\tb",
            "nats:a\u{0}b",
        ] {
            assert!(reason(bad).contains("plain NATS subject"), "{bad}");
        }
        assert!(reason(&format!("nats:{}", "a".repeat(MAX_SUBJECT_LEN + 1))).contains("1024"));
    }

    #[test]
    fn ordinary_subjects_and_the_results_prefix_stay_usable() {
        for ok in [
            "nats:results.resize",
            "nats:jetask.results.resize",
            "nats:jetaskx.a",
            "nats:orders.eu.created",
            "nats:a$b",
            "nats:JETASK.x",
        ] {
            assert!(ok.parse::<Destination>().is_ok(), "{ok} refused");
        }
    }

    fn pattern(p: &str) -> SubjectPattern {
        SubjectPattern::try_from(p.to_string()).unwrap()
    }

    #[test]
    fn subject_patterns_match_as_nats_does() {
        assert!(pattern("orders.>").matches("orders.eu"));
        assert!(pattern("orders.>").matches("orders.eu.created"));
        assert!(!pattern("orders.>").matches("orders"));
        assert!(pattern("orders.*.created").matches("orders.eu.created"));
        assert!(!pattern("orders.*.created").matches("orders.eu.x.created"));
        assert!(!pattern("orders.*").matches("orders.eu.created"));
        assert!(pattern("a.b").matches("a.b") && !pattern("a.b").matches("a.b.c"));
        for bad in ["", "a..b", "a.>.b", "a*.b", "a.b>", "a b"] {
            assert!(SubjectPattern::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_operator_allow_list_narrows_nats_destinations() {
        let allow = [pattern("orders.>"), pattern("jetask.results.>")];
        let egress = egress::Policy::default();
        let rules = Rules {
            nats_allow: &allow,
            egress: &egress,
        };
        assert!(check("nats:orders.created", &rules).is_ok());
        assert!(check("nats:jetask.results.x", &rules).is_ok());
        let e = check("nats:alerts", &rules).unwrap_err();
        assert!(
            e.reason
                .contains("destinations.nats_allow (orders.>, jetask.results.>)"),
            "{e}"
        );
        // The allow list cannot open what the built-in rules close.
        let open = [pattern(">")];
        let rules = Rules {
            nats_allow: &open,
            egress: &egress,
        };
        assert!(check("nats:$KV.JETASK_TASKS.x", &rules).is_err());
        assert!(check("function:g", &rules).is_ok());
    }

    #[test]
    fn a_webhook_destination_passes_the_egress_policy() {
        let egress = egress::Policy::default();
        let rules = Rules {
            nats_allow: &[],
            egress: &egress,
        };
        assert!(check("http://127.0.0.1:9000/hook", &rules).is_ok());
        let e = check("http://169.254.169.254/latest/meta-data/", &rules).unwrap_err();
        assert!(e.reason.contains("egress policy"), "{e}");
        assert!(check("http://metadata.google.internal/", &rules).is_err());
    }
}
