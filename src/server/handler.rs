//! What one connection's frames do: the state machine of SPEC.md §5
//! (AWAIT_HELLO → client or gateway → closed) over the shared state.
//!
//! Synchronous: it is handed one decoded-or-not frame and the time, queues
//! replies in the connection's outbox and says whether to go on. The socket
//! work around it lives in `conn`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::feed::FeedSession;
use super::outbox::{error, Outbox};
use heartline_core::conn::rate::Bucket;
use super::Shared;
use crate::auth::{Subject, UdpPeer};
use heartline_core::presence::{Change, SessionError, SessionId, Viewer};
use heartline_proto::codec::types;
use heartline_proto::{
    Batch, DecodeError, ErrorCode, HeartbeatState, Hello, Message, OpenEntry, Role, Status, Text, Welcome, VERSION,
};

/// Whether the connection goes on after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

enum Phase {
    AwaitHello,
    Client {
        user: u64,
        session: SessionId,
        beats: HeartbeatState,
    },
    Gateway,
    /// After BYE: sessions already ended.
    Done,
}

pub struct Handler {
    shared: Arc<Shared>,
    id: u32,
    outbox: Arc<Outbox>,
    phase: Phase,
    watches: HashSet<u64>,
    /// Started on the first feed request.
    feed: Option<FeedSession>,
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
    )
}

impl Handler {
    pub fn new(shared: Arc<Shared>, id: u32, outbox: Arc<Outbox>) -> Self {
        Self {
            shared,
            id,
            outbox,
            phase: Phase::AwaitHello,
            watches: HashSet::new(),
            feed: None,
            statuses: Bucket::default(),
            posts: Bucket::default(),
        }
    }

    pub fn awaiting_hello(&self) -> bool {
        matches!(self.phase, Phase::AwaitHello)
    }

    /// Answers with an ERROR; closes when the code says so.
    fn fail(&self, req: u64, code: ErrorCode, message: impl Into<Text>) -> Flow {
        let frame = Message::Error { req, code: code as u16, message: message.into() };
        if code.closes() {
            self.outbox.close(Some(frame));
            Flow::Close
        } else {
            self.outbox.send(frame);
            Flow::Continue
        }
    }

    /// Ends the connection with a fatal error that is not the peer's frame's
    /// fault (timeouts, stream errors).
    pub fn abort(&self, code: ErrorCode, message: &'static str) {
        self.outbox.close(Some(error(0, code, message)));
    }

    pub fn on_frame(&mut self, frame: Bytes, now_ms: u64) -> Flow {
        let ty = frame.first().copied().unwrap_or_default();
        if self.awaiting_hello() && ty != types::HELLO {
            return self.fail(0, ErrorCode::Unauthenticated, "HELLO first");
        }
        if server_only(ty) || (ty == types::HELLO && !self.awaiting_hello()) {
            return self.fail(0, ErrorCode::Unexpected, "unexpected frame type");
        }
        if let Phase::Client { session, .. } = self.phase {
            // Every frame shows the client is alive, even one we refuse.
            if self.shared.presence.heartbeat(session, self.id, now_ms).is_err() {
                return self.fail(0, ErrorCode::SessionExpired, "session expired");
            }
        }
        match Message::decode(frame) {
            Ok(msg) => self.dispatch(msg, now_ms),
            Err(DecodeError { code, req, detail }) => self.fail(req, code, detail),
        }
    }

    fn dispatch(&mut self, msg: Message, now_ms: u64) -> Flow {
        let gateway = matches!(self.phase, Phase::Gateway);
        match msg {
            Message::Hello(hello) => self.hello(hello, now_ms),
            Message::Bye => self.bye(now_ms),
            Message::Heartbeat(hb) => {
                let Phase::Client { session, beats, .. } = &mut self.phase else {
                    return self.fail(0, ErrorCode::Forbidden, "HEARTBEAT is for client sessions");
                };
                // Skipped whole, state included: the status stays as it was (SPEC.md §4.12).
                if hb.status.is_some() && !self.statuses.take(self.shared.limits.status_rate(), now_ms) {
                    return self.fail(0, ErrorCode::RateLimited, "too many status changes");
                }
                if let Err(e) = beats.apply(&hb) {
                    return self.fail(0, e.code, e.detail);
                }
                self.shared.metrics.heartbeats_tcp.inc();
                match hb.status {
                    Some(status) => {
                        let session = *session;
                        self.set_status(0, session, status, None, now_ms, false)
                    }
                    None => Flow::Continue,
                }
            }
            Message::SetStatus { req, session, status, text } => {
                let target = match (&mut self.phase, session) {
                    (Phase::Client { session, beats, .. }, None) => {
                        // Gateways act for many users and are trusted (SPEC.md §12.1): only
                        // client sessions are rate limited.
                        if !self.statuses.take(self.shared.limits.status_rate(), now_ms) {
                            return self.fail(req, ErrorCode::RateLimited, "too many status changes");
                        }
                        beats.status = status;
                        *session
                    }
                    (Phase::Gateway, Some(session)) => session,
                    _ => return self.fail(req, ErrorCode::Forbidden, "session field is for gateways only"),
                };
                self.set_status(req, target, status, Some(text), now_ms, true)
            }
            Message::Watch { req, users } => self.watch(req, users, now_ms),
            Message::Unwatch { req, users } => {
                for user in users {
                    if self.watches.remove(&user) {
                        self.shared.presence.unwatch(user, self.id);
                    }
                }
                self.outbox.send(Message::Ok { req });
                Flow::Continue
            }
            Message::Query { req, users } => {
                let entries = users.iter().map(|&user| self.shared.entry(self.viewer(), user, now_ms)).collect();
                self.outbox.send(Message::Presence { req, entries });
                Flow::Continue
            }
            Message::Stats { req } => {
                self.outbox.send(Message::StatsReply { req, stats: self.shared.stats() });
                Flow::Continue
            }
            Message::Open { req, entries } if gateway => self.open(req, &entries, now_ms),
            Message::Close { req, sessions } if gateway => self.close_sessions(req, &sessions, now_ms),
            Message::BatchHeartbeat(batch) if gateway => self.batch(&batch, now_ms),
            Message::Open { req, .. } | Message::Close { req, .. } => {
                self.fail(req, ErrorCode::Forbidden, "gateway-only message")
            }
            Message::BatchHeartbeat(_) => self.fail(0, ErrorCode::Forbidden, "gateway-only message"),
            msg @ (Message::Publish { .. }
            | Message::Delete { .. }
            | Message::Graph { .. }
            | Message::Timeline { .. }
            | Message::Live { .. }) => self.feed_request(msg, now_ms),
            // Server-only types were refused before decoding.
            _ => self.fail(0, ErrorCode::Unexpected, "unexpected frame type"),
        }
    }

    /// Hands a feed request to this connection's feed task, in order.
    fn feed_request(&mut self, msg: Message, now_ms: u64) -> Flow {
        let req = match &msg {
            Message::Publish { req, .. }
            | Message::Delete { req, .. }
            | Message::Graph { req, .. }
            | Message::Timeline { req, .. }
            | Message::Live { req, .. } => *req,
            _ => 0,
        };
        let Phase::Client { user, .. } = self.phase else {
            return self.fail(req, ErrorCode::Forbidden, "the feed is for client sessions");
        };
        if matches!(msg, Message::Publish { .. }) && !self.posts.take(self.shared.limits.post_rate(), now_ms) {
            return self.fail(req, ErrorCode::RateLimited, "too many posts");
        }
        let (shared, id, outbox) = (&self.shared, self.id, &self.outbox);
        let session = self.feed.get_or_insert_with(|| FeedSession::start(shared.clone(), user, id, outbox.clone()));
        match session.submit(msg) {
            Ok(()) => Flow::Continue,
            Err(code) => self.fail(req, code, "too many feed requests in flight"),
        }
    }

    fn viewer(&self) -> Viewer {
        match self.phase {
            Phase::Client { user, .. } => Viewer::User(user),
            _ => Viewer::Anyone,
        }
    }

    fn hello(&mut self, hello: Hello, now_ms: u64) -> Flow {
        let claims = match self.shared.keyring.verify(&hello.token, now_ms / 1000) {
            Ok(claims) => claims,
            Err(e) => return self.fail(0, e.code(), e.to_string()),
        };
        let udp = hello.want_udp && self.shared.udp_port != 0;
        let (session, udp_peer) = match (hello.role, claims.subject) {
            (Role::Client, Subject::User(user)) => {
                let resumed =
                    hello.resume != 0 && self.shared.presence.resume(hello.resume, user, self.id, udp, now_ms);
                let session = if resumed {
                    hello.resume
                } else {
                    match self.shared.presence.open(user, Status::Online, self.id, udp, now_ms) {
                        Ok((session, change)) => {
                            self.shared.deliver(change);
                            session
                        }
                        Err(SessionError::TooManySessions) => {
                            self.outbox.close(Some(error(0, ErrorCode::LimitExceeded, "too many sessions")));
                            return Flow::Close;
                        }
                        Err(_) => return self.fail(0, ErrorCode::Internal, "no session slot left"),
                    }
                };
                let interval = self.shared.heartbeat_interval_ms();
                self.phase = Phase::Client { user, session, beats: HeartbeatState::new(interval) };
                (session, UdpPeer::Session)
            }
            (Role::Gateway, Subject::Gateway(_)) => {
                self.phase = Phase::Gateway;
                (u64::from(self.id), UdpPeer::Gateway)
            }
            _ => return self.fail(0, ErrorCode::BadToken, "token does not fit the role"),
        };
        self.shared.register(self.id, self.outbox.clone(), self.viewer(), &self.phase_session(), udp_peer, udp);
        let udp_key = if udp { self.shared.udp_keys.derive(udp_peer, session, self.id) } else { [0; 16] };
        self.outbox.send(Message::Welcome(Welcome {
            version: hello.version.min(VERSION),
            session,
            heartbeat_interval_ms: self.shared.heartbeat_interval_ms(),
            ttl_ms: self.shared.presence_config.ttl_ms,
            server_time_ms: now_ms,
            max_frame: self.shared.config.limits.max_frame as u32,
            udp_port: if udp { self.shared.udp_port } else { 0 },
            udp_key,
        }));
        Flow::Continue
    }

    fn phase_session(&self) -> Option<SessionId> {
        match self.phase {
            Phase::Client { session, .. } => Some(session),
            _ => None,
        }
    }

    fn bye(&mut self, now_ms: u64) -> Flow {
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Client { session, .. } => {
                if let Ok(change) = self.shared.presence.close(session, self.id, now_ms) {
                    self.shared.deliver(change);
                }
            }
            Phase::Gateway => {
                for session in self.shared.presence.sessions_of(self.id) {
                    if let Ok(change) = self.shared.presence.close(session, self.id, now_ms) {
                        self.shared.deliver(change);
                    }
                }
            }
            Phase::AwaitHello | Phase::Done => {}
        }
        self.outbox.close(None);
        Flow::Close
    }

    fn set_status(
        &mut self,
        req: u64,
        session: SessionId,
        status: Status,
        text: Option<Text>,
        now_ms: u64,
        reply: bool,
    ) -> Flow {
        // Status text outlives this frame: copy it out of the read buffer.
        let text = text.map(|t| Text::from(t.as_str()));
        match self.shared.presence.set_status(session, self.id, status, text, now_ms) {
            Ok(change) => {
                self.shared.deliver(change);
                if reply {
                    self.outbox.send(Message::Ok { req });
                }
                Flow::Continue
            }
            Err(SessionError::NotOwner) => self.fail(req, ErrorCode::Forbidden, "not your session"),
            Err(_) => self.fail(req, ErrorCode::NotFound, "no such session"),
        }
    }

    fn watch(&mut self, req: u64, users: Vec<u64>, now_ms: u64) -> Flow {
        let new: HashSet<u64> = users.iter().copied().filter(|u| !self.watches.contains(u)).collect();
        if self.watches.len() + new.len() > self.shared.limits.max_watch() {
            return self.fail(req, ErrorCode::LimitExceeded, "watch set over its limit");
        }
        for user in new {
            self.shared.presence.watch(user, self.id);
            self.watches.insert(user);
        }
        let entries = users.iter().map(|&user| self.shared.entry(self.viewer(), user, now_ms)).collect();
        self.outbox.send(Message::Presence { req, entries });
        Flow::Continue
    }

    fn open(&mut self, req: u64, entries: &[OpenEntry], now_ms: u64) -> Flow {
        // All or nothing: a refused OPEN changes nothing (SPEC.md §4.21).
        let opened = self.shared.presence.open_all(entries.iter().map(|e| (e.user, e.status)), self.id, now_ms);
        let Ok((sessions, changes)) = opened else {
            return self.fail(req, ErrorCode::LimitExceeded, "cannot open every session");
        };
        changes.into_iter().for_each(|c: Change| self.shared.deliver(Some(c)));
        self.outbox.send(Message::Opened { req, sessions });
        Flow::Continue
    }

    fn close_sessions(&mut self, req: u64, sessions: &[SessionId], now_ms: u64) -> Flow {
        for &session in sessions {
            match self.shared.presence.close(session, self.id, now_ms) {
                Ok(change) => self.shared.deliver(change),
                Err(SessionError::NotOwner) => return self.fail(req, ErrorCode::Forbidden, "not your session"),
                Err(_) => {}
            }
        }
        self.outbox.send(Message::Ok { req });
        Flow::Continue
    }

    fn batch(&mut self, batch: &Batch, now_ms: u64) -> Flow {
        let unknown = self.shared.apply_batch(self.id, batch.view().iter(), now_ms);
        self.shared.metrics.heartbeats_batch.add(batch.len() as u64);
        if unknown > 0 {
            return self.fail(0, ErrorCode::NotFound, format!("{unknown} unknown sessions in batch"));
        }
        Flow::Continue
    }

    /// The connection is gone: its sessions enter their grace window (unless
    /// BYE ended them), its watches end.
    pub fn on_close(&mut self, now_ms: u64) {
        let presence = &self.shared.presence;
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Client { session, .. } => {
                let _ = presence.detach(session, self.id, now_ms);
            }
            Phase::Gateway => {
                for session in presence.sessions_of(self.id) {
                    let _ = presence.detach(session, self.id, now_ms);
                }
            }
            Phase::AwaitHello | Phase::Done => {}
        }
        for user in self.watches.drain() {
            presence.unwatch(user, self.id);
        }
        self.shared.conns.remove(&self.id);
    }
}
