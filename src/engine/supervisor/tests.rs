//! Unit tests of the supervisor: its decisions, driven with worker records and no processes.

use super::*;
use crate::config::Readiness;
use crate::engine::ids::Place;

const MS: Duration = Duration::from_millis(1);

fn policy(max_restarts: u32) -> Policy {
    let worker = crate::config::WorkerConfig {
        ready: Readiness::Message,
        ready_timeout: 1000 * MS,
        ..crate::config::load(None, &Default::default())
            .unwrap()
            .worker
    };
    Policy {
        restart: RestartConfig {
            max_restarts,
            window: 10_000 * MS,
            backoff_initial: 100 * MS,
            backoff_max: 1_000 * MS,
            min_uptime: 1_000 * MS,
            retry_after: 60_000 * MS,
            on_all_given_up: crate::config::AllGivenUp::Exit,
        },
        kill_timeout: 500 * MS,
        ready: ReadyRule::new(&worker),
        ready_timeout: 1000 * MS,
        agent_ready: None,
        ack_timeout: 10_000 * MS,
    }
}

/// [`policy`] with an `[agent]` that readies as the workers do, within 1 s.
fn policy_with_agent(max_restarts: u32) -> Policy {
    let mut p = policy(max_restarts);
    p.agent_ready = Some((p.ready, 1_000 * MS));
    p
}

/// A supervisor and a shell that records effects and starts a record for every Spawn.
struct Harness {
    sup: Supervisor,
    t0: Instant,
    next_pid: i32,
    /// Every effect so far, with spawns as (slot, role, key).
    log: Vec<Effect>,
    spawned: Vec<(Place, Role, usize)>,
}

impl Harness {
    fn new(slots: usize, policy: Policy) -> Harness {
        let t0 = Instant::now();
        Harness {
            sup: Supervisor::new(slots, policy, t0),
            t0,
            next_pid: 4_000_000,
            log: Vec::new(),
            spawned: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Carries out the effects as the shell would: a Spawn starts a record (no process).
    fn run(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        loop {
            let mut batch = Vec::new();
            self.sup.drain_effects(&mut batch);
            if batch.is_empty() {
                break;
            }
            for e in batch {
                match &e {
                    Effect::Spawn { place, role } => {
                        self.next_pid += 1;
                        let w = crate::engine::fleet::test_worker_at(*place, self.next_pid, now);
                        let key = self.sup.spawned(w, *role);
                        self.spawned.push((*place, *role, key));
                    }
                    Effect::StopAccepting => self.sup.stop_workers(now),
                    _ => {}
                }
                out.push(e);
            }
        }
        self.log.extend(out.iter().cloned());
        out
    }

    fn tick(&mut self, ms: u64) -> Vec<Effect> {
        let now = self.at(ms);
        self.sup.tick(now, 0);
        self.run(now)
    }

    fn current(&self, slot: usize) -> Option<usize> {
        self.sup.fleet.slots[slot].current
    }
}

/// Starts every slot and makes its worker ready.
fn ready_fleet(h: &mut Harness, ms: u64) {
    let slots = h.sup.fleet.slots.len();
    for _ in 0..slots.div_ceil(super::clock::STARTS_PER_TICK) {
        h.tick(ms);
    }
    let keys: Vec<usize> = h.sup.fleet.workers.iter().map(|(k, _)| k).collect();
    for key in keys {
        h.sup.ready(key, h.at(ms));
    }
    h.run(h.at(ms));
}

#[test]
fn a_worker_exiting_unasked_is_restarted_after_the_backoff_then_given_up() {
    let mut h = Harness::new(1, policy(2));
    ready_fleet(&mut h, 0);
    let mut t = 10;
    for round in 0..3 {
        let key = h.current(0).expect("a worker serves slot 0");
        h.sup.exited(key, h.at(t), "exit code 1".into());
        let effects = h.run(h.at(t));
        if round < 2 {
            // Not yet: restarted after backoff_initial × 1.5^round, not before.
            assert!(effects.is_empty(), "{effects:?}");
            let delay = [100, 150][round];
            assert!(h.tick(t + delay - 1).is_empty());
            assert_eq!(
                h.tick(t + delay),
                [Effect::Spawn {
                    place: Place::Slot(0),
                    role: Role::Current
                }]
            );
            let new = h.current(0).unwrap();
            h.sup.ready(new, h.at(t + delay));
            t += delay + 10;
        } else {
            // The third exit within the window: given up, someone paged, and with no
            // ready worker left the master stops.
            assert!(
                matches!(&effects[0], Effect::Hook { place: Place::Slot(0), reason, .. }
                if reason.contains("3 unasked exits"))
            );
            assert!(effects.contains(&Effect::StopAccepting), "{effects:?}");
            assert!(h.sup.gave_up && h.sup.fleet.slots[0].given_up);
        }
    }
}

#[test]
fn a_reload_replaces_each_worker_only_once_its_successor_is_ready() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    let old: Vec<usize> = (0..2).map(|s| h.current(s).unwrap()).collect();
    assert_eq!(h.sup.can_reload(), Ok(()));
    h.sup.begin_reload(Some(7), false, 2, h.at(10));
    let effects = h.run(h.at(10));
    assert_eq!(
        effects,
        [Effect::Spawn {
            place: Place::Slot(0),
            role: Role::Candidate
        }]
    );
    assert!(
        h.sup
            .can_reload()
            .unwrap_err()
            .contains("already in progress")
    );
    let candidate = h.spawned.last().unwrap().2;
    // Until it is ready the old worker serves; then it takes over and the old one drains.
    assert_eq!(h.current(0), Some(old[0]));
    h.sup.ready(candidate, h.at(20));
    let effects = h.run(h.at(20));
    assert_eq!(
        effects,
        [
            Effect::Requeue(old[0]),
            Effect::Stop(old[0]),
            Effect::Spawn {
                place: Place::Slot(1),
                role: Role::Candidate
            }
        ]
    );
    assert_eq!(h.current(0), Some(candidate));
    let second = h.spawned.last().unwrap().2;
    h.sup.ready(second, h.at(30));
    let effects = h.run(h.at(30));
    assert!(
        matches!(effects.last(), Some(Effect::Answer { waiters, outcome: Ok(m) })
        if waiters == &[7] && m.contains("2 worker(s) replaced")),
        "{effects:?}"
    );
    assert_eq!(h.sup.reloads, [1, 0, 0], "completed");
    // The old ones get kill_timeout to finish, then SIGKILL.
    let effects = h.tick(20 + 500);
    assert_eq!(effects, [Effect::Kill(old[0])]);
}

#[test]
fn a_candidate_never_ready_fails_the_reload_and_the_old_worker_keeps_serving() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let old = h.current(0).unwrap();
    h.sup.begin_reload(None, false, 1, h.at(10));
    h.run(h.at(10));
    let candidate = h.spawned.last().unwrap().2;
    assert!(h.tick(1009).is_empty(), "not late yet");
    let effects = h.tick(1010);
    assert_eq!(effects[0], Effect::Kill(candidate));
    assert!(matches!(&effects[1], Effect::Answer { outcome: Err(m), .. }
        if m.contains("did not become ready") && m.contains("old worker keeps serving")));
    assert_eq!(h.current(0), Some(old));
    assert_eq!(h.sup.reloads, [0, 1, 0], "failed");
    assert_eq!(h.sup.can_reload(), Ok(()), "the next one may start");
}

#[test]
fn scaling_starts_new_slots_and_retires_removed_ones_gracefully() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    assert_eq!(
        h.sup.scale(3, h.at(5)),
        Ok("scaled from 2 to 3 worker(s)".into())
    );
    assert_eq!(
        h.tick(5),
        [Effect::Spawn {
            place: Place::Slot(2),
            role: Role::Current
        }]
    );
    let gone = [h.current(1).unwrap(), h.current(2).unwrap()];
    assert!(h.sup.scale(1, h.at(6)).is_ok());
    let effects = h.run(h.at(6));
    assert_eq!(
        effects,
        [
            Effect::Requeue(gone[0]),
            Effect::Stop(gone[0]),
            Effect::Requeue(gone[1]),
            Effect::Stop(gone[1])
        ]
    );
    assert_eq!(h.sup.fleet.slots.len(), 1);
    assert!(
        h.sup
            .scale(0, h.at(7))
            .unwrap_err()
            .contains("between 1 and")
    );
    // Their exits are planned: nothing restarts.
    for key in gone {
        h.sup.exited(key, h.at(8), "exit code 0".into());
    }
    assert!(h.run(h.at(8)).is_empty());
    assert!(h.tick(10_000).is_empty());
}

#[test]
fn a_stop_tells_everyone_then_kills_at_kill_timeout_and_refuses_more_requests() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    let keys: Vec<usize> = (0..2).map(|s| h.current(s).unwrap()).collect();
    h.sup.begin_reload(Some(3), false, 2, h.at(1));
    h.run(h.at(1));
    h.sup.begin_stop(h.at(10));
    let effects = h.run(h.at(10));
    assert!(
        matches!(&effects[0], Effect::Answer { outcome: Err(m), .. } if m.contains("stopping"))
    );
    assert_eq!(effects[1], Effect::StopAccepting);
    assert_eq!(h.sup.reloads, [0, 0, 1], "aborted");
    // Every worker, the reload's candidate too, is told to stop.
    assert_eq!(effects.len(), 2 + 3, "{effects:?}");
    assert!(h.sup.can_reload().is_err());
    assert!(h.sup.scale(5, h.at(11)).is_err());
    // An exit while stopping restarts nothing.
    h.sup.exited(keys[0], h.at(20), "exit code 0".into());
    assert!(h.run(h.at(20)).is_empty());
    assert!(h.tick(509).is_empty());
    let effects = h.tick(510);
    assert_eq!(effects.last(), Some(&Effect::KillHooks));
    assert_eq!(effects.len(), 3, "two left, then the hooks: {effects:?}");
}

#[test]
fn a_quick_stop_kills_everything_at_once() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    h.sup.quick_stop(h.at(5));
    let effects = h.run(h.at(5));
    assert_eq!(effects[0], Effect::CloseListeners);
    assert_eq!(
        effects
            .iter()
            .filter(|e| matches!(e, Effect::Kill(_)))
            .count(),
        2
    );
    assert_eq!(effects.last(), Some(&Effect::KillHooks));
    assert!(
        (0..2).all(|s| h.sup.fleet.serving_if(s, |_| true).is_none()),
        "a killed worker is handed nothing, not even the queue"
    );
    assert!(h.tick(100_000).is_empty(), "nothing restarts");
}

#[test]
fn a_closed_channel_under_a_live_worker_fails_it_after_a_grace() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let key = h.current(0).unwrap();
    h.sup.channel_closed(key, h.at(10), false);
    assert!(h.run(h.at(10)).is_empty(), "its exit may explain it");
    assert!(h.tick(209).is_empty());
    let effects = h.tick(210);
    assert_eq!(effects, [Effect::Stop(key)]);
    assert_eq!(h.current(0), None, "detached; its slot restarts");
    assert_eq!(
        h.tick(310),
        [Effect::Spawn {
            place: Place::Slot(0),
            role: Role::Current
        }]
    );
    // In `none` mode a worker that never spoke may close the channel it does not need.
    let other = h.current(0).unwrap();
    h.sup.ready(other, h.at(315));
    h.sup.channel_closed(other, h.at(320), true);
    // Only the first one, still not exited at kill_timeout, is killed.
    assert_eq!(h.tick(10_000), [Effect::Kill(key)]);
    assert_eq!(h.current(0), Some(other));
}

#[test]
fn a_slot_given_up_while_its_candidate_starts_serves_again_once_it_is_ready() {
    // Found by the supervision simulator (seed 345): the candidate was promoted into a
    // slot still marked given up, which later restarted a worker there anyway.
    let mut h = Harness::new(2, policy(0));
    ready_fleet(&mut h, 0);
    let old = h.current(0).unwrap();
    h.sup.begin_reload(None, false, 2, h.at(10));
    h.run(h.at(10));
    let candidate = h.spawned.last().unwrap().2;
    // The old worker of slot 0 fails for good (max_restarts 0); slot 1 still serves.
    h.sup.exited(old, h.at(20), "exit code 1".into());
    h.run(h.at(20));
    assert!(h.sup.fleet.slots[0].given_up);
    h.sup.ready(candidate, h.at(30));
    h.run(h.at(30));
    assert_eq!(h.current(0), Some(candidate));
    assert!(!h.sup.fleet.slots[0].given_up, "it serves: not given up");
}

#[test]
fn a_failed_spawn_counts_as_a_failure_of_its_slot() {
    let mut h = Harness::new(1, policy(0));
    h.sup.tick(h.at(0), 0);
    let mut batch = Vec::new();
    h.sup.drain_effects(&mut batch);
    assert_eq!(
        batch,
        [Effect::Spawn {
            place: Place::Slot(0),
            role: Role::Current
        }]
    );
    h.sup
        .spawn_failed(Place::Slot(0), Role::Current, h.at(0), "ENOENT".into());
    let effects = h.run(h.at(0));
    assert!(
        matches!(&effects[0], Effect::Hook { reason, .. } if reason.contains("spawn failed: ENOENT"))
    );
    assert!(h.sup.gave_up);
}

#[test]
fn reload_wait_is_answered_once_the_old_workers_have_exited() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    let old = h.current(0).unwrap();
    h.sup.begin_reload(Some(5), true, 1, h.at(10));
    h.run(h.at(10));
    let candidate = h.spawned.last().unwrap().2;
    h.sup.ready(candidate, h.at(20));
    let effects = h.run(h.at(20));
    // The new worker serves; the old one is finishing: no answer yet, the client still waits.
    assert_eq!(effects, [Effect::Requeue(old), Effect::Stop(old)]);
    assert!(h.sup.reload.is_none() && h.sup.is_waiting(5));
    assert!(
        h.sup.can_reload().is_ok(),
        "the next reload need not wait for the old workers"
    );
    h.sup.exited(old, h.at(320), "exit code 0".into());
    let effects = h.run(h.at(320));
    assert!(
        matches!(&effects[..], [Effect::Answer { waiters, outcome: Ok(m) }]
            if waiters == &[5] && m.contains("1 worker(s) replaced")
                && m.contains("the 1 old worker(s) have exited, the last 300.0ms after")),
        "{effects:?}"
    );
    assert!(!h.sup.is_waiting(5));
}

#[test]
fn a_plain_reload_answers_when_the_new_workers_are_ready_and_counts_the_old_ones() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    h.sup.begin_reload(Some(5), false, 2, h.at(10));
    for t in [20, 30] {
        h.run(h.at(t));
        let candidate = h.spawned.last().unwrap().2;
        h.sup.ready(candidate, h.at(t));
    }
    let effects = h.run(h.at(30));
    assert!(
        matches!(effects.last(), Some(Effect::Answer { waiters, outcome: Ok(m) })
            if waiters == &[5] && m.contains("2 old worker(s) still finishing")),
        "{effects:?}"
    );
    assert!(!h.sup.is_waiting(5));
}

/// A connection for a ledger of the tests: no socket, accepted at the harness's start.
pub(super) struct Conn0(Instant, Option<Instant>);

impl Conn for Conn0 {
    fn peer(&self) -> &crate::wire::protocol::Peer {
        &crate::wire::protocol::Peer::Unix
    }
    fn accepted(&self) -> Instant {
        self.0
    }
    fn sent(&self) -> Option<Instant> {
        self.1
    }
    fn set_sent(&mut self, at: Option<Instant>) {
        self.1 = at;
    }
}

mod lives;
mod recycling;
mod reloading;

#[test]
fn what_the_shell_tells_of_a_worker_goes_through_the_supervisor() {
    use crate::config::StopSignal;
    use crate::engine::stop_signal::Tell;
    use nix::sys::signal::Signal;
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    let (a, b) = (h.current(0).unwrap(), h.current(1).unwrap());
    // Not heard from: asked to stop, it gets the signal alone; once it spoke, on its channel.
    let term = StopSignal::Signal(Signal::SIGTERM);
    assert!(matches!(
        h.sup.ask_to_stop(a, term, false, true, true),
        Some((_, Tell::Signal(_)))
    ));
    h.sup.spoke(a);
    assert_eq!(
        h.sup
            .ask_to_stop(a, term, false, true, true)
            .map(|(_, t)| t),
        Some(Tell::Channel)
    );
    // A native worker's signal goes once its `stop` has left, and once only.
    assert_eq!(h.sup.before_flush(a, true), None);
    assert_eq!(h.sup.after_flush(a, false), Some(Signal::SIGTERM));
    assert_eq!(h.sup.after_flush(a, false), None);
    // A released channel: the worker serves no more; what was owed goes now.
    h.sup.spoke(b);
    h.sup.ask_to_stop(b, term, false, true, true);
    h.sup.fleet.workers[b].channel_open = true; // the harness's records have no channel
    assert!(h.sup.fleet().serving(1).is_some());
    assert_eq!(h.sup.channel_released(b, h.at(10)), Some(Signal::SIGTERM));
    assert!(h.sup.fleet().serving(1).is_none());
    // Memory as measured, by pid.
    let pid_a = h.sup.fleet().workers[a].pid;
    h.sup
        .memory_measured(|pid| (pid == pid_a).then_some(7 << 20));
    assert_eq!(h.sup.fleet().workers[a].rss, Some(7 << 20));
    assert_eq!(h.sup.fleet().workers[b].rss, None);
    // A stale key changes nothing and answers nothing.
    let stale = 1_000;
    h.sup.spoke(stale);
    assert_eq!(h.sup.heard(stale, true), None);
    assert!(h.sup.ask_to_stop(stale, term, false, true, true).is_none());
    assert_eq!(h.sup.channel_released(stale, h.at(10)), None);
}
