//! JSON Web Tokens (RFC 7519) in HELLO, next to the reference binary
//! tokens: any backend holding the HS256 secret or an EdDSA / ES256 private
//! key can mint them; heartline only verifies (SPEC.md §12.1).
//!
//! Owns the `[jwt]` keys and the mapping of a JWT's claims onto
//! [`Claims`]. It must not read a clock (the caller passes the time, as for
//! the binary tokens) and must not decide what a subject may do.
//!
//! # Telling the formats apart
//!
//! A JWT is `header.payload.signature` in base64url, and its header is a JSON
//! object, so it always starts with `{` and the token with the character `e`
//! (0x65). A binary token starts with its version byte, 1. [`is_jwt`] looks
//! at that first byte only; no binary version may ever be 0x65.
//!
//! # Claims
//!
//! - `sub`: a user, its id in decimal (`"42"`); or `gateway`: a gateway name
//!   (1 to 64 bytes). Exactly one of the two.
//! - `exp` (required) and `nbf` (optional): whole unix seconds, with
//!   [`LEEWAY_S`] of allowance for clock skew each way.
//! - `aud` and `iss`: checked when `jwt.audience` / `jwt.issuer` are set.

use std::path::Path;
use std::sync::RwLock;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::auth::{AuthError, Claims, Subject, MAX_GATEWAY_NAME};

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 2;

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: a key as
/// long as the hash).
pub const MIN_HS256_SECRET: usize = 32;

/// Whether a HELLO token is a JWT rather than a binary token.
pub fn is_jwt(token: &[u8]) -> bool {
    token.first() == Some(&b'e')
}

/// Why a JWT was refused; [`JwtError::auth`] is what HELLO answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("JWTs are not enabled ([jwt] has no keys)")]
    Disabled,
    #[error("not a JWT: bad encoding, header or claims")]
    Malformed,
    #[error("JWT algorithm not accepted (HS256, ES256 and EdDSA are, with a key configured)")]
    Algorithm,
    #[error("JWT signature does not verify")]
    BadSignature,
    #[error("JWT audience is not jwt.audience")]
    Audience,
    #[error("JWT issuer is not jwt.issuer")]
    Issuer,
    #[error("JWT subject: need exactly one of sub (decimal user id) and gateway (1 to 64 bytes)")]
    Subject,
    #[error("JWT not yet valid (nbf)")]
    NotYetValid,
    #[error("JWT expired")]
    Expired,
}

impl JwtError {
    pub fn auth(self) -> AuthError {
        match self {
            Self::Expired => AuthError::Expired,
            Self::Disabled | Self::Malformed | Self::Subject => AuthError::Malformed,
            Self::Algorithm | Self::BadSignature | Self::Audience | Self::Issuer | Self::NotYetValid => {
                AuthError::BadSignature
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtKeyError {
    #[error("cannot read {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: the HS256 secret must be at least {MIN_HS256_SECRET} bytes")]
    ShortSecret { path: String },
    #[error("{path}: not a PEM EdDSA (Ed25519) or ES256 (P-256) public key")]
    NotAKey { path: String },
}

/// The `[jwt]` keys in force: read at start, read again on each reload
/// (SIGHUP), swapped whole.
///
/// Rotating a signing key without refusing the tokens already out: list
/// the old and the new public key in `jwt.public_keys`, reload, move the
/// backend to the new key, drop the old one once its tokens have expired,
/// reload. An HS256 secret has no such overlap: the new one replaces it.
pub struct JwtSlot(RwLock<Option<JwtKeys>>);

impl JwtSlot {
    pub fn new(keys: Option<JwtKeys>) -> Self {
        Self(RwLock::new(keys))
    }

    /// As [`JwtKeys::verify`]; [`JwtError::Disabled`] while `[jwt]` names no key.
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<Claims, JwtError> {
        let keys = self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.as_ref().ok_or(JwtError::Disabled)?.verify(token, now_unix_s)
    }

    /// Reads `config`'s keys again, saying whether JWTs are accepted now;
    /// on an error the keys in force stay.
    pub fn reload(&self, config: &crate::config::Jwt) -> Result<bool, JwtKeyError> {
        let keys = JwtKeys::load(config)?;
        let enabled = keys.is_some();
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
        Ok(enabled)
    }
}

/// The keys and checks of `[jwt]`.
pub struct JwtKeys {
    keys: Vec<(Algorithm, DecodingKey)>,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algs: Vec<_> = self.keys.iter().map(|(alg, _)| alg).collect();
        f.debug_struct("JwtKeys").field("keys", &algs).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Payload {
    sub: Option<String>,
    gateway: Option<String>,
    exp: u64,
    nbf: Option<u64>,
}

impl JwtKeys {
    /// `None` when `[jwt]` names no key: JWTs are then refused (BAD_TOKEN).
    pub fn load(config: &crate::config::Jwt) -> Result<Option<Self>, JwtKeyError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|cause| JwtKeyError::Read { path: path.display().to_string(), cause })
        };
        let mut keys = Vec::new();
        if let Some(path) = &config.hs256_secret_file {
            let secret = read(path)?;
            let secret = secret.trim_ascii();
            if secret.len() < MIN_HS256_SECRET {
                return Err(JwtKeyError::ShortSecret { path: path.display().to_string() });
            }
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret)));
        }
        for path in &config.public_keys {
            let pem = read(path)?;
            let key = if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                (Algorithm::EdDSA, key)
            } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                (Algorithm::ES256, key)
            } else {
                return Err(JwtKeyError::NotAKey { path: path.display().to_string() });
            };
            keys.push(key);
        }
        Ok((!keys.is_empty()).then(|| Self::new(keys, config.audience.clone(), config.issuer.clone())))
    }

    pub fn new(keys: Vec<(Algorithm, DecodingKey)>, audience: Option<String>, issuer: Option<String>) -> Self {
        Self { keys, audience, issuer }
    }

    /// The claims of a JWT signed by one of the keys, checked in the order of
    /// the binary tokens: structure and signature (with `aud`, `iss`), then
    /// subject, then time (`nbf`, then `exp`). Never panics.
    pub fn verify(&self, token: &[u8], now_unix_s: u64) -> Result<Claims, JwtError> {
        let token = std::str::from_utf8(token).map_err(|_| JwtError::Malformed)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let mut validation = Validation::new(header.alg);
        // Time is checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        let mut result = Err(JwtError::Algorithm);
        for (_, key) in self.keys.iter().filter(|(alg, _)| *alg == header.alg) {
            result = jsonwebtoken::decode::<Payload>(token, key, &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::InvalidAudience => JwtError::Audience,
                ErrorKind::InvalidIssuer => JwtError::Issuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => JwtError::Audience,
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => JwtError::Issuer,
                ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
                _ => JwtError::Malformed,
            });
            if !matches!(result, Err(JwtError::BadSignature)) {
                break;
            }
        }
        let payload = result?.claims;
        let subject = match (payload.sub, payload.gateway) {
            (Some(sub), None) if !sub.is_empty() && sub.bytes().all(|b| b.is_ascii_digit()) => {
                Subject::User(sub.parse().map_err(|_| JwtError::Subject)?)
            }
            (None, Some(name)) if (1..=MAX_GATEWAY_NAME).contains(&name.len()) => Subject::Gateway(name),
            _ => return Err(JwtError::Subject),
        };
        if payload.nbf.is_some_and(|nbf| now_unix_s.saturating_add(LEEWAY_S) < nbf) {
            return Err(JwtError::NotYetValid);
        }
        let expires_at = payload.exp.saturating_add(LEEWAY_S);
        if expires_at <= now_unix_s {
            return Err(JwtError::Expired);
        }
        Ok(Claims { subject, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hs(claims: &Value) -> Vec<u8> {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET)).unwrap().into_bytes()
    }

    fn keys() -> JwtKeys {
        JwtKeys::new(vec![(Algorithm::HS256, DecodingKey::from_secret(SECRET))], None, None)
    }

    fn user(id: u64) -> Value {
        json!({"sub": id.to_string(), "exp": NOW + 60})
    }

    #[test]
    fn detects_jwts_by_their_first_byte() {
        assert!(is_jwt(&hs(&user(1))));
        assert!(!is_jwt(&[1, 0, 0]));
        assert!(!is_jwt(b""));
    }

    #[test]
    fn maps_user_and_gateway_claims() {
        let keys = keys();
        let claims = keys.verify(&hs(&user(42)), NOW).unwrap();
        assert_eq!(claims, Claims { subject: Subject::User(42), expires_at: NOW + 60 + LEEWAY_S });
        let max = json!({"sub": u64::MAX.to_string(), "exp": NOW + 1});
        assert_eq!(keys.verify(&hs(&max), NOW).unwrap().subject, Subject::User(u64::MAX));
        let gw = json!({"gateway": "edge-1", "exp": NOW + 60, "nbf": NOW, "iat": NOW, "jti": "x"});
        assert_eq!(keys.verify(&hs(&gw), NOW).unwrap().subject, Subject::Gateway("edge-1".into()));
        let long = json!({"gateway": "x".repeat(64), "exp": NOW + 60});
        assert!(keys.verify(&hs(&long), NOW).is_ok());
    }

    #[test]
    fn bad_subjects_are_malformed() {
        let keys = keys();
        for claims in [
            json!({"exp": NOW + 60}),
            json!({"sub": "42", "gateway": "g", "exp": NOW + 60}),
            json!({"sub": "", "exp": NOW + 60}),
            json!({"sub": "+42", "exp": NOW + 60}),
            json!({"sub": "-1", "exp": NOW + 60}),
            json!({"sub": "4 2", "exp": NOW + 60}),
            json!({"sub": "18446744073709551616", "exp": NOW + 60}),
            json!({"gateway": "", "exp": NOW + 60}),
            json!({"gateway": "x".repeat(65), "exp": NOW + 60}),
        ] {
            assert_eq!(keys.verify(&hs(&claims), NOW), Err(JwtError::Subject), "{claims}");
            assert_eq!(JwtError::Subject.auth(), AuthError::Malformed);
        }
    }

    #[test]
    fn exp_is_required_and_nbf_honoured() {
        let keys = keys();
        assert_eq!(keys.verify(&hs(&json!({"sub": "1"})), NOW), Err(JwtError::Malformed));
        assert_eq!(keys.verify(&hs(&json!({"sub": "1", "exp": "soon"})), NOW), Err(JwtError::Malformed));
        let exp = hs(&user(1));
        assert!(keys.verify(&exp, NOW + 60 + LEEWAY_S - 1).is_ok());
        assert_eq!(keys.verify(&exp, NOW + 60 + LEEWAY_S), Err(JwtError::Expired));
        let nbf = hs(&json!({"sub": "1", "exp": NOW + 60, "nbf": NOW + 10}));
        assert_eq!(keys.verify(&nbf, NOW + 10 - LEEWAY_S - 1), Err(JwtError::NotYetValid));
        assert!(keys.verify(&nbf, NOW + 10 - LEEWAY_S).is_ok());
    }

    #[test]
    fn signature_algorithm_and_keys_are_checked() {
        let keys = keys();
        let other = encode(&Header::new(Algorithm::HS256), &user(1), &EncodingKey::from_secret(&[7; 32])).unwrap();
        assert_eq!(keys.verify(other.as_bytes(), NOW), Err(JwtError::BadSignature));
        // A forged token is refused before its expiry is looked at.
        let expired = encode(&Header::new(Algorithm::HS256), &user(1), &EncodingKey::from_secret(&[7; 32])).unwrap();
        assert_eq!(keys.verify(expired.as_bytes(), u64::MAX), Err(JwtError::BadSignature));
        let mut flipped = hs(&user(1));
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(keys.verify(&flipped, NOW), Err(JwtError::BadSignature | JwtError::Malformed)));
        let hs384 =
            encode(&Header::new(Algorithm::HS384), &user(1), &EncodingKey::from_secret(SECRET)).unwrap().into_bytes();
        assert_eq!(keys.verify(&hs384, NOW), Err(JwtError::Algorithm));
        // alg "none", hand-made: header {"alg":"none"}.
        let none = format!(
            "eyJhbGciOiJub25lIn0.{}.",
            hs(&user(1)).split(|&b| b == b'.').nth(1).map(|p| String::from_utf8_lossy(p).into_owned()).unwrap()
        );
        assert_eq!(keys.verify(none.as_bytes(), NOW), Err(JwtError::Malformed));
        for junk in [&b"e"[..], b"eyJ", b"e.e.e", b"ey\xff.a.b", b"eyJhbGciOiJIUzI1NiJ9.e30"] {
            assert_eq!(keys.verify(junk, NOW), Err(JwtError::Malformed), "{junk:?}");
        }
        assert_eq!(JwtError::BadSignature.auth().code(), heartline_proto::ErrorCode::BadToken);
        assert_eq!(JwtError::Algorithm.auth().code(), heartline_proto::ErrorCode::BadToken);
        assert_eq!(JwtError::Malformed.auth().code(), heartline_proto::ErrorCode::BadToken);
        assert_eq!(JwtError::Disabled.auth().code(), heartline_proto::ErrorCode::BadToken);
        assert_eq!(JwtError::Expired.auth().code(), heartline_proto::ErrorCode::TokenExpired);
        assert_eq!(JwtError::NotYetValid.auth().code(), heartline_proto::ErrorCode::BadToken);
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let keys = JwtKeys::new(
            vec![(Algorithm::HS256, DecodingKey::from_secret(SECRET))],
            Some("heartline".into()),
            Some("https://auth.example".into()),
        );
        let ok = json!({"sub": "1", "exp": NOW + 60, "aud": ["x", "heartline"], "iss": "https://auth.example"});
        assert!(keys.verify(&hs(&ok), NOW).is_ok());
        let ok = json!({"sub": "1", "exp": NOW + 60, "aud": "heartline", "iss": "https://auth.example"});
        assert!(keys.verify(&hs(&ok), NOW).is_ok());
        for (claims, err) in [
            (json!({"sub": "1", "exp": NOW + 60, "aud": "other", "iss": "https://auth.example"}), JwtError::Audience),
            (json!({"sub": "1", "exp": NOW + 60, "iss": "https://auth.example"}), JwtError::Audience),
            (json!({"sub": "1", "exp": NOW + 60, "aud": "heartline", "iss": "evil"}), JwtError::Issuer),
            (json!({"sub": "1", "exp": NOW + 60, "aud": "heartline"}), JwtError::Issuer),
        ] {
            assert_eq!(keys.verify(&hs(&claims), NOW), Err(err), "{claims}");
            assert_eq!(err.auth().code(), heartline_proto::ErrorCode::BadToken);
        }
    }

    #[test]
    fn loads_pem_public_keys_and_verifies_es256_and_eddsa() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Jwt::default();
        assert!(JwtKeys::load(&config).unwrap().is_none());
        let mut signers = Vec::new();
        for (i, (alg, kind)) in
            [(Algorithm::ES256, &rcgen::PKCS_ECDSA_P256_SHA256), (Algorithm::EdDSA, &rcgen::PKCS_ED25519)]
                .into_iter()
                .enumerate()
        {
            let pair = rcgen::KeyPair::generate_for(kind).unwrap();
            let path = dir.path().join(format!("{i}.pem"));
            std::fs::write(&path, pair.public_key_pem()).unwrap();
            config.public_keys.push(path);
            let private = pair.serialize_pem();
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
                _ => EncodingKey::from_ed_pem(private.as_bytes()).unwrap(),
            };
            signers.push((alg, key));
        }
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"short\n").unwrap();
        config.hs256_secret_file = Some(secret.clone());
        assert!(matches!(JwtKeys::load(&config), Err(JwtKeyError::ShortSecret { .. })));
        std::fs::write(&secret, [SECRET, b"\n"].concat()).unwrap();
        let keys = JwtKeys::load(&config).unwrap().unwrap();
        assert!(keys.verify(&hs(&user(5)), NOW).is_ok());
        for (alg, key) in &signers {
            let token = encode(&Header::new(*alg), &user(9), key).unwrap();
            assert_eq!(keys.verify(token.as_bytes(), NOW).unwrap().subject, Subject::User(9), "{alg:?}");
        }
        // An ES256 token signed by a key heartline does not know.
        let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &user(9), &key).unwrap();
        assert_eq!(keys.verify(token.as_bytes(), NOW), Err(JwtError::BadSignature));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, b"not a key").unwrap();
        config.public_keys.push(junk);
        assert!(matches!(JwtKeys::load(&config), Err(JwtKeyError::NotAKey { .. })));
    }
}
