//! One connection's protocol state machine (SPEC.md §5), for every
//! transport: frames and the time go in, [`Effect`]s come out.
//!
//! Owns the connection's phase (AWAIT_HELLO → client or gateway → done), its
//! watch set, its rate buckets and its heartbeat decoding state. It reads
//! and changes the shared in-memory state it is given through [`Env`]
//! (presence, the block list, token checks, limits), but never touches a
//! socket, a clock or the store: what needs I/O comes out as an effect for
//! the shell to carry out — a frame to send, a close, a presence change to
//! deliver to other connections, a store read, a feed request. The TCP, UDP
//! and WebSocket shells all drive this one machine; `tests` drives it in
//! virtual time with no socket at all.

pub mod rate;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use bytes::Bytes;
use heartline_proto::auth::{AuthError, Claims, Subject, UdpPeer};
use heartline_proto::codec::types;
use heartline_proto::udp::Key;
use heartline_proto::{
    BatchEntry, DecodeError, ErrorCode, GoawayReason, HeartbeatState, Hello, MapMember, Message, OpenEntry,
    PresenceEntry, Role, Status, Text, Welcome, VERSION,
};

use crate::presence::{entry_for, BlockList, Change, Presence, SessionError, SessionId, View, Viewer};
use rate::{Bucket, Rate};

/// The limits a connection reads when it needs them (a reload may change
/// them between two frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Users one connection may watch.
    pub max_watch: usize,
    /// Status changes of one client session.
    pub status_rate: Rate,
    /// Posts of one client session.
    pub post_rate: Rate,
}

/// What the machine may read and change besides its own state.
pub trait Env {
    fn presence(&self) -> &Presence;
    /// Who blocks whom (the feed's social graph), for the privacy point.
    fn blocks(&self) -> &dyn BlockList;
    /// Checks a HELLO's token at `now_s` (unix seconds).
    fn verify(&self, token: &[u8], now_s: u64) -> Result<Claims, AuthError>;
    /// The UDP key of a session or gateway; `None` when UDP is off.
    fn udp_key(&self, peer: UdpPeer, id: u64, owner: u32) -> Option<Key>;
    /// The port WELCOME names for UDP (0 when UDP is off).
    fn udp_port(&self) -> u16;
    /// The fixed settings WELCOME announces.
    fn welcome(&self) -> WelcomeSettings;
    fn limits(&self) -> Limits;
    /// The member that owns `user` when it is another node of the cluster
    /// (SPEC.md §14): `None` on a single node, when this node owns the user,
    /// or when no map is known yet.
    fn owner_of(&self, user: u64) -> Option<Owner>;
    /// What CLUSTER_MAP answers: the map, or this node alone.
    fn cluster_map(&self) -> RouteMap;
    /// `user` got its first watcher on this node (`true`) or lost its last
    /// (`false`): a node in a cluster follows the users other nodes own.
    fn watched(&self, _user: u64, _first: bool) {}
}

/// Another node owning a user, by the map of `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub version: u64,
    pub member: MapMember,
}

/// The cluster map as a gateway receives it (CLUSTER_MAP_REPLY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMap {
    pub version: u64,
    pub partitions: u32,
    pub members: Vec<MapMember>,
}

/// What WELCOME tells every client; fixed while the daemon runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WelcomeSettings {
    pub heartbeat_interval_ms: u32,
    pub ttl_ms: u32,
    pub max_frame: u32,
}

/// What the shell must do after the machine has handled an input.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Queue a frame to the peer.
    Send(Message),
    /// Write what is queued, then `last` if any, then close.
    Close(Option<Message>),
    /// A change others may see: push it to the connections watching the user.
    Deliver(Change),
    /// The peer proved who it is: from now on it receives deliveries (as
    /// `viewer`) and, for a gateway with `udp_gateway`, UDP batches.
    Authenticated { viewer: Viewer, session: Option<SessionId>, udp_gateway: bool },
    /// A PRESENCE reply that needs the durable last seen of users with no
    /// record in memory: answer it with [`presence_entries`] off the runtime.
    Lookup { req: u64, viewer: Viewer, users: Vec<u64> },
    /// A feed request of this connection's user, to be handled in order.
    Feed { user: u64, request: Message },
    /// STATS: the shell answers with the daemon's totals (connections are its own).
    Stats { req: u64 },
    /// Heartbeats applied, for the metrics.
    Heartbeats { batch: bool, count: u64 },
}

/// Whether the connection goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

#[derive(Debug)]
enum Phase {
    AwaitHello {
        by_ms: u64,
    },
    Client {
        user: u64,
        session: SessionId,
        beats: HeartbeatState,
    },
    Gateway,
    /// After BYE, a fatal error or the end of the transport.
    Done,
}

/// One connection's state. Small on purpose (a few dozen bytes while idle):
/// there may be a million of them.
#[derive(Debug)]
pub struct Connection {
    id: u32,
    phase: Phase,
    /// Set by the input that ended the connection; nothing is handled after it.
    closing: bool,
    watches: HashSet<u64>,
    /// A client session's status changes (SET_STATUS, HEARTBEAT with a status).
    statuses: Bucket,
    /// A client session's posts.
    posts: Bucket,
}

/// Frames only a server sends: a client sending one is broken.
fn server_only(ty: u8) -> bool {
    use types::*;
    matches!(
        ty,
        WELCOME
            | GOAWAY
            | ERROR
            | OK
            | PRESENCE
            | PRESENCE_PUSH
            | STATS_REPLY
            | OPENED
            | PUBLISHED
            | PAGE
            | ITEM_PUSH
            | DELETED_PUSH
            | REDIRECT
            | CLUSTER_MAP_REPLY
    )
}

/// An ERROR frame.
pub fn error(req: u64, code: ErrorCode, message: impl Into<Text>) -> Message {
    Message::Error { req, code: code as u16, message: message.into() }
}

impl Connection {
    /// A connection accepted at `now_ms`, owing a HELLO within `handshake_timeout_ms`.
    /// `id` is never reused while the daemon runs (it names the owner of sessions and UDP keys).
    pub fn new(id: u32, now_ms: u64, handshake_timeout_ms: u64) -> Self {
        Self {
            id,
            phase: Phase::AwaitHello { by_ms: now_ms.saturating_add(handshake_timeout_ms) },
            closing: false,
            watches: HashSet::new(),
            statuses: Bucket::default(),
            posts: Bucket::default(),
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// When [`Self::on_timeout`] must be called, if ever: the only timer a
    /// connection has is the handshake's. An authenticated connection has
    /// none (its session's TTL is the presence wheel's).
    pub fn deadline(&self) -> Option<u64> {
        match self.phase {
            Phase::AwaitHello { by_ms } => Some(by_ms),
            _ => None,
        }
    }

    /// The client session this connection owns, if any.
    pub fn session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Client { session, .. } => Some(session),
            _ => None,
        }
    }

    /// The presence wheel ended this connection's session (its TTL ran out):
    /// ERROR SESSION_EXPIRED, and the connection ends with no grace window.
    pub fn expired(&mut self, out: &mut Vec<Effect>) -> Flow {
        self.session_ended(error(0, ErrorCode::SessionExpired, "no heartbeat within the TTL"), out)
    }

    /// The application's backend ended this connection's session (the admin
    /// API's disconnect, [`Presence::end_user`]): ERROR DISCONNECTED, and the
    /// connection ends with no grace window.
    pub fn disconnected(&mut self, out: &mut Vec<Effect>) -> Flow {
        self.session_ended(error(0, ErrorCode::Disconnected, "disconnected by the server"), out)
    }

    /// The session ended elsewhere: nothing is left to detach when the transport ends.
    fn session_ended(&mut self, last: Message, out: &mut Vec<Effect>) -> Flow {
        if let Phase::Client { .. } = self.phase {
            self.phase = Phase::Done;
        }
        self.close(Some(last), out)
    }

    /// The server is stopping (DRAINING, SPEC.md §5.2): GOAWAY after what is
    /// owed, nothing more is read, and the sessions enter their grace window
    /// when the transport ends.
    pub fn drain(&mut self, reconnect_after_ms: u32, out: &mut Vec<Effect>) -> Flow {
        if self.closing {
            return Flow::Close;
        }
        if let Phase::AwaitHello { .. } = self.phase {
            // GOAWAY is for connections past WELCOME (SPEC.md §4.9).
            return self.close(None, out);
        }
        self.close(Some(Message::Goaway { reason: GoawayReason::Shutdown, reconnect_after_ms }), out)
    }

    /// Whether an input has ended the connection.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The deadline passed: a connection still without HELLO is closed.
    pub fn on_timeout(&mut self, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        match self.deadline() {
            Some(by) if now_ms >= by => self.abort(ErrorCode::HandshakeTimeout, "no HELLO in time", out),
            _ => Flow::Continue,
        }
    }

    /// The transport failed in a way the spec names (a frame over the limit,
    /// a malformed length): the connection ends with that error.
    pub fn abort(&mut self, code: ErrorCode, message: &'static str, out: &mut Vec<Effect>) -> Flow {
        self.close(Some(error(0, code, message)), out)
    }

    /// Ends the connection after `last`. Its sessions are left to
    /// [`Self::on_close`], which puts them in their grace window.
    fn close(&mut self, last: Option<Message>, out: &mut Vec<Effect>) -> Flow {
        self.closing = true;
        out.push(Effect::Close(last));
        Flow::Close
    }

    /// Answers with an ERROR; closes when the code says so.
    fn fail(&mut self, req: u64, code: ErrorCode, message: impl Into<Text>, out: &mut Vec<Effect>) -> Flow {
        let frame = error(req, code, message);
        if code.closes() {
            self.close(Some(frame), out)
        } else {
            out.push(Effect::Send(frame));
            Flow::Continue
        }
    }

    fn awaiting_hello(&self) -> bool {
        matches!(self.phase, Phase::AwaitHello { .. })
    }

    /// One whole frame (type byte and body) received at `now_ms`.
    pub fn on_frame(&mut self, env: &impl Env, frame: Bytes, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        if self.closing || matches!(self.phase, Phase::Done) {
            return Flow::Close;
        }
        let ty = frame.first().copied().unwrap_or_default();
        if self.awaiting_hello() && ty != types::HELLO {
            return self.fail(0, ErrorCode::Unauthenticated, "HELLO first", out);
        }
        if server_only(ty) || (ty == types::HELLO && !self.awaiting_hello()) {
            return self.fail(0, ErrorCode::Unexpected, "unexpected frame type", out);
        }
        if let Phase::Client { session, .. } = self.phase {
            // Every frame shows the client is alive, even one we refuse.
            if env.presence().heartbeat(session, self.id, now_ms).is_err() {
                return self.fail(0, ErrorCode::SessionExpired, "session expired", out);
            }
        }
        match Message::decode(frame) {
            Ok(msg) => self.dispatch(env, msg, now_ms, out),
            Err(DecodeError { code, req, detail }) => self.fail(req, code, detail, out),
        }
    }

    fn dispatch(&mut self, env: &impl Env, msg: Message, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        let gateway = matches!(self.phase, Phase::Gateway);
        match msg {
            Message::Hello(hello) => self.hello(env, hello, now_ms, out),
            Message::Bye => self.bye(env, now_ms, out),
            Message::Heartbeat(hb) => {
                let Phase::Client { session, beats, .. } = &mut self.phase else {
                    return self.fail(0, ErrorCode::Forbidden, "HEARTBEAT is for client sessions", out);
                };
                // Skipped whole, state included: the status stays as it was (SPEC.md §4.12).
                if hb.status.is_some() && !self.statuses.take(env.limits().status_rate, now_ms) {
                    return self.fail(0, ErrorCode::RateLimited, "too many status changes", out);
                }
                if let Err(e) = beats.apply(&hb) {
                    return self.fail(0, e.code, e.detail, out);
                }
                out.push(Effect::Heartbeats { batch: false, count: 1 });
                match hb.status {
                    Some(status) => {
                        let session = *session;
                        self.set_status(env, 0, session, status, None, now_ms, false, out)
                    }
                    None => Flow::Continue,
                }
            }
            Message::SetStatus { req, session, status, text } => {
                let target = match (&mut self.phase, session) {
                    (Phase::Client { session, beats, .. }, None) => {
                        // Gateways act for many users and are trusted (SPEC.md §12.1): only
                        // client sessions are rate limited.
                        if !self.statuses.take(env.limits().status_rate, now_ms) {
                            return self.fail(req, ErrorCode::RateLimited, "too many status changes", out);
                        }
                        beats.status = status;
                        *session
                    }
                    (Phase::Gateway, Some(session)) => {
                        // A session whose user moved to another node by a newer map (SPEC.md §14.5).
                        let user = env.presence().user_of(session, self.id).ok();
                        if let Some((user, owner)) = user.and_then(|u| env.owner_of(u).map(|o| (u, o))) {
                            return self.fail(req, ErrorCode::Moved, moved(user, &owner), out);
                        }
                        session
                    }
                    _ => return self.fail(req, ErrorCode::Forbidden, "session field is for gateways only", out),
                };
                self.set_status(env, req, target, status, Some(text), now_ms, true, out)
            }
            Message::Watch { req, users } => self.watch(env, req, users, out),
            Message::Unwatch { req, users } => {
                for user in users {
                    if self.watches.remove(&user) && env.presence().unwatch(user, self.id) {
                        env.watched(user, false);
                    }
                }
                out.push(Effect::Send(Message::Ok { req }));
                Flow::Continue
            }
            Message::Query { req, users } => {
                self.presence_reply(env, req, users, out);
                Flow::Continue
            }
            Message::Stats { req } => {
                out.push(Effect::Stats { req });
                Flow::Continue
            }
            Message::ClusterMap { req } if gateway => {
                let RouteMap { version, partitions, members } = env.cluster_map();
                out.push(Effect::Send(Message::ClusterMapReply { req, version, partitions, members }));
                Flow::Continue
            }
            Message::ClusterMap { req } => self.fail(req, ErrorCode::Forbidden, "gateway-only message", out),
            Message::Open { req, entries } if gateway => self.open(env, req, &entries, now_ms, out),
            Message::Close { req, sessions } if gateway => self.close_sessions(env, req, &sessions, now_ms, out),
            Message::BatchHeartbeat(batch) if gateway => {
                let unknown = apply_batch(env.presence(), self.id, batch.view().iter(), now_ms, out);
                out.push(Effect::Heartbeats { batch: true, count: batch.len() as u64 });
                if unknown > 0 {
                    return self.fail(0, ErrorCode::NotFound, format!("{unknown} unknown sessions in batch"), out);
                }
                Flow::Continue
            }
            Message::Open { req, .. } | Message::Close { req, .. } => {
                self.fail(req, ErrorCode::Forbidden, "gateway-only message", out)
            }
            Message::BatchHeartbeat(_) => self.fail(0, ErrorCode::Forbidden, "gateway-only message", out),
            msg @ (Message::Publish { .. }
            | Message::Delete { .. }
            | Message::Graph { .. }
            | Message::Timeline { .. }
            | Message::Live { .. }) => self.feed_request(env, msg, now_ms, out),
            // Server-only types were refused before decoding.
            _ => self.fail(0, ErrorCode::Unexpected, "unexpected frame type", out),
        }
    }

    fn feed_request(&mut self, env: &impl Env, msg: Message, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        let req = msg.req();
        let Phase::Client { user, .. } = self.phase else {
            return self.fail(req, ErrorCode::Forbidden, "the feed is for client sessions", out);
        };
        if matches!(msg, Message::Publish { .. }) && !self.posts.take(env.limits().post_rate, now_ms) {
            return self.fail(req, ErrorCode::RateLimited, "too many posts", out);
        }
        out.push(Effect::Feed { user, request: msg });
        Flow::Continue
    }

    fn viewer(&self) -> Viewer {
        match self.phase {
            Phase::Client { user, .. } => Viewer::User(user),
            _ => Viewer::Anyone,
        }
    }

    fn hello(&mut self, env: &impl Env, hello: Hello, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        let claims = match env.verify(&hello.token, now_ms / 1000) {
            Ok(claims) => claims,
            Err(e) => return self.fail(0, e.code(), e.to_string(), out),
        };
        let udp_port = if hello.want_udp { env.udp_port() } else { 0 };
        let udp = udp_port != 0;
        let presence = env.presence();
        let (session, udp_peer) = match (hello.role, claims.subject) {
            (Role::Client, Subject::User(user)) => {
                if let Some(Owner { version, member }) = env.owner_of(user) {
                    // No session here: the client reconnects to the owner (SPEC.md §14.3).
                    return self.close(Some(Message::Redirect { version, owner: Box::new(member) }), out);
                }
                let resumed = hello.resume != 0 && presence.resume(hello.resume, user, self.id, udp, now_ms);
                let session = if resumed {
                    hello.resume
                } else {
                    match presence.open(user, Status::Online, self.id, udp, now_ms, hello.resume) {
                        Ok((session, change)) => {
                            out.extend(change.map(Effect::Deliver));
                            session
                        }
                        Err(SessionError::TooManySessions) => {
                            // LIMIT_EXCEEDED does not close by itself, but without a
                            // session there is nothing to go on with.
                            let refused = error(0, ErrorCode::LimitExceeded, "too many sessions");
                            return self.close(Some(refused), out);
                        }
                        // INTERNAL does not close by itself either (SPEC.md §9.2).
                        Err(_) => return self.close(Some(error(0, ErrorCode::Internal, "no session slot left")), out),
                    }
                };
                let interval = env.welcome().heartbeat_interval_ms;
                self.phase = Phase::Client { user, session, beats: HeartbeatState::new(interval) };
                (session, UdpPeer::Session)
            }
            (Role::Gateway, Subject::Gateway(_)) => {
                self.phase = Phase::Gateway;
                (u64::from(self.id), UdpPeer::Gateway)
            }
            _ => return self.fail(0, ErrorCode::BadToken, "token does not fit the role", out),
        };
        let client_session = matches!(udp_peer, UdpPeer::Session).then_some(session);
        out.push(Effect::Authenticated {
            viewer: self.viewer(),
            session: client_session,
            udp_gateway: udp && udp_peer == UdpPeer::Gateway,
        });
        let udp_key = if udp { env.udp_key(udp_peer, session, self.id) } else { None };
        let settings = env.welcome();
        out.push(Effect::Send(Message::Welcome(Welcome {
            version: hello.version.min(VERSION),
            session,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            ttl_ms: settings.ttl_ms,
            server_time_ms: now_ms,
            max_frame: settings.max_frame,
            udp_port: if udp_key.is_some() { udp_port } else { 0 },
            udp_key: udp_key.unwrap_or_default(),
        })));
        Flow::Continue
    }

    fn bye(&mut self, env: &impl Env, now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        let presence = env.presence();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Client { session, .. } => {
                if let Ok(change) = presence.close(session, self.id, now_ms) {
                    out.extend(change.map(Effect::Deliver));
                }
            }
            Phase::Gateway => {
                for session in presence.sessions_of(self.id) {
                    if let Ok(change) = presence.close(session, self.id, now_ms) {
                        out.extend(change.map(Effect::Deliver));
                    }
                }
            }
            Phase::AwaitHello { .. } | Phase::Done => {}
        }
        self.close(None, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn set_status(
        &mut self,
        env: &impl Env,
        req: u64,
        session: SessionId,
        status: Status,
        text: Option<Text>,
        now_ms: u64,
        reply: bool,
        out: &mut Vec<Effect>,
    ) -> Flow {
        // Status text outlives this frame: copy it out of the read buffer.
        let text = text.map(|t| Text::from(t.as_str()));
        match env.presence().set_status(session, self.id, status, text, now_ms) {
            Ok(change) => {
                out.extend(change.map(Effect::Deliver));
                if reply {
                    out.push(Effect::Send(Message::Ok { req }));
                }
                Flow::Continue
            }
            Err(SessionError::NotOwner) => self.fail(req, ErrorCode::Forbidden, "not your session", out),
            Err(_) => self.fail(req, ErrorCode::NotFound, "no such session", out),
        }
    }

    fn watch(&mut self, env: &impl Env, req: u64, users: Vec<u64>, out: &mut Vec<Effect>) -> Flow {
        let new: HashSet<u64> = users.iter().copied().filter(|u| !self.watches.contains(u)).collect();
        if self.watches.len() + new.len() > env.limits().max_watch {
            return self.fail(req, ErrorCode::LimitExceeded, "watch set over its limit", out);
        }
        for user in new {
            if env.presence().watch(user, self.id) {
                env.watched(user, true);
            }
            self.watches.insert(user);
        }
        self.presence_reply(env, req, users, out);
        Flow::Continue
    }

    /// PRESENCE for `users`: at once when every one of them is in memory,
    /// else through the store.
    fn presence_reply(&self, env: &impl Env, req: u64, users: Vec<u64>, out: &mut Vec<Effect>) {
        let viewer = self.viewer();
        let (presence, blocks) = (env.presence(), env.blocks());
        let mut entries = Vec::with_capacity(users.len());
        for &user in &users {
            match presence.lookup(user) {
                Some(view) => entries.push(entry_for(viewer, user, &view, blocks)),
                None => {
                    out.push(Effect::Lookup { req, viewer, users });
                    return;
                }
            }
        }
        out.push(Effect::Send(Message::Presence { req, entries }));
    }

    /// All or nothing (SPEC.md §4.21): a refused OPEN leaves no trace.
    fn open(&mut self, env: &impl Env, req: u64, entries: &[OpenEntry], now_ms: u64, out: &mut Vec<Effect>) -> Flow {
        if let Some((user, owner)) =
            entries.iter().find_map(|entry| env.owner_of(entry.user).map(|owner| (entry.user, owner)))
        {
            return self.fail(req, ErrorCode::Moved, moved(user, &owner), out);
        }
        let wanted = entries.iter().map(|entry| (entry.user, entry.status));
        match env.presence().open_all(wanted, self.id, now_ms) {
            Ok((sessions, changes)) => {
                out.extend(changes.into_iter().map(Effect::Deliver));
                out.push(Effect::Send(Message::Opened { req, sessions }));
                Flow::Continue
            }
            Err(_) => self.fail(req, ErrorCode::LimitExceeded, "cannot open every session", out),
        }
    }

    fn close_sessions(
        &mut self,
        env: &impl Env,
        req: u64,
        sessions: &[SessionId],
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) -> Flow {
        for &session in sessions {
            match env.presence().close(session, self.id, now_ms) {
                Ok(change) => out.extend(change.map(Effect::Deliver)),
                Err(SessionError::NotOwner) => return self.fail(req, ErrorCode::Forbidden, "not your session", out),
                Err(_) => {}
            }
        }
        out.push(Effect::Send(Message::Ok { req }));
        Flow::Continue
    }

    /// The transport is gone (or the connection was closed): its sessions
    /// enter their grace window unless BYE ended them, its watches end.
    pub fn on_close(&mut self, env: &impl Env, now_ms: u64) {
        let presence = env.presence();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Client { session, .. } => {
                let _ = presence.detach(session, self.id, now_ms);
            }
            Phase::Gateway => {
                for session in presence.sessions_of(self.id) {
                    let _ = presence.detach(session, self.id, now_ms);
                }
            }
            Phase::AwaitHello { .. } | Phase::Done => {}
        }
        for user in self.watches.drain() {
            if presence.unwatch(user, self.id) {
                env.watched(user, false);
            }
        }
    }
}

/// MOVED's message (SPEC.md §14.5): for logs; the gateway fetches the map again.
fn moved(user: u64, owner: &Owner) -> String {
    format!("user {user} is on {} by map version {}", owner.member.node.as_str(), owner.version)
}

/// Applies a gateway's batch (over TCP or UDP) for connection `owner`;
/// returns how many sessions were not its own or unknown.
pub fn apply_batch(
    presence: &Presence,
    owner: u32,
    entries: impl Iterator<Item = BatchEntry>,
    now_ms: u64,
    out: &mut Vec<Effect>,
) -> u64 {
    let mut unknown = 0;
    for (session, status) in entries {
        let applied = match status {
            None => presence.heartbeat(session, owner, now_ms),
            Some(status) => presence.set_status(session, owner, status, None, now_ms).map(|c| {
                out.extend(c.map(Effect::Deliver));
            }),
        };
        if let Err(SessionError::NotFound | SessionError::NotOwner) = applied {
            unknown += 1;
        }
    }
    unknown
}

/// The entries of a PRESENCE reply: from memory for users with a record,
/// else offline with the last seen `last_seen` reads (the store's; a store
/// error reads as "never seen": a query must not fail for it).
pub fn presence_entries(
    viewer: Viewer,
    users: &[u64],
    presence: &Presence,
    blocks: &dyn BlockList,
    mut last_seen: impl FnMut(u64) -> Option<u64>,
) -> Vec<PresenceEntry> {
    users
        .iter()
        .map(|&user| {
            let view = presence.lookup(user).unwrap_or_else(|| View::offline(last_seen(user).unwrap_or(0)));
            entry_for(viewer, user, &view, blocks)
        })
        .collect()
}
