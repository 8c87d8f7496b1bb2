//! Webhook signatures per the Standard Webhooks specification: HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}` with the function's `whsec_` secret, sent as
//! `webhook-signature: v1,<base64>`. Pure: the time comes in as an argument.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("signing secret must be whsec_ followed by base64")]
    BadSecret,
    #[error("no valid v1 signature in webhook-signature")]
    Mismatch,
    #[error("webhook-timestamp {0} is not a number of seconds")]
    BadTimestamp(String),
    #[error("webhook-timestamp is {0} s away from now, over the tolerance")]
    Stale(i64),
}

fn key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let b64 = secret.strip_prefix("whsec_").ok_or(SigningError::BadSecret)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SigningError::BadSecret)
}

fn mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<HmacSha256, SigningError> {
    let mut m = HmacSha256::new_from_slice(&key(secret)?).map_err(|_| SigningError::BadSecret)?;
    m.update(msg_id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    Ok(m)
}

/// The `webhook-signature` value for a message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, SigningError> {
    let sig = mac(secret, msg_id, timestamp, body)?.finalize().into_bytes();
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(sig)))
}

/// Checks a received webhook: one of the space-separated `v1,` signatures must match (compared
/// in constant time), and the timestamp must be within `tolerance_secs` of `now_secs`.
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    body: &[u8],
    signatures: &str,
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SigningError::BadTimestamp(timestamp.to_string()))?;
    if (now_secs - ts).abs() > tolerance_secs {
        return Err(SigningError::Stale(now_secs - ts));
    }
    for candidate in signatures.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(b64) else {
            continue;
        };
        if mac(secret, msg_id, ts, body)?.verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(SigningError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn signs_as_the_specification_example() {
        assert_eq!(
            sign(SECRET, ID, TS, BODY).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_good_signatures_among_several_and_refuses_the_rest() {
        let good = sign(SECRET, ID, TS, BODY).unwrap();
        let header = format!("v1,bm90IGl0 {good}");
        assert_eq!(verify(SECRET, ID, &TS.to_string(), BODY, &header, TS + 10, 300), Ok(()));
        assert_eq!(
            verify(SECRET, ID, &TS.to_string(), b"{}", &good, TS, 300),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, ID, &TS.to_string(), BODY, &good, TS + 301, 300),
            Err(SigningError::Stale(301))
        );
        assert!(matches!(
            verify(SECRET, ID, "soon", BODY, &good, TS, 300),
            Err(SigningError::BadTimestamp(_))
        ));
        assert_eq!(sign("nope", ID, TS, BODY), Err(SigningError::BadSecret));
    }
}
