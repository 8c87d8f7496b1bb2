//! The NATS micro service `jetask` (CONTRACT §7): `jetask.api.task.*` and `jetask.api.fn.*`,
//! discoverable through `$SRV.PING/INFO/STATS`, JSON in and out with the same shapes and errors
//! as HTTP. Errors carry `Nats-Service-Error-Code: <HTTP status>` and `{"error": {...}}`.
//!
//! Who calls: a request that crossed a service import carries `Nats-Request-Info`, set by
//! nats-server (it overwrites whatever the requester sent), naming the requester's account. Under
//! the shipped authorization (nats-config/auth.conf) that account is a tenant, and it is the
//! jetask user the call is scoped to, as a token scopes an HTTP call; such a caller may not
//! change functions. A request without it comes from jetask's own account or from a server
//! without authorization: a `Jetask-User` header scopes it, and without one it sees everything.

use crate::api::ops::{self, Caller};
use crate::api::{ApiError, ApiResult};
use crate::engine::ctx::Ctx;
use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const ENDPOINTS: [&str; 12] = [
    "task.get",
    "task.list",
    "task.stop",
    "task.stop_many",
    "task.replay_many",
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
            let answer = match requester(request.message.headers.as_ref()) {
                Ok(who) => match permitted(&who, name) {
                    Ok(()) => handle(&ctx, name, &who.caller, &request.message.payload).await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            respond(&request, answer).await;
        });
    }
    let _ = service.stop().await;
}

/// The caller of a request, and whether NATS vouched for it.
#[derive(Debug)]
struct Requester {
    caller: Caller,
    /// The user is the account nats-server named: a tenant, not jetask's own account.
    vouched: bool,
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(axum::http::StatusCode::FORBIDDEN, "forbidden", message)
}

/// Who sent a request with these headers (see the module doc).
fn requester(headers: Option<&async_nats::HeaderMap>) -> ApiResult<Requester> {
    use crate::core::subjects::headers as h;
    let header = |k: &str| headers.and_then(|m| m.get(k)).map(|v| v.as_str());
    let claimed = header(h::USER);
    let Some(info) = header(h::REQUEST_INFO) else {
        return Ok(Requester {
            caller: Caller {
                user: claimed.map(str::to_string),
            },
            vouched: false,
        });
    };
    // Present but unreadable: refuse rather than fall back to the header anyone can set.
    let account = serde_json::from_str::<Value>(info)
        .ok()
        .and_then(|v| v.get("acc").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| forbidden(format!("{}: names no account", h::REQUEST_INFO)))?;
    if !crate::core::task::valid_user(&account) {
        return Err(forbidden(format!(
            "NATS account {account:?} is not a jetask user name ([A-Za-z0-9_-]{{1,128}})"
        )));
    }
    if let Some(c) = claimed.filter(|c| *c != account) {
        return Err(forbidden(format!(
            "{}: {c:?} is not the user NATS authenticated this request for ({account:?})",
            h::USER
        )));
    }
    Ok(Requester {
        caller: Caller { user: Some(account) },
        vouched: true,
    })
}

/// Functions are shared by every user: a tenant reads them but only jetask's own account
/// (an operator) changes them.
fn permitted(who: &Requester, endpoint: &str) -> ApiResult<()> {
    match endpoint {
        "fn.put" | "fn.delete" if who.vouched => Err(forbidden(format!(
            "{endpoint} needs jetask's own NATS account; a tenant account may only read functions"
        ))),
        _ => Ok(()),
    }
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
        "task.stop_many" => ops::task_bulk(ctx, caller, &body, ops::Bulk::Stop).await,
        "task.replay_many" => ops::task_bulk(ctx, caller, &body, ops::Bulk::Replay).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn without_request_info_the_header_scopes_the_call() {
        let who = requester(Some(&headers(&[("Jetask-User", "bob")]))).unwrap();
        assert_eq!((who.caller.user.as_deref(), who.vouched), (Some("bob"), false));
        let who = requester(None).unwrap();
        assert_eq!((who.caller.user.as_deref(), who.vouched), (None, false));
        assert!(permitted(&who, "fn.put").is_ok());
    }

    #[test]
    fn the_account_nats_names_is_the_user_and_a_forged_header_is_refused() {
        let info = r#"{"acc":"alice","user":"alice","rtt":1}"#;
        let who = requester(Some(&headers(&[("Nats-Request-Info", info)]))).unwrap();
        assert_eq!((who.caller.user.as_deref(), who.vouched), (Some("alice"), true));
        let same = requester(Some(&headers(&[("Nats-Request-Info", info), ("Jetask-User", "alice")])));
        assert!(same.is_ok());
        let forged = requester(Some(&headers(&[("Nats-Request-Info", info), ("Jetask-User", "bob")]))).unwrap_err();
        assert_eq!(forged.status, 403);
        assert!(forged.message.starts_with("Jetask-User: \"bob\""), "{}", forged.message);
        for bad in ["not json", r#"{"user":"x"}"#, r#"{"acc":"$G"}"#] {
            let e = requester(Some(&headers(&[("Nats-Request-Info", bad)]))).unwrap_err();
            assert_eq!(e.status, 403, "{bad}");
        }
    }

    #[test]
    fn a_tenant_reads_functions_but_does_not_change_them() {
        let who = requester(Some(&headers(&[("Nats-Request-Info", r#"{"acc":"alice"}"#)]))).unwrap();
        for e in ["fn.put", "fn.delete"] {
            assert_eq!(permitted(&who, e).unwrap_err().status, 403);
        }
        for e in ["fn.get", "fn.list", "task.get", "task.complete"] {
            assert!(permitted(&who, e).is_ok());
        }
    }
}
