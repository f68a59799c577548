//! The WebSocket and TLS transports against a real daemon on 127.0.0.1:0:
//! WebSocket sessions (tokio-tungstenite as the client), its refusals and
//! close codes, TCP+TLS with the Rust SDK, `wss://`, a certificate reloaded
//! for new handshakes, and third-party clients (`openssl s_client`, Python's
//! `websockets`) completing handshakes.

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use heartline::config::Config;
use heartline_client::{Client as SdkClient, ClientConfig, Tls};
use heartline_proto::codec::types as codec_types;
use heartline_proto::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use common::{hello, Daemon, PATIENCE};
use pki::{Leaf, Pki};

fn frame(msg: &Message) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(msg, &mut out).unwrap();
    out.freeze()
}

fn with_tls(config: &mut Config, leaf: &Leaf) {
    config.tls.cert = Some(leaf.cert.clone());
    config.tls.key = Some(leaf.key.clone());
}

/// A WebSocket client speaking protocol frames, one per binary message.
struct Ws<S> {
    ws: WebSocketStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Ws<S> {
    async fn send(&mut self, msg: &Message) {
        self.ws.send(WsMessage::Binary(frame(msg))).await.unwrap();
    }

    /// The next protocol message (each server message is exactly one frame).
    async fn recv(&mut self) -> Message {
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next()).await.expect("nothing received in time") {
                Some(Ok(WsMessage::Binary(data))) => {
                    let mut buf = BytesMut::from(&data[..]);
                    let msg = MessageCodec::default().next_message(&mut buf).unwrap().expect("a whole frame");
                    assert!(buf.is_empty(), "one frame per message");
                    return msg;
                }
                Some(Ok(WsMessage::Pong(_))) => continue,
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    async fn handshake(&mut self, token: Bytes) -> Welcome {
        self.send(&hello(Role::Client, token, false, 0)).await;
        match self.recv().await {
            Message::Welcome(welcome) => welcome,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// The ERROR the server sends, then its close frame: (error, close code).
    async fn closing(&mut self) -> (ErrorCode, CloseCode) {
        let error = match self.recv().await {
            Message::Error { code, .. } => ErrorCode::from_u16(code).unwrap(),
            other => panic!("expected ERROR, got {other:?}"),
        };
        match tokio::time::timeout(PATIENCE, self.ws.next()).await.unwrap() {
            Some(Ok(WsMessage::Close(Some(close)))) => {
                assert_eq!(close.reason.as_str(), error.name(), "the close reason names the error");
                (error, close.code)
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn ws_connect(daemon: &Daemon, path: &str, origin: Option<&str>) -> Result<Ws<TcpStream>, WsError> {
    let addr = daemon.running.ws.expect("the WebSocket listener");
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("Origin", origin.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, stream).await.map(|(ws, _)| Ws { ws })
}

#[tokio::test]
async fn websocket_session_heartbeats_and_watches() {
    let daemon = Daemon::start().await;
    let mut ws = ws_connect(&daemon, "/v1/ws", Some("http://localhost:3000")).await.unwrap();
    let welcome = ws.handshake(daemon.user_token(1)).await;
    assert!(welcome.session != 0);
    ws.send(&Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })).await;
    // WebSocket ping, answered by the server's WebSocket layer.
    ws.ws.send(WsMessage::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    match tokio::time::timeout(PATIENCE, ws.ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Pong(data))) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.send(&Message::Watch { req: 2, users: vec![2] }).await;
    match ws.recv().await {
        Message::Presence { req: 2, entries } => assert_eq!(entries[0].status, Status::Offline),
        other => panic!("expected PRESENCE, got {other:?}"),
    }
    // Another user, over plain TCP, comes online and changes status.
    let mut other = daemon.user(2).await;
    other.set_status(Status::Away, "lunch").await;
    let entry = loop {
        match ws.recv().await {
            Message::PresencePush { entries } => {
                if let Some(e) = entries.into_iter().find(|e| e.user == 2 && e.status == Status::Away) {
                    break e;
                }
            }
            other => panic!("expected PRESENCE_PUSH, got {other:?}"),
        }
    };
    assert_eq!(entry.text.as_str(), "lunch");
    // The session is the machine's, whatever the transport: user 1 is online to others.
    assert_eq!(other.query(&[1]).await[0].status, Status::Online);
    let metrics = daemon.metrics().await;
    assert_eq!(common::sample(&metrics, "heartline_connections_accepted_by_transport_total{transport=\"ws\"}"), 1);
    assert_eq!(common::sample(&metrics, "heartline_connections_accepted_by_transport_total{transport=\"tcp\"}"), 1);
    assert_eq!(common::sample(&metrics, "heartline_connections_accepted_total"), 2);
    // The dashboard's view: one connection on each transport, the heartbeat on WebSocket's.
    let stats = common::http(daemon.running.admin, "GET", "/v1/stats", None, "").await.body;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let row = |name: &str| stats["transports"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap().clone();
    assert_eq!((row("ws")["connections"].as_u64(), row("tcp")["connections"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert!(row("ws")["heartbeats"].as_u64() >= Some(1), "{stats}");
    ws.send(&Message::Bye).await;
    match tokio::time::timeout(PATIENCE, ws.ws.next()).await.unwrap() {
        Some(Ok(WsMessage::Close(Some(close)))) => assert_eq!(close.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_refusals_and_close_codes() {
    let daemon = Daemon::start_with(|config| config.limits.max_frame = 4_096).await;
    let status = |e: WsError| match e {
        WsError::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    };
    let refused = ws_connect(&daemon, "/v1/ws", Some("https://evil.example")).await.err().expect("refused");
    assert_eq!(status(refused), 403, "a foreign origin is refused before the upgrade");
    let refused = ws_connect(&daemon, "/v2/other", None).await.err().expect("refused");
    assert_eq!(status(refused), 404);

    // A text message is not a frame.
    let mut ws = ws_connect(&daemon, "/v1/ws", None).await.unwrap();
    ws.ws.send(WsMessage::Text("hello".into())).await.unwrap();
    assert_eq!(ws.closing().await, (ErrorCode::Malformed, CloseCode::Protocol));

    // A frame over max_frame, in one message, and a message over what a frame may be.
    for size in [5_000, 64 * 1024] {
        let mut ws = ws_connect(&daemon, "/v1/ws", None).await.unwrap();
        let mut big = BytesMut::new();
        varint::put(&mut big, size as u64 - 3);
        big.resize(size, 0x05);
        ws.ws.send(WsMessage::Binary(big.freeze())).await.unwrap();
        assert_eq!(ws.closing().await, (ErrorCode::FrameTooLarge, CloseCode::Size), "{size} bytes");
    }

    // Two frames in one message, and a message holding part of one.
    let token = daemon.user_token(3);
    let hello_frame = frame(&hello(Role::Client, token, false, 0));
    for bytes in [[&hello_frame[..], &hello_frame[..]].concat(), hello_frame[..hello_frame.len() - 1].to_vec()] {
        let mut ws = ws_connect(&daemon, "/v1/ws", None).await.unwrap();
        ws.ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
        assert_eq!(ws.closing().await, (ErrorCode::Malformed, CloseCode::Protocol));
    }

    // The machine's own errors close with their codes too: a bad token.
    let mut ws = ws_connect(&daemon, "/v1/ws", None).await.unwrap();
    ws.send(&hello(Role::Client, Bytes::from_static(&[0; 34]), false, 0)).await;
    assert_eq!(ws.closing().await.1, CloseCode::Policy);
    let metrics = daemon.metrics().await;
    assert!(common::sample(&metrics, "heartline_connections_closed_total{reason=\"frame_too_large\"}") >= 2);
}

#[tokio::test]
async fn websocket_origin_list_and_wildcard() {
    let listed = Daemon::start_with(|c| c.websocket.allowed_origins = vec!["https://app.example".into()]).await;
    assert!(ws_connect(&listed, "/v1/ws", Some("https://app.example")).await.is_ok());
    assert!(ws_connect(&listed, "/v1/ws", Some("http://localhost")).await.is_err(), "the list replaces loopback");
    let any = Daemon::start_with(|c| c.websocket.allowed_origins = vec!["*".into()]).await;
    assert!(ws_connect(&any, "/v1/ws", Some("https://evil.example")).await.is_ok());
    let off = Daemon::start_with(|c| c.websocket.enabled = false).await;
    assert!(off.running.ws.is_none());
}

/// A daemon with a TCP+TLS listener and `wss://`, both with `leaf`.
async fn tls_daemon(leaf: &Leaf) -> Daemon {
    Daemon::start_with(|config| {
        config.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        config.websocket.tls = true;
        with_tls(config, leaf);
    })
    .await
}

#[tokio::test]
async fn tls_with_the_sdk_full_session() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki.leaf("server")).await;
    let addr = daemon.running.tls.expect("the TLS listener");
    let tls = Tls::with_ca_file(&pki.ca_pem).unwrap().server_name("localhost").unwrap();
    let config = |user: u64| ClientConfig {
        tls: Some(tls.clone()),
        reconnect: None,
        ..ClientConfig::new(format!("tls://{addr}"), daemon.user_token(user))
    };
    let alice = SdkClient::connect(config(1)).await.unwrap();
    let bob = SdkClient::connect(config(2)).await.unwrap();
    let mut watching = alice.watch(&[2]).await.unwrap();
    bob.set_status(Status::Busy, "in a meeting").await.unwrap();
    let seen = tokio::time::timeout(PATIENCE, async {
        loop {
            let entry = watching.next().await.expect("the watch stream");
            if entry.status == Status::Busy {
                return entry;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(seen.text.as_str(), "in a meeting");
    assert_eq!(bob.query(&[1]).await.unwrap()[0].status, Status::Online);
    let id = alice.post(1, Bytes::from_static(b"over TLS")).await.unwrap();
    assert!(id != 0);
    alice.close().await.unwrap();
    bob.close().await.unwrap();

    // Another CA's client is refused by the TLS handshake.
    let other = Pki::new();
    let untrusted = Tls::with_ca_file(&other.ca_pem).unwrap().server_name("localhost").unwrap();
    let refused = SdkClient::connect(ClientConfig { tls: Some(untrusted), ..config(3) }).await;
    assert!(matches!(refused, Err(heartline_client::ClientError::Io(_))), "{:?}", refused.err());
    let metrics = daemon.metrics().await;
    assert!(common::sample(&metrics, "heartline_connections_accepted_by_transport_total{transport=\"tls\"}") >= 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_over_tls_with_a_ca_file() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki.leaf("server")).await;
    let addr = format!("tls://{}", daemon.running.tls.unwrap());
    let token = heartline::auth::to_text(&daemon.user_token(21));
    let ctl = |ca: std::path::PathBuf| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_heartline"));
        command.args(["ctl", "--addr", &addr, "--tls-name", "localhost", "--token", &token, "--json"]);
        command.arg("--ca").arg(ca).args(["presence", "get", "21"]).env_remove("HEARTLINE_TOKEN");
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let ok = ctl(pki.ca_pem.clone()).await.unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"online\""), "{ok:?}");
    let other = Pki::new();
    let refused = ctl(other.ca_pem.clone()).await.unwrap();
    assert!(!refused.status.success(), "a certificate of another CA is refused");
}

async fn tls_connect(pki: &Pki, addr: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = TlsConnector::from(pki.client_config());
    let stream = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from("localhost").unwrap(), stream).await.unwrap()
}

#[tokio::test]
async fn wss_session() {
    let pki = Pki::new();
    let daemon = tls_daemon(&pki.leaf("server")).await;
    let addr = daemon.running.ws.unwrap();
    let stream = tls_connect(&pki, addr).await;
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/v1/ws", addr.port()), stream).await.unwrap();
    let mut ws = Ws { ws };
    ws.handshake(daemon.user_token(5)).await;
    ws.send(&Message::Query { req: 7, users: vec![5] }).await;
    match ws.recv().await {
        Message::Presence { req: 7, entries } => assert_eq!(entries[0].status, Status::Online),
        other => panic!("expected PRESENCE, got {other:?}"),
    }
    let metrics = daemon.metrics().await;
    assert_eq!(common::sample(&metrics, "heartline_connections_accepted_by_transport_total{transport=\"wss\"}"), 1);
}

#[tokio::test]
async fn a_reloaded_certificate_serves_new_handshakes() {
    let pki = Pki::new();
    let first = pki.leaf("server");
    let mut daemon = tls_daemon(&first).await;
    let addr = daemon.running.tls.unwrap();
    let peer_leaf =
        |tls: &tokio_rustls::client::TlsStream<TcpStream>| tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let before = tls_connect(&pki, addr).await;
    assert_eq!(peer_leaf(&before), first.der);

    let mut reloadable = daemon.running.take_reloadable().unwrap();
    // A file that is not a certificate is refused; the old pair stays.
    std::fs::write(&first.cert, "not a certificate").unwrap();
    reloadable.reload(daemon.config.clone());
    assert_eq!(peer_leaf(&tls_connect(&pki, addr).await), first.der);
    // A renewed pair at the same paths: new handshakes get it.
    let second = pki.leaf("server");
    assert_ne!(second.der, first.der);
    reloadable.reload(daemon.config.clone());
    assert_eq!(peer_leaf(&tls_connect(&pki, addr).await), second.der);
    // wss:// shares the certificate.
    assert_eq!(peer_leaf(&tls_connect(&pki, daemon.running.ws.unwrap()).await), second.der);
    // The connection made before the reload keeps its certificate and works.
    let mut before = before;
    before.write_all(&frame(&hello(Role::Client, daemon.user_token(9), false, 0))).await.unwrap();
    before.flush().await.unwrap();
    let mut buf = BytesMut::new();
    let reply = loop {
        if let Some(msg) = MessageCodec::default().next_message(&mut buf).unwrap() {
            break msg;
        }
        let read = tokio::time::timeout(PATIENCE, before.read_buf(&mut buf)).await.unwrap().unwrap();
        assert!(read > 0, "closed before WELCOME");
    };
    assert!(matches!(reply, Message::Welcome(_)), "{reply:?}");
}

#[tokio::test]
async fn openssl_s_client_completes_a_handshake() {
    if !common::available("openssl", &["version"]) {
        return;
    }
    let pki = Pki::new();
    let daemon = tls_daemon(&pki.leaf("server")).await;
    let addr = daemon.running.tls.unwrap();
    let connect = addr.to_string();
    let ca = pki.ca_pem.to_str().unwrap();
    let args =
        ["s_client", "-connect", &connect, "-servername", "localhost", "-CAfile", ca, "-verify_return_error", "-brief"];
    let output = tokio::process::Command::new("openssl").args(args).stdin(Stdio::null()).output();
    let output = tokio::time::timeout(Duration::from_secs(20), output).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "openssl s_client failed: {text}");
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("Protocol version: TLSv1.3"), "{text}");
}

#[tokio::test]
async fn python_websockets_wss_hello() {
    if !common::available("python3", &["-c", "import websockets"]) {
        return;
    }
    let pki = Pki::new();
    let daemon = tls_daemon(&pki.leaf("server")).await;
    let url = format!("wss://localhost:{}/v1/ws", daemon.running.ws.unwrap().port());
    let hello = hex::encode(frame(&hello(Role::Client, daemon.user_token(11), false, 0)));
    let welcome = codec_types::WELCOME.to_string();
    let text = common::python("wss_hello.py", [&url, pki.ca_pem.to_str().unwrap(), &hello, &welcome]).await;
    assert!(text.contains("WELCOME"), "{text}");
}
