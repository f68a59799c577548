//! Authentication: the server secret, the signed tokens presented in HELLO,
//! and the UDP keys handed out in WELCOME.
//!
//! Sans-IO: the secret's file is the daemon's. It must not decide what a verified subject may do —
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

pub use secret::{Secret, SECRET_LEN};
pub use token::{from_text, to_text, Claims, Subject, MAX_GATEWAY_NAME};

use hmac::Mac;

use crate::ErrorCode;

/// The secrets that sign tokens.
///
/// `previous` is the secret before the last rotation. Tokens it signed stay
/// valid until they expire or it is dropped, so a rotation does not log
/// everyone out at once.
#[derive(Debug)]
pub struct Keyring {
    pub current: Secret,
    pub previous: Option<Secret>,
}

/// What a UDP key authenticates: the MAC of one kind of datagram never
/// verifies as the other, even for equal ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum UdpPeer {
    Session = 0,
    Gateway = 1,
}

/// Derives the UDP keys handed out in WELCOME (SPEC.md §8.8).
///
/// The master key is random per process start and never stored, so keys do
/// not survive a restart, and it is separate from the token secrets, so a
/// rotation of those does not break live UDP sessions. `owner` (the
/// connection that owns the session) is never reused within a boot, so no
/// key outlives the session it was given to.
pub struct UdpKeys {
    master: hmac::Hmac<sha2::Sha256>,
}

impl UdpKeys {
    pub fn generate() -> std::io::Result<Self> {
        let mut master = [0u8; 32];
        getrandom::getrandom(&mut master)?;
        let master = hmac::Hmac::new_from_slice(&master).expect("HMAC takes keys of any length");
        Ok(Self { master })
    }

    /// First 16 bytes of HMAC-SHA256(master, "heartline udp v1" || peer || id || owner).
    /// Called for every datagram: no allocation; the keyed state is cloned.
    pub fn derive(&self, peer: UdpPeer, id: u64, owner: u32) -> crate::udp::Key {
        let digest = self
            .master
            .clone()
            .chain_update(b"heartline udp v1")
            .chain_update([peer as u8])
            .chain_update(id.to_be_bytes())
            .chain_update(owner.to_be_bytes())
            .finalize()
            .into_bytes();
        let mut key = [0; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

impl std::fmt::Debug for UdpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UdpKeys(..)")
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

    #[test]
    fn udp_keys_differ_when_any_input_differs() {
        let keys = UdpKeys::generate().unwrap();
        let base = keys.derive(UdpPeer::Session, 1000, 3);
        assert_eq!(keys.derive(UdpPeer::Session, 1000, 3), base);
        let variants = [
            keys.derive(UdpPeer::Gateway, 1000, 3),
            keys.derive(UdpPeer::Session, 1001, 3),
            keys.derive(UdpPeer::Session, 1000, 4),
            UdpKeys::generate().unwrap().derive(UdpPeer::Session, 1000, 3),
        ];
        for (i, key) in variants.iter().enumerate() {
            assert_ne!(*key, base, "variant {i}");
        }
    }

    #[test]
    fn errors_map_to_protocol_codes() {
        assert_eq!(AuthError::Malformed.code(), ErrorCode::BadToken);
        assert_eq!(AuthError::BadSignature.code(), ErrorCode::BadToken);
        assert_eq!(AuthError::Expired.code(), ErrorCode::TokenExpired);
    }
}
