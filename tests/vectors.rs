//! The golden vectors in `protocol-spec/vectors/`, checked both ways: every
//! hex string decodes to exactly the fields written beside it, and encoding
//! those fields gives back exactly the hex. Malformed inputs must produce the
//! exact error named beside them.
//!
//! The cases below wrote the files once (`cargo test --test vectors -- --ignored bless`);
//! from then on the files are the reference and this test only reads them.
//! Re-bless only for a deliberate wire change, together with SPEC.md.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use heartline_proto::udp::{self, Body, DropReason, ReplayWindow};
use heartline_proto::*;
use serde_json::{json, Value};
use tokio_util::codec::Decoder;

const UDP_KEY: udp::Key = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-spec/vectors")
}

fn load(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn frame(msg: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf).unwrap();
    buf.freeze()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// Decodes one whole TCP frame (length prefix included) as a v1 server does.
fn decode_stream(bytes: &[u8]) -> Result<Message, ErrorCode> {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameCodec::default().decode(&mut buf).map_err(|e| e.code().unwrap())?;
    let frame = frame.expect("vector holds a whole frame");
    assert!(buf.is_empty(), "vector holds exactly one frame");
    Message::decode(frame).map_err(|e| e.code)
}

fn check_messages(file: &str) {
    let vectors = load(file);
    assert!(!vectors.is_empty());
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let bytes = unhex(&v["hex"]);
        let decoded = decode_stream(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(serde_json::to_value(&decoded).unwrap(), v["message"], "{name}: decode");
        let msg: Message = serde_json::from_value(v["message"].clone()).unwrap();
        assert_eq!(hex::encode(frame(&msg)), v["hex"].as_str().unwrap(), "{name}: encode");
    }
}

#[test]
fn tcp_messages() {
    check_messages("tcp.json");
}

#[test]
fn batch_frames() {
    check_messages("batch.json");
}

#[test]
fn malformed_frames() {
    for v in load("malformed.json") {
        let name = v["name"].as_str().unwrap();
        let err = decode_stream(&unhex(&v["hex"])).expect_err(name);
        assert_eq!(err.name(), v["error"].as_str().unwrap(), "{name}");
        assert_eq!(err.closes(), v["closes"].as_bool().unwrap(), "{name}");
    }
}

fn state(interval: u32, v: &Value) -> HeartbeatState {
    let mut s = HeartbeatState::new(interval);
    s.seq = v["seq"].as_u64().unwrap() as u32;
    s.ts = v["ts"].as_u64().unwrap() as u32;
    s.status = serde_json::from_value(v["status"].clone()).unwrap();
    s
}

fn state_json(s: &HeartbeatState) -> Value {
    json!({ "seq": s.seq, "ts": s.ts, "status": s.status })
}

#[test]
fn heartbeat_deltas() {
    for v in load("heartbeat.json") {
        let name = v["name"].as_str().unwrap();
        let interval = v["interval_ms"].as_u64().unwrap() as u32;
        let mut receiver = state(interval, &v["before"]);
        let decoded = decode_stream(&unhex(&v["hex"]));
        match v.get("error") {
            Some(error) => {
                let err = decoded.and_then(|msg| match msg {
                    Message::Heartbeat(hb) => receiver.apply(&hb).map_err(|e| e.code),
                    other => panic!("{name}: not a heartbeat: {other:?}"),
                });
                assert_eq!(err.unwrap_err().name(), error.as_str().unwrap(), "{name}");
            }
            None => {
                let Ok(Message::Heartbeat(hb)) = decoded else { panic!("{name}: {decoded:?}") };
                receiver.apply(&hb).unwrap();
                assert_eq!(state_json(&receiver), v["after"], "{name}: decode");
                let mut sender = state(interval, &v["before"]);
                let after = state(interval, &v["after"]);
                let hb = sender.encode(after.seq, after.ts, after.status);
                assert_eq!(hex::encode(frame(&Message::Heartbeat(hb))), v["hex"].as_str().unwrap(), "{name}: encode");
            }
        }
    }
}

fn window(v: &Value) -> ReplayWindow {
    let mut w = ReplayWindow::default();
    for seq in v["accepted_before"].as_array().unwrap() {
        w.accept(seq.as_u64().unwrap() as u32);
    }
    w
}

fn body_json(body: &Body) -> Value {
    match body {
        Body::Heartbeat(status) => json!({ "heartbeat": status }),
        Body::Batch(view) => json!({ "batch": Batch::encode(&view.iter().collect::<Vec<_>>()).unwrap() }),
    }
}

#[test]
fn udp_datagrams() {
    for v in load("udp.json") {
        let name = v["name"].as_str().unwrap();
        let bytes = unhex(&v["hex"]);
        let mut w = window(&v);
        let opened = udp::parse(&bytes).and_then(|dg| Ok((dg.id, dg.open(&UDP_KEY, &mut w)?)));
        match v.get("drop") {
            Some(reason) => {
                let reason: DropReason = serde_json::from_value(reason.clone()).unwrap();
                assert_eq!(opened.unwrap_err(), reason, "{name}");
            }
            None => {
                let (id, (seq, body)) = opened.unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert_eq!(json!({ "id": id, "seq": seq, "body": body_json(&body) }), v["datagram"], "{name}: decode");
                let mut out = BytesMut::new();
                match body {
                    Body::Heartbeat(status) => udp::write_heartbeat(&mut out, &UDP_KEY, id, seq, status),
                    Body::Batch(view) => {
                        udp::write_batch(&mut out, &UDP_KEY, id, seq, &view.iter().collect::<Vec<_>>()).unwrap()
                    }
                }
                assert_eq!(hex::encode(&out), v["hex"].as_str().unwrap(), "{name}: encode");
            }
        }
    }
}

/// Every frame type has at least one valid vector.
#[test]
fn every_type_is_covered() {
    let mut seen = std::collections::BTreeSet::new();
    for file in ["tcp.json", "batch.json"] {
        for v in load(file) {
            seen.insert(v["message"]["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen.len(), 31, "{seen:?}");
}

// ---------------------------------------------------------------------------
// The cases the files were generated from.

mod cases {
    use super::*;
    use heartline_proto::udp::write_heartbeat;

    pub(crate) fn tcp() -> Vec<(&'static str, Message)> {
        let text = |s: &str| Text::from(s);
        let entry = |user, status, version, last_seen_ms, t: &str| PresenceEntry {
            user,
            status,
            version,
            last_seen_ms,
            text: text(t),
        };
        let item = |post, author, kind, payload: &'static [u8]| Item {
            post,
            author,
            kind,
            payload: Bytes::from_static(payload),
        };
        vec![
            (
                "hello_client",
                Message::Hello(Hello {
                    version: 1,
                    role: Role::Client,
                    device: Device::Mobile,
                    want_udp: true,
                    resume: 0,
                    token: Bytes::from_static(b"tok"),
                }),
            ),
            (
                "hello_gateway_resume",
                Message::Hello(Hello {
                    version: 1,
                    role: Role::Gateway,
                    device: Device::Unknown,
                    want_udp: false,
                    resume: 300,
                    token: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
                }),
            ),
            (
                "hello_future_version",
                Message::Hello(Hello {
                    version: 255,
                    role: Role::Client,
                    device: Device::Bot,
                    want_udp: false,
                    resume: u64::MAX,
                    token: Bytes::from_static(b"t"),
                }),
            ),
            (
                "welcome",
                Message::Welcome(Welcome {
                    version: 1,
                    session: 12345,
                    heartbeat_interval_ms: 30_000,
                    ttl_ms: 90_000,
                    server_time_ms: 1_795_000_000_000,
                    max_frame: 1 << 20,
                    udp_port: 7400,
                    udp_key: UDP_KEY,
                }),
            ),
            (
                "welcome_no_udp_max_values",
                Message::Welcome(Welcome {
                    version: 1,
                    session: u64::MAX,
                    heartbeat_interval_ms: u32::MAX,
                    ttl_ms: u32::MAX,
                    server_time_ms: u64::MAX,
                    max_frame: 1 << 20,
                    udp_port: 0,
                    udp_key: [0; 16],
                }),
            ),
            ("bye", Message::Bye),
            ("goaway", Message::Goaway { reason: GoawayReason::Restart, reconnect_after_ms: 2_000 }),
            ("error", Message::Error { req: 7, code: ErrorCode::LimitExceeded as u16, message: text("too many ids") }),
            ("error_unknown_code", Message::Error { req: 0, code: u16::MAX, message: text("") }),
            (
                "error_disconnected",
                Message::Error {
                    req: 0,
                    code: ErrorCode::Disconnected as u16,
                    message: text("disconnected by the server"),
                },
            ),
            ("ok", Message::Ok { req: 1 }),
            ("ok_req_zero", Message::Ok { req: 0 }),
            ("heartbeat_steady", Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })),
            ("heartbeat_late_5ms", Message::Heartbeat(Heartbeat { jitter_ms: 5, dseq: 1, status: None })),
            ("heartbeat_early_3ms", Message::Heartbeat(Heartbeat { jitter_ms: -3, dseq: 1, status: None })),
            (
                "heartbeat_all_fields",
                Message::Heartbeat(Heartbeat { jitter_ms: -2047, dseq: 0, status: Some(Status::Invisible) }),
            ),
            (
                "heartbeat_extremes",
                Message::Heartbeat(Heartbeat { jitter_ms: (1 << 32) - 1, dseq: u32::MAX, status: None }),
            ),
            (
                "heartbeat_most_negative_jitter",
                Message::Heartbeat(Heartbeat { jitter_ms: -((1 << 32) - 1), dseq: 1, status: None }),
            ),
            (
                "set_status",
                Message::SetStatus { req: 2, session: None, status: Status::Busy, text: text("in a meeting") },
            ),
            (
                "set_status_gateway_utf8",
                Message::SetStatus { req: 3, session: Some(99), status: Status::Away, text: text("café ☕") },
            ),
            (
                "set_status_max_text",
                Message::SetStatus {
                    req: 4,
                    session: None,
                    status: Status::Online,
                    text: text(&"x".repeat(limits::MAX_STATUS_TEXT)),
                },
            ),
            ("watch", Message::Watch { req: 5, users: vec![1, 2, 300, u64::MAX] }),
            ("watch_empty", Message::Watch { req: 6, users: vec![] }),
            ("watch_max_ids", Message::Watch { req: 7, users: (1..=limits::MAX_IDS as u64).collect() }),
            ("unwatch", Message::Unwatch { req: 8, users: vec![2] }),
            ("query", Message::Query { req: 9, users: vec![1, 2] }),
            (
                "presence",
                Message::Presence {
                    req: 9,
                    entries: vec![
                        entry(1, Status::Online, 3, 1_795_000_000_000, "hi"),
                        entry(2, Status::Offline, 0, 0, ""),
                    ],
                },
            ),
            ("presence_empty", Message::Presence { req: 10, entries: vec![] }),
            (
                "presence_push",
                Message::PresencePush { entries: vec![entry(u64::MAX, Status::Away, u64::MAX, u64::MAX, "brb")] },
            ),
            ("stats", Message::Stats { req: 11 }),
            (
                "stats_reply",
                Message::StatsReply {
                    req: 11,
                    stats: Stats {
                        online_users: 9_500_000,
                        sessions: 10_000_000,
                        watches: 123_456,
                        connections: 19_000,
                    },
                },
            ),
            (
                "open",
                Message::Open {
                    req: 12,
                    entries: vec![
                        OpenEntry { user: 1, device: Device::Desktop, status: Status::Online },
                        OpenEntry { user: 1, device: Device::Web, status: Status::Invisible },
                    ],
                },
            ),
            ("opened", Message::Opened { req: 12, sessions: vec![1000, 1001] }),
            ("opened_empty", Message::Opened { req: 13, sessions: vec![] }),
            ("close", Message::Close { req: 14, sessions: vec![1000] }),
            ("publish", Message::Publish { req: 15, kind: 1, payload: Bytes::from_static(b"hello, world") }),
            ("publish_empty_payload", Message::Publish { req: 16, kind: 0, payload: Bytes::new() }),
            ("published", Message::Published { req: 15, post: 0x0123_4567_89ab_cdef }),
            ("delete", Message::Delete { req: 17, post: u64::MAX }),
            ("graph_follow", Message::Graph { req: 18, op: GraphOp::Follow, user: 42 }),
            ("graph_unblock", Message::Graph { req: 19, op: GraphOp::Unblock, user: 0 }),
            (
                "timeline_home_first_page",
                Message::Timeline { req: 20, source: Source::Home, cursor: Cursor::default(), limit: 50 },
            ),
            (
                "timeline_author_max_id",
                Message::Timeline {
                    req: 21,
                    source: Source::Author(42),
                    cursor: Cursor { max_id: Some(0x0123_4567_89ab_cdef), ..Cursor::default() },
                    limit: 100,
                },
            ),
            (
                "timeline_since_and_max",
                Message::Timeline {
                    req: 22,
                    source: Source::Home,
                    cursor: Cursor { max_id: Some(u64::MAX), since_id: Some(1), min_id: None },
                    limit: 1,
                },
            ),
            (
                "timeline_min_id",
                Message::Timeline {
                    req: 23,
                    source: Source::Home,
                    cursor: Cursor { min_id: Some(5), ..Cursor::default() },
                    limit: 20,
                },
            ),
            (
                "page",
                Message::Page {
                    req: 20,
                    items: vec![item(0x0200_0000_0000_0002, 42, 1, b"newer"), item(0x0200_0000_0000_0001, 7, 2, b"")],
                },
            ),
            ("page_empty", Message::Page { req: 21, items: vec![] }),
            ("live_on", Message::Live { req: 24, on: true }),
            ("live_off", Message::Live { req: 25, on: false }),
            ("item_push", Message::ItemPush(item(0x0200_0000_0000_0003, 42, 1, b"\x00\xff"))),
            ("deleted_push", Message::DeletedPush { post: 0x0200_0000_0000_0001 }),
            (
                "redirect",
                Message::Redirect {
                    version: 42,
                    owner: Box::new(member("hl-3", "10.0.0.3:7400", "wss://hl-3.example/ws", "10.0.0.3:7443")),
                },
            ),
            ("redirect_no_ws", Message::Redirect { version: 7, owner: Box::new(member("b", "h:1", "", "")) }),
            ("cluster_map", Message::ClusterMap { req: 9 }),
            (
                "cluster_map_reply",
                Message::ClusterMapReply {
                    req: 9,
                    version: 42,
                    partitions: 1024,
                    members: vec![
                        member("hl-1", "10.0.0.1:7400", "", ""),
                        member("hl-2", "10.0.0.2:7400", "ws://10.0.0.2:7401/ws", "10.0.0.2:7443"),
                    ],
                },
            ),
            (
                "cluster_map_reply_single_node",
                Message::ClusterMapReply {
                    req: 1,
                    version: 0,
                    partitions: 1,
                    members: vec![member("local", "127.0.0.1:7400", "", "")],
                },
            ),
        ]
    }

    fn member(node: &str, addr: &str, ws: &str, tls: &str) -> MapMember {
        MapMember { node: node.into(), addr: addr.into(), ws: ws.into(), tls: tls.into() }
    }

    fn batch(entries: &[BatchEntry]) -> Message {
        Message::BatchHeartbeat(Batch::encode(entries).unwrap())
    }

    pub(crate) fn batches() -> Vec<(&'static str, Message)> {
        vec![
            ("batch_empty", batch(&[])),
            ("batch_single", batch(&[(77, None)])),
            ("batch_spec_example", batch(&[(1000, None), (1001, Some(Status::Away)), (1005, None)])),
            ("batch_consecutive_width_0", batch(&(500..510).map(|id| (id, None)).collect::<Vec<_>>())),
            (
                "batch_all_statuses",
                batch(&[
                    (1, Some(Status::Online)),
                    (2, Some(Status::Away)),
                    (3, Some(Status::Busy)),
                    (4, Some(Status::Invisible)),
                ]),
            ),
            ("batch_width_64", batch(&[(0, None), (u64::MAX, None)])),
            ("batch_max_id", batch(&[(u64::MAX - 2, None), (u64::MAX, Some(Status::Busy))])),
            (
                "batch_random_17_bit",
                batch(&[(12, None), (70_000, None), (131_000, None), (150_001, None), (9_999_999, None)][..4]),
            ),
            ("batch_largest", batch(&(0..limits::MAX_BATCH as u64).map(|id| (id, None)).collect::<Vec<_>>())),
        ]
    }

    fn hb_state(seq: u32, ts: u32, status: Status) -> Value {
        json!({ "seq": seq, "ts": ts, "status": status })
    }

    /// (name, interval, before, after)
    pub(crate) fn heartbeats() -> Vec<(&'static str, u32, Value, Value)> {
        use Status::*;
        vec![
            ("first_after_welcome", 30_000, hb_state(0, 0, Online), hb_state(1, 30_000, Online)),
            ("steady", 30_000, hb_state(41, 1_230_000, Online), hb_state(42, 1_260_000, Online)),
            ("late_5ms", 30_000, hb_state(41, 1_230_000, Online), hb_state(42, 1_260_005, Online)),
            ("early_3ms", 30_000, hb_state(41, 1_230_000, Online), hb_state(42, 1_259_997, Online)),
            ("status_change", 30_000, hb_state(41, 1_230_000, Online), hb_state(42, 1_260_000, Away)),
            ("seq_skip", 30_000, hb_state(41, 1_230_000, Busy), hb_state(44, 1_320_000, Busy)),
            ("seq_repeat", 30_000, hb_state(41, 1_230_000, Busy), hb_state(41, 1_260_000, Busy)),
            ("wraparound", 30_000, hb_state(u32::MAX, u32::MAX - 100, Away), hb_state(0, 29_899, Away)),
            ("zero_time_step", 30_000, hb_state(5, 1000, Online), hb_state(6, 1000, Online)),
            ("largest_time_step", 30_000, hb_state(5, 1000, Online), hb_state(6, 999, Online)),
            ("interval_zero", 0, hb_state(0, 0, Online), hb_state(1, 0, Online)),
        ]
    }

    /// (name, interval, before, heartbeat, error): deltas the codec accepts
    /// but that no state can apply.
    pub(crate) fn heartbeat_errors() -> Vec<(&'static str, u32, Value, Heartbeat, ErrorCode)> {
        let before = hb_state(5, 1000, Status::Online);
        vec![
            (
                "negative_time_step",
                30_000,
                before.clone(),
                Heartbeat { jitter_ms: -30_001, dseq: 1, status: None },
                ErrorCode::Malformed,
            ),
            (
                "time_step_of_2_pow_32",
                30_000,
                before,
                Heartbeat { jitter_ms: (1 << 32) - 30_000, dseq: 1, status: None },
                ErrorCode::Malformed,
            ),
        ]
    }

    /// A frame around `body` (type byte and body, as spaced hex).
    fn framed(body: &str) -> String {
        let body = hex::decode(body.replace(' ', "")).unwrap();
        let mut out = BytesMut::new();
        heartline_proto::varint::put(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        hex::encode(out)
    }

    /// (name, hex, expected error)
    pub(crate) fn malformed() -> Vec<(&'static str, String, ErrorCode)> {
        use ErrorCode::*;
        let raw = |x: &str| x.to_owned();
        vec![
            ("frame_length_zero", raw("00"), Malformed),
            ("frame_length_overlong", raw("8100"), Malformed),
            ("frame_length_over_limit", raw("818040"), FrameTooLarge),
            ("frame_length_4gib", raw("ffffffff0f"), FrameTooLarge),
            ("unknown_type", framed("7f"), UnknownType),
            ("hello_bad_magic", framed("01 484d 01 00 00 00 00 01 74"), Malformed),
            ("hello_version_zero", framed("01 484c 00 00 00 00 00 01 74"), UnsupportedVersion),
            ("hello_bad_role", framed("01 484c 01 02 00 00 00 01 74"), Malformed),
            ("hello_bad_device", framed("01 484c 01 00 05 00 00 01 74"), Malformed),
            ("hello_reserved_flag", framed("01 484c 01 00 00 02 00 01 74"), Malformed),
            ("hello_token_over_limit", framed("01 484c 01 00 00 00 00 8108"), Malformed),
            ("hello_truncated_token", framed("01 484c 01 00 00 00 00 05 74"), Malformed),
            ("heartbeat_trailing_byte", framed("10 00 ff"), Malformed),
            ("heartbeat_explicit_dseq_one", framed("10 02 01"), Malformed),
            ("heartbeat_status_offline", framed("10 01 00"), Malformed),
            ("heartbeat_status_undefined", framed("10 01 05"), Malformed),
            ("heartbeat_word_too_large", framed("10 808080808001"), Malformed),
            ("heartbeat_truncated_word", framed("10 80"), Malformed),
            ("heartbeat_missing_status", framed("10 01"), Malformed),
            ("varint_overflow", framed("10 ffffffffffffffffff02"), Malformed),
            ("set_status_text_over_limit", framed(&format!("11 01 00 02 8101 {}", "78".repeat(129))), LimitExceeded),
            ("set_status_invalid_utf8", framed("11 01 00 02 02 80ff"), Malformed),
            ("set_status_reserved_flag", framed("11 01 02 01 00"), Malformed),
            ("set_status_offline", framed("11 01 00 00 00"), Malformed),
            ("watch_over_limit", framed("12 01 e907 01"), LimitExceeded),
            ("watch_count_beyond_bytes", framed("12 01 05 01 02"), Malformed),
            ("query_count_huge", framed("14 01 808080808001"), LimitExceeded),
            ("presence_push_empty", framed("16 00"), Malformed),
            ("presence_bad_status", framed("15 01 01 01 05 00 00 00"), Malformed),
            ("open_empty", framed("20 01 00"), Malformed),
            ("open_over_limit", framed("20 01 818004 01 01 01"), LimitExceeded),
            ("open_status_offline", framed("20 01 01 01 01 00"), Malformed),
            ("batch_over_limit", framed("23 818004 00"), LimitExceeded),
            ("batch_trailing_after_empty", framed("23 00 00"), Malformed),
            ("batch_width_over_64", framed("23 02 00 01 41"), Malformed),
            ("batch_reserved_flag", framed("23 02 02 01 00"), Malformed),
            ("batch_nonzero_padding", framed("23 02 00 01 01 40"), Malformed),
            ("batch_length_mismatch", framed("23 02 00 01 01 00 00"), Malformed),
            ("batch_status_flag_without_status", framed("23 02 01 01 00 00"), Malformed),
            ("batch_status_undefined", framed("23 01 01 01 00 d0"), Malformed),
            ("batch_status_offline", framed("23 01 01 01 00 80"), Malformed),
            ("batch_id_overflow", framed("23 03 00 feffffffffffffffff01 01 c0"), Malformed),
            ("batch_id_overflow_width_0", framed("23 12 00 ffffffffffffffffff01 00"), Malformed),
            ("publish_payload_over_limit", framed("30 01 01 818004"), PayloadTooLarge),
            ("publish_truncated_payload", framed("30 01 01 03 6162"), Malformed),
            ("graph_bad_op", framed("33 01 00 01"), Malformed),
            ("timeline_limit_zero", framed("34 01 00 00 00"), Malformed),
            ("timeline_limit_over_100", framed("34 01 00 00 65"), LimitExceeded),
            ("timeline_since_with_min", framed("34 01 00 06 0000000000000001 0000000000000002 0a"), Malformed),
            ("timeline_bad_source", framed("34 01 02 00 32"), Malformed),
            ("timeline_reserved_cursor_flag", framed("34 01 00 08 32"), Malformed),
            ("live_bad_flag", framed("36 01 02"), Malformed),
            ("error_code_over_u16", framed("05 00 808004 00"), Malformed),
            ("welcome_truncated", framed("02 01"), Malformed),
            ("ok_missing_req", framed("06"), Malformed),
            ("deleted_push_short_id", framed("38 00000001"), Malformed),
            ("redirect_empty_node", framed("07 01 00 03 683a31 00 00"), Malformed),
            ("redirect_empty_addr", framed("07 01 0162 00 00 00"), Malformed),
            ("redirect_missing_ws", framed("07 01 0162 03 683a31"), Malformed),
            ("redirect_missing_tls", framed("07 01 0162 03 683a31 00"), Malformed),
            ("cluster_map_reply_zero_partitions", framed("1a 01 01 00 00"), Malformed),
            ("cluster_map_reply_partitions_over_65536", framed("1a 01 01 81800400"), Malformed),
            ("cluster_map_reply_members_over_1024", framed("1a 01 01 01 8108"), Malformed),
            ("cluster_map_reply_count_over_bytes", framed("1a 01 01 01 02 0162 03683a31 00"), Malformed),
        ]
    }

    /// (name, accepted_before, key, datagram bytes)
    pub(crate) fn udp_valid() -> Vec<(&'static str, Vec<u32>, BytesMut)> {
        let hb = |session, seq, status| {
            let mut b = BytesMut::new();
            write_heartbeat(&mut b, &UDP_KEY, session, seq, status);
            b
        };
        let batch = |gw, seq, entries: &[BatchEntry]| {
            let mut b = BytesMut::new();
            udp::write_batch(&mut b, &UDP_KEY, gw, seq, entries).unwrap();
            b
        };
        vec![
            ("heartbeat_first", vec![], hb(12345, 1, None)),
            ("heartbeat_status", vec![1, 2], hb(12345, 3, Some(Status::Busy))),
            ("heartbeat_reordered_inside_window", vec![1, 2, 4], hb(12345, 3, None)),
            ("heartbeat_seq_crosses_16_bits", vec![65535], hb(1, 65536, None)),
            ("heartbeat_large_jump", vec![10], hb(1, 30_000, None)),
            ("batch", vec![], batch(7, 1, &[(1000, None), (1001, Some(Status::Away)), (1005, None)])),
            ("batch_empty", vec![5], batch(7, 6, &[])),
        ]
    }

    /// (name, accepted_before, datagram bytes, expected drop)
    pub(crate) fn udp_dropped() -> Vec<(&'static str, Vec<u32>, Vec<u8>, DropReason)> {
        let hb = |key: &udp::Key, seq, status| {
            let mut b = BytesMut::new();
            write_heartbeat(&mut b, key, 12345, seq, status);
            b.to_vec()
        };
        let tampered = {
            let mut b = hb(&UDP_KEY, 1, None);
            b[5] = 2;
            b
        };
        let mut bad_type = hb(&UDP_KEY, 1, None);
        bad_type[0] = 3;
        vec![
            ("replayed", vec![1], hb(&UDP_KEY, 1, None), DropReason::Replayed),
            ("too_old", vec![100], hb(&UDP_KEY, 68, None), DropReason::Replayed),
            ("seq_zero", vec![], hb(&UDP_KEY, 0, None), DropReason::Replayed),
            ("wrong_key", vec![], hb(b"fedcba9876543210", 1, None), DropReason::BadTag),
            ("tampered_status", vec![], tampered, DropReason::BadTag),
            ("unknown_type", vec![], bad_type, DropReason::UnknownType),
            ("too_short", vec![], hex::decode("0101000100000000000000").unwrap(), DropReason::BadLength),
            (
                "status_undefined_with_good_tag",
                vec![],
                sealed_raw(&[0x01, 0x01, 0x00, 0x01, 0x09], 1),
                DropReason::Malformed,
            ),
            ("id_varint_overlong", vec![], hex::decode("01800000010000000000000000").unwrap(), DropReason::Malformed),
        ]
    }

    /// A datagram with an arbitrary body and a valid tag.
    fn sealed_raw(covered: &[u8], seq: u32) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&UDP_KEY).unwrap();
        mac.update(&seq.to_be_bytes());
        mac.update(covered);
        let tag = mac.finalize().into_bytes();
        [covered, &tag[..8]].concat()
    }
}

/// Writes a vector file with one vector per line: diffable, and compact for
/// the large batches.
fn write(file: &str, header: Value, vectors: Vec<Value>) {
    let mut text = serde_json::to_string_pretty(&header).unwrap();
    text.truncate(text.len() - 2);
    text.push_str(",\n  \"vectors\": [\n");
    let lines: Vec<String> = vectors.iter().map(|v| format!("    {v}")).collect();
    text.push_str(&lines.join(",\n"));
    text.push_str("\n  ]\n}\n");
    std::fs::write(dir().join(file), text).unwrap();
}

fn describe(text: &str) -> Value {
    json!({ "description": text })
}

fn message_vectors(cases: Vec<(&str, Message)>) -> Vec<Value> {
    cases
        .into_iter()
        .map(|(name, msg)| json!({ "name": name, "hex": hex::encode(frame(&msg)), "message": msg }))
        .collect()
}

#[test]
#[ignore = "regenerates protocol-spec/vectors; run only for a deliberate wire change"]
fn bless() {
    write(
        "tcp.json",
        describe("Valid TCP frames (length prefix included) and the message each decodes to."),
        message_vectors(cases::tcp()),
    );
    write(
        "batch.json",
        describe("Valid BATCH_HEARTBEAT frames. statuses lists [entry index, status] for the entries that carry one."),
        message_vectors(cases::batches()),
    );
    let mut hb: Vec<Value> = cases::heartbeats()
        .into_iter()
        .map(|(name, interval, before, after)| {
            let mut sender = state(interval, &before);
            let a = state(interval, &after);
            let msg = Message::Heartbeat(sender.encode(a.seq, a.ts, a.status));
            json!({ "name": name, "interval_ms": interval, "before": before, "after": after, "hex": hex::encode(frame(&msg)) })
        })
        .collect();
    hb.extend(cases::heartbeat_errors().into_iter().map(|(name, interval, before, delta, error)| {
        let hex = hex::encode(frame(&Message::Heartbeat(delta)));
        json!({ "name": name, "interval_ms": interval, "before": before, "hex": hex, "error": error.name() })
    }));
    write(
        "heartbeat.json",
        describe("TCP HEARTBEAT frames applied to the per-session state (seq, ts, status) both ends keep."),
        hb,
    );
    write(
        "malformed.json",
        describe("Invalid TCP input (one frame, length prefix included) and the error a v1 receiver must answer."),
        cases::malformed()
            .into_iter()
            .map(|(name, hex, error)| json!({ "name": name, "hex": hex, "error": error.name(), "closes": error.closes() }))
            .collect(),
    );
    let mut udp_vectors: Vec<Value> = cases::udp_valid()
        .into_iter()
        .map(|(name, before, bytes)| {
            let mut w = ReplayWindow::default();
            before.iter().for_each(|&s| w.accept(s));
            let dg = udp::parse(&bytes).unwrap();
            let (seq, body) = dg.open(&UDP_KEY, &mut w).unwrap();
            json!({
                "name": name, "accepted_before": before, "hex": hex::encode(&bytes),
                "datagram": { "id": dg.id, "seq": seq, "body": body_json(&body) },
            })
        })
        .collect();
    udp_vectors.extend(cases::udp_dropped().into_iter().map(|(name, before, bytes, drop)| {
        json!({ "name": name, "accepted_before": before, "hex": hex::encode(bytes), "drop": drop })
    }));
    let header = json!({
        "description": "UDP datagrams. key is the udp_key from WELCOME; accepted_before lists the sequence numbers the receiver accepted earlier for this id.",
        "key": hex::encode(UDP_KEY),
    });
    write("udp.json", header, udp_vectors);
    write("route.json", describe(ROUTE_DESCRIPTION), route_vectors());
}

const ROUTE_DESCRIPTION: &str = "Routing in a cluster (SPEC.md §14.2). partition: {user, partitions, partition}; \
     weight: {node, name_hash, partition, weight} (name_hash and weight as 16 lowercase hex digits); \
     owner: {members, partitions, user, owner}.";

/// The cases of route.json: users' partitions, members' weights and owners.
fn route_vectors() -> Vec<Value> {
    use heartline_proto::route::{name_hash, owner_of, partition_of, weight};
    let mut out = Vec::new();
    for (user, partitions) in
        [(0, 1024), (1, 1024), (42, 1024), (1_000_000, 1024), (u64::MAX, 1024), (42, 1), (42, 65_536)]
    {
        out.push(json!({ "name": format!("partition_{user}_{partitions}"), "user": user, "partitions": partitions,
            "partition": partition_of(user, partitions) }));
    }
    for (node, partition) in [("hl-1", 0), ("hl-2", 0), ("hl-3", 0), ("hl-1", 7), ("hl-2", 7), ("hl-3", 7), ("", 1)] {
        out.push(json!({ "name": format!("weight_{node}_{partition}"), "node": node, "partition": partition,
            "name_hash": format!("{:016x}", name_hash(node)),
            "weight": format!("{:016x}", weight(name_hash(node), partition)) }));
    }
    let members = ["hl-1", "hl-2", "hl-3"];
    for user in [1u64, 2, 3, 4, 5, 42, 1_000_000] {
        let owner = owner_of(members, user, 1024).map(|i| members[i]);
        out.push(json!({ "name": format!("owner_{user}"), "members": members, "partitions": 1024, "user": user,
            "owner": owner }));
    }
    out
}

#[test]
fn route_functions() {
    use heartline_proto::route::{name_hash, owner_of, partition_of, weight};
    let hex = |v: &Value| u64::from_str_radix(v.as_str().unwrap(), 16).unwrap();
    let vectors = load("route.json");
    assert!(vectors.len() >= 21);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let partitions = v["partitions"].as_u64().map(|p| p as u32);
        if let Some(p) = v.get("partition").filter(|_| v.get("user").is_some()) {
            assert_eq!(
                u64::from(partition_of(v["user"].as_u64().unwrap(), partitions.unwrap())),
                p.as_u64().unwrap(),
                "{name}"
            );
        } else if let Some(w) = v.get("weight") {
            let node = v["node"].as_str().unwrap();
            assert_eq!(name_hash(node), hex(&v["name_hash"]), "{name}");
            assert_eq!(weight(name_hash(node), v["partition"].as_u64().unwrap() as u32), hex(w), "{name}");
        } else {
            let members: Vec<&str> = v["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
            let owner = owner_of(members.iter().copied(), v["user"].as_u64().unwrap(), partitions.unwrap());
            assert_eq!(owner.map(|i| members[i]), v["owner"].as_str(), "{name}");
        }
    }
}
