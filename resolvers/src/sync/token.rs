//! Sync tokens: where in the change log an app stands, signed and bound to its user.
//!
//! A token is `<claims>.<signature>`, both base64url without padding: the claims are JSON
//! (the user id, how many partitions the log had, the position in each partition the user's
//! events can be in, and, while a snapshot is paged, where it continues), the signature is
//! HMAC-SHA256 over the claims' base64 text with the key of `[sync] token_secret`. Nothing in a
//! token is secret (an app could decode it); the signature is what makes it unforgeable.
//!
//! [`TokenKey::open`] checks the signature in constant time before it decodes anything, so
//! what a forged token holds is never read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted (a real one is about 200 bytes): longer ones are refused unread.
const MAX_TOKEN_LEN: usize = 4096;
/// The claims' format; another one is refused (`Forged`), as a token of another service.
const FORMAT: u8 = 1;

/// The key sync tokens are signed with: `[sync] token_secret`, the same on every replica.
/// Keyed once (the HMAC's key schedule), cloned for each token.
#[derive(Clone)]
pub struct TokenKey(HmacSha256);

impl TokenKey {
    /// The key `secret` (any length; the server asks for at least 32 bytes).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
        let mac = HmacSha256::new_from_slice(secret.as_ref()).expect("HMAC accepts any key length");
        Self(mac)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    /// [`FORMAT`].
    #[serde(rename = "v")]
    pub(crate) format: u8,
    /// The user it was given to (`Viewer::user_id`).
    #[serde(rename = "u")]
    pub(crate) user: String,
    /// How many partitions the log had: with another number, customers moved between
    /// partitions and the positions mean nothing.
    #[serde(rename = "n")]
    pub(crate) partitions: usize,
    /// The position reached in each partition the user's events can be in.
    #[serde(rename = "p")]
    pub(crate) positions: Vec<(usize, String)>,
    /// Where the snapshot continues; `None` once it is complete (the token is then a plain
    /// position in the change log).
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<SnapshotCursor>,
}

/// Where a snapshot continues: a part of the working set, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotCursor {
    /// The part being read.
    #[serde(rename = "k")]
    pub(crate) part: SnapshotPart,
    /// Within it: the upstream's cursor (orders) or how many were handed out (cases, tasks).
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<String>,
}

/// The parts of the working set, in the order a snapshot reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SnapshotPart {
    Orders,
    Cases,
    Tasks,
}

/// A token that is not one of ours: malformed, or its signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forged;

impl TokenKey {
    /// The token for `claims`.
    pub(crate) fn sign(&self, claims: &Claims) -> String {
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = URL_SAFE_NO_PAD.encode(json);
        let signature = URL_SAFE_NO_PAD.encode(self.mac(body.as_bytes()).finalize().into_bytes());
        format!("{body}.{signature}")
    }

    /// The claims of `token`, once its signature verified.
    pub(crate) fn open(&self, token: &str) -> Result<Claims, Forged> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Forged);
        }
        let (body, signature) = token.split_once('.').ok_or(Forged)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| Forged)?;
        self.mac(body.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| Forged)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| Forged)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| Forged)?;
        if claims.format != FORMAT {
            return Err(Forged);
        }
        Ok(claims)
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(body);
        mac
    }
}

impl Claims {
    /// Claims of format [`FORMAT`].
    pub(crate) fn new(
        user: &str,
        partitions: usize,
        positions: Vec<(usize, String)>,
        snapshot: Option<SnapshotCursor>,
    ) -> Self {
        Self {
            format: FORMAT,
            user: user.to_owned(),
            partitions,
            positions,
            snapshot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims::new(
            "cust-0001",
            4,
            vec![(0, "1-0".into()), (3, "17-2".into())],
            Some(SnapshotCursor {
                part: SnapshotPart::Orders,
                after: Some("ord-000123".into()),
            }),
        )
    }

    #[test]
    fn a_signed_token_opens_to_its_claims() {
        let key = TokenKey::new(b"k".repeat(32));
        let token = key.sign(&claims());
        assert_eq!(key.open(&token), Ok(claims()));
    }

    #[test]
    fn another_key_a_changed_claim_or_garbage_is_forged() {
        let key = TokenKey::new(b"k".repeat(32));
        let token = key.sign(&claims());
        assert_eq!(TokenKey::new(b"o".repeat(32)).open(&token), Err(Forged));
        let (body, signature) = token.split_once('.').unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        json["u"] = "cust-0002".into();
        let changed = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
        assert_eq!(key.open(&format!("{changed}.{signature}")), Err(Forged));
        for garbage in ["", ".", "abc", "a.b", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(key.open(garbage), Err(Forged), "{garbage:?}");
        }
    }
}
