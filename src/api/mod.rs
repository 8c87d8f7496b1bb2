//! The interfaces clients talk to: the HTTP API (CONTRACT §3.2, §4, §6, §8, this module and its
//! handlers), the NATS micro service ([`nats`]), and the task and function operations both share
//! ([`ops`]). A thin layer that reads requests, calls into the engine, the stores and the state
//! machine, and writes answers.
//!
//! May import: `engine`, `store` and `core`; not `service` (it hands the API its context).

pub mod nats;
pub mod ops;

mod console;
mod error;
mod functions;
mod schedules;
mod tasks;
mod views;

pub use crate::api::ops::Caller;
pub use error::{ApiError, ApiResult};

use crate::engine::ctx::Ctx;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::{request::Parts, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState(pub Arc<Ctx>);

impl FromRef<AppState> for Arc<Ctx> {
    fn from_ref(s: &AppState) -> Arc<Ctx> {
        s.0.clone()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tokens = &state.0.config.auth.tokens;
        if tokens.is_empty() {
            return Ok(Caller { user: None });
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authorization: Bearer TOKEN is required",
                )
            })?;
        match tokens.get(token) {
            Some(user) => Ok(Caller {
                user: Some(user.clone()),
            }),
            None => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "unknown token")),
        }
    }
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/functions", get(functions::list))
        .route(
            "/v1/functions/{name}",
            get(functions::get).put(functions::put).delete(functions::delete),
        )
        .route("/v1/functions/{name}/tasks", post(tasks::submit))
        .route("/v1/functions/{name}/tasks:batch", post(tasks::submit_batch))
        .route("/v1/schedules", get(schedules::list))
        .route(
            "/v1/schedules/{name}",
            get(schedules::get).put(schedules::put).delete(schedules::delete),
        )
        .route("/v1/tasks", get(tasks::list))
        .route("/v1/tasks:stop", post(tasks::stop_many))
        .route("/v1/tasks:replay", post(tasks::replay_many))
        .route("/v1/tasks/{id}", get(tasks::get))
        .route("/v1/tasks/{id}/stop", post(tasks::stop))
        .route("/v1/tasks/{id}/heartbeat", post(tasks::heartbeat))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/v1/tasks/{id}/replay", post(tasks::replay))
        .route("/v1/tasks/{id}/timeline", get(views::timeline))
        .route("/v1/overview", get(views::overview))
        .route("/", get(console::page))
        .route("/ui", get(console::page))
        .route("/ui/", get(console::page))
        .route("/ui/{*path}", get(console::asset))
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(AppState(ctx))
}

/// What the listener answers while start-up waits for JetStream: alive, not ready, and what it
/// is waiting for.
pub fn starting_router(progress: Arc<crate::store::setup::Progress>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(move || {
                let waiting = progress.get();
                async move {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(
                            serde_json::json!({"ready": false, "nats": false, "index": false, "waiting_for": waiting}),
                        ),
                    )
                }
            }),
        )
        .fallback(|| async { ApiError::unavailable("starting: JetStream is not set up yet") })
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, Json<serde_json::Value>) {
    let connected = ctx.nats.client.connection_state() == async_nats::connection::State::Connected;
    let ready = connected && ctx.index.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "nats": connected, "index": ctx.index.ready()})),
    )
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(&ctx).await,
    )
}
