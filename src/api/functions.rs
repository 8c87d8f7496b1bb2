//! `PUT/GET/DELETE /v1/functions/{name}` and `GET /v1/functions`.

use super::{ApiError, ApiResult, Caller};
use crate::function::{self, Function};
use crate::service::Ctx;
use crate::subjects;
use crate::task::{valid_function_name, Status};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde_json::Value;
use std::sync::Arc;

fn check_name(name: &str) -> ApiResult<()> {
    if valid_function_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_function_name",
            format!("{name:?} is not a function name ([A-Za-z0-9_-]{{1,64}})"),
        ))
    }
}

/// A new Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
pub fn new_signing_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    _caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_name(&name)?;
    let partial: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("body is not JSON: {e}")))?;
    let mut spec = function::resolve(&partial, &ctx.config.defaults, ctx.config.retention())
        .map_err(|e| ApiError::bad_request("invalid_policy", e.to_string()))?;
    let existing = ctx.functions.get(&name).await?;
    let mut generated = None;
    if spec.signing_secret.is_none() {
        match existing.as_ref().and_then(|f| f.spec.signing_secret.clone()) {
            Some(kept) => spec.signing_secret = Some(kept),
            None => {
                let s = new_signing_secret();
                generated = Some(s.clone());
                spec.signing_secret = Some(s);
            }
        }
    }
    let f = Function {
        name: name.clone(),
        spec,
    };
    ctx.put_function(&f).await.map_err(ApiError::unavailable)?;
    let mut answer = f.spec.public_json(&name);
    if let Some(s) = generated {
        // Shown once: GET never returns it.
        answer["signing_secret"] = Value::String(s);
    }
    let status = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(answer)))
}

pub async fn get(State(ctx): State<Arc<Ctx>>, _caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    check_name(&name)?;
    let f = ctx
        .functions
        .get(&name)
        .await?
        .ok_or_else(|| ApiError::function_not_found(&name))?;
    let mut v = f.spec.public_json(&name);
    let (queued, in_flight) = match ctx.nats.submit.consumer_info(subjects::dispatch_consumer(&name)).await {
        Ok(info) => (info.num_pending, info.num_ack_pending as u64),
        Err(_) => (0, 0),
    };
    let running = ctx.index.count(&name, Status::Running) as u64;
    v["queued"] = queued.into();
    v["running"] = running.into();
    // Delivered but not running: delayed or waiting for a retry.
    v["delayed"] = in_flight.saturating_sub(running).into();
    v["concurrency_limit"] = f.spec.concurrency.max.into();
    Ok(Json(v))
}

pub async fn delete(State(ctx): State<Arc<Ctx>>, _caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    check_name(&name)?;
    if ctx.functions.delete(&name).await? {
        ctx.registry.remove(&name);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::function_not_found(&name))
    }
}

pub async fn list(State(ctx): State<Arc<Ctx>>, _caller: Caller) -> ApiResult<Json<Value>> {
    let all = ctx.functions.list().await?;
    let functions: Vec<Value> = all.iter().map(|f| f.spec.public_json(&f.name)).collect();
    Ok(Json(serde_json::json!({ "functions": functions })))
}
