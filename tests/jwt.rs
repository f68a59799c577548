//! JSON Web Tokens in HELLO (SPEC.md §12.1, `[jwt]`) against a real daemon:
//! HS256, ES256 and EdDSA tokens minted here (keys generated at run time)
//! connect with the Rust SDK and the raw test client, the refusals carry the
//! spec's errors, binary tokens keep working, and a token minted by Python's
//! PyJWT gets a WELCOME.

mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use heartline::config::Config;
use heartline_client::{Client as SdkClient, ClientConfig};
use heartline_proto::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use common::{refused, Daemon};

const SECRET: &[u8] = b"an HS256 secret of 32 bytes or more, for tests";

struct Keys {
    dir: tempfile::TempDir,
    es256: EncodingKey,
    eddsa: EncodingKey,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hs256"), [SECRET, b"\n"].concat()).unwrap();
        let pair = |kind, name: &str| {
            let pair = rcgen::KeyPair::generate_for(kind).unwrap();
            std::fs::write(dir.path().join(name), pair.public_key_pem()).unwrap();
            pair.serialize_pem()
        };
        let es256 = EncodingKey::from_ec_pem(pair(&rcgen::PKCS_ECDSA_P256_SHA256, "es256.pem").as_bytes()).unwrap();
        let eddsa = EncodingKey::from_ed_pem(pair(&rcgen::PKCS_ED25519, "ed25519.pem").as_bytes()).unwrap();
        Self { dir, es256, eddsa }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn configure(&self, config: &mut Config) {
        config.jwt.hs256_secret_file = Some(self.path("hs256"));
        config.jwt.public_keys = vec![self.path("es256.pem"), self.path("ed25519.pem")];
        config.jwt.audience = Some("heartline".into());
    }

    fn mint(&self, alg: Algorithm, claims: serde_json::Value) -> Bytes {
        let secret = EncodingKey::from_secret(SECRET);
        let key = match alg {
            Algorithm::HS256 => &secret,
            Algorithm::ES256 => &self.es256,
            _ => &self.eddsa,
        };
        Bytes::from(encode(&Header::new(alg), &claims, key).unwrap())
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn jwts_of_every_algorithm_connect_with_the_sdk() {
    let keys = Keys::new();
    let daemon = Daemon::start_with(|c| keys.configure(c)).await;
    let addr = daemon.running.tcp.to_string();
    for (i, alg) in [Algorithm::HS256, Algorithm::ES256, Algorithm::EdDSA].into_iter().enumerate() {
        let user = 100 + i as u64;
        let token = keys.mint(alg, json!({"sub": user.to_string(), "exp": now() + 60, "aud": "heartline"}));
        let client = SdkClient::connect(ClientConfig::new(addr.clone(), token)).await.unwrap();
        let mut watcher = daemon.watcher().await;
        let entry = &watcher.query(&[user]).await[0];
        assert_eq!(entry.user, user, "{alg:?}");
        assert_ne!(entry.status, Status::Offline, "{alg:?}: the SDK's session is not online");
        client.close().await.unwrap();
    }
    // A gateway by JWT, and the binary tokens still work next to JWTs.
    let gateway = keys.mint(Algorithm::EdDSA, json!({"gateway": "edge-1", "exp": now() + 60, "aud": "heartline"}));
    daemon.hello(Role::Gateway, gateway, false, 0).await;
    daemon.user(7).await;
}

#[tokio::test]
async fn refused_jwts_get_the_spec_errors() {
    let keys = Keys::new();
    let daemon = Daemon::start_with(|c| keys.configure(c)).await;
    let t = now();
    let cases = [
        (json!({"sub": "1", "exp": t - 30, "aud": "heartline"}), Role::Client, ErrorCode::TokenExpired),
        (json!({"sub": "1", "exp": t + 60, "aud": "elsewhere"}), Role::Client, ErrorCode::BadToken),
        (json!({"sub": "1", "exp": t + 60}), Role::Client, ErrorCode::BadToken),
        (json!({"sub": "1", "aud": "heartline"}), Role::Client, ErrorCode::BadToken),
        (json!({"sub": "1", "exp": t + 60, "nbf": t + 600, "aud": "heartline"}), Role::Client, ErrorCode::BadToken),
        (json!({"sub": "alice", "exp": t + 60, "aud": "heartline"}), Role::Client, ErrorCode::BadToken),
        (json!({"sub": "1", "exp": t + 60, "aud": "heartline"}), Role::Gateway, ErrorCode::BadToken),
        (json!({"gateway": "g", "exp": t + 60, "aud": "heartline"}), Role::Client, ErrorCode::BadToken),
    ];
    for (claims, role, code) in cases {
        let token = keys.mint(Algorithm::ES256, claims.clone());
        assert_eq!(refused(&daemon, token, role).await, Some(code), "{claims}");
    }
    let good = json!({"sub": "1", "exp": t + 60, "aud": "heartline"});
    let forged = encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(&[9; 32])).unwrap();
    assert_eq!(refused(&daemon, forged.into(), Role::Client).await, Some(ErrorCode::BadToken));
    let hs512 = encode(&Header::new(Algorithm::HS512), &good, &EncodingKey::from_secret(SECRET)).unwrap();
    assert_eq!(refused(&daemon, hs512.into(), Role::Client).await, Some(ErrorCode::BadToken));
}

/// What SIGHUP does to `[jwt]` (the in-process daemon's reload, as the
/// signal handler calls it): the key files are read again, a new HS256
/// secret replaces the old one, and a key file that no longer reads keeps
/// the keys in force.
#[tokio::test]
async fn a_reload_reads_the_jwt_keys_again() {
    let keys = Keys::new();
    let mut daemon = Daemon::start_with(|c| keys.configure(c)).await;
    let mut reloadable = daemon.running.take_reloadable().unwrap();
    let claims = json!({"sub": "5", "exp": now() + 60, "aud": "heartline"});
    let signed = |secret: &[u8]| -> Bytes {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).unwrap().into()
    };
    let (old, new) = (SECRET, b"the next HS256 secret, also 32 bytes or more".as_slice());
    daemon.hello(Role::Client, signed(old), false, 0).await;
    assert_eq!(refused(&daemon, signed(new), Role::Client).await, Some(ErrorCode::BadToken), "not before the reload");

    std::fs::write(keys.path("hs256"), new).unwrap();
    reloadable.reload(daemon.config.clone());
    daemon.hello(Role::Client, signed(new), false, 0).await;
    assert_eq!(refused(&daemon, signed(old), Role::Client).await, Some(ErrorCode::BadToken), "replaced");

    std::fs::write(keys.path("hs256"), "short").unwrap();
    reloadable.reload(daemon.config.clone());
    daemon.hello(Role::Client, signed(new), false, 0).await;
    daemon.hello(Role::Client, keys.mint(Algorithm::EdDSA, claims.clone()), false, 0).await;
}

#[tokio::test]
async fn without_jwt_keys_jwts_are_bad_tokens() {
    let keys = Keys::new();
    let daemon = Daemon::start().await;
    let token = keys.mint(Algorithm::HS256, json!({"sub": "1", "exp": now() + 60}));
    assert_eq!(refused(&daemon, token, Role::Client).await, Some(ErrorCode::BadToken));
}

#[tokio::test]
async fn a_bad_key_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let mut config = common::test_config(dir.path());
    config.jwt.public_keys = vec![junk];
    let err = heartline::server::start(config).await.err().expect("started with a bad key");
    assert!(err.to_string().contains("[jwt]"), "{err}");
}

#[tokio::test]
async fn a_pyjwt_token_gets_a_welcome() {
    if !common::available("python3", &["-c", "import jwt"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hs256");
    std::fs::write(&secret, SECRET).unwrap();
    let daemon = Daemon::start_with(|c| c.jwt.hs256_secret_file = Some(secret.clone())).await;
    let tcp = daemon.running.tcp;
    let text = common::python(
        "jwt_hello.py",
        [&tcp.ip().to_string(), &tcp.port().to_string(), secret.to_str().unwrap(), "31"],
    )
    .await;
    assert!(text.contains("WELCOME"), "{text}");
}
