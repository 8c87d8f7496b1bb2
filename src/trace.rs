//! W3C trace context. A submission's `traceparent` is passed on unchanged to every call of its
//! function and to its result delivery (CONTRACT §3, §5), and its trace ID is on the log span of
//! each attempt, so logs join with the submitter's traces. A task submitted without one is
//! logged under a trace ID derived from its task ID: all its attempts share it.

use sha2::Digest;

/// The parts of a `traceparent` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: String,
    pub span_id: String,
    pub flags: String,
}

impl TraceContext {
    /// Reads a `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); `None` if malformed or all zero.
    pub fn parse(raw: &str) -> Option<TraceContext> {
        let mut parts = raw.trim().split('-');
        let (version, trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        if !hex(version, 2) || version == "ff" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        if zero(trace_id) || zero(span_id) {
            return None;
        }
        Some(TraceContext {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
            flags: flags.to_ascii_lowercase(),
        })
    }

    /// The trace a task's calls belong to: the submitter's, or one derived from the task ID when
    /// the submitter sent none (so all attempts and the callback of a task share one trace).
    pub fn of_task(traceparent: Option<&str>, task_id: &str) -> TraceContext {
        traceparent.and_then(TraceContext::parse).unwrap_or_else(|| {
            let digest = sha2::Sha256::digest(task_id.as_bytes());
            let hex: String = digest[..24].iter().map(|b| format!("{b:02x}")).collect();
            TraceContext {
                trace_id: hex[..32].to_string(),
                span_id: hex[32..].to_string(),
                flags: "01".into(),
            }
        })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_w3c_example_and_rejects_malformed_ones() {
        let t = TraceContext::parse(TP).unwrap();
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.header(), TP);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_task_without_a_traceparent_gets_a_trace_derived_from_its_id() {
        let a = TraceContext::of_task(None, "t1");
        assert_eq!(a, TraceContext::of_task(Some("garbage"), "t1"));
        assert_ne!(a.trace_id, TraceContext::of_task(None, "t2").trace_id);
        assert_eq!(TraceContext::parse(&a.header()), Some(a));
        assert_eq!(TraceContext::of_task(Some(TP), "t1").header(), TP);
    }
}
