use super::*;

const T0: u64 = 1_800_000_000_000;

fn presence() -> Presence {
    Presence::new(PresenceConfig { ttl_ms: 3_000, grace_ms: 1_000, max_sessions_per_user: 4 }, T0)
}

fn statuses(changes: &[Change]) -> Vec<(u64, Status)> {
    changes.iter().map(|c| (c.user, c.status)).collect()
}

#[test]
fn first_device_online_and_last_device_gone_are_the_only_transitions() {
    let p = presence();
    let (desk, c1) = p.open(7, Status::Online, 1, false, T0, 0).unwrap();
    assert_eq!(c1.map(|c| c.status), Some(Status::Online));
    let (phone, c2) = p.open(7, Status::Online, 2, false, T0 + 10, 0).unwrap();
    assert_eq!(c2, None, "a second device changes nothing others see");
    assert_eq!(p.close(desk, 1, T0 + 20).unwrap(), None);
    let gone = p.close(phone, 2, T0 + 30).unwrap().unwrap();
    assert_eq!((gone.status, gone.last_seen_ms), (Status::Offline, T0));
    let offline = p.lookup(7).unwrap();
    assert_eq!((offline.status, offline.last_seen_ms, offline.version), (Status::Offline, T0, gone.version));
    assert_eq!(p.pending_last_seen(), vec![(7, T0)]);
    p.forget_last_seen(&[(7, T0)]);
    assert_eq!(p.lookup(7), None, "offline users leave memory once stored");
}

#[test]
fn aggregate_is_busy_over_online_over_away_and_invisible_hides() {
    let p = presence();
    let (a, _) = p.open(1, Status::Away, 1, false, T0, 0).unwrap();
    let (b, _) = p.open(1, Status::Invisible, 1, false, T0, 0).unwrap();
    assert_eq!(p.lookup(1).unwrap().status, Status::Away);
    assert_eq!(p.set_status(b, 1, Status::Busy, None, T0).unwrap().unwrap().status, Status::Busy);
    assert_eq!(p.set_status(a, 1, Status::Online, None, T0).unwrap(), None);
    let hidden = p.set_status(b, 1, Status::Invisible, None, T0).unwrap().unwrap();
    assert_eq!(hidden.status, Status::Online);
    let gone = p.set_status(a, 1, Status::Invisible, None, T0).unwrap().unwrap();
    assert_eq!((gone.status, gone.own), (Status::Offline, Status::Invisible));
    let stored = p.lookup(1).unwrap();
    assert_eq!((stored.status, stored.own), (Status::Offline, Status::Invisible));
}

#[test]
fn text_is_per_user_and_shown_only_while_visible() {
    let p = presence();
    let (s, _) = p.open(1, Status::Online, 1, false, T0, 0).unwrap();
    let c = p.set_status(s, 1, Status::Online, Some(Text::from("lunch")), T0).unwrap().unwrap();
    assert_eq!(c.text.as_str(), "lunch");
    assert_eq!(p.set_status(s, 1, Status::Online, None, T0).unwrap(), None, "no text given keeps it");
    let c = p.set_status(s, 1, Status::Invisible, None, T0).unwrap().unwrap();
    assert_eq!((c.status, c.text.as_str()), (Status::Offline, ""));
}

#[test]
fn versions_only_grow() {
    let p = presence();
    let (s, c) = p.open(1, Status::Online, 1, false, T0, 0).unwrap();
    let mut last = c.unwrap().version;
    for (i, status) in [Status::Away, Status::Busy, Status::Online, Status::Away].into_iter().enumerate() {
        let c = p.set_status(s, 1, status, None, T0).unwrap().unwrap();
        assert!(c.version > last, "change {i}");
        last = c.version;
    }
    let c = p.close(s, 1, T0).unwrap().unwrap();
    assert!(c.version > last);
    // A new record for the same user, later, still goes up.
    let (_, c) = p.open(1, Status::Online, 1, false, T0 + 1, 0).unwrap();
    assert!(c.unwrap().version > last);
}

#[test]
fn a_dead_session_is_reported_within_a_second_of_its_ttl() {
    let p = presence();
    let (s, _) = p.open(5, Status::Online, 9, false, T0, 0).unwrap();
    p.heartbeat(s, 9, T0 + 2_000).unwrap();
    // TTL 3 s after the last heartbeat: ends at T0 + 5000.
    let mut reported = None;
    for ms in (T0..T0 + 10_000).step_by(TICK_MS as usize) {
        let e = p.tick(ms);
        if !e.changes.is_empty() {
            assert_eq!(statuses(&e.changes), [(5, Status::Offline)]);
            assert_eq!(e.expired, [(s, 9)]);
            assert_eq!(e.changes[0].last_seen_ms, T0 + 2_000, "last seen is the last heartbeat");
            reported = Some(ms);
            break;
        }
    }
    let at = reported.expect("expired");
    assert!((T0 + 5_000..=T0 + 6_000).contains(&at), "reported at +{} ms", at - T0);
    assert_eq!(p.heartbeat(s, 9, at), Err(SessionError::NotFound));
}

#[test]
fn heartbeats_keep_a_session_alive_across_many_wheel_turns() {
    let p = presence();
    let (s, _) = p.open(5, Status::Online, 9, false, T0, 0).unwrap();
    for ms in (T0..T0 + 300_000).step_by(TICK_MS as usize) {
        if (ms - T0).is_multiple_of(1_000) {
            p.heartbeat(s, 9, ms).unwrap();
        }
        assert!(p.tick(ms).changes.is_empty());
    }
    assert_eq!(p.totals().sessions, 1);
}

#[test]
fn grace_window_hides_a_quick_reconnect() {
    let p = presence();
    let (old, _) = p.open(3, Status::Busy, 1, false, T0, 0).unwrap();
    p.detach(old, 1, T0 + 100).unwrap();
    let (new, change) = p.open(3, Status::Busy, 2, false, T0 + 500, 0).unwrap();
    assert_eq!(change, None);
    for ms in (T0..T0 + 5_000).step_by(TICK_MS as usize) {
        p.heartbeat(new, 2, ms).unwrap();
        assert!(p.tick(ms).changes.is_empty(), "no offline/online pair");
    }
    assert_eq!(p.totals().sessions, 1);
}

#[test]
fn grace_window_ends_offline_with_the_moment_of_loss() {
    let p = presence();
    let (old, _) = p.open(3, Status::Online, 1, false, T0, 0).unwrap();
    p.detach(old, 1, T0 + 100).unwrap();
    assert!(p.tick(T0 + 1_000).changes.is_empty(), "still in grace");
    let e = p.tick(T0 + 1_200);
    assert_eq!(statuses(&e.changes), [(3, Status::Offline)]);
    assert_eq!(e.changes[0].last_seen_ms, T0 + 100);
    assert!(e.expired.is_empty(), "grace ends are not TTL expiries");
}

#[test]
fn resume_takes_the_session_back() {
    let p = presence();
    let (s, _) = p.open(3, Status::Away, 1, false, T0, 0).unwrap();
    p.detach(s, 1, T0).unwrap();
    assert!(!p.resume(s, 4, 2, false, T0 + 10), "another user's session");
    assert!(p.resume(s, 3, 2, false, T0 + 10));
    assert!(!p.resume(s, 3, 5, false, T0 + 20), "not in grace any more");
    assert_eq!(p.heartbeat(s, 1, T0 + 30), Err(SessionError::NotOwner));
    p.heartbeat(s, 2, T0 + 30).unwrap();
    assert!(p.tick(T0 + 2_000).changes.is_empty());
    assert_eq!(p.lookup(3).unwrap().status, Status::Away);
}

#[test]
fn sessions_belong_to_their_owner() {
    let p = presence();
    let (s, _) = p.open(3, Status::Online, 1, false, T0, 0).unwrap();
    assert_eq!(p.heartbeat(s, 2, T0), Err(SessionError::NotOwner));
    assert_eq!(p.set_status(s, 2, Status::Away, None, T0), Err(SessionError::NotOwner));
    assert_eq!(p.close(s, 2, T0), Err(SessionError::NotOwner));
    assert_eq!(p.heartbeat(0, 1, T0), Err(SessionError::NotFound));
    assert_eq!(p.heartbeat(u64::MAX, 1, T0), Err(SessionError::NotFound));
}

#[test]
fn per_user_session_cap() {
    let p = presence();
    for owner in 0..4 {
        p.open(8, Status::Online, owner, false, T0, 0).unwrap();
    }
    assert_eq!(p.open(8, Status::Online, 9, false, T0, 0).unwrap_err(), SessionError::TooManySessions);
}

#[test]
fn gateway_sessions_are_found_by_owner_and_ids_are_dense() {
    let p = presence();
    let mut ids: Vec<_> = (0..1000).map(|u| p.open(u, Status::Online, 77, false, T0, 0).unwrap().0).collect();
    p.open(5000, Status::Online, 78, false, T0, 0).unwrap();
    ids.sort_unstable();
    let mut found = p.sessions_of(77);
    found.sort_unstable();
    assert_eq!(found, ids);
    assert!(*ids.last().unwrap() < 64 * 200, "ids stay dense");
}

#[test]
fn watchers_ride_on_changes() {
    let p = presence();
    p.watch(1, 100);
    p.watch(1, 101);
    p.watch(1, 100);
    let (s, c) = p.open(1, Status::Online, 1, false, T0, 0).unwrap();
    assert_eq!(c.unwrap().watchers, [100, 101]);
    p.unwatch(1, 100);
    let c = p.set_status(s, 1, Status::Away, None, T0).unwrap().unwrap();
    assert_eq!(c.watchers, [101]);
    assert_eq!(p.totals(), Totals { online_users: 1, sessions: 1, watches: 1 });
}

#[test]
fn udp_heartbeats_need_a_udp_session_and_pass_the_check() {
    let p = presence();
    let (plain, _) = p.open(1, Status::Online, 1, false, T0, 0).unwrap();
    let (udp, _) = p.open(2, Status::Online, 2, true, T0, 0).unwrap();
    assert_eq!(p.udp_heartbeat(plain, T0, |_, _| Ok(None), "unknown"), Err("unknown"));
    assert_eq!(p.udp_heartbeat(udp, T0, |_, _| Err("bad tag"), "unknown"), Err("bad tag"));
    let change = p.udp_heartbeat(
        udp,
        T0,
        |owner, window| {
            assert_eq!(owner, 2);
            window.accept(1);
            Ok(Some(Status::Busy))
        },
        "unknown",
    );
    assert_eq!(change.unwrap().unwrap().status, Status::Busy);
    p.udp_heartbeat(udp, T0, |_, w| Ok(w.largest().eq(&1).then_some(Status::Away)), "unknown").unwrap();
    assert_eq!(p.lookup(2).unwrap().status, Status::Away, "the window is kept per session");
}

#[test]
fn shutdown_writes_every_visible_user() {
    let p = presence();
    p.open(1, Status::Online, 1, false, T0, 0).unwrap();
    p.open(2, Status::Invisible, 1, false, T0, 0).unwrap();
    assert_eq!(p.online_last_seen(T0 + 5), vec![(1, T0 + 5)]);
}

/// Users `count` users from `from` on, each in a shard of its own.
fn in_distinct_shards(from: u64, count: usize) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    (from..).filter(|&u| seen.insert(shard_of_user(u))).take(count).collect()
}

/// Everything a refused OPEN must leave as it was, as far as it shows.
#[derive(Debug, PartialEq)]
struct State {
    lookups: Vec<Option<Lookup>>,
    totals: Totals,
    pending_last_seen: Vec<(u64, u64)>,
    heap_bytes: usize,
}

fn state(p: &Presence, users: &[u64]) -> State {
    let mut pending_last_seen = p.pending_last_seen();
    pending_last_seen.sort_unstable();
    State {
        lookups: users.iter().map(|&u| p.lookup(u)).collect(),
        totals: p.totals(),
        pending_last_seen,
        heap_bytes: p.heap_bytes(),
    }
}

/// Two presences given the same history, for comparing what follows.
fn twins(history: impl Fn(&Presence)) -> (Presence, Presence) {
    let (a, b) = (presence(), presence());
    history(&a);
    history(&b);
    (a, b)
}

#[test]
fn a_refused_open_leaves_no_trace() {
    // u is at the cap (4: three live, one in grace); v went offline moments
    // ago, w is online, x was never seen. All in different shards.
    let [u, v, w, x] = in_distinct_shards(1_000, 4)[..] else { unreachable!() };
    let history = |p: &Presence| {
        for (owner, status) in [(1, Status::Online), (2, Status::Away), (3, Status::Online)] {
            p.open(u, status, owner, false, T0, 0).unwrap();
        }
        let (lost, _) = p.open(u, Status::Busy, 4, false, T0 + 100, 0).unwrap();
        p.detach(lost, 4, T0 + 200).unwrap();
        let (gone, _) = p.open(v, Status::Online, 5, false, T0, 0).unwrap();
        p.close(gone, 5, T0 + 300).unwrap();
        p.open(w, Status::Away, 6, false, T0 + 100, 0).unwrap();
        for user in [u, v, w, x] {
            p.watch(user, 100);
        }
    };
    let (p, twin) = twins(history);
    let users = [u, v, w, x];
    let before = state(&p, &users);
    assert_eq!(before.lookups[0].as_ref().unwrap().status, Status::Busy);

    // Whichever entry is refused, first or last, and with a user named twice.
    let refused: [&[(u64, Status)]; 3] = [
        &[(v, Status::Online), (w, Status::Busy), (x, Status::Away), (u, Status::Online)],
        &[(u, Status::Invisible), (v, Status::Online), (x, Status::Busy)],
        &[(x, Status::Online), (w, Status::Busy), (x, Status::Online), (u, Status::Away), (w, Status::Online)],
    ];
    for entries in refused {
        let result = p.open_all(entries.iter().copied(), 77, T0 + 500);
        assert_eq!(result, Err(SessionError::TooManySessions), "{entries:?}");
        assert_eq!(state(&p, &users), before, "{entries:?}");
        assert!(p.sessions_of(77).is_empty());
    }
    assert_eq!(p.lookup(x), None, "no record left behind for a user never seen");

    // Not even a slot moved: what follows goes exactly as without the refusals.
    for q in [&p, &twin] {
        assert!(q.tick(T0 + 1_000).changes.is_empty());
    }
    let next = [(x, Status::Online), (v, Status::Away), (w, Status::Busy)];
    assert_eq!(p.open_all(next, 78, T0 + 1_100), twin.open_all(next, 78, T0 + 1_100));
    assert_eq!(
        p.open(v, Status::Online, 9, false, T0 + 1_200, 0),
        twin.open(v, Status::Online, 9, false, T0 + 1_200, 0)
    );
    assert_eq!(p.tick(T0 + 1_500).changes, twin.tick(T0 + 1_500).changes, "u's grace ends alike");
    assert_eq!(state(&p, &users), state(&twin, &users));
}

#[test]
fn open_all_opens_like_one_open_per_entry() {
    let [a, b, c, d, e] = in_distinct_shards(2_000, 5)[..] else { unreachable!() };
    // d has a session in its grace window (an OPEN is its reconnection), e
    // is away on one device, c went offline.
    let history = |p: &Presence| {
        let (lost, _) = p.open(d, Status::Online, 1, false, T0, 0).unwrap();
        p.detach(lost, 1, T0 + 100).unwrap();
        p.open(e, Status::Away, 2, false, T0, 0).unwrap();
        let (gone, _) = p.open(c, Status::Busy, 3, false, T0, 0).unwrap();
        p.close(gone, 3, T0 + 100).unwrap();
        p.watch(a, 100);
        p.watch(e, 101);
    };
    let (p, q) = twins(history);
    let entries = [
        (a, Status::Away),
        (b, Status::Online),
        (a, Status::Online),
        (c, Status::Invisible),
        (d, Status::Online),
        (e, Status::Busy),
        (b, Status::Online),
        (e, Status::Away),
    ];
    let (sessions, changes) = p.open_all(entries, 77, T0 + 200).unwrap();
    let mut one_by_one = (Vec::new(), Vec::new());
    for (user, status) in entries {
        let (session, change) = q.open(user, status, 77, false, T0 + 200, 0).unwrap();
        one_by_one.0.push(session);
        one_by_one.1.extend(change);
    }
    assert_eq!((&sessions, &changes), (&one_by_one.0, &one_by_one.1));
    // a: away then online; b: online; e: busy. c only shows itself, d reconnects.
    assert_eq!(statuses(&changes), [(a, Status::Away), (b, Status::Online), (a, Status::Online), (e, Status::Busy)]);
    assert_eq!(changes[0].watchers, [100]);
    let users = [a, b, c, d, e];
    assert_eq!(state(&p, &users), state(&q, &users));
    let mut owned = p.sessions_of(77);
    owned.sort_unstable();
    let mut opened = sessions.clone();
    opened.sort_unstable();
    assert_eq!(owned, opened);
    for &session in &sessions {
        p.heartbeat(session, 77, T0 + 300).unwrap();
    }
    assert_eq!(p.open_all([], 77, T0), Ok((vec![], vec![])));
}

#[test]
fn one_user_named_several_times_counts_every_time() {
    let [u, v] = in_distinct_shards(3_000, 2)[..] else { unreachable!() };
    let p = presence();
    for owner in 0..3 {
        p.open(u, Status::Online, owner, false, T0, 0).unwrap();
    }
    // One more fits, two do not: every entry counts against the cap.
    let before = state(&p, &[u, v]);
    assert_eq!(
        p.open_all([(u, Status::Away), (v, Status::Online), (u, Status::Away)], 9, T0 + 100).map(|_| ()),
        Err(SessionError::TooManySessions)
    );
    assert_eq!(state(&p, &[u, v]), before);
    let (sessions, changes) = p.open_all([(v, Status::Online), (u, Status::Away)], 9, T0 + 100).unwrap();
    assert_eq!((sessions.len(), statuses(&changes)), (2, vec![(v, Status::Online)]));
    assert_eq!(p.open_all([(u, Status::Online)], 9, T0 + 200).unwrap_err(), SessionError::TooManySessions);
    assert_eq!(p.totals().sessions, 5);

    // A new user: exactly the cap in one OPEN, one change; one more is refused.
    let (w, z) = (3_900, 3_901);
    let (sessions, changes) = p.open_all([(w, Status::Online); 4], 9, T0).unwrap();
    assert_eq!((sessions.len(), statuses(&changes)), (4, vec![(w, Status::Online)]));
    let before = state(&p, &[z]);
    assert_eq!(p.open_all([(z, Status::Online); 5], 9, T0).unwrap_err(), SessionError::TooManySessions);
    assert_eq!(state(&p, &[z]), before);
    assert_eq!(p.lookup(z), None);
}

#[test]
fn concurrent_opens_across_shards_keep_the_cap_and_do_not_deadlock() {
    let users = in_distinct_shards(4_000, 6);
    let p = std::sync::Arc::new(presence());
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let (p, mut users, first) = (p.clone(), users.clone(), users[0]);
            if t % 2 == 1 {
                users.reverse();
            }
            std::thread::spawn(move || {
                let (mut opened, mut single) = (0, 0);
                for round in 0..200 {
                    let entries = users.iter().map(|&u| (u, Status::Online));
                    match p.open_all(entries, t, T0 + round) {
                        Ok((sessions, _)) => opened += sessions.len(),
                        Err(e) => assert_eq!(e, SessionError::TooManySessions),
                    }
                    single += usize::from(p.open(first, Status::Away, t, false, T0 + round, 0).is_ok());
                }
                (opened, single)
            })
        })
        .collect();
    let (mut opened, mut single) = (0, 0);
    for thread in threads {
        let (o, s) = thread.join().unwrap();
        (opened, single) = (opened + o, single + s);
    }
    // Each successful OPEN named every user once; users[0] also had single
    // opens. It ends exactly at the cap, the others at most there.
    assert_eq!(opened % users.len(), 0);
    assert_eq!(opened / users.len() + single, 4, "users[0] is at the cap, not past it");
    assert_eq!(p.totals().sessions, (opened + single) as u64);
}
