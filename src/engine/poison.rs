//! Messages jetask cannot process as they are (issue 15, CONTRACT §12). A submission whose
//! header block async-nats cannot read arrives flagged with `Nats-Unreadable-Headers` (see
//! vendor/async-nats/JETASK-PATCH.md): its true headers are read by stream sequence, leniently,
//! and it becomes an `Invalid` record naming the header at fault. Any other message that cannot
//! be processed is terminated after a bounded number of deliveries. Either way it is counted in
//! `jetask_poison_total` and logged at warn with its stream sequence.

use crate::core::header_block::{self, HeaderBlock};
use crate::core::subjects;
use crate::core::submission::{self, field_error};
use crate::core::time::Timestamp;
use crate::engine::ctx::Ctx;
use async_nats::connection::NATS_UNREADABLE_HEADERS;
use async_nats::HeaderMap;
use base64::Engine;

/// Deliveries of a message that fails for a reason that will not pass (a record that cannot
/// be decoded or written) before it is terminated. A few, in case the reason was a passing one.
pub const MAX_FAILED_DELIVERIES: i64 = 5;

/// Why a message was poison, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Its header block (or subject) is not what NATS clients send: recorded `Invalid`.
    UnreadableHeaders,
    /// A delivery without JetStream metadata: nothing to record it under.
    NoMetadata,
    /// Its task's record cannot be read or written, delivery after delivery.
    Unrecordable,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::UnreadableHeaders => "unreadable_headers",
            Kind::NoMetadata => "no_metadata",
            Kind::Unrecordable => "unrecordable",
        }
    }
}

/// Ends a delivery that carries no JetStream metadata (no sequence, nothing to record it
/// under): counted, logged and terminated, since redelivering it would not help.
pub async fn terminate_without_metadata(ctx: &Ctx, msg: &async_nats::jetstream::Message) {
    report(ctx, Kind::NoMetadata, 0, "", "a delivery without JetStream metadata");
    let _ = msg.ack_with(async_nats::jetstream::AckKind::Term).await;
}

/// Counts and logs a poison message: the one place both happen, so that they agree.
pub fn report(ctx: &Ctx, kind: Kind, seq: u64, task_id: &str, why: &str) {
    ctx.metrics.poison();
    tracing::warn!(
        stream_sequence = seq,
        task_id,
        kind = kind.as_str(),
        reason = why,
        "poison submission terminated"
    );
}

/// The fault async-nats found in a delivered message's header block, if it found one.
pub fn flagged(headers: Option<&HeaderMap>) -> Option<String> {
    headers?
        .get_str(NATS_UNREADABLE_HEADERS)
        .map(|v| v.as_str().to_string())
}

/// The header block of the submission stored at `seq`, as its publisher sent it (`None` when
/// it is stored without headers, or no longer stored). Read through the stream's leader with
/// `STREAM.MSG.GET`, whose JSON answer carries headers as base64: a direct get would deliver
/// them as headers again.
async fn stored_header_block(ctx: &Ctx, seq: u64) -> Result<Option<Vec<u8>>, String> {
    let subject = format!("STREAM.MSG.GET.{}", subjects::SUBMIT_STREAM);
    let answer: serde_json::Value = ctx
        .nats
        .js
        .request(subject, &serde_json::json!({ "seq": seq }))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(err) = answer.get("error") {
        // 10037: no message at that sequence (deleted, purged or expired meanwhile).
        if err["err_code"] == 10037 {
            return Ok(None);
        }
        return Err(format!("cannot read submission {seq}: {err}"));
    }
    let Some(hdrs) = answer["message"]["hdrs"].as_str() else {
        return Ok(None);
    };
    base64::engine::general_purpose::STANDARD
        .decode(hdrs)
        .map(Some)
        .map_err(|e| format!("submission {seq}: headers are not base64: {e}"))
}

/// Reads a flagged submission: its task as far as its readable headers give it, `Invalid` with
/// the first header fault. `flag` is the fault async-nats reported, used when the stored bytes
/// show none (a publisher may send `Nats-Unreadable-Headers` itself).
pub async fn parse(
    ctx: &Ctx,
    function: &str,
    msg: &async_nats::Message,
    seq: u64,
    accepted_at: Timestamp,
    flag: &str,
) -> Result<submission::Parsed, String> {
    let block = match stored_header_block(ctx, seq).await? {
        Some(raw) => header_block::read(&raw),
        // Gone from the stream: what async-nats could read of it is all there is.
        None => HeaderBlock {
            headers: msg
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .filter(|(k, _)| AsRef::<str>::as_ref(k) != NATS_UNREADABLE_HEADERS)
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.as_str().to_string())))
                .collect(),
            fault: None,
        },
    };
    let mut parsed = from_block(
        function,
        &block,
        flag,
        &msg.payload,
        seq,
        accepted_at,
        ctx.config.retention(),
        ctx.config.limits.max_payload,
        &ctx.config.rules(),
    );
    // A tenant's submission is its tenant's, whatever its headers claim (see `submission`).
    if crate::core::subjects::submit_parts(msg.subject.as_str()).1.is_some() {
        parsed.task.user = submission::id_and_user_on(msg.subject.as_str(), |k| block.get(k), seq).1;
    }
    Ok(parsed)
}

/// The task a header block describes, `Invalid` for its fault (or `flag`'s) before any other.
#[allow(clippy::too_many_arguments)]
pub fn from_block(
    function: &str,
    block: &HeaderBlock,
    flag: &str,
    input: &[u8],
    seq: u64,
    accepted_at: Timestamp,
    max_delay: std::time::Duration,
    max_payload: usize,
    rules: &crate::core::destination::Rules<'_>,
) -> submission::Parsed {
    let mut parsed = submission::from_message(
        function,
        |k| block.get(k),
        input,
        seq,
        accepted_at,
        max_delay,
        max_payload,
        rules,
    );
    let fault = block.fault.clone().unwrap_or_else(|| {
        if block.get(NATS_UNREADABLE_HEADERS).is_some() {
            field_error(NATS_UNREADABLE_HEADERS, "a header reserved for the client library")
        } else {
            field_error(header_block::BLOCK, flag)
        }
    });
    parsed.invalid = Some(fault.to_string());
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn get_str_finds_what_get_finds() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Msg-Id", "id-1");
        h.insert("Jetask-User", "alice");
        h.append("Jetask-User", "bob");
        h.insert(NATS_UNREADABLE_HEADERS, "line 2: no colon");
        for name in [
            "Nats-Msg-Id",
            "Jetask-User",
            NATS_UNREADABLE_HEADERS,
            "jetask-user",
            "Absent",
        ] {
            assert_eq!(
                h.get_str(name).map(|v| v.as_str()),
                h.get(name).map(|v| v.as_str()),
                "{name}"
            );
        }
        assert_eq!(h.get_str("Jetask-User").map(|v| v.as_str()), Some("alice"));
        assert_eq!(flagged(Some(&h)).as_deref(), Some("line 2: no colon"));
        assert_eq!(h.get_str("not a: name"), None);
    }

    fn parse(raw: &[u8]) -> submission::Parsed {
        let block = header_block::read(raw);
        from_block(
            "f",
            &block,
            "unreadable",
            b"in",
            7,
            Timestamp(0),
            Duration::from_secs(60),
            1024,
            &crate::core::destination::Rules {
                nats_allow: &[],
                egress: &crate::core::egress::Policy::default(),
            },
        )
    }

    #[test]
    fn a_readable_id_and_user_are_kept_and_the_fault_comes_first() {
        let p = parse(b"NATS/1.0\r\nNats-Msg-Id: a\r\nJetask-User: bob\r\nX-Other: \xe9\r\nJetask-Delay: nope\r\n\r\n");
        assert_eq!((p.task.id.as_str(), p.task.user.as_str()), ("a", "bob"));
        assert!(p.invalid.unwrap().starts_with("X-Other: value is not valid UTF-8"));
    }

    #[test]
    fn an_unreadable_id_falls_back_to_the_sequence() {
        let p = parse(b"NATS/1.0\r\nNats-Msg-Id: \xe9\r\n\r\n");
        assert_eq!(p.task.id, "seq-7");
        assert!(p.invalid.unwrap().starts_with("Nats-Msg-Id: "));
    }

    #[test]
    fn a_block_without_fault_is_invalid_for_the_flag() {
        let p = parse(b"NATS/1.0\r\nNats-Msg-Id: a\r\n\r\n");
        assert_eq!(p.invalid.as_deref(), Some("headers: unreadable"));
        let p = parse(b"NATS/1.0\r\nNats-Unreadable-Headers: forged\r\n\r\n");
        assert!(p.invalid.unwrap().starts_with("Nats-Unreadable-Headers: "));
    }
}
