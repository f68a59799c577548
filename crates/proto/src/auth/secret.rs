//! The server secret: 32 bytes that key every token tag.
//!
//! Owns the key material; it must not print, log or expose the bytes except
//! as a keyed HMAC. Where the secret is stored is the daemon's business.

use std::fmt;
use std::io;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes in a secret.
pub const SECRET_LEN: usize = 32;

/// 32 random bytes that key every token tag.
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random secret.
    pub fn generate() -> io::Result<Self> {
        let mut bytes = [0; SECRET_LEN];
        getrandom::getrandom(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// A short keyed digest that tells secrets apart in logs and on reload
    /// without revealing them.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.mac(b"heartline secret fingerprint v1").finalize().into_bytes()[..4])
    }

    /// An HMAC-SHA256 keyed with this secret, already fed `context`.
    pub(super) fn mac(&self, context: &[u8]) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length").chain_update(context)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_secrets_apart() {
        assert_eq!(Secret([1; SECRET_LEN]).fingerprint(), Secret([1; SECRET_LEN]).fingerprint());
        assert_ne!(Secret([1; SECRET_LEN]).fingerprint(), Secret([2; SECRET_LEN]).fingerprint());
        assert_eq!(Secret([1; SECRET_LEN]).fingerprint().len(), 8);
    }

    #[test]
    fn debug_hides_the_bytes() {
        let secret = Secret([0xab; SECRET_LEN]);
        assert_eq!(format!("{secret:?}"), "Secret(..)");
    }
}
