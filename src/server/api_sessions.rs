//! Server-side presence sessions: the ones the admin API opens for a user
//! on the application's behalf (a call in progress, a bot), with no
//! connection behind them.
//!
//! Owns which user has such a session. Each user has at most one; it is a
//! session like any other — it counts in the user's aggregate, and expires
//! after the TTL unless the backend sets it again (a PUT renews it), so a
//! backend that dies leaves no user online for ever. Each is owned by an id
//! of its own from the registry's sequence of connection ids, which is
//! never reused while the daemon runs: a session id that was ended and
//! reused elsewhere is never mistaken for this user's (its owner differs),
//! and an expiry names the session's owner exactly. It must not outlive
//! the process (it lives in presence's memory, as connections' sessions do)
//! and must not block: calls take this map's lock and one presence shard.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use heartline_core::presence::{Change, Presence, SessionError, SessionId};
use heartline_proto::{Status, Text};

#[derive(Default)]
pub(crate) struct ApiSessions {
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    /// User → their session and its owner id.
    by_user: HashMap<u64, (SessionId, u32)>,
    /// Owner id → user (expiry and disconnects name the owner).
    by_owner: HashMap<u32, u64>,
}

impl Sessions {
    fn remove_user(&mut self, user: u64) -> Option<(SessionId, u32)> {
        let (session, owner) = self.by_user.remove(&user)?;
        self.by_owner.remove(&owner);
        Some((session, owner))
    }
}

impl ApiSessions {
    fn lock(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `user`'s server-side session to `status` and the user's text to
    /// `text`, renewing it, or opening one owned by `new_owner()` if there
    /// is none (or it ended). Returns the session and the change to deliver.
    pub(crate) fn set(
        &self,
        presence: &Presence,
        user: u64,
        status: Status,
        text: Text,
        now_ms: u64,
        new_owner: impl FnOnce() -> u32,
    ) -> Result<(SessionId, Option<Change>), SessionError> {
        let mut sessions = self.lock();
        if let Some(&(session, owner)) = sessions.by_user.get(&user) {
            match presence.set_status(session, owner, status, Some(text.clone()), now_ms) {
                Ok(change) => return Ok((session, change)),
                // Ended behind our back (expiry not yet told, a disconnect): open anew.
                Err(_) => _ = sessions.remove_user(user),
            }
        }
        let owner = new_owner();
        let (session, opened) = presence.open(user, status, owner, false, now_ms, 0)?;
        sessions.by_user.insert(user, (session, owner));
        sessions.by_owner.insert(owner, user);
        // The text follows in a second step; its change, if any, is the newer.
        let texted = presence.set_status(session, owner, status, Some(text), now_ms)?;
        Ok((session, texted.or(opened)))
    }

    /// Ends `user`'s server-side session: `None` when there was none, else
    /// the change to deliver.
    pub(crate) fn clear(&self, presence: &Presence, user: u64, now_ms: u64) -> Option<Option<Change>> {
        let (session, owner) = self.lock().remove_user(user)?;
        Some(presence.close(session, owner, now_ms).ok().flatten())
    }

    /// The session owned by `owner` ended (expiry, a disconnect); `false`
    /// when `owner` is not a server-side session's.
    pub(crate) fn ended(&self, owner: u32) -> bool {
        let mut sessions = self.lock();
        let Some(user) = sessions.by_owner.remove(&owner) else { return false };
        sessions.by_user.remove(&user);
        true
    }
}

#[cfg(test)]
mod tests {
    use heartline_core::presence::PresenceConfig;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn owners() -> impl FnMut() -> u32 {
        let mut next = 100;
        move || {
            next += 1;
            next
        }
    }

    fn presence() -> Presence {
        Presence::new(PresenceConfig { ttl_ms: 1_000, grace_ms: 500, max_sessions_per_user: 4 }, T0)
    }

    #[test]
    fn set_opens_once_then_renews_and_clear_ends_it() {
        let (p, api, mut owner) = (presence(), ApiSessions::default(), owners());
        let (first, change) = api.set(&p, 7, Status::Busy, "in a call".into(), T0, &mut owner).unwrap();
        let change = change.expect("the user comes online");
        assert_eq!((change.status, change.text.as_str()), (Status::Busy, "in a call"));
        let (again, _) = api.set(&p, 7, Status::Away, "".into(), T0 + 100, &mut owner).unwrap();
        assert_eq!(first, again, "renewed, not a second session");
        assert_eq!(p.totals().sessions, 1);
        assert_eq!(p.lookup(7).unwrap().status, Status::Away);

        let change = api.clear(&p, 7, T0 + 200).expect("there was one").expect("visible");
        assert_eq!(change.status, Status::Offline);
        assert_eq!(api.clear(&p, 7, T0 + 300), None, "nothing left");
        assert_eq!(api.lock().by_user.len(), 0);
    }

    #[test]
    fn an_expired_session_is_forgotten_and_set_opens_a_new_one() {
        let (p, api, mut owner) = (presence(), ApiSessions::default(), owners());
        let (session, _) = api.set(&p, 7, Status::Online, Text::default(), T0, &mut owner).unwrap();
        let expiry = p.tick(T0 + 2_000);
        assert_eq!(expiry.expired, [(session, 101)]);
        assert!(api.ended(101));
        assert!(!api.ended(101), "told once");
        assert_eq!(api.lock().by_user.len(), 0);
        let (_, change) = api.set(&p, 7, Status::Online, Text::default(), T0 + 2_100, &mut owner).unwrap();
        assert_eq!(change.map(|c| c.status), Some(Status::Online));
    }

    #[test]
    fn a_session_ended_elsewhere_is_replaced_not_reused() {
        let (p, api, mut owner) = (presence(), ApiSessions::default(), owners());
        let (old, _) = api.set(&p, 7, Status::Online, Text::default(), T0, &mut owner).unwrap();
        p.end_user(7, T0 + 10);
        // Once its wheel bucket has fired, its id goes to a session the user
        // opens from a connection (owner 55).
        assert!(p.tick(T0 + 1_500).expired.is_empty());
        let (reused, _) = p.open(7, Status::Away, 55, false, T0 + 1_500, 0).unwrap();
        assert_eq!(reused, old, "this test needs the id reused");
        // The map was not told: the next set finds the owner differs and opens its own.
        let (_, change) = api.set(&p, 7, Status::Busy, Text::default(), T0 + 1_600, &mut owner).unwrap();
        assert_eq!(change.map(|c| c.status), Some(Status::Busy));
        api.clear(&p, 7, T0 + 1_700);
        assert_eq!(p.lookup(7).unwrap().status, Status::Away, "the connection's session was never touched");
        assert_eq!(p.totals().sessions, 1);
    }
}
