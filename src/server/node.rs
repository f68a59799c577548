//! What every connection's machine works against: presence, the social
//! graph's block list, token checks, UDP keys, limits and the registry of
//! connections, as one [`Env`] built in `start` (the composition root);
//! and the admin API's server-side sessions, which are presence too.
//!
//! Owns nothing of its own but the wiring; it must not hold the store's
//! writers, the feed's fanout or the admin's state — those are handles of
//! their own — and must not block: the one store read a connection needs
//! (offline users' last seen) is a [`Effect::Lookup`] the shell answers off
//! the runtime.
//!
//! [`Effect::Lookup`]: heartline_core::conn::Effect::Lookup

use std::sync::{Arc, OnceLock};

use heartline_core::conn::{Env, Limits as ConnLimits, Owner, RouteMap, WelcomeSettings};
use heartline_core::feed::Feed;
use heartline_core::presence::{BlockList, Change, Presence, SessionId, View};
use heartline_proto::auth::{AuthError, Claims, UdpKeys, UdpPeer};
use heartline_proto::udp::Key;
use heartline_proto::Stats;

use super::api_sessions::ApiSessions;
use super::jwt::{is_jwt, JwtSlot};
use super::outbox::Interrupt;
use super::registry::Registry;
use super::reload::{Keys, Limits};
use crate::cluster::presence::{Local, Remote};
use crate::metrics::Metrics;
use crate::store::Store;

pub(crate) struct Node {
    pub(crate) presence: Presence,
    /// The social graph, which is presence's block list too.
    pub(crate) feed: Arc<Feed>,
    pub(crate) keys: Arc<Keys>,
    /// `[jwt]`, swapped by a reload.
    pub(crate) jwt: Arc<JwtSlot>,
    pub(crate) udp_keys: UdpKeys,
    /// 0 when UDP is off.
    pub(crate) udp_port: u16,
    pub(crate) welcome: WelcomeSettings,
    pub(crate) limits: Arc<Limits>,
    pub(crate) registry: Arc<Registry>,
    /// Sessions the admin API opened, with no connection behind them.
    pub(crate) api_sessions: ApiSessions,
    pub(crate) metrics: Arc<Metrics>,
    /// Read for the last seen of users not in memory, off the runtime.
    pub(crate) last_seen: Store,
    /// The cluster shell once started; unset on a single node.
    pub(crate) cluster: OnceLock<crate::cluster::Cluster>,
    /// What CLUSTER_MAP answers on a single node: this node alone.
    pub(crate) alone: heartline_proto::MapMember,
    /// In a cluster: presence of users other nodes own (set once joined up).
    pub(crate) remote: OnceLock<Arc<Remote>>,
}

impl Node {
    /// Carries a presence change to the connections watching its user.
    pub(crate) fn deliver(&self, change: Change) {
        if let Some(remote) = self.remote.get() {
            remote.publish(&change);
        }
        self.registry.deliver(change, &*self.feed, &self.metrics);
    }

    /// `session`, owned by `owner`, ended outside its owner (`Expired` by
    /// the presence wheel, `Disconnected` by the admin API): the owner — a
    /// server-side session's record or a client connection — is told.
    pub(crate) fn session_ended(&self, session: SessionId, owner: u32, why: Interrupt) {
        if !self.api_sessions.ended(owner) {
            self.registry.session_ended(session, owner, why);
        }
    }

    /// The totals STATS and the admin API report.
    pub(crate) fn stats(&self) -> Stats {
        let totals = self.presence.totals();
        Stats {
            online_users: totals.online_users,
            sessions: totals.sessions,
            watches: totals.watches,
            connections: self.registry.len() as u64,
        }
    }
}

impl Env for Node {
    fn presence(&self) -> &Presence {
        &self.presence
    }

    fn blocks(&self) -> &dyn BlockList {
        &*self.feed
    }

    fn verify(&self, token: &[u8], now_s: u64) -> Result<Claims, AuthError> {
        // A JWT starts with `e` (its header is base64url JSON), a binary token with its version byte.
        if !is_jwt(token) {
            return self.keys.verify(token, now_s);
        }
        self.jwt.verify(token, now_s).map_err(|e| {
            tracing::debug!(error = %e, "JWT refused");
            e.auth()
        })
    }

    fn udp_key(&self, peer: UdpPeer, id: u64, owner: u32) -> Option<Key> {
        (self.udp_port != 0).then(|| self.udp_keys.derive(peer, id, owner))
    }

    fn udp_port(&self) -> u16 {
        self.udp_port
    }

    fn welcome(&self) -> WelcomeSettings {
        self.welcome
    }

    fn watched(&self, user: u64, first: bool) {
        if let Some(remote) = self.remote.get() {
            remote.watched(user, first);
        }
    }

    fn limits(&self) -> ConnLimits {
        ConnLimits {
            max_watch: self.limits.max_watch(),
            status_rate: self.limits.status_rate(),
            post_rate: self.limits.post_rate(),
        }
    }

    fn owner_of(&self, user: u64) -> Option<Owner> {
        self.cluster.get()?.owner_of(user)
    }

    fn cluster_map(&self) -> RouteMap {
        match self.cluster.get() {
            Some(cluster) => cluster.route_map(),
            None => RouteMap { version: 0, partitions: 1, members: vec![self.alone.clone()] },
        }
    }
}

/// What the cluster's presence shell reads and delivers here.
impl Local for Node {
    fn lookup(&self, user: u64) -> Option<View> {
        self.presence.lookup(user)
    }

    fn stored_last_seen(&self, user: u64) -> Option<u64> {
        self.last_seen.last_seen(user).ok().flatten()
    }

    fn deliver_view(&self, user: u64, view: View) {
        let watchers = self.presence.watchers(user);
        let View { status, own, version, last_seen_ms, text } = view;
        let change = Change { user, status, own, version, last_seen_ms, text, watchers };
        self.registry.deliver(change, &*self.feed, &self.metrics);
    }
}
