//! The webhook receiver of `jetask dev`: it takes deliveries on any path (the demo functions
//! send to `/hook`), checks each one's Standard Webhooks signature with the signing secret of
//! the function the delivery names, and prints one line per delivery, verified or not, on
//! `jetask dev`'s output. A verified delivery is answered `204`; any other `401`, which jetask
//! retries like any failed delivery.
//!
//! A receiver of your own does the same with the secret its function's `PUT` showed once:
//! `examples/webhook_receiver.rs`.

use crate::engine::ctx::Ctx;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The service whose functions' secrets verify the deliveries; set once it has started (a
/// delivery cannot come before).
pub type Service = Arc<OnceLock<Arc<Ctx>>>;

/// The signatures' allowed distance from now, as Standard Webhooks advises.
const TOLERANCE_SECS: i64 = 300;

/// Serves the receiver on a bound listener; returns its address.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    service: Service,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let (service, seen) = (service.clone(), seen.clone());
        async move {
            let (line, code) = receive(service.get(), &seen, &uri, &headers, &body).await;
            say!("{line}");
            code
        }
    });
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((bound, handle))
}

async fn receive(
    ctx: Option<&Arc<Ctx>>,
    seen: &Mutex<HashSet<String>>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (String, StatusCode) {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let task = &event["task"];
    let function = task["function"].as_str().unwrap_or("?");
    let what = format!(
        "webhook {} for task {} ({}) of function {} on {}",
        shown(&event["type"]),
        shown(&task["id"]),
        shown(&task["status"]),
        shown(&task["function"]),
        shown(&serde_json::Value::String(uri.path().to_string()))
    );
    let secret = match ctx {
        Some(ctx) => ctx.function(function).await.and_then(|f| f.signing_secret.clone()),
        None => None,
    };
    let Some(secret) = secret else {
        return (
            format!("{what}: signature NOT verified (no such function to take a secret from); answered 401"),
            StatusCode::UNAUTHORIZED,
        );
    };
    let now = chrono::Utc::now().timestamp();
    match crate::core::signing::verify(&secret, &id, &ts, body, &sig, now, TOLERANCE_SECS) {
        Ok(()) => {
            let first = seen
                .lock()
                .map(|mut s| {
                    if s.len() >= 10_000 {
                        s.clear();
                    }
                    s.insert(id.clone())
                })
                .unwrap_or(true);
            let again = if first { "" } else { " (a resend: same webhook-id)" };
            (format!("{what}: signature verified{again}"), StatusCode::NO_CONTENT)
        }
        Err(e) => (
            format!("{what}: signature NOT verified ({e}); answered 401"),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

/// A field of an unverified body as it may be printed on a terminal: at most 128 characters,
/// control characters (escape sequences) replaced.
fn shown(v: &serde_json::Value) -> String {
    let text = v.as_str().unwrap_or("?");
    let mut out: String = text
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 128 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_delivery_says_is_printed_without_control_characters() {
        assert_eq!(shown(&serde_json::json!("job-7")), "job-7");
        assert_eq!(shown(&serde_json::json!("a\u{1b}[2Jb\n")), "a?[2Jb?");
        assert_eq!(shown(&serde_json::json!(7)), "?");
        assert_eq!(shown(&serde_json::json!("x".repeat(200))).chars().count(), 129);
    }
}
