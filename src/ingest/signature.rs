//! The webhook signing scheme, the same for every upstream.
//!
//! A sender puts two headers on each delivery:
//! - `X-Webhook-Timestamp: <unix seconds>`, the time it signed this attempt;
//! - `X-Webhook-Signature: v1=<hex>`, the lowercase hex HMAC-SHA256, keyed with the source's
//!   shared secret, of `"<timestamp>.<raw body>"`.
//!
//! The signature header may carry several comma-separated `v1=` values (while a secret is
//! rotated, the sender signs with the old and the new one); one match is enough. Values of
//! other schemes (`v0=...`) are ignored. Comparison is constant time. The timestamp is part
//! of what is signed, so a captured delivery cannot be replayed once it is older than the
//! tolerance.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header with the unix time (seconds) of the signature.
pub(crate) const TIMESTAMP_HEADER: &str = "x-webhook-timestamp";
/// The header with the `v1=<hex>` signature(s).
pub(crate) const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// Most signatures looked at in one header (bounds the work a request can cause).
const MAX_SIGNATURES: usize = 8;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    /// A header is absent or not in the documented format.
    #[error("{0}")]
    Malformed(String),
    /// No `v1=` value matches the body and timestamp under the source's secret.
    #[error(
        "no v1 signature matches: sign \"<timestamp>.<raw body>\" with HMAC-SHA256 and the shared secret"
    )]
    Mismatch,
    /// Authentic but signed too long ago (or too far ahead): a replay, or a skewed clock.
    #[error(
        "stale timestamp: signed at {timestamp}, {skew} s away from now; at most {tolerance} s is accepted"
    )]
    Stale {
        timestamp: i64,
        skew: u64,
        tolerance: u64,
    },
}

/// The `v1=<hex>` value for `body` signed at `timestamp` (unix seconds) with `secret`: what a
/// sender puts in `X-Webhook-Signature` (this side only receives; tests sign with it).
#[cfg(test)]
pub(crate) fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp.to_string().as_bytes(), body)
        .finalize()
        .into_bytes();
    format!("v1={}", hex::encode(digest))
}

/// Checks the two headers of a delivery against its raw body.
///
/// The signature is checked before the timestamp's age, so only an authentic delivery can
/// learn that its timestamp is stale. `now` is unix seconds.
pub(crate) fn verify(
    secret: &[u8],
    timestamp_header: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let timestamp_text = timestamp_header
        .map(str::trim)
        .ok_or_else(|| SignatureError::Malformed("missing X-Webhook-Timestamp header".into()))?;
    let timestamp = parse_timestamp(timestamp_text).ok_or_else(|| {
        SignatureError::Malformed("X-Webhook-Timestamp must be unix time in whole seconds".into())
    })?;
    let signature_header = signature_header
        .ok_or_else(|| SignatureError::Malformed("missing X-Webhook-Signature header".into()))?;
    let candidates = signatures(signature_header)?;

    let expected = mac(secret, timestamp_text.as_bytes(), body);
    if !candidates
        .iter()
        .any(|candidate| expected.clone().verify_slice(candidate).is_ok())
    {
        return Err(SignatureError::Mismatch);
    }

    let skew = now.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(SignatureError::Stale {
            timestamp,
            skew,
            tolerance: tolerance_secs,
        });
    }
    Ok(())
}

/// Whole seconds, digits only (no sign, no fraction), at most 12 digits.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The decoded `v1=` values of a signature header.
fn signatures(header: &str) -> Result<Vec<Vec<u8>>, SignatureError> {
    let mut found = Vec::new();
    for part in header.split(',').map(str::trim).take(MAX_SIGNATURES) {
        let Some(value) = part.strip_prefix("v1=") else {
            continue;
        };
        let bytes = hex::decode(value).ok().filter(|bytes| bytes.len() == 32);
        let Some(bytes) = bytes else {
            return Err(SignatureError::Malformed(
                "X-Webhook-Signature: a v1 value must be 64 hex digits".into(),
            ));
        };
        found.push(bytes);
    }
    if found.is_empty() {
        return Err(SignatureError::Malformed(
            "X-Webhook-Signature has no v1=<hex> value".into(),
        ));
    }
    Ok(found)
}

fn mac(secret: &[u8], timestamp: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec-test";
    const BODY: &[u8] = br#"{"id":"evt_1"}"#;
    const NOW: i64 = 1_767_225_600;

    fn check(timestamp: Option<&str>, signature: Option<&str>) -> Result<(), SignatureError> {
        verify(SECRET, timestamp, signature, BODY, NOW, 300)
    }

    /// The contract's example (`docs/upstreams.md`, "Signing"); the sandbox's webhook sender,
    /// which shares no code with this module, pins the same one (`sandbox/src/webhooks.rs`).
    #[test]
    fn signs_the_timestamp_and_the_raw_body() {
        // printf '1767225600.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec-test
        assert_eq!(
            sign(SECRET, NOW, BODY),
            "v1=47fde13e33c77f7070054ef39f95d6d71ae1c43b0d080834cd232657892f7923"
        );
        let signature = sign(SECRET, NOW, BODY);
        assert_eq!(check(Some("1767225600"), Some(&signature)), Ok(()));
    }

    #[test]
    fn any_one_of_several_signatures_is_enough() {
        let good = sign(SECRET, NOW, BODY);
        let old = sign(b"previous-secret", NOW, BODY);
        let header = format!("{old}, v0=legacy,{good}");
        assert_eq!(check(Some("1767225600"), Some(&header)), Ok(()));
        assert_eq!(
            check(Some("1767225600"), Some(&old)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_or_timestamp_does_not_verify() {
        let signature = sign(SECRET, NOW, BODY);
        assert_eq!(
            verify(
                SECRET,
                Some("1767225600"),
                Some(&signature),
                b"{}",
                NOW,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1767225601"), Some(&signature)),
            Err(SignatureError::Mismatch)
        );
        let upper = signature.to_uppercase().replace("V1=", "v1=");
        // Hex decoding accepts either case; the bytes are what is compared.
        assert_eq!(check(Some("1767225600"), Some(&upper)), Ok(()));
    }

    #[test]
    fn old_and_future_timestamps_are_stale() {
        let old = NOW - 301;
        let signature = sign(SECRET, old, BODY);
        assert_eq!(
            check(Some(&old.to_string()), Some(&signature)),
            Err(SignatureError::Stale {
                timestamp: old,
                skew: 301,
                tolerance: 300
            })
        );
        let ahead = NOW + 301;
        let signature = sign(SECRET, ahead, BODY);
        assert!(matches!(
            check(Some(&ahead.to_string()), Some(&signature)),
            Err(SignatureError::Stale { skew: 301, .. })
        ));
        let edge = NOW - 300;
        let signature = sign(SECRET, edge, BODY);
        assert_eq!(check(Some(&edge.to_string()), Some(&signature)), Ok(()));
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        let signature = sign(SECRET, NOW, BODY);
        for (timestamp, signature, message) in [
            (
                None,
                Some(signature.as_str()),
                "missing X-Webhook-Timestamp header",
            ),
            (
                Some("1767225600.5"),
                Some(signature.as_str()),
                "X-Webhook-Timestamp must be unix time in whole seconds",
            ),
            (
                Some("-5"),
                Some(signature.as_str()),
                "X-Webhook-Timestamp must be unix time in whole seconds",
            ),
            (
                Some("1767225600"),
                None,
                "missing X-Webhook-Signature header",
            ),
            (
                Some("1767225600"),
                Some("sha256=abcd"),
                "X-Webhook-Signature has no v1=<hex> value",
            ),
            (
                Some("1767225600"),
                Some("v1=zz"),
                "X-Webhook-Signature: a v1 value must be 64 hex digits",
            ),
            (
                Some("1767225600"),
                Some("v1=abcd"),
                "X-Webhook-Signature: a v1 value must be 64 hex digits",
            ),
        ] {
            assert_eq!(
                check(timestamp, signature),
                Err(SignatureError::Malformed(message.into())),
                "{timestamp:?} {signature:?}"
            );
        }
    }
}
