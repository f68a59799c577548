//! Idempotency keys for the write API: a backend that sends a write again
//! with the same `Idempotency-Key` header (after a timeout, a lost
//! connection) gets the first answer again instead of a second post.
//!
//! Owns the remembered answers: per key, a fingerprint of the request
//! (method, path, query, body) and the response once there is one. A key
//! is remembered for [`KEEP`] or until [`CAPACITY`] newer keys push it
//! out, in this process's memory only (a restart forgets every key).
//! Answers with status 5xx are not kept, so a retry after UNAVAILABLE or
//! INTERNAL runs the write again. It must not decide what a write does:
//! it only says whether to run it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use sha2::{Digest, Sha256};

/// How long a key is remembered.
pub const KEEP: Duration = Duration::from_secs(24 * 3_600);
/// Most keys remembered at once; the oldest go first. Each costs its key,
/// a digest and a small JSON answer: about 0.5 KB, so 25 MB when full.
pub const CAPACITY: usize = 50_000;
/// Longest key accepted, in bytes of visible ASCII.
pub const MAX_KEY: usize = 255;

/// The request a key was first used for.
pub type Fingerprint = [u8; 32];

/// A request's fingerprint: a key reused for another request is refused.
pub fn fingerprint(method: &str, path: &str, query: Option<&str>, body: &[u8]) -> Fingerprint {
    let mut digest = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), query.unwrap_or("").as_bytes(), body] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().into()
}

/// Whether a header value is a usable key: 1 to [`MAX_KEY`] visible ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    (1..=MAX_KEY).contains(&key.len()) && key.iter().all(|b| b.is_ascii_graphic())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// What to do with a write that carries a key.
#[derive(Debug)]
pub enum Begin {
    /// Run it; hand the answer to [`Pending::finish`].
    Run(Pending),
    /// It ran already: answer this again.
    Replay(Answer),
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

#[derive(Default)]
pub struct Replays {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<Box<[u8]>, Entry>,
    /// Keys by age, oldest first; an entry here whose key was forgotten
    /// or reused since is skipped (its `at` differs).
    order: VecDeque<(Instant, Box<[u8]>)>,
}

struct Entry {
    at: Instant,
    fingerprint: Fingerprint,
    /// `None` while the first request runs.
    answer: Option<Answer>,
}

impl State {
    /// Forgets keys older than [`KEEP`], and the oldest beyond [`CAPACITY`].
    fn evict(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front() {
            let stale = now.duration_since(*at) >= KEEP || self.keys.len() > CAPACITY;
            let current = self.keys.get(key).is_some_and(|e| e.at == *at);
            if current && !stale {
                break;
            }
            if current {
                self.keys.remove(key);
            }
            self.order.pop_front();
        }
    }
}

impl Replays {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Looks `key` up for a request with `fingerprint`, at `now`.
    pub fn begin(self: &Arc<Self>, key: &[u8], fingerprint: Fingerprint, now: Instant) -> Begin {
        let mut state = self.lock();
        state.evict(now);
        match state.keys.get(key) {
            Some(entry) if entry.fingerprint != fingerprint => Begin::Mismatch,
            Some(Entry { answer: Some(answer), .. }) => Begin::Replay(answer.clone()),
            Some(_) => Begin::InFlight,
            None => {
                let key: Box<[u8]> = key.into();
                state.keys.insert(key.clone(), Entry { at: now, fingerprint, answer: None });
                state.order.push_back((now, key.clone()));
                Begin::Run(Pending { replays: self.clone(), key: Some(key) })
            }
        }
    }
}

/// A keyed write that is running. Dropped without [`Self::finish`] (the
/// client went away mid-request), it forgets the key: a retry runs again.
#[derive(Debug)]
pub struct Pending {
    replays: Arc<Replays>,
    key: Option<Box<[u8]>>,
}

impl std::fmt::Debug for Replays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replays(..)")
    }
}

impl Pending {
    /// Remembers the answer (unless it is a 5xx, which a retry should not get again).
    pub fn finish(mut self, answer: &Answer) {
        let Some(key) = self.key.take() else { return };
        let mut state = self.replays.lock();
        if answer.status.is_server_error() {
            state.keys.remove(&key);
        } else if let Some(entry) = state.keys.get_mut(&key) {
            entry.answer = Some(answer.clone());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.replays.lock().keys.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static str) -> Answer {
        Answer { status: StatusCode::from_u16(status).unwrap(), body: Bytes::from_static(body.as_bytes()) }
    }

    fn run(begin: Begin) -> Pending {
        match begin {
            Begin::Run(pending) => pending,
            other => panic!("expected to run: {other:?}"),
        }
    }

    #[test]
    fn a_repeated_write_gets_the_first_answer_and_another_request_is_refused() {
        let (replays, now) = (Arc::new(Replays::default()), Instant::now());
        let post = fingerprint("POST", "/v1/users/1/posts", None, br#"{"payload":"hi"}"#);
        let pending = run(replays.begin(b"k1", post, now));
        assert!(matches!(replays.begin(b"k1", post, now), Begin::InFlight));
        pending.finish(&answer(201, r#"{"post":"9"}"#));
        assert!(matches!(replays.begin(b"k1", post, now), Begin::Replay(a) if a == answer(201, r#"{"post":"9"}"#)));
        let other = fingerprint("POST", "/v1/users/1/posts", None, br#"{"payload":"ho"}"#);
        assert!(matches!(replays.begin(b"k1", other, now), Begin::Mismatch));
        run(replays.begin(b"k2", other, now)).finish(&answer(201, "{}"));
    }

    #[test]
    fn server_errors_and_abandoned_writes_are_forgotten() {
        let (replays, now) = (Arc::new(Replays::default()), Instant::now());
        let print = fingerprint("DELETE", "/v1/users/1/presence", None, b"");
        run(replays.begin(b"k", print, now)).finish(&answer(503, "{}"));
        drop(run(replays.begin(b"k", print, now)));
        run(replays.begin(b"k", print, now));
    }

    #[test]
    fn keys_expire_and_the_oldest_go_beyond_capacity() {
        let (replays, now) = (Arc::new(Replays::default()), Instant::now());
        let print = fingerprint("PUT", "/", None, b"");
        run(replays.begin(b"old", print, now)).finish(&answer(200, "{}"));
        assert!(matches!(replays.begin(b"old", print, now + KEEP - Duration::from_secs(1)), Begin::Replay(_)));
        run(replays.begin(b"old", print, now + KEEP));
        for n in 0..=CAPACITY {
            run(replays.begin(n.to_string().as_bytes(), print, now + KEEP)).finish(&answer(200, "{}"));
        }
        assert!(matches!(replays.begin(b"0", print, now + KEEP), Begin::Run(_)), "pushed out");
        assert!(matches!(replays.begin(CAPACITY.to_string().as_bytes(), print, now + KEEP), Begin::Replay(_)));
    }

    #[test]
    fn keys_are_visible_ascii() {
        assert!(valid_key(b"3f1c-order-42"));
        assert!(!valid_key(b""));
        assert!(!valid_key(b"with space"));
        assert!(!valid_key(&[b'a'; MAX_KEY + 1]));
    }
}
