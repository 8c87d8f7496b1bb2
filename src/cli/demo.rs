//! The demo function of `jetask dev` and `examples/`: a small HTTP endpoint.
//! - `POST /echo` answers the input back;
//! - `POST /sleep?ms=N` answers after N milliseconds;
//! - `POST /fail?status=S` answers status S (500 by default);
//! - `POST /noop` answers 204 at once.

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

pub fn router() -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/noop", post(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/sleep",
            post(|Query(q): Query<HashMap<String, String>>, body: Bytes| async move {
                let ms = q.get("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
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

/// Serves the demo function on `addr` (port 0 for any); returns the bound address.
pub async fn serve(addr: SocketAddr) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, router()).await;
    });
    Ok((bound, handle))
}
