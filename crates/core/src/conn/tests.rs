//! SPEC.md §5 in virtual time: a deterministic harness drives connection
//! machines with no socket and no clock. It plays the shell's part —
//! routing deliveries to watchers' inboxes, answering store lookups from a
//! map, ticking presence expiry — so each state and transition of §5 is
//! checked through the frames a peer would see.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use heartline_proto::auth::{AuthError, Claims, Keyring, Secret, Subject, UdpKeys, UdpPeer};
use heartline_proto::udp::Key;
use heartline_proto::{
    Batch, Device, ErrorCode, GoawayReason, Heartbeat, Hello, Message, OpenEntry, PresenceEntry, Role, Stats, Status,
    Text, VERSION,
};

use super::*;
use crate::presence::{PresenceConfig, TICK_MS};
use heartline_proto::MapMember;

const TTL_MS: u32 = 3_000;
const GRACE_MS: u32 = 1_000;
const HANDSHAKE_MS: u64 = 5_000;
const INTERVAL_MS: u32 = 1_000;
/// Virtual time starts here (unix ms), far from 0 so versions look real.
const T0: u64 = 1_700_000_000_000;

#[derive(Default)]
struct Blocks(Mutex<HashSet<(u64, u64)>>);

impl BlockList for Blocks {
    fn blocks(&self, blocker: u64, blocked: u64) -> bool {
        self.0.lock().unwrap().contains(&(blocker, blocked))
    }
}

struct World {
    presence: Presence,
    blocks: Blocks,
    keyring: Keyring,
    udp: UdpKeys,
    limits: Limits,
    /// The durable last seen of users not in memory.
    store: HashMap<u64, u64>,
    now: u64,
    next_id: u32,
    peers: HashMap<u32, Peer>,
    /// In a cluster: the map and this node's name.
    cluster: Option<(crate::cluster::ClusterMap, &'static str)>,
}

struct Peer {
    machine: Connection,
    /// Frames the peer received, oldest first.
    inbox: Vec<Message>,
    viewer: Option<Viewer>,
    /// Closed by the server, or by the peer.
    closed: bool,
    feed: Vec<Message>,
}

impl Env for World {
    fn presence(&self) -> &Presence {
        &self.presence
    }

    fn blocks(&self) -> &dyn BlockList {
        &self.blocks
    }

    fn verify(&self, token: &[u8], now_s: u64) -> Result<Claims, AuthError> {
        self.keyring.verify(token, now_s)
    }

    fn udp_key(&self, peer: UdpPeer, id: u64, owner: u32) -> Option<Key> {
        Some(self.udp.derive(peer, id, owner))
    }

    fn udp_port(&self) -> u16 {
        7400
    }

    fn welcome(&self) -> WelcomeSettings {
        WelcomeSettings { heartbeat_interval_ms: INTERVAL_MS, ttl_ms: TTL_MS, max_frame: 1 << 20 }
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn owner_of(&self, user: u64) -> Option<Owner> {
        let (map, me) = self.cluster.as_ref()?;
        let owner = map.owner_of_user(user).filter(|m| m.node != *me)?;
        Some(Owner { version: map.version, member: owner.wire() })
    }

    fn cluster_map(&self) -> RouteMap {
        match &self.cluster {
            Some((map, _)) => RouteMap {
                version: map.version,
                partitions: map.partitions(),
                members: map.members.iter().map(crate::cluster::MapMember::wire).collect(),
            },
            None => RouteMap {
                version: 0,
                partitions: 1,
                members: vec![MapMember {
                    node: "local".into(),
                    addr: "127.0.0.1:7400".into(),
                    ws: Text::default(),
                    tls: Text::default(),
                }],
            },
        }
    }
}

impl World {
    fn new() -> Self {
        let config = PresenceConfig { ttl_ms: TTL_MS, grace_ms: GRACE_MS, max_sessions_per_user: 2 };
        Self {
            presence: Presence::new(config, T0),
            blocks: Blocks::default(),
            keyring: Keyring { current: Secret::from_bytes([7; 32]), previous: None },
            udp: UdpKeys::generate().unwrap(),
            limits: Limits { max_watch: 4, status_rate: Rate::per_second(1.0, 2), post_rate: Rate::UNLIMITED },
            store: HashMap::new(),
            now: T0,
            next_id: 1,
            peers: HashMap::new(),
            cluster: None,
        }
    }

    /// This node is `me` in a cluster of hl-1, hl-2 and hl-3 (map version 9,
    /// 1,024 partitions; hl-2 has a WebSocket URL and a TLS listener).
    fn in_cluster(&mut self, me: &'static str) {
        let member = |node: &str, ws: &str, tls: &str| crate::cluster::MapMember {
            node: node.into(),
            advertise: format!("{node}.example:7400"),
            ws: ws.into(),
            tls: tls.into(),
            joined: 1,
        };
        let members = vec![
            member("hl-1", "", ""),
            member("hl-2", "wss://hl-2.example/ws", "hl-2.example:7443"),
            member("hl-3", "", ""),
        ];
        self.cluster = Some((crate::cluster::ClusterMap::new(9, members, 1_024), me));
    }

    /// The owner of `user` in the cluster.
    fn owner(&self, user: u64) -> &str {
        let (map, _) = self.cluster.as_ref().unwrap();
        map.owner_of_user(user).unwrap().node.as_str()
    }

    /// A user owned by `node`, and one owned by another node.
    fn users_of(&self, node: &str) -> (u64, u64) {
        let mine = (1..).find(|&u| self.owner(u) == node).unwrap();
        let other = (1..).find(|&u| self.owner(u) != node).unwrap();
        (mine, other)
    }

    fn token(&self, subject: Subject, expires_at: u64) -> Bytes {
        Bytes::from(self.keyring.issue(&Claims { subject, expires_at }))
    }

    fn user_token(&self, user: u64) -> Bytes {
        self.token(Subject::User(user), T0 / 1000 + 3_600)
    }

    fn connect(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let machine = Connection::new(id, self.now, HANDSHAKE_MS);
        self.peers.insert(id, Peer { machine, inbox: Vec::new(), viewer: None, closed: false, feed: Vec::new() });
        id
    }

    fn hello(role: Role, token: Bytes, resume: u64) -> Message {
        Message::Hello(Hello { version: VERSION, role, device: Device::Mobile, want_udp: false, resume, token })
    }

    /// A client connection of `user`, past WELCOME; returns it and its session.
    fn client(&mut self, user: u64) -> (u32, SessionId) {
        let id = self.connect();
        self.send(id, Self::hello(Role::Client, self.user_token(user), 0));
        match self.take(id).as_slice() {
            [Message::Welcome(welcome)] => (id, welcome.session),
            other => panic!("no WELCOME: {other:?}"),
        }
    }

    fn gateway(&mut self) -> u32 {
        let id = self.connect();
        let token = self.token(Subject::Gateway("edge-1".into()), T0 / 1000 + 3_600);
        self.send(id, Self::hello(Role::Gateway, token, 0));
        assert!(matches!(self.take(id).as_slice(), [Message::Welcome(_)]));
        id
    }

    fn send(&mut self, id: u32, msg: Message) {
        let mut frame = BytesMut::new();
        msg.encode(&mut frame);
        self.send_frame(id, frame.freeze());
    }

    /// One frame as the transport cut it: type byte and body.
    fn send_frame(&mut self, id: u32, frame: Bytes) {
        let mut out = Vec::new();
        let peer = self.peers.get_mut(&id).unwrap();
        assert!(!peer.closed, "sending on a closed connection");
        let mut machine = std::mem::replace(&mut peer.machine, Connection::new(0, 0, 0));
        machine.on_frame(self, frame, self.now, &mut out);
        self.peers.get_mut(&id).unwrap().machine = machine;
        self.carry_out(id, out);
    }

    /// What the shell does with effects.
    fn carry_out(&mut self, id: u32, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(msg) => self.peer(id).inbox.push(msg),
                Effect::Close(last) => {
                    self.peer(id).inbox.extend(last);
                    self.drop_transport(id);
                }
                Effect::Deliver(change) => self.deliver(change),
                Effect::Authenticated { viewer, .. } => self.peer(id).viewer = Some(viewer),
                Effect::Lookup { req, viewer, users } => {
                    let store = &self.store;
                    let entries =
                        presence_entries(viewer, &users, &self.presence, &self.blocks, |u| store.get(&u).copied());
                    self.peer(id).inbox.push(Message::Presence { req, entries });
                }
                Effect::Feed { request, .. } => self.peer(id).feed.push(request),
                Effect::Stats { req } => {
                    let totals = self.presence.totals();
                    let stats = Stats {
                        online_users: totals.online_users,
                        sessions: totals.sessions,
                        watches: totals.watches,
                        connections: self.peers.values().filter(|p| !p.closed).count() as u64,
                    };
                    self.peer(id).inbox.push(Message::StatsReply { req, stats });
                }
                Effect::Heartbeats { .. } => {}
            }
        }
    }

    fn deliver(&mut self, change: Change) {
        let view = change.view();
        for conn in &change.watchers {
            let Some(viewer) = self.peers.get(conn).and_then(|p| p.viewer) else { continue };
            if crate::presence::blocked(viewer, change.user, &self.blocks) {
                continue;
            }
            let entry = entry_for(viewer, change.user, &view, &self.blocks);
            self.peer(*conn).inbox.push(Message::PresencePush { entries: vec![entry] });
        }
    }

    /// The connection ends (the server closed it, or the peer went away).
    fn drop_transport(&mut self, id: u32) {
        let mut machine = std::mem::replace(&mut self.peer(id).machine, Connection::new(0, 0, 0));
        machine.on_close(self, self.now);
        let peer = self.peer(id);
        peer.machine = machine;
        peer.closed = true;
        peer.viewer = None;
    }

    fn peer(&mut self, id: u32) -> &mut Peer {
        self.peers.get_mut(&id).unwrap()
    }

    fn take(&mut self, id: u32) -> Vec<Message> {
        std::mem::take(&mut self.peer(id).inbox)
    }

    fn closed(&self, id: u32) -> bool {
        self.peers[&id].closed
    }

    /// Moves virtual time on by `ms`, one expiry tick at a time, firing
    /// handshake deadlines and presence expiry as the shell's timers would.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now = (self.now + TICK_MS).min(end);
            let due: Vec<u32> = self
                .peers
                .iter()
                .filter(|(_, p)| !p.closed && p.machine.deadline().is_some_and(|d| d <= self.now))
                .map(|(&id, _)| id)
                .collect();
            for id in due {
                let mut out = Vec::new();
                let now = self.now;
                self.peer(id).machine.on_timeout(now, &mut out);
                self.carry_out(id, out);
            }
            let expiry = self.presence.tick(self.now);
            for change in expiry.changes {
                self.deliver(change);
            }
            for (session, owner) in expiry.expired {
                if self.peers.get(&owner).is_some_and(|p| !p.closed && p.machine.session() == Some(session)) {
                    let mut out = Vec::new();
                    self.peer(owner).machine.expired(&mut out);
                    self.carry_out(owner, out);
                }
            }
        }
    }

    /// A watcher with no session of its own, so no TTL: a gateway connection.
    fn watcher(&mut self, users: &[u64]) -> u32 {
        let id = self.gateway();
        self.send(id, Message::Watch { req: 1, users: users.to_vec() });
        assert!(matches!(self.take(id)[..], [Message::Presence { req: 1, .. }]));
        id
    }

    fn status_of(&mut self, watcher: u32, user: u64) -> PresenceEntry {
        self.send(watcher, Message::Query { req: 99, users: vec![user] });
        match self.take(watcher).pop() {
            Some(Message::Presence { req: 99, mut entries }) => entries.remove(0),
            other => panic!("no PRESENCE: {other:?}"),
        }
    }
}

fn error_code(msg: &Message) -> Option<ErrorCode> {
    match msg {
        Message::Error { code, .. } => ErrorCode::from_u16(*code),
        _ => None,
    }
}

fn codes(msgs: &[Message]) -> Vec<Option<ErrorCode>> {
    msgs.iter().map(error_code).collect()
}

fn heartbeat() -> Message {
    Message::Heartbeat(Heartbeat { jitter_ms: 0, dseq: 1, status: None })
}

fn pushed_statuses(msgs: &[Message], user: u64) -> Vec<Status> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::PresencePush { entries } => Some(entries),
            _ => None,
        })
        .flatten()
        .filter(|e| e.user == user)
        .map(|e| e.status)
        .collect()
}

// AWAIT_HELLO

/// A gateway's OPEN entry: `user` online on the web.
fn web(user: u64) -> OpenEntry {
    OpenEntry { user, device: Device::Web, status: Status::Online }
}

#[test]
fn await_hello_refuses_any_other_frame_and_leaves_no_session() {
    for first in [heartbeat(), Message::Bye, Message::Stats { req: 1 }, Message::Ok { req: 1 }] {
        let mut w = World::new();
        let id = w.connect();
        w.send(id, first.clone());
        assert_eq!(codes(&w.take(id)), [Some(ErrorCode::Unauthenticated)], "{first:?}");
        assert!(w.closed(id));
        assert_eq!(w.presence.totals().sessions, 0);
    }
    let mut w = World::new();
    let id = w.connect();
    w.send_frame(id, Bytes::from_static(&[0x7f]));
    assert_eq!(codes(&w.take(id)), [Some(ErrorCode::Unauthenticated)], "an undefined type");
}

#[test]
fn await_hello_times_out_at_the_handshake_deadline_and_not_before() {
    let mut w = World::new();
    let id = w.connect();
    w.advance(HANDSHAKE_MS - TICK_MS);
    assert!(!w.closed(id) && w.take(id).is_empty());
    w.advance(TICK_MS);
    assert_eq!(codes(&w.take(id)), [Some(ErrorCode::HandshakeTimeout)]);
    assert!(w.closed(id));
    // A connection past HELLO has no timer at all.
    let (client, _) = w.client(1);
    assert_eq!(w.peers[&client].machine.deadline(), None);
}

#[test]
fn a_bad_hello_is_fatal_with_the_matching_code() {
    let mut w = World::new();
    let expired = w.token(Subject::User(1), T0 / 1000);
    let forged = {
        let other = Keyring { current: Secret::from_bytes([8; 32]), previous: None };
        Bytes::from(other.issue(&Claims { subject: Subject::User(1), expires_at: T0 / 1000 + 60 }))
    };
    let gateway_token = w.token(Subject::Gateway("g".into()), T0 / 1000 + 60);
    for (hello, code) in [
        (World::hello(Role::Client, expired, 0), ErrorCode::TokenExpired),
        (World::hello(Role::Client, forged, 0), ErrorCode::BadToken),
        (World::hello(Role::Client, gateway_token, 0), ErrorCode::BadToken),
        (World::hello(Role::Gateway, w.user_token(1), 0), ErrorCode::BadToken),
    ] {
        let id = w.connect();
        w.send(id, hello);
        assert_eq!(codes(&w.take(id)), [Some(code)]);
        assert!(w.closed(id));
    }
    assert_eq!(w.presence.totals().sessions, 0, "a handshake failure leaves no session behind");
}

#[test]
fn hello_past_the_session_limit_is_refused_and_closes() {
    let mut w = World::new();
    w.client(1);
    w.client(1);
    let id = w.connect();
    w.send(id, World::hello(Role::Client, w.user_token(1), 0));
    assert_eq!(codes(&w.take(id)), [Some(ErrorCode::LimitExceeded)]);
    assert!(w.closed(id));
}

// ESTABLISHED(client)

#[test]
fn a_client_goes_online_and_watchers_see_it() {
    let mut w = World::new();
    let (watcher, _) = w.client(2);
    w.send(watcher, Message::Watch { req: 1, users: vec![1] });
    let snapshot = w.take(watcher);
    assert!(matches!(&snapshot[..], [Message::Presence { req: 1, entries }] if entries[0].status == Status::Offline));
    w.client(1);
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Online]);
}

#[test]
fn every_frame_renews_the_session_and_silence_expires_it() {
    let mut w = World::new();
    let (client, _) = w.client(1);
    let watcher = w.watcher(&[1]);
    for _ in 0..10 {
        w.advance(u64::from(TTL_MS) - 500);
        w.send(client, heartbeat());
    }
    assert!(!w.closed(client), "renewed in time, ten TTLs later");
    assert!(w.take(client).is_empty());
    w.advance(u64::from(TTL_MS) + 2 * TICK_MS);
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::SessionExpired)]);
    assert!(w.closed(client));
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Offline], "ends at once, no grace");
}

#[test]
fn frames_allowed_and_refused_per_role_follow_the_table() {
    let mut w = World::new();
    let (client, session) = w.client(1);
    let batch = Batch::encode(&[(session, None)]).unwrap();
    for msg in [
        Message::Open { req: 5, entries: vec![OpenEntry { user: 3, device: Device::Bot, status: Status::Online }] },
        Message::Close { req: 6, sessions: vec![session] },
        Message::BatchHeartbeat(batch),
        Message::SetStatus { req: 7, session: Some(session), status: Status::Busy, text: Text::default() },
    ] {
        w.send(client, msg.clone());
        assert_eq!(codes(&w.take(client)), [Some(ErrorCode::Forbidden)], "{msg:?}");
    }
    w.send_frame(client, Bytes::from_static(&[0x7f]));
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::UnknownType)], "skipped, not fatal");
    assert!(!w.closed(client));
    w.send(client, Message::Stats { req: 8 });
    assert!(matches!(w.take(client)[..], [Message::StatsReply { req: 8, stats }] if stats.sessions == 1));
    w.send(client, Message::Publish { req: 9, kind: 0, payload: Bytes::from_static(b"hi") });
    assert!(w.take(client).is_empty());
    assert_eq!(w.peers[&client].feed.len(), 1, "feed requests go to the feed, in order");
    w.send(client, World::hello(Role::Client, w.user_token(1), 0));
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::Unexpected)], "a second HELLO is fatal");
    assert!(w.closed(client));

    let (client, _) = w.client(4);
    w.send(client, Message::Ok { req: 1 });
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::Unexpected)], "a server-only type is fatal");
    assert!(w.closed(client));
}

#[test]
fn status_changes_are_rate_limited_and_a_refused_one_changes_nothing() {
    let mut w = World::new();
    let (client, _) = w.client(1);
    let set = |status| Message::SetStatus { req: 1, session: None, status, text: Text::from("x") };
    w.send(client, set(Status::Busy));
    w.send(client, set(Status::Away));
    assert_eq!(codes(&w.take(client)), [None, None], "the burst of 2");
    w.send(client, set(Status::Online));
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::RateLimited)]);
    let (watcher, _) = w.client(2);
    assert_eq!(w.status_of(watcher, 1).status, Status::Away);
    w.advance(1_000);
    w.send(client, set(Status::Online));
    assert_eq!(codes(&w.take(client)), [None], "refilled after a second");
}

#[test]
fn bye_ends_the_session_at_once() {
    let mut w = World::new();
    let watcher = w.watcher(&[1]);
    let (client, _) = w.client(1);
    w.take(watcher);
    w.send(client, Message::Bye);
    assert!(w.closed(client));
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Offline]);
}

#[test]
fn a_lost_connection_enters_grace_and_a_resume_inside_it_shows_nothing() {
    let mut w = World::new();
    let watcher = w.watcher(&[1]);
    let (client, session) = w.client(1);
    w.take(watcher);

    w.drop_transport(client);
    w.advance(u64::from(GRACE_MS) / 2);
    let again = w.connect();
    w.send(again, World::hello(Role::Client, w.user_token(1), session));
    assert!(matches!(&w.take(again)[..], [Message::Welcome(welcome)] if welcome.session == session));
    w.advance(u64::from(GRACE_MS) * 3);
    assert!(w.take(watcher).is_empty(), "resumed inside the window: watchers saw nothing at all");

    w.drop_transport(again);
    w.advance(u64::from(GRACE_MS) - TICK_MS);
    assert!(w.take(watcher).is_empty(), "nothing during the window");
    w.advance(3 * TICK_MS);
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Offline], "the change when it ends");
}

#[test]
fn a_resume_after_a_restart_gets_a_session_with_another_id() {
    // Session ids repeat from one process to the next: the first session
    // of a fresh world has the id the previous world's first one had.
    let mut before = World::new();
    let (_, session) = before.client(1);
    let mut restarted = World::new();
    let client = restarted.connect();
    restarted.send(client, World::hello(Role::Client, restarted.user_token(1), session));
    let welcome = restarted.take(client);
    assert!(
        matches!(&welcome[..], [Message::Welcome(w)] if w.session != session && w.session != 0),
        "nothing was resumed, and WELCOME must say so (§6.7): {welcome:?}"
    );
    // The id passed over is not lost: the next session takes it.
    let (_, next) = restarted.client(1);
    assert_eq!(next, session);
}

#[test]
fn a_fatal_error_puts_the_session_in_grace_not_the_end() {
    let mut w = World::new();
    let watcher = w.watcher(&[1]);
    let (client, _) = w.client(1);
    w.take(watcher);
    w.send(client, Message::Ok { req: 1 });
    assert!(w.closed(client));
    assert!(w.take(watcher).is_empty());
    w.advance(u64::from(GRACE_MS) + 2 * TICK_MS);
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Offline]);
}

#[test]
fn a_disconnect_ends_every_session_of_the_user_at_once() {
    let mut w = World::new();
    let watcher = w.watcher(&[1]);
    let (phone, _) = w.client(1);
    let (laptop, _) = w.client(1);
    w.send(laptop, Message::SetStatus { req: 1, session: None, status: Status::Busy, text: Text::default() });
    w.drop_transport(phone);
    let (other, _) = w.client(2);
    w.take(watcher);
    w.take(laptop);

    // The shell's part: end the sessions, tell their connections, deliver the change.
    let (ended, change) = w.presence.end_user(1, w.now);
    assert_eq!(ended.len(), 2, "the live session and the one in its grace window");
    for (session, owner) in ended {
        if w.peers.get(&owner).is_some_and(|p| !p.closed && p.machine.session() == Some(session)) {
            let mut out = Vec::new();
            w.peer(owner).machine.disconnected(&mut out);
            w.carry_out(owner, out);
        }
    }
    w.deliver(change.expect("others see the user go offline"));

    assert_eq!(codes(&w.take(laptop)), [Some(ErrorCode::Disconnected)]);
    assert!(w.closed(laptop));
    assert_eq!(pushed_statuses(&w.take(watcher), 1), [Status::Offline], "one change, no busy → online in between");
    w.advance(u64::from(GRACE_MS) + 2 * TICK_MS);
    assert!(w.take(watcher).is_empty(), "no grace window left to end");
    assert_eq!(w.presence.totals().sessions, 1, "user 2 is untouched");
    assert!(!w.closed(other));
    assert_eq!(w.presence.end_user(1, w.now), (Vec::new(), None), "nothing left to end");
}

#[test]
fn queries_of_users_not_in_memory_read_the_store() {
    let mut w = World::new();
    w.store.insert(9, T0 - 60_000);
    let (client, _) = w.client(1);
    let entry = w.status_of(client, 9);
    assert_eq!((entry.status, entry.last_seen_ms, entry.version), (Status::Offline, T0 - 60_000, (T0 - 60_000) << 16));
    assert_eq!(w.status_of(client, 10).last_seen_ms, 0, "never seen");
}

#[test]
fn watches_are_capped_and_end_with_the_connection() {
    let mut w = World::new();
    let (client, _) = w.client(1);
    w.send(client, Message::Watch { req: 1, users: vec![2, 3, 4, 5] });
    w.take(client);
    w.send(client, Message::Watch { req: 2, users: vec![6] });
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::LimitExceeded)]);
    w.send(client, Message::Unwatch { req: 3, users: vec![2] });
    w.send(client, Message::Watch { req: 4, users: vec![6] });
    assert!(matches!(w.take(client)[..], [Message::Ok { req: 3 }, Message::Presence { req: 4, .. }]));
    assert_eq!(w.presence.totals().watches, 4);
    w.drop_transport(client);
    assert_eq!(w.presence.totals().watches, 0);
}

#[test]
fn blocked_users_read_as_offline_to_each_other() {
    let mut w = World::new();
    w.blocks.0.lock().unwrap().insert((1, 2));
    let (watcher, _) = w.client(2);
    w.send(watcher, Message::Watch { req: 1, users: vec![1] });
    w.take(watcher);
    w.client(1);
    assert!(w.take(watcher).is_empty(), "no push to a blocked watcher");
    let entry = w.status_of(watcher, 1);
    assert_eq!((entry.status, entry.version, entry.last_seen_ms), (Status::Offline, 0, 0));
}

// ESTABLISHED(gateway)

#[test]
fn a_gateway_opens_renews_and_closes_sub_sessions() {
    let mut w = World::new();
    let watcher = w.watcher(&[5, 6]);
    let gw = w.gateway();
    w.send(gw, Message::Open { req: 1, entries: vec![web(5), web(6)] });
    let sessions = match w.take(gw).as_slice() {
        [Message::Opened { req: 1, sessions }] => sessions.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(pushed_statuses(&w.take(watcher), 5), [Status::Online]);

    // Only batches renew sub-sessions; session 6 is left out and expires silently.
    for _ in 0..3 {
        w.advance(u64::from(TTL_MS) / 2);
        let batch = Batch::encode(&[(sessions[0], None)]).unwrap();
        w.send(gw, Message::BatchHeartbeat(batch));
    }
    assert!(w.take(gw).is_empty(), "no ERROR for an expired sub-session");
    assert!(!w.closed(gw), "the gateway stays");
    let seen = w.take(watcher);
    assert_eq!(pushed_statuses(&seen, 6), [Status::Offline]);
    assert!(pushed_statuses(&seen, 5).is_empty());

    let batch = Batch::encode(&[(sessions[0], Some(Status::Busy)), (sessions[1], None)]).unwrap();
    w.send(gw, Message::BatchHeartbeat(batch));
    assert_eq!(codes(&w.take(gw)), [Some(ErrorCode::NotFound)], "an unknown id in a batch");
    assert_eq!(pushed_statuses(&w.take(watcher), 5), [Status::Busy], "the known entry still applied");

    w.send(gw, Message::SetStatus { req: 2, session: None, status: Status::Away, text: Text::default() });
    w.send(gw, heartbeat());
    w.send(gw, Message::Publish { req: 3, kind: 0, payload: Bytes::from_static(b"x") });
    assert_eq!(codes(&w.take(gw)), [Some(ErrorCode::Forbidden); 3]);

    w.send(gw, Message::Close { req: 4, sessions: vec![sessions[0]] });
    assert!(matches!(w.take(gw)[..], [Message::Ok { req: 4 }]));
    assert_eq!(pushed_statuses(&w.take(watcher), 5), [Status::Offline], "CLOSE ends it at once");
}

#[test]
fn a_gateway_bye_ends_all_its_sessions_and_a_loss_puts_them_in_grace() {
    let mut w = World::new();
    let gw = w.gateway();
    w.send(gw, Message::Open { req: 1, entries: vec![web(5), web(6)] });
    w.take(gw);
    w.send(gw, Message::Bye);
    assert!(w.closed(gw));
    assert_eq!(w.presence.totals().sessions, 0);

    let gw = w.gateway();
    w.send(gw, Message::Open { req: 1, entries: vec![web(5), web(6)] });
    w.drop_transport(gw);
    assert_eq!(w.presence.totals().online_users, 2, "in grace: still online");
    w.advance(u64::from(GRACE_MS) + 2 * TICK_MS);
    assert_eq!(w.presence.totals().online_users, 0);
}

// DRAINING and CLOSED

#[test]
fn draining_sends_goaway_reads_nothing_more_and_leaves_sessions_in_grace() {
    let mut w = World::new();
    let (client, _) = w.client(1);
    let mut out = Vec::new();
    w.peer(client).machine.drain(1_000, &mut out);
    assert_eq!(
        out,
        [Effect::Close(Some(Message::Goaway { reason: GoawayReason::Shutdown, reconnect_after_ms: 1_000 }))]
    );
    let mut machine = std::mem::replace(&mut w.peer(client).machine, Connection::new(0, 0, 0));
    let mut after = Vec::new();
    let flow = machine.on_frame(&w, Bytes::from_static(&[0x03]), w.now, &mut after);
    assert_eq!((flow, after), (Flow::Close, vec![]), "a draining connection reads nothing");
    w.peer(client).machine = machine;
    w.drop_transport(client);
    assert_eq!(w.presence.totals().online_users, 1, "grace, not the end");

    let early = w.connect();
    let mut out = Vec::new();
    w.peer(early).machine.drain(1_000, &mut out);
    assert_eq!(out, [Effect::Close(None)], "no GOAWAY before WELCOME");
}

#[test]
fn a_refused_open_leaves_no_trace() {
    let mut w = World::new();
    w.client(1);
    w.client(1);
    let watcher = w.watcher(&[1, 5]);
    let before = (w.status_of(watcher, 1), w.status_of(watcher, 5));
    let gw = w.gateway();
    w.send(gw, Message::Open { req: 1, entries: vec![web(5), web(1)] });
    assert_eq!(codes(&w.take(gw)), [Some(ErrorCode::LimitExceeded)], "user 1 is at its cap");
    assert!(w.take(watcher).is_empty(), "no watcher saw anything");
    assert_eq!((w.status_of(watcher, 1), w.status_of(watcher, 5)), before);
    assert_eq!(w.presence.totals().sessions, 2);
}

#[test]
fn a_client_of_a_user_owned_elsewhere_is_redirected_and_gets_no_session() {
    let mut w = World::new();
    w.in_cluster("hl-1");
    // Spec worked example (SPEC.md §14.2): user 1 is in partition 32, owned by hl-3.
    assert_eq!(w.owner(1), "hl-3");
    let watcher = w.gateway();
    w.send(watcher, Message::Watch { req: 1, users: vec![1] });
    w.take(watcher);
    let id = w.connect();
    w.send(id, World::hello(Role::Client, w.user_token(1), 0));
    let owner =
        MapMember { node: "hl-3".into(), addr: "hl-3.example:7400".into(), ws: Text::default(), tls: Text::default() };
    let redirect = Message::Redirect { version: 9, owner: Box::new(owner) };
    assert_eq!(w.take(id), vec![redirect]);
    assert!(w.closed(id));
    assert_eq!(w.presence.totals().sessions, 0);
    assert!(w.take(watcher).is_empty(), "no presence change for a redirected client");
    // A resume is redirected too: the session, if any, is the owner's.
    let id = w.connect();
    w.send(id, World::hello(Role::Client, w.user_token(1), 77));
    assert!(matches!(w.take(id).as_slice(), [Message::Redirect { owner, .. }] if owner.node.as_str() == "hl-3"));
}

#[test]
fn redirects_carry_the_owner_s_websocket_url_and_tls_address_and_the_owner_welcomes() {
    let mut w = World::new();
    w.in_cluster("hl-1");
    let (mine, _) = w.users_of("hl-1");
    let on_hl2 = (1..).find(|&u| w.owner(u) == "hl-2").unwrap();
    let id = w.connect();
    w.send(id, World::hello(Role::Client, w.user_token(on_hl2), 0));
    match w.take(id).as_slice() {
        [Message::Redirect { version: 9, owner }] => {
            let MapMember { node, addr, ws, tls } = &**owner;
            assert_eq!(
                (node.as_str(), addr.as_str(), ws.as_str(), tls.as_str()),
                ("hl-2", "hl-2.example:7400", "wss://hl-2.example/ws", "hl-2.example:7443")
            );
        }
        other => panic!("no REDIRECT: {other:?}"),
    }
    // This node's own users are welcomed as on a single node.
    let (_, session) = w.client(mine);
    assert_ne!(session, 0);
}

#[test]
fn a_gateway_is_never_redirected_and_reads_the_map() {
    let mut w = World::new();
    w.in_cluster("hl-2");
    let gw = w.gateway();
    w.send(gw, Message::ClusterMap { req: 4 });
    match w.take(gw).as_slice() {
        [Message::ClusterMapReply { req: 4, version: 9, partitions: 1_024, members }] => {
            let names: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
            assert_eq!(names, ["hl-1", "hl-2", "hl-3"]);
            assert_eq!(members[1].ws.as_str(), "wss://hl-2.example/ws");
        }
        other => panic!("no CLUSTER_MAP_REPLY: {other:?}"),
    }
    // Clients may not ask for it.
    let (mine, _) = w.users_of("hl-2");
    let (client, _) = w.client(mine);
    w.send(client, Message::ClusterMap { req: 5 });
    assert_eq!(codes(&w.take(client)), [Some(ErrorCode::Forbidden)]);
    assert!(!w.closed(client));
}

#[test]
fn an_open_naming_a_user_owned_elsewhere_is_refused_whole_with_moved() {
    let mut w = World::new();
    w.in_cluster("hl-1");
    let (mine, other) = w.users_of("hl-1");
    let gw = w.gateway();
    w.send(gw, Message::Open { req: 3, entries: vec![web(mine), web(other)] });
    match w.take(gw).as_slice() {
        [Message::Error { req: 3, code, message }] => {
            assert_eq!(ErrorCode::from_u16(*code), Some(ErrorCode::Moved));
            let owner = w.owner(other).to_owned();
            assert_eq!(message.as_str(), format!("user {other} is on {owner} by map version 9"));
        }
        other => panic!("no MOVED: {other:?}"),
    }
    assert!(!w.closed(gw), "MOVED does not close");
    assert_eq!(w.presence.totals().sessions, 0, "all or nothing");
    w.send(gw, Message::Open { req: 4, entries: vec![web(mine)] });
    assert!(matches!(w.take(gw).as_slice(), [Message::Opened { req: 4, sessions }] if sessions.len() == 1));
}

#[test]
fn a_single_node_answers_the_map_with_itself_and_refuses_nothing() {
    let mut w = World::new();
    let gw = w.gateway();
    w.send(gw, Message::ClusterMap { req: 1 });
    match w.take(gw).as_slice() {
        [Message::ClusterMapReply { req: 1, version: 0, partitions: 1, members }] => assert_eq!(members.len(), 1),
        other => panic!("no CLUSTER_MAP_REPLY: {other:?}"),
    }
    let entries = (1..=50).map(web).collect();
    w.send(gw, Message::Open { req: 2, entries });
    assert!(matches!(w.take(gw).as_slice(), [Message::Opened { req: 2, sessions }] if sessions.len() == 50));
    for user in 100..110 {
        w.client(user);
    }
}

#[test]
fn a_gateway_s_status_change_for_a_user_that_moved_away_gets_moved() {
    let mut w = World::new();
    let gw = w.gateway();
    // Opened while this node was alone; then it joins a cluster where hl-3 owns user 1.
    w.send(gw, Message::Open { req: 1, entries: vec![web(1), web(4)] });
    let sessions = match w.take(gw).as_slice() {
        [Message::Opened { sessions, .. }] => sessions.clone(),
        other => panic!("no OPENED: {other:?}"),
    };
    w.in_cluster("hl-1");
    assert_eq!((w.owner(1), w.owner(4)), ("hl-3", "hl-1"));
    let set = |req, session| Message::SetStatus { req, session: Some(session), status: Status::Away, text: "".into() };
    w.send(gw, set(2, sessions[0]));
    match w.take(gw).as_slice() {
        [Message::Error { req: 2, code, message }] => {
            assert_eq!(ErrorCode::from_u16(*code), Some(ErrorCode::Moved));
            assert_eq!(message.as_str(), "user 1 is on hl-3 by map version 9");
        }
        other => panic!("expected MOVED: {other:?}"),
    }
    assert_eq!(w.presence.lookup(1).unwrap().status, Status::Online, "nothing changed");
    // Its own user's session changes as before.
    w.send(gw, set(3, sessions[1]));
    assert_eq!(w.take(gw), vec![Message::Ok { req: 3 }]);
}
