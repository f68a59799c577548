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
    let (desk, c1) = p.open(7, Status::Online, 1, false, T0).unwrap();
    assert_eq!(c1.map(|c| c.status), Some(Status::Online));
    let (phone, c2) = p.open(7, Status::Online, 2, false, T0 + 10).unwrap();
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
    let (a, _) = p.open(1, Status::Away, 1, false, T0).unwrap();
    let (b, _) = p.open(1, Status::Invisible, 1, false, T0).unwrap();
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
    let (s, _) = p.open(1, Status::Online, 1, false, T0).unwrap();
    let c = p.set_status(s, 1, Status::Online, Some(Text::from("lunch")), T0).unwrap().unwrap();
    assert_eq!(c.text.as_str(), "lunch");
    assert_eq!(p.set_status(s, 1, Status::Online, None, T0).unwrap(), None, "no text given keeps it");
    let c = p.set_status(s, 1, Status::Invisible, None, T0).unwrap().unwrap();
    assert_eq!((c.status, c.text.as_str()), (Status::Offline, ""));
}

#[test]
fn versions_only_grow() {
    let p = presence();
    let (s, c) = p.open(1, Status::Online, 1, false, T0).unwrap();
    let mut last = c.unwrap().version;
    for (i, status) in [Status::Away, Status::Busy, Status::Online, Status::Away].into_iter().enumerate() {
        let c = p.set_status(s, 1, status, None, T0).unwrap().unwrap();
        assert!(c.version > last, "change {i}");
        last = c.version;
    }
    let c = p.close(s, 1, T0).unwrap().unwrap();
    assert!(c.version > last);
    // A new record for the same user, later, still goes up.
    let (_, c) = p.open(1, Status::Online, 1, false, T0 + 1).unwrap();
    assert!(c.unwrap().version > last);
}

#[test]
fn a_dead_session_is_reported_within_a_second_of_its_ttl() {
    let p = presence();
    let (s, _) = p.open(5, Status::Online, 9, false, T0).unwrap();
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
    let (s, _) = p.open(5, Status::Online, 9, false, T0).unwrap();
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
    let (old, _) = p.open(3, Status::Busy, 1, false, T0).unwrap();
    p.detach(old, 1, T0 + 100).unwrap();
    let (new, change) = p.open(3, Status::Busy, 2, false, T0 + 500).unwrap();
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
    let (old, _) = p.open(3, Status::Online, 1, false, T0).unwrap();
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
    let (s, _) = p.open(3, Status::Away, 1, false, T0).unwrap();
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
    let (s, _) = p.open(3, Status::Online, 1, false, T0).unwrap();
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
        p.open(8, Status::Online, owner, false, T0).unwrap();
    }
    assert_eq!(p.open(8, Status::Online, 9, false, T0).unwrap_err(), SessionError::TooManySessions);
}

#[test]
fn gateway_sessions_are_found_by_owner_and_ids_are_dense() {
    let p = presence();
    let mut ids: Vec<_> = (0..1000).map(|u| p.open(u, Status::Online, 77, false, T0).unwrap().0).collect();
    p.open(5000, Status::Online, 78, false, T0).unwrap();
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
    let (s, c) = p.open(1, Status::Online, 1, false, T0).unwrap();
    assert_eq!(c.unwrap().watchers, [100, 101]);
    p.unwatch(1, 100);
    let c = p.set_status(s, 1, Status::Away, None, T0).unwrap().unwrap();
    assert_eq!(c.watchers, [101]);
    assert_eq!(p.totals(), Totals { online_users: 1, sessions: 1, watches: 1 });
}

#[test]
fn udp_heartbeats_need_a_udp_session_and_pass_the_check() {
    let p = presence();
    let (plain, _) = p.open(1, Status::Online, 1, false, T0).unwrap();
    let (udp, _) = p.open(2, Status::Online, 2, true, T0).unwrap();
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
    p.open(1, Status::Online, 1, false, T0).unwrap();
    p.open(2, Status::Invisible, 1, false, T0).unwrap();
    assert_eq!(p.online_last_seen(T0 + 5), vec![(1, T0 + 5)]);
}
