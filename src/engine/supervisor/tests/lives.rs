//! What workers say and do, and the supervisor's answer: stuck on an un-acked socket, leaving,
//! too slow for their messages, misbehaving; readiness while stopping; a policy replaced.

use super::*;

/// A ready fleet of `slots` whose workers each have an account in `ledger`.
fn with_accounts(slots: usize, ledger: &mut Ledger<Conn0>) -> Harness {
    let mut h = Harness::new(slots, policy(10));
    ready_fleet(&mut h, 0);
    let keys: Vec<usize> = h.sup.fleet.workers.iter().map(|(k, _)| k).collect();
    for key in keys {
        h.sup.fleet.workers[key].account = ledger.open(4);
    }
    h
}

#[test]
fn a_worker_is_overdue_once_its_oldest_unacked_socket_is_ack_timeout_old() {
    let mut ledger = Ledger::<Conn0>::default();
    let mut h = with_accounts(2, &mut ledger);
    let key = h.current(1).unwrap();
    let account = h.sup.fleet.workers[key].account;
    ledger.admit(
        Conn0(h.t0, None),
        2,
        |s| (s == 1).then_some(account),
        Default::default(),
    );
    ledger.account_mut(account).unwrap().mark_sent(1, h.at(100));
    let timeout = 50 * MS;
    let worker = &h.sup.fleet.workers[key];
    assert_eq!(ack_deadline(worker, &ledger, timeout), Some(h.at(150)));
    let overdue_at = |h: &Harness, ms| overdue(&h.sup.fleet, &ledger, timeout, h.at(ms));
    assert_eq!(overdue_at(&h, 149), Vec::<usize>::new());
    assert_eq!(overdue_at(&h, 150), [key]);
    // Killed for it: not reported again.
    h.sup.stuck(key, h.at(150));
    assert!(h.run(h.at(150)).contains(&Effect::Kill(key)));
    assert_eq!(
        ack_deadline(&h.sup.fleet.workers[key], &ledger, timeout),
        None
    );
    assert_eq!(overdue_at(&h, 200), Vec::<usize>::new());
}

#[test]
fn a_leaving_worker_gets_nothing_more_and_its_successor_starts_now() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let old = h.current(0).unwrap();
    h.sup.leaving(old, h.at(50));
    assert_eq!(h.run(h.at(50)), [Effect::Requeue(old)]);
    assert_eq!(h.current(0), None, "detached");
    let effects = h.tick(50);
    assert!(
        effects.contains(&Effect::Spawn {
            place: Place::Slot(0),
            role: Role::Current
        }),
        "{effects:?}"
    );
}

#[test]
fn a_slow_receiver_is_replaced_as_a_recycle_under_the_policy_in_force() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let mut longer = policy(10);
    longer.kill_timeout = 2_000 * MS;
    h.sup.set_policy(longer);
    let old = h.current(0).unwrap();
    h.sup.replace_slow(old, h.at(100));
    assert_eq!(h.run(h.at(100)), [Effect::Requeue(old), Effect::Stop(old)]);
    let slot = &h.sup.fleet.slots[0];
    assert_eq!(
        (slot.recycled, slot.restart_count),
        (1, 0),
        "a recycle, not a failure"
    );
    // Killed only after the new policy's kill_timeout, not the old one's 500 ms.
    assert!(!h.tick(700).contains(&Effect::Kill(old)));
    assert!(h.tick(2_101).contains(&Effect::Kill(old)));
}

#[test]
fn a_misbehaving_worker_is_stopped_and_its_slot_restarted_as_a_failure() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let key = h.current(0).unwrap();
    h.sup.misbehaved(key, h.at(100), "garbage".into());
    let effects = h.run(h.at(100));
    assert!(effects.contains(&Effect::Stop(key)), "{effects:?}");
    assert_eq!(h.current(0), None);
    assert!(h.sup.fleet.slots[0].start_at.is_some(), "restarted");
}

#[test]
fn a_candidate_ready_while_stopping_takes_nothing_over() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let old = h.current(0).unwrap();
    h.sup.begin_reload(None, false, 1, h.at(10));
    h.run(h.at(10));
    let (_, _, candidate) = *h.spawned.last().unwrap();
    // The stop has begun; its effects (the workers' stops) are not carried out yet when the
    // candidate's `ready` is read.
    h.sup.begin_stop(h.at(20));
    h.sup.ready(candidate, h.at(30));
    assert_eq!(h.current(0), Some(old), "not promoted while stopping");
    assert_eq!(h.sup.fleet.role(candidate), Role::Candidate);
}

#[test]
fn a_stop_waits_for_a_running_on_giveup_command_and_kills_it_at_the_deadline() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let key = h.current(0).unwrap();
    h.sup.begin_stop(h.at(10));
    h.run(h.at(10));
    h.sup.exited(key, h.at(20), "exit code 0".into());
    h.run(h.at(20));
    // No worker left, one hook still running: not over; at kill_timeout (500 ms) it is killed.
    h.sup.tick(h.at(30), 1);
    assert!(h.run(h.at(30)).is_empty());
    h.sup.tick(h.at(510), 1);
    assert_eq!(h.run(h.at(510)), [Effect::KillHooks]);
}

#[test]
fn readiness_deadlines_are_the_starting_workers_and_the_agent_has_its_own() {
    let mut with_agent = policy(10);
    let agent_rule = crate::engine::lifecycle::ReadyRule::new(&crate::config::WorkerConfig {
        ready: Readiness::Message,
        ready_timeout: 3_000 * MS,
        ..crate::config::load(None, &Default::default())
            .unwrap()
            .worker
    });
    with_agent.agent_ready = Some((agent_rule, 3_000 * MS));
    let mut h = Harness::new(1, with_agent);
    h.tick(0);
    // The agent starts first, with its own timeout (3 s, the workers' is 1 s).
    assert_eq!(h.sup.next_readiness_deadline(), Some(h.at(3_000)));
    let agent = h.sup.fleet.agent_key().unwrap();
    h.sup.ready(agent, h.at(100));
    assert_eq!(h.sup.next_readiness_deadline(), None, "nobody starting");
    h.tick(100);
    assert_eq!(h.sup.next_readiness_deadline(), Some(h.at(1_100)));
}

#[test]
fn each_restart_is_counted() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    for (n, t) in [(1, 2_000), (2, 4_000)] {
        let key = h.current(0).unwrap();
        h.sup.exited(key, h.at(t), "exit code 1".into());
        h.run(h.at(t));
        assert_eq!(h.sup.fleet.slots[0].restart_count, n);
        ready_fleet(&mut h, t + 1_000);
    }
}

#[test]
fn why_the_master_gave_up_names_the_agent_only_when_it_never_became_ready() {
    let mut h = Harness::new(1, policy(10));
    let workers = "no worker could be kept running";
    assert_eq!(h.sup.gave_up_why(), workers);
    h.sup.fleet.agent = Some(crate::engine::fleet::Slot::default());
    assert_eq!(
        h.sup.gave_up_why(),
        "the agent never became ready, so no worker was started"
    );
    h.sup.fleet.agent_started = true;
    assert_eq!(h.sup.gave_up_why(), workers);
}

#[test]
fn the_agent_is_stopped_last_and_once() {
    let mut h = Harness::new(1, policy_with_agent(10));
    h.tick(0);
    let agent = h.sup.fleet.agent_key().unwrap();
    h.sup.ready(agent, h.at(10));
    ready_fleet(&mut h, 20);
    let worker = h.current(0).unwrap();
    h.sup.begin_stop(h.at(30));
    let effects = h.run(h.at(30));
    assert!(effects.contains(&Effect::Stop(worker)), "{effects:?}");
    assert!(
        !effects.contains(&Effect::Stop(agent)),
        "the agent last: {effects:?}"
    );
    h.sup.exited(worker, h.at(40), "exit code 0".into());
    h.run(h.at(40));
    assert_eq!(h.tick(40), [Effect::Stop(agent)]);
    assert!(h.tick(50).is_empty(), "asked once");
}

#[test]
fn an_agent_given_up_before_it_was_ever_ready_stops_the_master() {
    let mut h = Harness::new(1, policy_with_agent(1));
    let mut t = 0;
    while !h.sup.gave_up && t < 10_000 {
        h.tick(t);
        if let Some(agent) = h.sup.fleet.agent_key() {
            h.sup.exited(agent, h.at(t + 1), "exit code 1".into());
            h.run(h.at(t + 1));
        }
        t += 100;
    }
    assert!(h.sup.gave_up, "given up");
    assert!(!h.sup.running(), "stopping");
    assert_eq!(
        h.sup.gave_up_why(),
        "the agent never became ready, so no worker was started"
    );
}

#[test]
fn the_next_deadline_is_the_nearest_timer_of_any_worker_or_of_the_stop() {
    let mut ledger = Ledger::<Conn0>::default();
    let mut h = with_accounts(2, &mut ledger);
    let timeout = 50 * MS;
    let next = |h: &Harness, ledger: &Ledger<Conn0>, ms, left| {
        h.sup.next_deadline_by_walk(h.at(ms), ledger, timeout, left)
    };
    assert_eq!(next(&h, &ledger, 10, 2), None, "a ready fleet, nothing due");
    // An un-acked socket: its ack_timeout.
    let key = h.current(1).unwrap();
    let account = h.sup.fleet.workers[key].account;
    ledger.admit(
        Conn0(h.t0, None),
        2,
        |s| (s == 1).then_some(account),
        Default::default(),
    );
    ledger.account_mut(account).unwrap().mark_sent(1, h.at(100));
    assert_eq!(next(&h, &ledger, 100, 2), Some(h.at(150)));
    // The other worker's timers, each sooner than the last.
    let other = h.current(0).unwrap();
    h.sup.fleet.workers[other].stop_signal_at = Some(h.at(130));
    assert_eq!(next(&h, &ledger, 100, 2), Some(h.at(130)));
    h.sup.fleet.workers[other].kill_at = Some(h.at(120));
    assert_eq!(next(&h, &ledger, 100, 2), Some(h.at(120)));
    h.sup.fleet.workers[other].channel_closed_check = Some(h.at(110));
    assert_eq!(next(&h, &ledger, 100, 2), Some(h.at(110)));
    // A stop with no process left to reap can end now.
    h.sup.begin_stop(h.at(105));
    h.run(h.at(105));
    assert_eq!(next(&h, &ledger, 106, 0), Some(h.at(106)));
}

#[test]
fn a_deferred_stop_signal_is_an_effect_of_the_tick_once_due() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let key = h.current(0).unwrap();
    let w = &mut h.sup.fleet.workers[key];
    w.stop_signal = Some(crate::engine::fleet::StopSignalDue {
        signal: nix::sys::signal::Signal::SIGTERM,
        first: true,
    });
    // A Node worker not yet heard whose channel closed: its signal is deferred.
    assert_eq!(h.sup.channel_released(key, h.at(0)), None);
    assert_eq!(CHANNEL_CLOSED_GRACE, 200 * MS);
    assert!(!h.tick(199).iter().any(|e| matches!(e, Effect::Signal(..))));
    let due = Effect::Signal(key, nix::sys::signal::Signal::SIGTERM);
    assert!(h.tick(200).contains(&due));
    assert!(!h.tick(400).contains(&due), "once");
}

/// The timers the clock reads instead of walking the fleet: set through the supervisor, never
/// later than the walk says; stale hints cost a look each and run out, leaving the truth.
#[test]
fn the_timers_never_answer_later_than_the_walk_and_come_down_to_it() {
    let mut ledger = Ledger::<Conn0>::default();
    let mut h = with_accounts(2, &mut ledger);
    let timeout = 50 * MS;
    let (key, other) = (h.current(1).unwrap(), h.current(0).unwrap());
    let account = h.sup.fleet.workers[key].account;
    ledger.admit(
        Conn0(h.t0, None),
        2,
        |s| (s == 1).then_some(account),
        Default::default(),
    );
    // As the shell does each turn: ask for the overdue, then send (stamped no earlier).
    assert_eq!(
        h.sup.overdue(&ledger, timeout, h.at(100)),
        Vec::<usize>::new()
    );
    ledger.account_mut(account).unwrap().mark_sent(1, h.at(100));
    h.sup.channel_closed(other, h.at(110), false);
    let converge = |h: &mut Harness, ledger: &Ledger<Conn0>, from: u64| {
        let mut now = h.at(from);
        for _ in 0..20 {
            let walk = h.sup.next_deadline_by_walk(now, ledger, timeout, 2);
            let timers = h.sup.next_deadline(now, timeout, 2);
            assert!(
                timers <= walk,
                "timers {timers:?} later than the walk {walk:?}"
            );
            if timers == walk {
                return walk;
            }
            now = timers.expect("a stale hint");
            h.run(now);
        }
        panic!("the timers did not come down to the walk");
    };
    let closed_check = h.sup.fleet.workers[other].channel_closed_check;
    assert_eq!(closed_check, Some(h.at(110) + CHANNEL_CLOSED_GRACE));
    assert_eq!(converge(&mut h, &ledger, 110), Some(h.at(150)), "the ack's");
    // Stuck at 150: found by the floor's walk, and killed.
    assert_eq!(
        h.sup.overdue(&ledger, timeout, h.at(149)),
        Vec::<usize>::new()
    );
    assert_eq!(h.sup.overdue(&ledger, timeout, h.at(150)), [key]);
    h.sup.stuck(key, h.at(150));
    assert!(h.run(h.at(150)).contains(&Effect::Kill(key)));
    assert_eq!(
        h.sup.overdue(&ledger, timeout, h.at(300)),
        Vec::<usize>::new()
    );
    // The restart of its slot, then the check of the closed channel: each in turn.
    let restart = h.sup.fleet.slots[1].start_at;
    assert!(restart.is_some_and(|t| t < h.at(310)), "{restart:?}");
    assert_eq!(converge(&mut h, &ledger, 150), restart);
    h.sup.tick(restart.unwrap(), 0);
    assert!(h.run(restart.unwrap()).contains(&Effect::Spawn {
        place: Place::Slot(1),
        role: Role::Current
    }));
    assert_eq!(converge(&mut h, &ledger, 150), closed_check);
}

/// Places due at once (a start, `scale` up, a crowd of restarts) start a few per tick, since
/// each start holds the master until the child has `exec`ed: the others stay due at that very
/// moment, so the shell ticks again at once, and each place starts exactly once.
#[test]
fn many_places_due_at_once_start_a_few_per_tick_each_once() {
    use crate::engine::supervisor::clock::STARTS_PER_TICK;
    let mut h = Harness::new(100, policy(10));
    let mut ticks = 0;
    while h.spawned.len() < 100 {
        let before = h.spawned.len();
        h.tick(0);
        ticks += 1;
        let started = h.spawned.len() - before;
        assert!(started <= STARTS_PER_TICK, "{started} in one tick");
        if h.spawned.len() < 100 {
            let next = h.sup.next_deadline(h.at(0), Duration::from_secs(10), 0);
            assert!(
                next.is_some_and(|t| t <= h.at(0)),
                "the rest are due at once"
            );
        }
        assert!(ticks <= 100, "stalled at {}", h.spawned.len());
    }
    assert_eq!(ticks, 100usize.div_ceil(STARTS_PER_TICK));
    let places: Vec<Place> = h.spawned.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(places, (0..100).map(Place::Slot).collect::<Vec<_>>());
    assert!(h.tick(0).is_empty(), "nothing more to start");
}
