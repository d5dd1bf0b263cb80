//! Message encryption for Web Push (RFC 8291) in the `aes128gcm` content coding (RFC 8188),
//! with aws-lc-rs, the crypto library of the rest of the server.
//!
//! For each message: a fresh P-256 key pair and a random 16-byte salt; ECDH with the
//! subscription's `p256dh`; `IKM = HKDF(salt: auth, ikm: ecdh, info: "WebPush: info" 0x00
//! ua_public as_public, 32)`; `PRK = HKDF-Extract(salt, IKM)`; `CEK = HKDF-Expand(PRK,
//! "Content-Encoding: aes128gcm" 0x00, 16)`; `NONCE = HKDF-Expand(PRK, "Content-Encoding:
//! nonce" 0x00, 12)`; one record, `plaintext 0x02`, sealed with AES-128-GCM. The body is the
//! header `salt | rs (4096, u32 BE) | idlen (65) | as_public` and that record.
//!
//! Why not `web-push-native`: its VAPID header leaves the port out of `aud` and ties the JWT's
//! `exp` to the message's TTL (past 24 hours for long TTLs), and it brings a second crypto
//! stack (RustCrypto's p256, aes-gcm, jwt-simple) into the production build. The sandbox's
//! push service decrypts with it, so the two implementations are checked against each other,
//! and the unit test below pins this one to RFC 8291's own example.

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, ECDH_P256, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::hkdf::{self, HKDF_SHA256, Salt};

/// The record size written in the header: a single record always fits.
const RECORD_SIZE: u32 = 4096;
/// Bytes of the header: salt (16), rs (4), idlen (1), the sender's public key (65).
const HEADER_BYTES: usize = 16 + 4 + 1 + 65;
/// The AES-GCM tag.
const TAG_BYTES: usize = 16;
/// The largest plaintext: push services take 4096-byte bodies (RFC 8030 section 7.2).
pub(super) const MAX_PLAINTEXT_BYTES: usize = 4096 - HEADER_BYTES - TAG_BYTES - 1;

/// Encrypts `plaintext` for the subscription with public key `ua_public` (uncompressed P-256
/// point) and authentication secret `auth` (16 bytes).
pub(super) fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, String> {
    let sender =
        PrivateKey::generate(&ECDH_P256).map_err(|_| "generating a key pair failed".to_owned())?;
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| "the random generator failed".to_owned())?;
    encrypt_with(plaintext, ua_public, auth, &salt, &sender)
}

/// [`encrypt`] with a given salt and sender key (the RFC's example fixes both).
fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    sender: &PrivateKey,
) -> Result<Vec<u8>, String> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(format!(
            "the payload is {} bytes; Web Push takes at most {MAX_PLAINTEXT_BYTES}",
            plaintext.len()
        ));
    }
    if ua_public.len() != 65 || ua_public[0] != 0x04 {
        return Err("p256dh is not an uncompressed P-256 public key".to_owned());
    }
    if auth.len() != 16 {
        return Err("auth is not 16 bytes".to_owned());
    }
    let as_public = sender
        .compute_public_key()
        .map_err(|_| "computing the public key failed".to_owned())?;
    let as_public = as_public.as_ref();
    let ecdh: Vec<u8> = agreement::agree(
        sender,
        UnparsedPublicKey::new(&ECDH_P256, ua_public),
        "p256dh is not a point on P-256".to_owned(),
        |secret| Ok(secret.to_vec()),
    )?;

    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let ikm = expand(&Salt::new(HKDF_SHA256, auth).extract(&ecdh), &key_info, 32)?;
    let prk = Salt::new(HKDF_SHA256, salt).extract(&ikm);
    let cek = expand(&prk, b"Content-Encoding: aes128gcm\0", 16)?;
    let nonce = expand(&prk, b"Content-Encoding: nonce\0", 12)?;

    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &cek)
            .map_err(|_| "the content key is unusable".to_owned())?,
    );
    let nonce =
        Nonce::try_assume_unique_for_key(&nonce).map_err(|_| "the nonce is unusable".to_owned())?;
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_BYTES);
    record.extend_from_slice(plaintext);
    // The padding delimiter of the last (and only) record.
    record.push(0x02);
    key.seal_in_place_append_tag(nonce, Aad::empty(), &mut record)
        .map_err(|_| "sealing the record failed".to_owned())?;

    let mut body = Vec::with_capacity(HEADER_BYTES + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

/// HKDF-Expand of `len` bytes.
fn expand(prk: &hkdf::Prk, info: &[u8], len: usize) -> Result<Vec<u8>, String> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let mut out = vec![0u8; len];
    prk.expand(&[info], Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| "HKDF failed".to_owned())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// RFC 8291, Appendix A.
    #[test]
    fn matches_the_example_of_rfc_8291() {
        let sender = PrivateKey::from_private_key(
            &ECDH_P256,
            &b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"),
        )
        .unwrap();
        let ua_public = b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &ua_public,
            &auth,
            &salt,
            &sender,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn keys_and_sizes_are_checked() {
        let ua_public = b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = [7u8; 16];
        assert!(encrypt(b"hi", &ua_public, &auth).is_ok());
        assert!(encrypt(b"hi", &ua_public[1..], &auth).is_err());
        assert!(encrypt(b"hi", &ua_public, &auth[1..]).is_err());
        let mut off_curve = ua_public.clone();
        off_curve[64] ^= 1;
        assert!(encrypt(b"hi", &off_curve, &auth).is_err());
        let at_most = vec![b'x'; MAX_PLAINTEXT_BYTES];
        assert_eq!(encrypt(&at_most, &ua_public, &auth).unwrap().len(), 4096);
        assert!(encrypt(&[b'x'; MAX_PLAINTEXT_BYTES + 1], &ua_public, &auth).is_err());
    }
}
