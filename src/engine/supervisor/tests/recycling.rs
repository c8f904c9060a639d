//! The supervisor's recycling decisions (`[recycle]`), with the harness of `tests.rs`.

use super::*;

fn aged(h: &mut Harness, slot: usize, age_ms: u64) {
    let key = h.current(slot).unwrap();
    h.sup.fleet.workers[key].limits.age = Some(Duration::from_millis(age_ms));
}

fn due_at(h: &Harness, ms: u64) -> Option<(usize, crate::engine::recycle::Reason)> {
    let ledger = Ledger::<Conn0>::default();
    h.sup.recycle_due(&ledger, None, h.at(ms))
}

#[test]
fn only_a_ready_worker_not_stuck_is_due_and_max_connections_waits_for_its_count() {
    let mut h = Harness::new(1, policy(10));
    let mut ledger = Ledger::<Conn0>::default();
    h.tick(0);
    let key = h.current(0).unwrap();
    h.sup.fleet.workers[key].account = ledger.open(64);
    h.sup.fleet.workers[key].limits.connections = Some(3);
    let account = h.sup.fleet.workers[key].account;
    let t0 = h.t0;
    let hand = |ledger: &mut Ledger<Conn0>, n: usize| {
        for _ in 0..n {
            ledger.admit(Conn0(t0, None), 1, |_| Some(account), Default::default());
        }
    };
    hand(&mut ledger, 5);
    // Past its limit, but still starting: not due.
    assert!(h.sup.recycle_due(&ledger, None, h.at(10)).is_none());
    h.sup.ready(key, h.at(10));
    h.run(h.at(10));
    let (due, reason) = h.sup.recycle_due(&ledger, None, h.at(20)).expect("due");
    assert_eq!(due, key);
    assert!(
        reason.to_string().contains("5 connections handed"),
        "{reason}"
    );
    // Stuck (killed for an un-acked socket): not recycled, it is being replaced anyway.
    h.sup.fleet.workers[key].stuck = true;
    assert!(h.sup.recycle_due(&ledger, None, h.at(30)).is_none());
    h.sup.fleet.workers[key].stuck = false;
    // Below its count: not due.
    h.sup.fleet.workers[key].limits.connections = Some(6);
    assert!(h.sup.recycle_due(&ledger, None, h.at(40)).is_none());
    hand(&mut ledger, 1);
    assert!(
        h.sup.recycle_due(&ledger, None, h.at(50)).is_some(),
        "6 of 6"
    );
}

#[test]
fn a_recycle_replaces_one_slot_once_its_successor_is_ready_and_counts_apart() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    aged(&mut h, 0, 1_000);
    aged(&mut h, 1, 1_000);
    assert!(due_at(&h, 999).is_none());
    assert_eq!(h.sup.next_recycle_check(h.at(10)), Some(h.at(1_000)));
    let (key, reason) = due_at(&h, 1_000).expect("slot 0 is due");
    let old = h.current(0).unwrap();
    assert_eq!(key, old);
    assert!(h.sup.recycle(key, &reason, h.at(1_000)));
    assert_eq!(
        h.run(h.at(1_000)),
        [Effect::Spawn {
            place: Place::Slot(0),
            role: Role::Candidate
        }]
    );
    // One at a time: slot 1 is due too, but waits; so does a second request for slot 0.
    assert!(due_at(&h, 1_001).is_none());
    let other = h.current(1).unwrap();
    assert!(!h.sup.recycle(other, &reason, h.at(1_001)));
    assert!(h.sup.recycling.is_some());
    // The old worker serves until its successor is ready.
    let successor = h.spawned.last().unwrap().2;
    assert_eq!(h.current(0), Some(old));
    h.sup.ready(successor, h.at(1_100));
    assert_eq!(
        h.run(h.at(1_100)),
        [Effect::Requeue(old), Effect::Stop(old)]
    );
    assert_eq!(h.current(0), Some(successor));
    let slot = &h.sup.fleet.slots[0];
    assert_eq!((slot.recycled, slot.restart_count), (1, 0), "not a restart");
    assert!(
        slot.last_recycle
            .as_deref()
            .unwrap()
            .starts_with("max_age: up")
    );
    // Now slot 1's turn.
    assert_eq!(due_at(&h, 1_101).map(|d| d.0), Some(other));
}

/// One slot, its worker past max_age at 1s and being recycled: (its key, its successor's).
fn recycling_one() -> (Harness, usize, usize) {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    aged(&mut h, 0, 1_000);
    let (key, reason) = due_at(&h, 1_000).unwrap();
    assert!(h.sup.recycle(key, &reason, h.at(1_000)));
    h.run(h.at(1_000));
    let successor = h.spawned.last().unwrap().2;
    (h, key, successor)
}

#[test]
fn a_successor_that_fails_leaves_the_old_worker_and_pauses_recycling() {
    let (mut h, key, successor) = recycling_one();
    h.sup.exited(successor, h.at(1_050), "exit code 1".into());
    h.run(h.at(1_050));
    assert_eq!(h.current(0), Some(key), "the old worker keeps serving");
    assert!(h.sup.recycling.is_none());
    assert_eq!(h.sup.fleet.slots[0].recycled, 0);
    let pause = crate::engine::recycle::RETRY_PAUSE.as_millis() as u64;
    assert!(due_at(&h, 1_050 + pause - 1).is_none(), "paused");
    assert_eq!(
        h.sup.next_recycle_check(h.at(1_060)),
        Some(h.at(1_050 + pause))
    );
    assert_eq!(due_at(&h, 1_050 + pause).map(|d| d.0), Some(key));
}

#[test]
fn a_reload_abandons_a_recycle_and_replaces_that_worker_too() {
    let (mut h, _, successor) = recycling_one();
    h.sup.begin_reload(None, false, 1, h.at(1_010));
    let effects = h.run(h.at(1_010));
    assert_eq!(
        effects,
        [
            Effect::Stop(successor),
            Effect::Spawn {
                place: Place::Slot(0),
                role: Role::Candidate
            }
        ]
    );
    assert!(h.sup.recycling.is_none() && !h.sup.may_recycle(h.at(1_010)));
}

#[test]
fn a_slot_given_up_while_another_starts_leaves_the_master_running_until_every_slot_gave_up() {
    let mut h = Harness::new(2, policy(0));
    h.sup.tick(h.at(0), 0);
    h.run(h.at(0));
    let (a, b) = (h.current(0).unwrap(), h.current(1).unwrap());
    // Slot 1 fails for good while slot 0 is still starting: slot 0 may yet serve.
    h.sup.exited(b, h.at(5), "exit code 7".into());
    let effects = h.run(h.at(5));
    assert!(h.sup.fleet.slots[1].given_up);
    assert!(!effects.contains(&Effect::StopAccepting), "{effects:?}");
    assert!(!h.sup.gave_up && h.sup.phase == Phase::Running);
    h.sup.ready(a, h.at(10));
    h.run(h.at(10));
    assert_eq!(h.sup.fleet.workers[a].state, State::Ready);
    // Then slot 0 fails for good as well: nothing is left; the master stops.
    h.sup.exited(a, h.at(20), "exit code 7".into());
    let effects = h.run(h.at(20));
    assert!(effects.contains(&Effect::StopAccepting), "{effects:?}");
    assert!(h.sup.gave_up);
}

#[test]
fn exits_of_a_worker_out_of_descriptors_are_load_and_never_give_the_slot_up() {
    let mut h = Harness::new(1, policy(2));
    ready_fleet(&mut h, 0);
    let mut t = 10;
    for _ in 0..20 {
        let key = h.current(0).expect("a worker serves slot 0");
        h.sup.full(key, h.at(t));
        // It exits soon after its `full`: restarted after the first back-off (100 ms) every
        // time, 20 exits in 20 s, far beyond max_restarts (2 in 10 s).
        h.sup.exited(key, h.at(t + 500), "exit code 1".into());
        assert!(h.run(h.at(t + 500)).is_empty());
        assert!(!h.sup.fleet.slots[0].given_up && !h.sup.gave_up);
        let spawn = h.tick(t + 600);
        assert_eq!(spawn.len(), 1, "{spawn:?}");
        let new = h.current(0).unwrap();
        h.sup.ready(new, h.at(t + 600));
        t += 1_000;
    }
    // A `full` long past does not excuse a crash: three quick ones give the slot up.
    let key = h.current(0).unwrap();
    h.sup.full(key, h.at(t));
    for i in 0..3 {
        let key = h.current(0).expect("a worker serves slot 0");
        let at = t + 10_001 + i * 1_000;
        h.sup.exited(key, h.at(at), "exit code 1".into());
        h.run(h.at(at));
        h.tick(at + 500);
        if let Some(new) = h.current(0) {
            h.sup.ready(new, h.at(at + 500));
        }
    }
    assert!(h.sup.fleet.slots[0].given_up);
}

#[test]
fn by_default_a_master_whose_every_slot_gave_up_waits_and_tries_them_again() {
    let mut p = policy(0);
    p.restart.on_all_given_up = crate::config::AllGivenUp::Wait;
    let mut h = Harness::new(2, p);
    ready_fleet(&mut h, 0);
    for slot in 0..2 {
        let key = h.current(slot).unwrap();
        h.sup.exited(key, h.at(10), "exit code 1".into());
    }
    let effects = h.run(h.at(10));
    assert!(!effects.contains(&Effect::StopAccepting), "{effects:?}");
    assert!(h.sup.fleet.none_left() && h.sup.running() && !h.sup.gave_up);
    // Nothing before retry_after (60 s); then both slots start, no longer given up.
    assert!(h.tick(60_009).is_empty());
    let spawns = h.tick(60_010);
    assert_eq!(spawns.len(), 2, "{spawns:?}");
    assert!(h.sup.fleet.slots.iter().all(|s| !s.given_up));
    assert_eq!(h.sup.fleet.slots[0].giveups, 1);
    // With a fresh window: the next failure gives it up again (max_restarts = 0).
    let key = h.current(0).unwrap();
    h.sup.ready(key, h.at(60_010));
    h.sup.exited(key, h.at(60_020), "exit code 1".into());
    h.run(h.at(60_020));
    assert!(h.sup.fleet.slots[0].given_up && h.sup.running());
}

#[test]
fn max_memory_is_due_only_above_its_limit_and_nothing_is_checked_while_a_recycle_runs() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    let ledger = Ledger::<Conn0>::default();
    let key = h.current(1).unwrap();
    h.sup.fleet.workers[key].rss = Some(100 << 20);
    let due = |h: &Harness, limit: Option<u64>| h.sup.recycle_due(&ledger, limit, h.at(10));
    assert!(due(&h, None).is_none(), "no max_memory");
    assert!(
        due(&h, Some(100 << 20)).is_none(),
        "at its limit, not above"
    );
    let (found, reason) = due(&h, Some((100 << 20) - 1)).expect("above");
    assert_eq!(found, key);
    assert!(
        reason.to_string().starts_with("max_memory: 100.0 MiB"),
        "{reason}"
    );
    // Slot 0 ages out later; while slot 1's recycle runs nothing else is checked.
    aged(&mut h, 0, 5_000);
    assert_eq!(h.sup.next_recycle_check(h.at(10)), Some(h.at(5_000)));
    assert!(h.sup.recycle(key, &reason, h.at(10)));
    assert_eq!(h.sup.next_recycle_check(h.at(10)), None);
}

/// The master sleeps until the next recycle check: one at or before `now` would wake it again
/// at once, for nothing (`recycle_due` runs every turn anyway).
#[test]
fn the_next_recycle_check_is_always_in_the_future_and_none_during_a_reload() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    aged(&mut h, 0, 1_000);
    aged(&mut h, 1, 2_000);
    assert_eq!(h.sup.next_recycle_check(h.at(1_000)), Some(h.at(2_000)));
    // A failed successor pauses recycling; at the pause's very end, the next age is next.
    let (key, reason) = due_at(&h, 1_000).unwrap();
    assert!(h.sup.recycle(key, &reason, h.at(1_000)));
    h.run(h.at(1_000));
    h.sup.recycle_failed(0, "not ready", h.at(1_000));
    let end = h.at(1_000) + crate::engine::recycle::RETRY_PAUSE;
    assert_eq!(h.sup.next_recycle_check(h.at(1_500)), Some(end));
    aged(&mut h, 1, 40_000);
    assert_eq!(h.sup.next_recycle_check(end), Some(h.at(40_000)));
    // A reload replaces every worker: no recycle is scheduled meanwhile.
    h.sup.begin_reload(None, false, 2, end);
    assert!(h.sup.reload.is_some() && h.sup.recycling.is_none());
    assert_eq!(h.sup.next_recycle_check(end), None);
}

/// Without `[recycle] max_age` (the shell says so), the next recycle check walks nothing — but
/// only once no worker started with one is left.
#[test]
fn without_max_age_the_recycle_check_walks_nothing_once_no_worker_has_one() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    aged(&mut h, 0, 1_000);
    h.sup.set_max_age(false);
    assert_eq!(
        h.sup.next_recycle_check(h.at(10)),
        Some(h.at(1_000)),
        "it has one"
    );
    let key = h.current(0).unwrap();
    h.sup.fleet.workers[key].limits.age = None;
    h.sup.set_max_age(false);
    assert_eq!(h.sup.next_recycle_check(h.at(10)), None);
    // Not walked: an age given behind the supervisor's back (no worker starts so) is not seen.
    aged(&mut h, 1, 3_000);
    assert_eq!(h.sup.next_recycle_check(h.at(10)), None, "walked");
    h.sup.set_max_age(true);
    assert_eq!(h.sup.next_recycle_check(h.at(10)), Some(h.at(3_000)));
}
