//! The NATS micro service `jetask` (CONTRACT §7): `jetask.api.task.*` and `jetask.api.fn.*`,
//! discoverable through `$SRV.PING/INFO/STATS`, JSON in and out with the same shapes and errors
//! as HTTP. Errors carry `Nats-Service-Error-Code: <HTTP status>` and `{"error": {...}}`.
//! NATS permissions decide who may call; a `Jetask-User` header scopes a call to that user.

use crate::api::{ApiError, ApiResult};
use crate::ops::{self, Caller};
use crate::service::Ctx;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const ENDPOINTS: [&str; 10] = [
    "task.get",
    "task.list",
    "task.stop",
    "task.heartbeat",
    "task.complete",
    "task.replay",
    "fn.put",
    "fn.get",
    "fn.list",
    "fn.delete",
];

/// Starts the service and serves its endpoints until `shutdown`.
pub async fn run(ctx: Arc<Ctx>, ready: tokio::sync::oneshot::Sender<()>, shutdown: CancellationToken) {
    let service = match ctx
        .nats
        .client
        .service_builder()
        .description("jetask: asynchronous tasks on NATS JetStream")
        .start("jetask", env!("CARGO_PKG_VERSION"))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the NATS micro service");
            return;
        }
    };
    let group = service.group("jetask.api");
    let mut endpoints = Vec::new();
    for name in ENDPOINTS {
        match group.endpoint(name).await {
            Ok(ep) => endpoints.push((name, ep)),
            Err(e) => tracing::error!(endpoint = name, error = %e, "cannot add NATS API endpoint"),
        }
    }
    let _ = ctx.nats.client.flush().await;
    let _ = ready.send(());
    let mut merged = futures::stream::select_all(endpoints.into_iter().map(|(name, ep)| ep.map(move |r| (name, r))));
    loop {
        let (name, request) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = merged.next() => match r { Some(r) => r, None => break },
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let caller = Caller {
                user: request
                    .message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(crate::subjects::headers::USER))
                    .map(|v| v.as_str().to_string()),
            };
            let answer = handle(&ctx, name, &caller, &request.message.payload).await;
            respond(&request, answer).await;
        });
    }
    let _ = service.stop().await;
}

async fn respond(request: &Request, answer: ApiResult<Value>) {
    let mut headers = async_nats::HeaderMap::new();
    let body = match answer {
        Ok(v) => v,
        Err(e) => {
            headers.insert("Nats-Service-Error", e.message.as_str());
            headers.insert("Nats-Service-Error-Code", e.status.as_u16().to_string().as_str());
            e.body()
        }
    };
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
        tracing::warn!(error = %e, "cannot answer NATS API request");
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_body", message)
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> ApiResult<&'a str> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{key}: required, a string")))
}

/// Query parameters as HTTP would see them: every value as a string.
fn params(obj: &Map<String, Value>) -> HashMap<String, String> {
    obj.iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
            )
        })
        .collect()
}

async fn handle(ctx: &Ctx, endpoint: &str, caller: &Caller, payload: &[u8]) -> ApiResult<Value> {
    let body: Value = if payload.is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(payload).map_err(|e| bad(format!("request is not JSON: {e}")))?
    };
    let obj = body.as_object().ok_or_else(|| bad("expected a JSON object"))?;
    match endpoint {
        "task.get" => {
            let include = obj.get("include_input").and_then(Value::as_bool).unwrap_or(false);
            ops::task_get(ctx, caller, field(obj, "id")?, include).await
        }
        "task.list" => ops::task_list(ctx, caller, &params(obj)).await,
        "task.stop" => ops::task_stop(ctx, caller, field(obj, "id")?).await,
        "task.heartbeat" => {
            let attempt = ops::reported_attempt(&body, None)?;
            ops::task_heartbeat(ctx, caller, field(obj, "id")?, attempt).await
        }
        "task.complete" => {
            let attempt = ops::reported_attempt(&body, None)?;
            ops::task_complete(ctx, caller, field(obj, "id")?, &body, attempt).await
        }
        "task.replay" => {
            let key = obj.get("idempotency_key").and_then(Value::as_str);
            ops::task_replay(ctx, caller, field(obj, "id")?, key)
                .await
                .map(|(_, v)| v)
        }
        "fn.put" => {
            let name = field(obj, "name")?.to_string();
            let mut spec = obj.clone();
            spec.remove("name");
            ops::fn_put(ctx, &name, &Value::Object(spec)).await.map(|(_, v)| v)
        }
        "fn.get" => ops::fn_get(ctx, field(obj, "name")?).await,
        "fn.list" => ops::fn_list(ctx).await,
        "fn.delete" => ops::fn_delete(ctx, field(obj, "name")?).await,
        other => Err(ApiError::not_found("not_found", format!("no endpoint {other}"))),
    }
}
