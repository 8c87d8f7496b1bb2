//! A webhook receiver that verifies jetask's Standard Webhooks signatures:
//! `cargo run --example webhook_receiver -- whsec_… [ADDR]` (default 127.0.0.1:9090), then
//! `jetask fn put f --endpoint … --policy '{"on_success": "http://127.0.0.1:9090/hook"}'` with
//! the secret that `PUT` returned.
//!
//! Answers 204 to a valid delivery (printing its type and task), 401 to a bad signature or a
//! timestamp more than five minutes away. Deliveries are retried until a 2xx, each resend with
//! the same `webhook-id`: a receiver that must act once keeps the IDs it has seen.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(secret) = args.next().filter(|s| s.starts_with("whsec_")) else {
        eprintln!("usage: webhook_receiver whsec_SECRET [ADDR]");
        std::process::exit(2);
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9090".into());
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let (secret, seen) = (secret.clone(), seen.clone());
        async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if let Err(e) = jetask::core::signing::verify(&secret, &id, &ts, &body, &sig, now, 300) {
                eprintln!("refused {id}: {e}");
                return StatusCode::UNAUTHORIZED;
            }
            let first = seen.lock().map(|mut s| s.insert(id.clone())).unwrap_or(true);
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            println!(
                "{} {} task {} ({})",
                if first { "got" } else { "again" },
                event["type"].as_str().unwrap_or("?"),
                event["task"]["id"].as_str().unwrap_or("?"),
                event["task"]["status"].as_str().unwrap_or("?")
            );
            StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("verifying webhooks on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
