//! Where a task's result goes when it finishes (CONTRACT §6): a webhook, a NATS subject, or
//! another function.

use crate::task::valid_function_name;
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
    pub reason: &'static str,
}

fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|tok| !tok.is_empty())
        && !s.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
}

impl FromStr for Destination {
    type Err = DestinationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DestinationError {
            input: s.to_string(),
            reason,
        };
        if let Some(subject) = s.strip_prefix("nats:") {
            return if valid_subject(subject) {
                Ok(Destination::Nats(subject.to_string()))
            } else {
                Err(err("not a NATS subject without wildcards"))
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
            return match reqwest::Url::parse(s) {
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
}
