//! One shard of the presence state: some users, all of their sessions, and
//! the expiry wheel of those sessions, under one lock.
//!
//! A user and every session of that user live in the same shard, so each
//! operation takes exactly one lock. The one exception is a gateway's OPEN
//! ([`super::Presence::open_all`]), which holds the shards it touches
//! together, taken in ascending order.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::slab::Slab;
use super::{Change, Lookup};
use heartline_proto::udp::ReplayWindow;
use heartline_proto::{Status, Text};

/// End of a wheel bucket list.
const NIL: u32 = u32::MAX;
/// Buckets in the expiry wheel; at 100 ms a tick that is 102 s, longer than
/// a default TTL, so most sessions are looked at once per TTL.
const WHEEL: u32 = 1024;

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    #[default]
    Free,
    Active,
    /// Connection lost; still counted until the grace window ends.
    Grace,
    /// Ended but still linked in a wheel bucket; freed when that bucket fires.
    Ended,
}

/// 20 bytes: the budget is 64 bytes per session, user included.
#[derive(Clone, Copy, Default)]
struct SessionRecord {
    /// Slot of the user record in this shard.
    user: u32,
    /// The connection that owns the session.
    owner: u32,
    /// Tick at which the session expires (TTL, or the end of its grace window).
    deadline: u32,
    /// Next session in the same wheel bucket.
    next: u32,
    status: Status,
    state: State,
    udp: bool,
}

/// 24 bytes.
#[derive(Clone, Copy, Default)]
struct UserRecord {
    id: u64,
    version: u64,
    /// Tick of the last change of what others see (online since, idle since).
    since: u32,
    /// Live and grace sessions per settable status (online, away, busy, invisible).
    counts: [u8; 4],
}

impl UserRecord {
    fn sessions(&self) -> u32 {
        self.counts.iter().map(|&c| u32::from(c)).sum()
    }

    /// What everyone but the user sees: busy > online > away; invisible
    /// sessions do not count.
    fn public(&self) -> Status {
        let [online, away, busy, _] = self.counts;
        if busy > 0 {
            Status::Busy
        } else if online > 0 {
            Status::Online
        } else if away > 0 {
            Status::Away
        } else {
            Status::Offline
        }
    }

    /// What the user sees of themself.
    fn own(&self) -> Status {
        match self.public() {
            Status::Offline if self.counts[3] > 0 => Status::Invisible,
            public => public,
        }
    }

    fn count_mut(&mut self, status: Status) -> &mut u8 {
        &mut self.counts[status as usize - 1]
    }
}

/// The current time, as a wheel tick and in unix milliseconds.
#[derive(Clone, Copy)]
pub(crate) struct Now {
    pub tick: u32,
    pub ms: u64,
}

/// Versions are `ms << VERSION_SHIFT` plus a count: up to 65,535 changes of
/// one user within one millisecond stay ordered.
const VERSION_SHIFT: u32 = 16;

pub(crate) struct Timing {
    pub tick_ms: u64,
    pub base_ms: u64,
    pub ttl: u32,
    pub grace: u32,
    pub max_sessions_per_user: u8,
}

impl Timing {
    pub(super) fn ms(&self, tick: u32) -> u64 {
        self.base_ms + u64::from(tick) * self.tick_ms
    }
}

/// Why a session operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no such session")]
    NotFound,
    #[error("session belongs to another connection")]
    NotOwner,
    #[error("too many sessions for this user")]
    TooManySessions,
    #[error("session space exhausted")]
    Exhausted,
}

#[derive(Default)]
pub(crate) struct Shard {
    users: Slab<UserRecord>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    texts: HashMap<u32, Text>,
    sessions: Slab<SessionRecord>,
    wheel: Vec<u32>,
    wheel_now: u32,
    grace: VecDeque<(u32, u32, u32)>,
    windows: HashMap<u32, ReplayWindow>,
    pub(super) watchers: HashMap<u64, Vec<u32>>,
    /// Users gone offline whose last seen the store has not confirmed yet:
    /// (last seen ms, version).
    offline: HashMap<u64, (u64, u64)>,
    live_sessions: u32,
    online_users: u32,
}

/// A session about to be opened.
pub(super) struct Opening {
    pub(super) user: u64,
    pub(super) status: Status,
    /// The connection that owns it.
    pub(super) owner: u32,
    pub(super) udp: bool,
    /// A slot it must not get (see [`super::Presence::open`]).
    pub(super) avoid: Option<u32>,
}

impl Shard {
    pub(super) fn new(now: u32) -> Self {
        Self { wheel: vec![NIL; WHEEL as usize], wheel_now: now, ..Self::default() }
    }

    fn find_user(&self, id: u64) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        let users = &self.users;
        self.index.find(hash, |&slot| users.get(slot).is_some_and(|u| u.id == id)).copied()
    }

    fn user_or_insert(&mut self, id: u64, now: Now) -> Option<u32> {
        if let Some(slot) = self.find_user(id) {
            return Some(slot);
        }
        // Versions follow the clock, so a user who comes back after their
        // record was dropped (or after a restart) still gets larger ones:
        // above anything stamped in this millisecond or before.
        let after_offline = self.offline.get(&id).map_or(0, |&(_, version)| version + 1);
        let version = ((now.ms + 1) << VERSION_SHIFT).max(after_offline);
        let slot = self.users.insert(UserRecord { id, version, since: now.tick, counts: [0; 4] })?;
        let hash = self.hasher.hash_one(id);
        let (users, hasher) = (&self.users, &self.hasher);
        self.index.insert_unique(hash, slot, |&s| hasher.hash_one(users.get(s).map_or(0, |u| u.id)));
        Some(slot)
    }

    fn drop_user(&mut self, slot: u32) {
        let Some(user) = self.users.get(slot).copied() else { return };
        let hash = self.hasher.hash_one(user.id);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.texts.remove(&slot);
        self.users.remove(slot);
    }

    fn schedule(&mut self, slot: u32, deadline: u32) {
        let at = deadline.clamp(self.wheel_now + 1, self.wheel_now + WHEEL - 1);
        let bucket = (at % WHEEL) as usize;
        if let Some(rec) = self.sessions.get_mut(slot) {
            rec.next = self.wheel[bucket];
            self.wheel[bucket] = slot;
        }
    }

    /// Applies `edit` to one user's counts and text, and reports a change of
    /// what others see. Drops the user record when no session is left.
    fn update_user(
        &mut self,
        user_slot: u32,
        now: Now,
        since: u32,
        timing: &Timing,
        edit: impl FnOnce(&mut UserRecord, &mut HashMap<u32, Text>),
    ) -> Option<Change> {
        let texts = &mut self.texts;
        let user = self.users.get_mut(user_slot)?;
        let visible_text = |status: Status, texts: &HashMap<u32, Text>| match status {
            Status::Offline => Text::default(),
            _ => texts.get(&user_slot).cloned().unwrap_or_default(),
        };
        let (old_status, old_text) = (user.public(), visible_text(user.public(), texts));
        edit(user, texts);
        let (status, text) = (user.public(), visible_text(user.public(), texts));
        let mut change = None;
        if status != old_status || text != old_text {
            if status != old_status {
                user.since = since;
                match (old_status, status) {
                    (Status::Offline, _) => self.online_users += 1,
                    (_, Status::Offline) => self.online_users -= 1,
                    _ => {}
                }
            }
            user.version = (user.version + 1).max(now.ms << VERSION_SHIFT);
            let last_seen_ms = timing.ms(user.since);
            if status == Status::Offline {
                self.offline.insert(user.id, (last_seen_ms, user.version));
            }
            change = Some(Change {
                user: user.id,
                status,
                own: user.own(),
                version: user.version,
                last_seen_ms,
                text,
                watchers: self.watchers.get(&user.id).cloned().unwrap_or_default(),
            });
        }
        if user.sessions() == 0 {
            self.drop_user(user_slot);
        }
        change
    }

    /// Whether one more session for each element of `users` (the same user
    /// may appear several times, for several devices) fits: every user stays
    /// within the per-user cap, counting the sessions they hold (live or in
    /// grace), and the slabs have a slot for every new session and new user.
    /// Changes nothing; sorts `users`.
    ///
    /// Once it has passed, [`Self::open_checked`] for those users cannot
    /// fail, as long as the shard's lock is held in between.
    pub(super) fn check_open(&self, users: &mut [u64], timing: &Timing) -> Result<(), SessionError> {
        users.sort_unstable();
        let mut new_users = 0u64;
        for run in users.chunk_by(|a, b| a == b) {
            let held = match self.find_user(run[0]).and_then(|slot| self.users.get(slot)) {
                Some(user) => user.sessions() as usize,
                None => {
                    new_users += 1;
                    0
                }
            };
            if held + run.len() > usize::from(timing.max_sessions_per_user) {
                return Err(SessionError::TooManySessions);
            }
        }
        if self.sessions.room() < users.len() as u64 || self.users.room() < new_users {
            return Err(SessionError::Exhausted);
        }
        Ok(())
    }

    pub(super) fn open(
        &mut self,
        opening: Opening,
        now: Now,
        timing: &Timing,
    ) -> Result<(u32, Option<Change>), SessionError> {
        self.check_open(&mut [opening.user], timing)?;
        Ok(self.open_checked(opening, now, timing))
    }

    /// Opens a session that [`Self::check_open`] has made sure of, under the
    /// same lock: it cannot fail.
    pub(super) fn open_checked(&mut self, opening: Opening, now: Now, timing: &Timing) -> (u32, Option<Change>) {
        const CHECKED: &str = "check_open counted a free slot for this";
        let Opening { user, status, owner, udp, avoid } = opening;
        let user_slot = self.user_or_insert(user, now).expect(CHECKED);
        let record = SessionRecord {
            user: user_slot,
            owner,
            deadline: now.tick + timing.ttl,
            next: NIL,
            status,
            state: State::Active,
            udp,
        };
        let slot = self.sessions.insert_avoiding(record, avoid).expect(CHECKED);
        self.schedule(slot, now.tick + timing.ttl);
        self.live_sessions += 1;
        let change = self.update_user(user_slot, now, now.tick, timing, |u, _| *u.count_mut(status) += 1);
        (slot, change)
    }

    fn owned(&mut self, slot: u32, owner: u32) -> Result<&mut SessionRecord, SessionError> {
        let rec = self.sessions.get_mut(slot).filter(|r| r.state == State::Active).ok_or(SessionError::NotFound)?;
        if rec.owner != owner {
            return Err(SessionError::NotOwner);
        }
        Ok(rec)
    }

    /// The user of a live session owned by `owner`.
    pub(super) fn user_of(&self, slot: u32, owner: u32) -> Result<u64, SessionError> {
        let rec = self.sessions.get(slot).filter(|r| r.state == State::Active).ok_or(SessionError::NotFound)?;
        if rec.owner != owner {
            return Err(SessionError::NotOwner);
        }
        self.users.get(rec.user).map(|u| u.id).ok_or(SessionError::NotFound)
    }

    pub(super) fn heartbeat(&mut self, slot: u32, owner: u32, now: Now, timing: &Timing) -> Result<(), SessionError> {
        self.owned(slot, owner)?.deadline = now.tick + timing.ttl;
        Ok(())
    }

    /// Sets a session's status, and the user's text when `text` is given.
    pub(super) fn set_status(
        &mut self,
        slot: u32,
        owner: u32,
        status: Status,
        text: Option<Text>,
        now: Now,
        timing: &Timing,
    ) -> Result<Option<Change>, SessionError> {
        let rec = self.owned(slot, owner)?;
        rec.deadline = now.tick + timing.ttl;
        let old = std::mem::replace(&mut rec.status, status);
        let user_slot = rec.user;
        Ok(self.update_user(user_slot, now, now.tick, timing, |u, texts| {
            *u.count_mut(old) -= 1;
            *u.count_mut(status) += 1;
            match text {
                Some(text) if !text.is_empty() => {
                    texts.insert(user_slot, text);
                }
                Some(_) => {
                    texts.remove(&user_slot);
                }
                None => {}
            }
        }))
    }

    /// Ends a session now. `linked` sessions stay in their wheel bucket until
    /// it fires; unlinked ones (just popped from it) are freed at once.
    fn end(&mut self, slot: u32, since: u32, now: Now, linked: bool, timing: &Timing) -> Option<Change> {
        let rec = self.sessions.get_mut(slot)?;
        let (user_slot, status) = (rec.user, rec.status);
        if linked {
            rec.state = State::Ended;
        } else {
            rec.state = State::Free;
            self.sessions.remove(slot);
        }
        self.windows.remove(&slot);
        self.live_sessions -= 1;
        self.update_user(user_slot, now, since, timing, |u, _| *u.count_mut(status) -= 1)
    }

    /// BYE or CLOSE: the session ends at once.
    pub(super) fn close(
        &mut self,
        slot: u32,
        owner: u32,
        now: Now,
        timing: &Timing,
    ) -> Result<Option<Change>, SessionError> {
        self.owned(slot, owner)?;
        Ok(self.end(slot, now.tick, now, true, timing))
    }

    /// Ends every session of `user_id`, live or in its grace window, at
    /// once; returns them with their owners, and the change others see (the
    /// last one: the sessions end together, so no status in between shows).
    /// A scan of the shard's sessions: for rare, deliberate calls.
    pub(super) fn end_user(&mut self, user_id: u64, now: Now, timing: &Timing) -> (Vec<(u32, u32)>, Option<Change>) {
        let Some(user) = self.find_user(user_id) else { return (Vec::new(), None) };
        let ended: Vec<(u32, u32)> = (0..self.sessions.high_water())
            .filter_map(|slot| {
                let rec = self.sessions.get(slot)?;
                let live = matches!(rec.state, State::Active | State::Grace);
                (live && rec.user == user).then_some((slot, rec.owner))
            })
            .collect();
        let mut change = None;
        for &(slot, _) in &ended {
            change = self.end(slot, now.tick, now, true, timing).or(change);
        }
        (ended, change)
    }

    /// The owner's connection was lost: the session enters its grace window.
    pub(super) fn detach(&mut self, slot: u32, owner: u32, now: Now, timing: &Timing) -> Result<(), SessionError> {
        let rec = self.owned(slot, owner)?;
        let deadline = now.tick + timing.grace;
        rec.state = State::Grace;
        rec.deadline = deadline;
        self.grace.push_back((deadline, slot, owner));
        Ok(())
    }

    /// A session of `user_id` in its grace window moves to a new connection.
    pub(super) fn resume(&mut self, slot: u32, user_id: u64, owner: u32, udp: bool, now: Now, timing: &Timing) -> bool {
        let users = &self.users;
        let Some(rec) = self.sessions.get_mut(slot) else { return false };
        if rec.state != State::Grace || users.get(rec.user).map(|u| u.id) != Some(user_id) {
            return false;
        }
        rec.state = State::Active;
        rec.owner = owner;
        rec.udp = udp;
        rec.deadline = now.tick + timing.ttl;
        // A new owner means a new UDP key: its sequence numbers start over.
        self.windows.remove(&slot);
        true
    }

    /// Every active session of `owner`, for a gateway that left.
    pub(super) fn sessions_of(&self, owner: u32) -> Vec<u32> {
        (0..self.sessions.high_water())
            .filter(|&slot| self.sessions.get(slot).is_some_and(|r| r.state == State::Active && r.owner == owner))
            .collect()
    }

    /// Runs the UDP check `open` (tag and replay window) for a session that
    /// accepts UDP, then renews it and applies the status it carries.
    pub(super) fn udp_heartbeat<E>(
        &mut self,
        slot: u32,
        now: Now,
        timing: &Timing,
        open: impl FnOnce(u32, &mut ReplayWindow) -> Result<Option<Status>, E>,
        unknown: E,
    ) -> Result<Option<Change>, E> {
        let Some(rec) = self.sessions.get(slot).filter(|r| r.state == State::Active && r.udp) else {
            return Err(unknown);
        };
        let owner = rec.owner;
        let window = self.windows.entry(slot).or_default();
        match open(owner, window)? {
            Some(status) => Ok(self.set_status(slot, owner, status, None, now, timing).unwrap_or(None)),
            None => {
                let _ = self.heartbeat(slot, owner, now, timing);
                Ok(None)
            }
        }
    }

    /// Advances the wheel and the grace queue to `now`; reports changes and
    /// the sessions that expired.
    pub(super) fn tick(&mut self, now: Now, timing: &Timing, changes: &mut Vec<Change>, expired: &mut Vec<(u32, u32)>) {
        while let Some(&(at, slot, owner)) = self.grace.front() {
            if at > now.tick {
                break;
            }
            self.grace.pop_front();
            let Some(rec) = self.sessions.get(slot) else { continue };
            if rec.state == State::Grace && rec.owner == owner && rec.deadline <= now.tick {
                // Last seen is the moment the connection was lost.
                let lost_at = rec.deadline - timing.grace;
                changes.extend(self.end(slot, lost_at, now, true, timing));
            }
        }
        let steps = now.tick.saturating_sub(self.wheel_now).min(WHEEL);
        for _ in 0..steps {
            self.wheel_now += 1;
            let bucket = (self.wheel_now % WHEEL) as usize;
            let mut slot = std::mem::replace(&mut self.wheel[bucket], NIL);
            while slot != NIL {
                let Some(rec) = self.sessions.get(slot).copied() else { break };
                let next = rec.next;
                match rec.state {
                    State::Ended => {
                        if let Some(r) = self.sessions.get_mut(slot) {
                            r.state = State::Free;
                        }
                        self.sessions.remove(slot);
                    }
                    State::Active | State::Grace if rec.deadline <= now.tick => {
                        let since = if rec.state == State::Active {
                            rec.deadline - timing.ttl
                        } else {
                            rec.deadline - timing.grace
                        };
                        if rec.state == State::Active {
                            expired.push((slot, rec.owner));
                        }
                        changes.extend(self.end(slot, since, now, false, timing));
                    }
                    State::Active | State::Grace => self.schedule(slot, rec.deadline),
                    State::Free => {}
                }
                slot = next;
            }
        }
        self.wheel_now = self.wheel_now.max(now.tick);
    }

    pub(super) fn lookup(&self, user_id: u64, timing: &Timing) -> Option<Lookup> {
        let Some(user) = self.find_user(user_id).and_then(|slot| self.users.get(slot).map(|u| (slot, u))) else {
            let &(last_seen_ms, version) = self.offline.get(&user_id)?;
            return Some(Lookup { version, last_seen_ms, ..Lookup::default() });
        };
        let (slot, user) = user;
        Some(Lookup {
            status: user.public(),
            own: user.own(),
            version: user.version,
            last_seen_ms: timing.ms(user.since),
            text: self.texts.get(&slot).cloned().unwrap_or_default(),
        })
    }

    /// Whether `conn` is the user's first watcher.
    pub(super) fn watch(&mut self, user: u64, conn: u32) -> bool {
        let list = self.watchers.entry(user).or_default();
        let first = list.is_empty();
        if !list.contains(&conn) {
            list.push(conn);
        }
        first
    }

    /// Whether the user's last watcher left.
    pub(super) fn unwatch(&mut self, user: u64, conn: u32) -> bool {
        let Some(list) = self.watchers.get_mut(&user) else { return false };
        list.retain(|&c| c != conn);
        let last = list.is_empty();
        if last {
            self.watchers.remove(&user);
        }
        last
    }

    pub(super) fn counts(&self) -> (u64, u64, u64) {
        let watches = self.watchers.values().map(|w| w.len() as u64).sum();
        (u64::from(self.online_users), u64::from(self.live_sessions), watches)
    }

    pub(super) fn pending_last_seen(&self, out: &mut Vec<(u64, u64)>) {
        out.extend(self.offline.iter().map(|(&user, &(last_seen, _))| (user, last_seen)));
    }

    /// Drops pending entries the store now holds (unless they changed since).
    pub(super) fn forget_last_seen(&mut self, user: u64, last_seen: u64) {
        if self.offline.get(&user).is_some_and(|&(pending, _)| pending == last_seen) {
            self.offline.remove(&user);
        }
    }

    /// Every visible user's last seen as of `now_ms`, for a clean shutdown.
    pub(super) fn online_last_seen(&self, now_ms: u64, out: &mut Vec<(u64, u64)>) {
        for slot in self.index.iter() {
            if let Some(user) = self.users.get(*slot).filter(|u| u.public() != Status::Offline) {
                out.push((user.id, now_ms));
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.users.heap_bytes()
            + self.sessions.heap_bytes()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.wheel.capacity() * 4
    }
}
