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
            let hex = crate::core::hex::lower(&digest[..24]);
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

/// With the `otel` feature, an attempt's span joins the submitter's trace (its parent is the
/// submission's `traceparent`), and the function is called with the attempt's own span as parent;
/// without it (or with no exporter configured) `traceparent` passes through unchanged.
pub fn outgoing(span: &tracing::Span, submitted: Option<&str>) -> Option<String> {
    #[cfg(feature = "otel")]
    if otel::enabled() {
        return otel::adopt(span, submitted);
    }
    let _ = span;
    submitted.map(str::to_string)
}

/// OpenTelemetry export (cargo feature `otel`): spans go over OTLP/HTTP to
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard OTLP environment variables apply).
#[cfg(feature = "otel")]
pub mod otel {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    static ENABLED: AtomicBool = AtomicBool::new(false);

    pub fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// The exporting layer and its provider (to shut down at exit), when an endpoint is set.
    pub fn layer<S>() -> Result<Option<(impl tracing_subscriber::Layer<S>, SdkTracerProvider)>, String>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("OpenTelemetry exporter: {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("jetask")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("jetask");
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some((tracing_opentelemetry::layer().with_tracer(tracer), provider)))
    }

    /// Makes `span` a child of the submitter's span, and returns the `traceparent` naming
    /// `span` for the call it makes.
    pub fn adopt(span: &tracing::Span, submitted: Option<&str>) -> Option<String> {
        let propagator = TraceContextPropagator::new();
        if let Some(tp) = submitted {
            let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
            let _ = span.set_parent(propagator.extract(&carrier));
        }
        let mut out: HashMap<String, String> = HashMap::new();
        propagator.inject_context(&span.context(), &mut out);
        out.remove("traceparent").or_else(|| submitted.map(str::to_string))
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
