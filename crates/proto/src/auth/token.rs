//! Issuing and verifying tokens (layout in the [module doc](super)).
//!
//! Owns the byte layout and the order of checks: structure, then signature,
//! then expiry, so nobody learns whether a forged token would have expired.
//! It must not decide what a subject may do.

use hmac::Mac;

use super::{AuthError, Keyring, Secret};

const VERSION: u8 = 1;
const KIND_USER: u8 = 0;
const KIND_GATEWAY: u8 = 1;
const TAG_LEN: usize = 16;
const CONTEXT: &[u8] = b"heartline token v1";

/// The longest gateway name, in bytes.
pub const MAX_GATEWAY_NAME: usize = 64;

/// Whom a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A user, for client connections.
    User(u64),
    /// A gateway, by name: 1 to [`MAX_GATEWAY_NAME`] bytes of UTF-8.
    Gateway(String),
}

/// What a genuine token asserts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub subject: Subject,
    /// Unix seconds; the token is rejected from this second on.
    pub expires_at: u64,
}

impl Keyring {
    /// A token for `claims`, signed with the current secret.
    ///
    /// # Panics
    ///
    /// If a gateway name is empty or longer than [`MAX_GATEWAY_NAME`] bytes:
    /// that token could never verify, so callers check names where they take
    /// them in.
    pub fn issue(&self, claims: &Claims) -> Vec<u8> {
        let mut token = Vec::with_capacity(2 + 8 + 1 + MAX_GATEWAY_NAME + TAG_LEN);
        let kind = match claims.subject {
            Subject::User(_) => KIND_USER,
            Subject::Gateway(_) => KIND_GATEWAY,
        };
        token.extend_from_slice(&[VERSION, kind]);
        token.extend_from_slice(&claims.expires_at.to_be_bytes());
        match &claims.subject {
            Subject::User(id) => token.extend_from_slice(&id.to_be_bytes()),
            Subject::Gateway(name) => {
                assert!(name_len_ok(name.len()), "gateway name must be 1..={MAX_GATEWAY_NAME} bytes");
                token.push(name.len() as u8);
                token.extend_from_slice(name.as_bytes());
            }
        }
        let tag = self.current.mac(CONTEXT).chain_update(&token).finalize().into_bytes();
        token.extend_from_slice(&tag[..TAG_LEN]);
        token
    }

    /// The claims of a token signed by the current or the previous secret and
    /// not expired at `now_unix_s`. Never panics, whatever the input.
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<Claims, AuthError> {
        let Some(signed_len) = token.len().checked_sub(TAG_LEN) else {
            return Err(AuthError::Malformed);
        };
        let (signed, tag) = token.split_at(signed_len);
        let claims = parse(signed).ok_or(AuthError::Malformed)?;
        // Constant-time comparison; only the choice of secret shows in the timing.
        let signed_by = |secret: &Secret| secret.mac(CONTEXT).chain_update(signed).verify_truncated_left(tag).is_ok();
        if !signed_by(&self.current) && !self.previous.as_ref().is_some_and(signed_by) {
            return Err(AuthError::BadSignature);
        }
        if claims.expires_at <= now_unix_s {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// The claims in the signed part of a token, if it follows the layout exactly.
fn parse(signed: &[u8]) -> Option<Claims> {
    let ([version, kind], rest) = signed.split_first_chunk()?;
    let (expires_at, subject) = rest.split_first_chunk()?;
    let subject = match (*version, *kind) {
        (VERSION, KIND_USER) => Subject::User(u64::from_be_bytes(subject.try_into().ok()?)),
        (VERSION, KIND_GATEWAY) => {
            let (&len, name) = subject.split_first()?;
            if usize::from(len) != name.len() || !name_len_ok(name.len()) {
                return None;
            }
            Subject::Gateway(std::str::from_utf8(name).ok()?.to_owned())
        }
        _ => return None,
    };
    Some(Claims { subject, expires_at: u64::from_be_bytes(*expires_at) })
}

fn name_len_ok(len: usize) -> bool {
    (1..=MAX_GATEWAY_NAME).contains(&len)
}

/// A token as the CLI prints it: lowercase hex.
pub fn to_text(token: &[u8]) -> String {
    hex::encode(token)
}

/// A token as pasted: hex, surrounding whitespace ignored.
pub fn from_text(s: &str) -> Result<Vec<u8>, AuthError> {
    hex::decode(s.trim()).map_err(|_| AuthError::Malformed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keyring() -> Keyring {
        Keyring { current: Secret::generate().unwrap(), previous: None }
    }

    fn user(id: u64) -> Claims {
        Claims { subject: Subject::User(id), expires_at: NOW + 60 }
    }

    fn gateway(name: &str) -> Claims {
        Claims { subject: Subject::Gateway(name.to_owned()), expires_at: NOW + 60 }
    }

    /// Signs an arbitrary body, to show that structure is checked even under a valid tag.
    fn sign(keys: &Keyring, body: &[u8]) -> Vec<u8> {
        let tag = keys.current.mac(CONTEXT).chain_update(body).finalize().into_bytes();
        [body, &tag[..TAG_LEN]].concat()
    }

    #[test]
    fn round_trips_both_subjects() {
        let keys = keyring();
        for claims in [user(0), user(u64::MAX), gateway("g"), gateway("édge-1"), gateway(&"x".repeat(64))] {
            let token = keys.issue(&claims);
            assert_eq!(keys.verify(&token, NOW), Ok(claims));
        }
        assert_eq!(keys.issue(&user(1)).len(), 34);
        assert_eq!(keys.issue(&gateway("abc")).len(), 27 + 3);
    }

    #[test]
    fn expires_at_the_stated_second() {
        let keys = keyring();
        let token = keys.issue(&user(7));
        assert!(keys.verify(&token, NOW + 59).is_ok());
        assert_eq!(keys.verify(&token, NOW + 60), Err(AuthError::Expired));
        assert_eq!(keys.verify(&token, u64::MAX), Err(AuthError::Expired));
    }

    #[test]
    fn signature_is_checked_before_expiry() {
        let keys = keyring();
        let mut token = keys.issue(&user(7));
        *token.last_mut().unwrap() ^= 1;
        assert_eq!(keys.verify(&token, u64::MAX), Err(AuthError::BadSignature));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let keys = keyring();
        for claims in [user(42), gateway("edge")] {
            let token = keys.issue(&claims);
            for i in 0..token.len() * 8 {
                let mut forged = token.clone();
                forged[i / 8] ^= 1 << (i % 8);
                let err = keys.verify(&forged, NOW).unwrap_err();
                assert!(matches!(err, AuthError::BadSignature | AuthError::Malformed), "bit {i}: {err:?}");
            }
        }
    }

    #[test]
    fn other_secrets_are_rejected_and_the_previous_one_accepted() {
        let old = keyring();
        let token = old.issue(&user(9));
        assert_eq!(keyring().verify(&token, NOW), Err(AuthError::BadSignature));

        let rotated = Keyring { current: Secret::generate().unwrap(), previous: Some(old.current) };
        assert_eq!(rotated.verify(&token, NOW), Ok(user(9)));
        assert_eq!(rotated.verify(&rotated.issue(&user(10)), NOW), Ok(user(10)));

        let again = Keyring { current: Secret::generate().unwrap(), previous: Some(rotated.current) };
        assert_eq!(again.verify(&token, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn wrong_length_is_malformed() {
        let keys = keyring();
        for claims in [user(1), gateway("edge")] {
            let token = keys.issue(&claims);
            for len in 0..token.len() {
                assert_eq!(keys.verify(&token[..len], NOW), Err(AuthError::Malformed), "prefix {len}");
            }
            let extended = [&token[..], &[0]].concat();
            assert_eq!(keys.verify(&extended, NOW), Err(AuthError::Malformed));
        }
    }

    #[test]
    fn structure_is_checked_even_under_a_valid_tag() {
        let keys = keyring();
        let header = |version: u8, kind: u8| [[version, kind].as_slice(), &(NOW + 60).to_be_bytes()].concat();
        let gateway_body = |len: u8, name: &[u8]| [&header(1, KIND_GATEWAY)[..], &[len], name].concat();
        let bodies = [
            [&header(2, KIND_USER)[..], &[0; 8]].concat(),
            [&header(1, 2)[..], &[0; 8]].concat(),
            gateway_body(0, b""),
            gateway_body(65, &[b'x'; 65]),
            gateway_body(2, &[0xc3, 0x28]),
            gateway_body(3, b"ab"),
        ];
        for body in bodies {
            assert_eq!(keys.verify(&sign(&keys, &body), NOW), Err(AuthError::Malformed), "{body:02x?}");
        }
        assert_eq!(keys.verify(&sign(&keys, &gateway_body(2, b"ab")), NOW), Ok(gateway("ab")));
    }

    #[test]
    #[should_panic(expected = "gateway name")]
    fn issuing_an_empty_gateway_name_panics() {
        keyring().issue(&gateway(""));
    }

    #[test]
    #[should_panic(expected = "gateway name")]
    fn issuing_an_overlong_gateway_name_panics() {
        keyring().issue(&gateway(&"x".repeat(65)));
    }

    #[test]
    fn text_form_is_lowercase_hex() {
        let keys = keyring();
        let token = keys.issue(&gateway("edge"));
        let text = to_text(&token);
        assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{text}");
        assert_eq!(from_text(&format!("  {text}\n")), Ok(token));
        assert_eq!(from_text("abc"), Err(AuthError::Malformed));
        assert_eq!(from_text("zz"), Err(AuthError::Malformed));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            prop_assert!(keyring().verify(&bytes, 0).is_err());
        }
    }
}
