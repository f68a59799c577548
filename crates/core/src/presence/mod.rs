//! Presence state: sessions per device, each user's aggregated status, expiry
//! of dead sessions, grace windows, and who watches whom.
//!
//! Sans-IO: every call takes the current time (`now_ms`, unix milliseconds)
//! and returns the [`Change`]s it caused; the server delivers them. Nothing
//! here touches a socket, reads a clock, or holds a lock across an `.await`
//! (there is none).
//!
//! # Layout in memory
//!
//! 64 shards, each a mutex over the users whose id hashes to it, all their
//! sessions, and an expiry wheel for those sessions, so every operation takes
//! one lock, except a gateway's OPEN ([`Presence::open_all`]), which holds
//! the shards it touches together. Records live in chunked slabs addressed
//! by dense `u32` slots; the user index is a `hashbrown::HashTable` of 4-byte
//! slots. A session costs 20 bytes and a user 24 plus ~8 bytes of index, so
//! 10M single-device users fit in about 55 bytes per session. A DashMap
//! keyed by id would cost ~70 bytes for the sessions alone at 10M (40-byte
//! buckets at the 0.6 load its power-of-two growth leaves there), over the
//! 64-byte budget.
//!
//! # Session ids
//!
//! `slot * 64 + shard + 1`: dense, so a gateway's sessions delta-encode into
//! a few bits each; never 0.
//!
//! # Expiry
//!
//! A session's deadline is a field renewed by each heartbeat (no wheel work).
//! Each shard's wheel (1024 buckets of [`TICK_MS`]) holds every session once,
//! in the bucket of the deadline it had when last scheduled; when a bucket
//! fires, sessions whose deadline moved are rescheduled and the rest expire.
//! A session is thus looked at about once per TTL, never on every tick.
//! Grace windows, all the same length, sit in a FIFO per shard.
//!
//! # Versions
//!
//! A user's version moves to `max(version + 1, now_ms << 16)` on every change
//! others can see, and a new record starts at `(now_ms + 1) << 16`, so
//! versions keep growing across restarts and after a user's record was
//! dropped, without being stored (as long as one user makes fewer than
//! 65,536 changes in a millisecond and the clock does not step back).
//!
//! The device kind of HELLO and OPEN is accepted but not stored: nothing
//! reads it yet, and the session record has no room to spare.

mod privacy;
mod shard;
mod slab;

use std::sync::Mutex;

pub use privacy::{blocked, entry_for, BlockList, View, Viewer};
pub use shard::SessionError;
use shard::{Now, Opening, Shard, Timing};

use heartline_proto::udp::ReplayWindow;
use heartline_proto::{Status, Text};

const SHARDS: usize = 64;
/// Expiry resolution.
pub const TICK_MS: u64 = 100;

/// A session id as it appears on the wire.
pub type SessionId = u64;

/// Presence timing and limits.
#[derive(Clone, Copy, Debug)]
pub struct PresenceConfig {
    pub ttl_ms: u32,
    pub grace_ms: u32,
    pub max_sessions_per_user: u8,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { ttl_ms: 90_000, grace_ms: 5_000, max_sessions_per_user: 32 }
    }
}

/// A change of what others see of one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub user: u64,
    /// Aggregate as others see it.
    pub status: Status,
    /// Aggregate as the user sees it.
    pub own: Status,
    pub version: u64,
    /// When what others see last changed status (online since, idle since, gone since).
    pub last_seen_ms: u64,
    pub text: Text,
    /// Connections watching this user.
    pub watchers: Vec<u32>,
}

impl Change {
    pub fn view(&self) -> View {
        View {
            status: self.status,
            own: self.own,
            version: self.version,
            last_seen_ms: self.last_seen_ms,
            text: self.text.clone(),
        }
    }
}

/// A user's presence as stored, for queries and watch snapshots.
pub type Lookup = View;

/// What one [`Presence::tick`] did.
#[derive(Debug, Default)]
pub struct Expiry {
    pub changes: Vec<Change>,
    /// Sessions whose TTL ran out, with their owners (so their connections can be closed).
    pub expired: Vec<(SessionId, u32)>,
}

/// Totals for STATS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub online_users: u64,
    pub sessions: u64,
    pub watches: u64,
}

pub struct Presence {
    shards: Box<[Mutex<Shard>]>,
    timing: Timing,
}

fn shard_of_user(user: u64) -> usize {
    // Fibonacci hashing: the top bits of a multiplicative hash.
    (user.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARDS.trailing_zeros())) as usize
}

fn session_id(shard: usize, slot: u32) -> SessionId {
    u64::from(slot) * SHARDS as u64 + shard as u64 + 1
}

fn split(session: SessionId) -> Option<(usize, u32)> {
    let raw = session.checked_sub(1)?;
    let slot = u32::try_from(raw / SHARDS as u64).ok()?;
    Some(((raw % SHARDS as u64) as usize, slot))
}

impl Presence {
    pub fn new(config: PresenceConfig, now_ms: u64) -> Self {
        // One tick more than the duration: `now` is rounded down to its tick,
        // so a deadline rounded this way is never before the exact one.
        let ticks = |ms: u32| (u64::from(ms).div_ceil(TICK_MS)) as u32 + 1;
        let timing = Timing {
            tick_ms: TICK_MS,
            base_ms: now_ms,
            ttl: ticks(config.ttl_ms),
            grace: ticks(config.grace_ms),
            max_sessions_per_user: config.max_sessions_per_user,
        };
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::new(0))).collect();
        Self { shards, timing }
    }

    fn now(&self, now_ms: u64) -> Now {
        let tick = u32::try_from(now_ms.saturating_sub(self.timing.base_ms) / TICK_MS).unwrap_or(u32::MAX);
        Now { tick, ms: now_ms }
    }

    fn shard(&self, index: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it half-updated in a way
        // worse than losing the daemon, so a poisoned lock is used as is.
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_session<T>(
        &self,
        session: SessionId,
        f: impl FnOnce(&mut Shard, u32) -> Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        let (shard, slot) = split(session).ok_or(SessionError::NotFound)?;
        f(&mut self.shard(shard), slot)
    }

    /// Opens a session for `user` owned by connection `owner`, with any id
    /// but `not`: the `resume` of a HELLO that resumed nothing, since a
    /// client tells a resumption by WELCOME `session` = `resume` (SPEC.md
    /// §6.7), and session ids repeat across restarts.
    pub fn open(
        &self,
        user: u64,
        status: Status,
        owner: u32,
        udp: bool,
        now_ms: u64,
        not: SessionId,
    ) -> Result<(SessionId, Option<Change>), SessionError> {
        let index = shard_of_user(user);
        let now = self.now(now_ms);
        let avoid = split(not).filter(|&(shard, _)| shard == index).map(|(_, slot)| slot);
        let (slot, change) = self.shard(index).open(Opening { user, status, owner, udp, avoid }, now, &self.timing)?;
        Ok((session_id(index, slot), change))
    }

    /// A gateway's OPEN (SPEC.md §4.21): opens one session owned by `owner`
    /// for each `(user, status)` entry, or none at all. The session ids come
    /// back in the order of the entries, and the changes in the order the
    /// same entries opened one by one with [`Self::open`] would give them
    /// (a user may be named several times, for several devices).
    ///
    /// Every entry is checked before anything changes: each user's sessions
    /// (live or in grace) plus the entries naming that user must stay within
    /// the per-user cap ([`SessionError::TooManySessions`]), and every shard
    /// must have slots for its new sessions and users
    /// ([`SessionError::Exhausted`]). A refused OPEN leaves no trace: no
    /// version, last seen, status, text or session count moves, and there is
    /// no change to deliver.
    ///
    /// Holds every shard the entries touch, taken in ascending order (so two
    /// OPENs cannot deadlock, and every other call takes one shard), from its
    /// check until its sessions are opened, so nothing can take the room it
    /// counted on; after the checks no step can fail. Gateway sub-sessions
    /// take no UDP of their own (the gateway's UDP BATCH renews them).
    pub fn open_all(
        &self,
        entries: impl IntoIterator<Item = (u64, Status)>,
        owner: u32,
        now_ms: u64,
    ) -> Result<(Vec<SessionId>, Vec<Change>), SessionError> {
        let now = self.now(now_ms);
        // (shard, entry index, user, status), by shard, in entry order within a shard.
        let mut plan: Vec<(usize, usize, u64, Status)> = entries
            .into_iter()
            .enumerate()
            .map(|(index, (user, status))| (shard_of_user(user), index, user, status))
            .collect();
        plan.sort_by_key(|&(shard, ..)| shard);
        let by_shard = |a: &(usize, usize, u64, Status), b: &(usize, usize, u64, Status)| a.0 == b.0;

        let mut guards = Vec::new();
        let mut users = Vec::new();
        for group in plan.chunk_by(by_shard) {
            let shard = self.shard(group[0].0);
            users.clear();
            users.extend(group.iter().map(|&(_, _, user, _)| user));
            // On refusal the guards taken so far are released, nothing changed.
            shard.check_open(&mut users, &self.timing)?;
            guards.push(shard);
        }

        let mut sessions = vec![0; plan.len()];
        let mut changes = Vec::new();
        for (group, mut shard) in plan.chunk_by(by_shard).zip(guards) {
            for &(index, entry, user, status) in group {
                let (slot, change) =
                    shard.open_checked(Opening { user, status, owner, udp: false, avoid: None }, now, &self.timing);
                sessions[entry] = session_id(index, slot);
                changes.extend(change.map(|change| (entry, change)));
            }
            // This shard is done: it is released before the next is opened.
        }
        changes.sort_unstable_by_key(|&(entry, _)| entry);
        Ok((sessions, changes.into_iter().map(|(_, change)| change).collect()))
    }

    /// The user of a live session owned by connection `owner`.
    pub fn user_of(&self, session: SessionId, owner: u32) -> Result<u64, SessionError> {
        self.with_session(session, |shard, slot| shard.user_of(slot, owner))
    }

    /// Renews a session (no allocation, one lock).
    pub fn heartbeat(&self, session: SessionId, owner: u32, now_ms: u64) -> Result<(), SessionError> {
        let now = self.now(now_ms);
        self.with_session(session, |shard, slot| shard.heartbeat(slot, owner, now, &self.timing))
    }

    /// Sets the session's status (renewing it) and, with `text`, the user's status text.
    pub fn set_status(
        &self,
        session: SessionId,
        owner: u32,
        status: Status,
        text: Option<Text>,
        now_ms: u64,
    ) -> Result<Option<Change>, SessionError> {
        let now = self.now(now_ms);
        self.with_session(session, |shard, slot| shard.set_status(slot, owner, status, text, now, &self.timing))
    }

    /// Ends a session at once (BYE, CLOSE).
    pub fn close(&self, session: SessionId, owner: u32, now_ms: u64) -> Result<Option<Change>, SessionError> {
        let now = self.now(now_ms);
        self.with_session(session, |shard, slot| shard.close(slot, owner, now, &self.timing))
    }

    /// Ends every session of `user` (live or in grace) at once, as the
    /// admin API's disconnect does: the ended sessions with their owners,
    /// and the one change to deliver. Scans the user's shard.
    pub fn end_user(&self, user: u64, now_ms: u64) -> (Vec<(SessionId, u32)>, Option<Change>) {
        let (index, now) = (shard_of_user(user), self.now(now_ms));
        let (ended, change) = self.shard(index).end_user(user, now, &self.timing);
        (ended.into_iter().map(|(slot, owner)| (session_id(index, slot), owner)).collect(), change)
    }

    /// The owner's connection was lost: the session enters its grace window.
    pub fn detach(&self, session: SessionId, owner: u32, now_ms: u64) -> Result<(), SessionError> {
        let now = self.now(now_ms);
        self.with_session(session, |shard, slot| shard.detach(slot, owner, now, &self.timing))
    }

    /// Moves a session of `user` that is in its grace window to connection
    /// `owner`, which may or may not take UDP.
    pub fn resume(&self, session: SessionId, user: u64, owner: u32, udp: bool, now_ms: u64) -> bool {
        let now = self.now(now_ms);
        self.with_session(session, |shard, slot| Ok(shard.resume(slot, user, owner, udp, now, &self.timing)))
            .unwrap_or(false)
    }

    /// Every active session owned by `owner` (a scan: for a gateway leaving).
    pub fn sessions_of(&self, owner: u32) -> Vec<SessionId> {
        let mut out = Vec::new();
        for index in 0..SHARDS {
            let slots = self.shard(index).sessions_of(owner);
            out.extend(slots.into_iter().map(|slot| session_id(index, slot)));
        }
        out
    }

    /// A UDP heartbeat for `session`: `open` verifies the datagram against the
    /// session's owner (for its key) and replay window, and returns the status
    /// it carries. `unknown` is the error for a session that takes no UDP.
    pub fn udp_heartbeat<E>(
        &self,
        session: SessionId,
        now_ms: u64,
        open: impl FnOnce(u32, &mut ReplayWindow) -> Result<Option<Status>, E>,
        unknown: E,
    ) -> Result<Option<Change>, E> {
        let Some((index, slot)) = split(session) else { return Err(unknown) };
        let now = self.now(now_ms);
        self.shard(index).udp_heartbeat(slot, now, &self.timing, open, unknown)
    }

    /// Expires what is due at `now_ms`. Call it every [`TICK_MS`].
    pub fn tick(&self, now_ms: u64) -> Expiry {
        let now = self.now(now_ms);
        let mut out = Expiry::default();
        let mut expired = Vec::new();
        for index in 0..SHARDS {
            self.shard(index).tick(now, &self.timing, &mut out.changes, &mut expired);
            out.expired.extend(expired.drain(..).map(|(slot, owner)| (session_id(index, slot), owner)));
        }
        out
    }

    /// The stored presence of a user with a session, or who went offline
    /// moments ago; `None` for the others (their last seen is in the durable
    /// store).
    pub fn lookup(&self, user: u64) -> Option<Lookup> {
        self.shard(shard_of_user(user)).lookup(user, &self.timing)
    }

    /// `conn` watches `user`: whether it is the user's first watcher.
    pub fn watch(&self, user: u64, conn: u32) -> bool {
        self.shard(shard_of_user(user)).watch(user, conn)
    }

    /// `conn` stops watching `user`: whether that was the user's last watcher.
    pub fn unwatch(&self, user: u64, conn: u32) -> bool {
        self.shard(shard_of_user(user)).unwatch(user, conn)
    }

    /// The connections watching `user` (to deliver a change made elsewhere).
    pub fn watchers(&self, user: u64) -> Vec<u32> {
        self.shard(shard_of_user(user)).watchers.get(&user).cloned().unwrap_or_default()
    }

    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for index in 0..SHARDS {
            let (online, sessions, watches) = self.shard(index).counts();
            totals.online_users += online;
            totals.sessions += sessions;
            totals.watches += watches;
        }
        totals
    }

    /// Users gone offline whose last seen the store has not confirmed, for
    /// the store. They stay readable here until [`Self::forget_last_seen`].
    pub fn pending_last_seen(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for index in 0..SHARDS {
            self.shard(index).pending_last_seen(&mut out);
        }
        out
    }

    /// The store holds these now.
    pub fn forget_last_seen(&self, written: &[(u64, u64)]) {
        for &(user, last_seen) in written {
            self.shard(shard_of_user(user)).forget_last_seen(user, last_seen);
        }
    }

    /// Every user others see online, seen at `now_ms`: written at shutdown.
    pub fn online_last_seen(&self, now_ms: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for index in 0..SHARDS {
            self.shard(index).online_last_seen(now_ms, &mut out);
        }
        out
    }

    /// Heap bytes of the session and user tables (not texts, windows, watches).
    pub fn heap_bytes(&self) -> usize {
        (0..SHARDS).map(|index| self.shard(index).heap_bytes()).sum()
    }
}

#[cfg(test)]
mod tests;
