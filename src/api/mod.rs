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
mod openapi;
mod schedules;
mod tasks;
mod views;

pub use crate::api::ops::Caller;
pub use error::{ApiError, ApiResult, ErrorBody, ErrorDetail};

use crate::engine::ctx::Ctx;
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::{request::Parts, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use openapi::{Health, Ready};
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The one parameter of a route's path (`{name}`, `{id}`), percent-decoded. A segment that
/// does not decode to UTF-8 is taken with U+FFFD in place of the bad bytes, so that the route's
/// own check refuses it with its own JSON error (`invalid_function_name`, `invalid_request`,
/// ...) rather than axum answering a plain-text `400`.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Ok(axum::extract::Path(v)) = axum::extract::Path::<String>::from_request_parts(parts, state).await {
            return Ok(Segment(v));
        }
        let template = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_default();
        let raw = parts
            .uri
            .path()
            .split('/')
            .zip(template.split('/'))
            .find(|(_, t)| t.starts_with('{'))
            .map(|(r, _)| percent_decode_lossy(r));
        raw.map(Segment)
            .ok_or_else(|| ApiError::bad_request("invalid_request", "the path has no parameter here"))
    }
}

/// `%XX` escapes decoded, then bytes that are not UTF-8 replaced by U+FFFD.
fn percent_decode_lossy(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every route of the HTTP API, each with its entry in the OpenAPI document: `routes!` takes the
/// method and path from the handler's `#[utoipa::path]`, so none is served undocumented. Add
/// routes here only this way (`tests/openapi.rs` refuses a plain `.route(`).
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .routes(routes!(functions::list))
        .routes(routes!(functions::get, functions::put, functions::delete))
        .routes(routes!(tasks::submit))
        .routes(routes!(tasks::submit_batch))
        .routes(routes!(schedules::list))
        .routes(routes!(schedules::get, schedules::put, schedules::delete))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::stop_many))
        .routes(routes!(tasks::replay_many))
        .routes(routes!(tasks::get))
        .routes(routes!(tasks::stop))
        .routes(routes!(tasks::heartbeat))
        .routes(routes!(tasks::complete))
        .routes(routes!(tasks::replay))
        .routes(routes!(views::timeline))
        .routes(routes!(views::overview))
}

/// The OpenAPI 3.1 document of the HTTP API, as `GET /openapi.json` answers it.
pub fn openapi() -> serde_json::Value {
    openapi::finish(routes().into_openapi())
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    let (router, _) = routes().split_for_parts();
    // The console's page and assets are not API: served beside it, outside the document.
    router
        .merge(console::routes())
        .fallback(|| async { ApiError::not_found("not_found", "no such route") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(AppState(ctx))
}

/// What the listener answers while start-up waits for JetStream: alive, not ready, and what it
/// is waiting for.
pub fn starting_router(progress: Arc<crate::store::setup::Progress>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(move || {
                let waiting = progress.get();
                async move {
                    let ready = Ready {
                        ready: false,
                        nats: false,
                        index: false,
                        waiting_for: Some(waiting),
                    };
                    (StatusCode::SERVICE_UNAVAILABLE, Json(ready))
                }
            }),
        )
        .route("/openapi.json", get(openapi_json))
        .fallback(|| async { ApiError::unavailable("starting: JetStream is not set up yet") })
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health", responses((status = 200, description = "alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Ready: connected to NATS, and the list index has replayed the tasks bucket.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses(
        (status = 200, description = "ready", body = Ready),
        (status = 503, description = "not ready (also while start-up waits for JetStream, with `waiting_for`)", body = Ready),
    )
)]
async fn readyz(State(ctx): State<Arc<Ctx>>) -> (StatusCode, Json<Ready>) {
    let connected = ctx.nats.client.connection_state() == async_nats::connection::State::Connected;
    let ready = connected && ctx.index.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = Ready {
        ready,
        nats: connected,
        index: ctx.index.ready(),
        waiting_for: None,
    };
    (status, Json(answer))
}

/// Prometheus metrics in the OpenMetrics text format (docs/observability.md).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(State(ctx): State<Arc<Ctx>>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(&ctx).await,
    )
}

/// This document: the OpenAPI 3.1 description of the whole HTTP API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    responses((status = 200, description = "the OpenAPI document", body = Object, content_type = "application/json"))
)]
async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOC: std::sync::LazyLock<axum::body::Bytes> =
        std::sync::LazyLock::new(|| serde_json::to_vec(&openapi()).unwrap_or_default().into());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], DOC.clone())
}
