//! Authentication for the reference server: the server secret, the signed
//! tokens presented in HELLO, and the per-session UDP keys handed out in
//! WELCOME.
//!
//! Sans-IO except for [`Secret::load`] and [`Secret::load_or_create`], which
//! own the secret file. It must not decide what a verified subject may do —
//! whether a subject fits the role chosen in HELLO is the connection logic's
//! job — and it never reads a clock: the caller passes the time.
//!
//! # Token format
//!
//! Tokens are opaque to the wire protocol (SPEC.md §12.1); this is the
//! reference server's own layout. Integers are big-endian.
//!
//! ```text
//! version   u8    1
//! kind      u8    0 = user, 1 = gateway
//! expires   u64   unix seconds; the token is rejected from this second on
//! subject         user: u64 user id
//!                 gateway: u8 name length (1..=64), then the UTF-8 name
//! tag       16 bytes: HMAC-SHA256(secret, "heartline token v1" || all preceding bytes), truncated
//! ```
//!
//! A user token is 34 bytes, a gateway token 27 bytes plus the name. People
//! copy them around as lowercase hex ([`to_text`], [`from_text`]).

mod secret;
mod token;

pub use secret::Secret;
pub use token::{from_text, to_text, Claims, Subject, MAX_GATEWAY_NAME};

use hmac::Mac;

use crate::protocol::ErrorCode;

/// Domain separation from token tags, which use the same secrets.
const UDP_CONTEXT: &[u8] = b"heartline udp v1";

/// The secrets that sign tokens and derive UDP keys.
///
/// `previous` is the secret before the last rotation. Tokens it signed stay
/// valid until they expire or it is dropped, so a rotation does not log
/// everyone out at once.
#[derive(Debug)]
pub struct Keyring {
    pub current: Secret,
    pub previous: Option<Secret>,
}

impl Keyring {
    /// The UDP key of a session (SPEC.md §8.8): the first 16 bytes of
    /// HMAC-SHA256(current, "heartline udp v1" || boot_nonce || session || owner).
    ///
    /// `boot_nonce` is random per process start and `owner` (the connection
    /// that owns the session) is never reused within a boot, so no key
    /// outlives its session. The server derives the key for every datagram,
    /// hence no allocation.
    ///
    /// Only the current secret is used: after a rotation every session's key
    /// changes, and a client only learns its new key from the WELCOME of its
    /// next connection. That is accepted; rotations are rare.
    pub fn udp_key(&self, boot_nonce: &[u8; 16], session: u64, owner: u32) -> [u8; 16] {
        let digest = self
            .current
            .mac(UDP_CONTEXT)
            .chain_update(boot_nonce)
            .chain_update(session.to_be_bytes())
            .chain_update(owner.to_be_bytes())
            .finalize()
            .into_bytes();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a token of this format: bad hex, length, version, kind or name.
    #[error("malformed token")]
    Malformed,
    /// Well-formed, but signed by none of the keyring's secrets.
    #[error("token signature does not verify")]
    BadSignature,
    /// Genuine, but past its expiry.
    #[error("token expired")]
    Expired,
}

impl AuthError {
    /// The protocol error that answers a HELLO carrying such a token.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed | Self::BadSignature => ErrorCode::BadToken,
            Self::Expired => ErrorCode::TokenExpired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring { current: Secret::generate().unwrap(), previous: None }
    }

    #[test]
    fn udp_key_is_deterministic_and_differs_when_any_input_differs() {
        let keys = keyring();
        let nonce = [7; 16];
        let base = keys.udp_key(&nonce, 1000, 3);
        assert_eq!(keys.udp_key(&nonce, 1000, 3), base);

        let mut other_nonce = nonce;
        other_nonce[15] ^= 1;
        let variants = [
            keys.udp_key(&other_nonce, 1000, 3),
            keys.udp_key(&nonce, 1001, 3),
            keys.udp_key(&nonce, 1000, 4),
            keyring().udp_key(&nonce, 1000, 3),
        ];
        for (i, key) in variants.iter().enumerate() {
            assert_ne!(*key, base, "variant {i}");
        }
    }

    #[test]
    fn udp_key_comes_from_the_current_secret_only() {
        let nonce = [1; 16];
        let old = keyring();
        let before = old.udp_key(&nonce, 5, 6);
        let rotated = Keyring { current: Secret::generate().unwrap(), previous: Some(old.current) };
        assert_ne!(rotated.udp_key(&nonce, 5, 6), before);
        let swapped = Keyring { current: rotated.previous.unwrap(), previous: Some(rotated.current) };
        assert_eq!(swapped.udp_key(&nonce, 5, 6), before);
    }

    #[test]
    fn errors_map_to_protocol_codes() {
        assert_eq!(AuthError::Malformed.code(), ErrorCode::BadToken);
        assert_eq!(AuthError::BadSignature.code(), ErrorCode::BadToken);
        assert_eq!(AuthError::Expired.code(), ErrorCode::TokenExpired);
    }
}
