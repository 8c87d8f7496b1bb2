//! The demo functions of `jetask dev` and `examples/`: one small HTTP server.
//! - `POST /echo` answers the input back;
//! - `POST /flaky` fails (500) every other call for the same input: the first call with an
//!   input fails, the next one with that input succeeds (answering it back), and so on;
//! - `POST /slow?ms=N` answers the input back after N milliseconds (20 s by default);
//! - `POST /long` answers `202` with `Jetask-Async: true` at once: a long task, left `Running`
//!   until someone heartbeats and completes it (`POST /v1/tasks/{id}/heartbeat`, `/complete`);
//! - `POST /sleep?ms=N` answers after N milliseconds (1 s by default);
//! - `POST /fail?status=S` answers status S (500 by default);
//! - `POST /noop` answers 204 at once.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `/slow` takes when no `ms` is given.
pub const SLOW_DEFAULT_MS: u64 = 20_000;

/// Inputs `/flaky` remembers at most; past this it forgets them all (it is a demo).
const FLAKY_MEMORY: usize = 10_000;

fn millis(q: &HashMap<String, String>, default: u64) -> Duration {
    Duration::from_millis(q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(default))
}

pub fn router() -> Router {
    // Inputs whose last call to /flaky failed: their next call succeeds.
    let failed: Arc<Mutex<HashSet<Bytes>>> = Arc::default();
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/noop", post(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/flaky",
            post(move |body: Bytes| {
                let failed = failed.clone();
                async move {
                    let mut seen = failed.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.remove(&body) {
                        return (StatusCode::OK, body);
                    }
                    if seen.len() >= FLAKY_MEMORY {
                        seen.clear();
                    }
                    seen.insert(body);
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Bytes::from_static(b"demo failure: flaky fails every other call for the same input"),
                    )
                }
            }),
        )
        .route(
            "/slow",
            post(|Query(q): Query<HashMap<String, String>>, body: Bytes| async move {
                tokio::time::sleep(millis(&q, SLOW_DEFAULT_MS)).await;
                body
            }),
        )
        .route(
            "/long",
            post(|| async {
                (
                    StatusCode::ACCEPTED,
                    [("Jetask-Async", "true")],
                    "started: heartbeat and complete this task through jetask's API",
                )
            }),
        )
        .route(
            "/sleep",
            post(|Query(q): Query<HashMap<String, String>>, body: Bytes| async move {
                tokio::time::sleep(millis(&q, 1000)).await;
                body
            }),
        )
        .route(
            "/fail",
            post(|Query(q): Query<HashMap<String, String>>| async move {
                let code = q.get("status").and_then(|v| v.parse().ok()).unwrap_or(500);
                (
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "demo failure",
                )
            }),
        )
}

/// Serves the demo functions on `addr` (port 0 for any); returns the bound address.
pub async fn serve(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_on(listener)
}

/// Serves the demo functions on a bound listener; returns its address.
pub fn serve_on(listener: tokio::net::TcpListener) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, router()).await;
    });
    Ok((bound, handle))
}
