//! Property tests of the codec: every message survives a round trip through
//! the TCP framing, and no input — random, or a valid frame mangled — makes
//! the decoder panic or reserve more than one frame's worth of memory.

use bytes::{Bytes, BytesMut};
use heartline_proto::*;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn status() -> impl Strategy<Value = Status> {
    (0u8..=4).prop_map(|s| Status::try_from(s).unwrap())
}

fn settable() -> impl Strategy<Value = Status> {
    (1u8..=4).prop_map(|s| Status::try_from(s).unwrap())
}

fn device() -> impl Strategy<Value = Device> {
    (0u8..=4).prop_map(|d| Device::try_from(d).unwrap())
}

fn text() -> impl Strategy<Value = Text> {
    "[a-z é☕]{0,30}".prop_map(Text::from)
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn ids(max: usize) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(any::<u64>(), 0..max)
}

fn presence_entry() -> impl Strategy<Value = PresenceEntry> {
    (any::<u64>(), status(), any::<u64>(), any::<u64>(), text()).prop_map(
        |(user, status, version, last_seen_ms, text)| PresenceEntry { user, status, version, last_seen_ms, text },
    )
}

fn item() -> impl Strategy<Value = Item> {
    (any::<u64>(), any::<u64>(), any::<u8>(), bytes(64)).prop_map(|(post, author, kind, payload)| Item {
        post,
        author,
        kind,
        payload,
    })
}

fn batch() -> impl Strategy<Value = Batch> {
    let entry = (1u64..1 << 24, prop::option::weighted(0.1, settable()));
    prop::collection::vec(entry, 0..200).prop_map(|steps| {
        let mut id = 0u64;
        let entries: Vec<_> = steps
            .into_iter()
            .map(|(step, status)| {
                id += step;
                (id, status)
            })
            .collect();
        Batch::encode(&entries).unwrap()
    })
}

fn cursor() -> impl Strategy<Value = Cursor> {
    let id = || prop::option::of(any::<u64>());
    (id(), id(), id(), any::<bool>()).prop_map(|(max_id, since_id, min_id, use_since)| Cursor {
        max_id,
        // since_id and min_id are exclusive.
        since_id: since_id.filter(|_| use_since),
        min_id: min_id.filter(|_| !use_since),
    })
}

fn message() -> impl Strategy<Value = Message> {
    let req = any::<u64>;
    prop_oneof![
        (any::<u8>().prop_filter("v0", |v| *v > 0), 0u8..=1, device(), any::<bool>(), any::<u64>(), bytes(64))
            .prop_map(|(version, role, device, want_udp, resume, token)| Message::Hello(Hello {
                version,
                role: Role::try_from(role).unwrap(),
                device,
                want_udp,
                resume,
                token,
            })),
        (
            any::<u8>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            any::<u16>(),
            any::<[u8; 16]>()
        )
            .prop_map(|(version, session, hi, ttl, time, max_frame, udp_port, udp_key)| {
                Message::Welcome(Welcome {
                    version,
                    session,
                    heartbeat_interval_ms: hi,
                    ttl_ms: ttl,
                    server_time_ms: time,
                    max_frame,
                    udp_port,
                    udp_key,
                })
            }),
        Just(Message::Bye),
        ((0u8..=2), any::<u32>())
            .prop_map(|(r, ms)| Message::Goaway { reason: GoawayReason::try_from(r).unwrap(), reconnect_after_ms: ms }),
        (req(), any::<u16>(), text()).prop_map(|(req, code, message)| Message::Error { req, code, message }),
        req().prop_map(|req| Message::Ok { req }),
        (-(1i64 << 32) + 1..1i64 << 32, any::<u32>(), prop::option::of(settable()))
            .prop_map(|(jitter_ms, dseq, status)| Message::Heartbeat(Heartbeat { jitter_ms, dseq, status })),
        (req(), prop::option::of(any::<u64>()), settable(), text())
            .prop_map(|(req, session, status, text)| Message::SetStatus { req, session, status, text }),
        (req(), ids(50)).prop_map(|(req, users)| Message::Watch { req, users }),
        (req(), ids(50)).prop_map(|(req, users)| Message::Unwatch { req, users }),
        (req(), ids(50)).prop_map(|(req, users)| Message::Query { req, users }),
        (req(), prop::collection::vec(presence_entry(), 0..20))
            .prop_map(|(req, entries)| Message::Presence { req, entries }),
        prop::collection::vec(presence_entry(), 1..20).prop_map(|entries| Message::PresencePush { entries }),
        req().prop_map(|req| Message::Stats { req }),
        (req(), any::<[u64; 4]>()).prop_map(|(req, [online_users, sessions, watches, connections])| {
            Message::StatsReply { req, stats: Stats { online_users, sessions, watches, connections } }
        }),
        (req(), prop::collection::vec((any::<u64>(), device(), settable()), 1..50)).prop_map(|(req, entries)| {
            let entries =
                entries.into_iter().map(|(user, device, status)| OpenEntry { user, device, status }).collect();
            Message::Open { req, entries }
        }),
        (req(), ids(50)).prop_map(|(req, sessions)| Message::Opened { req, sessions }),
        (req(), ids(50)).prop_map(|(req, sessions)| Message::Close { req, sessions }),
        batch().prop_map(Message::BatchHeartbeat),
        (req(), any::<u8>(), bytes(256)).prop_map(|(req, kind, payload)| Message::Publish { req, kind, payload }),
        (req(), any::<u64>()).prop_map(|(req, post)| Message::Published { req, post }),
        (req(), any::<u64>()).prop_map(|(req, post)| Message::Delete { req, post }),
        (req(), 1u8..=4, any::<u64>()).prop_map(|(req, op, user)| Message::Graph {
            req,
            op: GraphOp::try_from(op).unwrap(),
            user
        }),
        (req(), prop::option::of(any::<u64>()), cursor(), 1u8..=100).prop_map(|(req, author, cursor, limit)| {
            let source = author.map_or(Source::Home, Source::Author);
            Message::Timeline { req, source, cursor, limit }
        }),
        (req(), prop::collection::vec(item(), 0..20)).prop_map(|(req, items)| Message::Page { req, items }),
        (req(), any::<bool>()).prop_map(|(req, on)| Message::Live { req, on }),
        item().prop_map(Message::ItemPush),
        any::<u64>().prop_map(|post| Message::DeletedPush { post }),
    ]
}

fn encoded(msg: &Message) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf).unwrap();
    buf
}

/// Feeds `input` to a decoder in `chunk`-sized reads, as a socket would,
/// and checks the read buffer never grows past what one frame may need.
fn decode_all(input: &[u8], chunk: usize, max_frame: usize) {
    let mut codec = FrameCodec::new(max_frame);
    let mut buf = BytesMut::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let _ = Message::decode(frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
            // Vec-style growth may double, never more.
            assert!(buf.capacity() <= 2 * (max_frame + 3 + input.len()), "capacity {}", buf.capacity());
        }
        assert!(buf.capacity() <= 2 * (max_frame + 3 + input.len()), "capacity {}", buf.capacity());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let mut buf = encoded(&msg);
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(Message::decode(frame).unwrap(), msg);
    }

    #[test]
    fn random_bytes_never_panic_or_over_reserve(input in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        decode_all(&input, chunk, 4096);
    }

    #[test]
    fn random_frame_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 1..256)) {
        let _ = Message::decode(Bytes::from(body));
    }

    #[test]
    fn mangled_frames_never_panic(msg in message(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), cut in any::<prop::sample::Index>()) {
        let mut bytes = encoded(&msg).to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        decode_all(&bytes, 7, 1 << 20);
    }
}

#[test]
fn a_lying_length_prefix_reserves_nothing_big() {
    // Claims 4 GiB, then a claim just over a 64 KiB limit: both refused before buffering.
    for prefix in [&[0xff, 0xff, 0xff, 0xff, 0x0f][..], &[0x81, 0x80, 0x04]] {
        let mut buf = BytesMut::from(prefix);
        let before = buf.capacity();
        assert!(FrameCodec::new(1 << 16).decode(&mut buf).is_err());
        assert_eq!(buf.capacity(), before);
    }
}
