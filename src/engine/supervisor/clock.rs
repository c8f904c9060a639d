//! The supervisor's look at the clock: what is due at `now` — readiness by delay and its
//! timeout, channels closed under live workers, kills, (re)starts, the reload's next step, the
//! stop's SIGKILL — found through the [`Timers`](super::super::timers::Timers) hints, so that a tick costs what is due and
//! not a walk of the fleet. Whoever sets a timer arms its hint (`arm_worker`,
//! [`Fleet::start_at`](super::super::fleet::Fleet::start_at)); the tick arms again each worker
//! and place it looked at.

use std::time::Instant;

use log::{info, warn};

use super::super::effect::Effect;
use super::super::fleet::{State, Worker};
use super::super::ids::{Place, Role};
use super::super::lifecycle::{Start, StopStep};
use super::super::timers::Timed;
use super::Supervisor;

/// Hints held beyond this many per worker and place are compacted (armed again from the
/// records): stale ones cost a look each, and should not pile up.
const HINTS_PER_ENTITY: usize = 4;

/// Workers started in one tick at most; the other places due wait for the next tick, at once
/// (their hints stay due). Each start waits for the child to `exec` (2–8 ms here), and the
/// master serves nothing meanwhile: `scale 1024` from 2 started 1,022 in one tick and held
/// every connection for 8.6 s.
pub const STARTS_PER_TICK: usize = 8;

impl Supervisor {
    /// Wanted vs alive at `now`: readiness by delay and its timeout, channels closed under live
    /// workers, kills due, slots to (re)start, the reload's next step, and the stop's SIGKILL.
    /// `hooks`: `on_giveup` commands still running (a stop waits for them too). It looks only
    /// at the workers and places whose [`Timers`](super::super::timers::Timers) hint is due, so its
    /// cost does not grow with the fleet; each is armed again for its next moment after.
    pub fn tick(&mut self, now: Instant, hooks: usize) {
        self.take_due(now);
        self.due_stop_signals(now);
        for key in self.due_workers() {
            let Some(worker) = self.fleet.workers.get_mut(key) else {
                continue;
            };
            if worker.channel_closed_check.is_none_or(|t| t > now) {
                continue;
            }
            worker.channel_closed_check = None;
            warn!(
                "worker closed its channel but kept running {} pid={}; replacing it",
                worker.place, worker.pid
            );
            self.drain(key, now);
            self.fail_slot(key, now, "closed its channel".into());
        }
        self.check_readiness(now);
        let left = self.fleet.workers.len() + hooks;
        if self.phase.stop_step(now, left) == Some(StopStep::KillAll) {
            let keys: Vec<usize> = self.fleet.workers.iter().map(|(k, _)| k).collect();
            for key in keys {
                let worker = &mut self.fleet.workers[key];
                warn!(
                    "kill_timeout passed; SIGKILL {} pid={}",
                    worker.place, worker.pid
                );
                worker.kill_at = None;
                self.kill(key);
            }
            self.effects.push(Effect::KillHooks);
            self.phase.mark_killed();
            self.arm_due(now);
            return;
        }
        self.take_due(now);
        for key in self.due_workers() {
            let Some(worker) = self.fleet.workers.get_mut(key) else {
                continue;
            };
            if worker.kill_at.is_none_or(|t| t > now) {
                continue;
            }
            warn!(
                "worker did not exit in time {} pid={}; sending SIGKILL",
                worker.place, worker.pid
            );
            worker.kill_at = None;
            self.kill(key);
        }
        if self.running() {
            self.take_due(now);
            for place in self.due_starts(now) {
                if let Some(s) = self.fleet.place_mut(place) {
                    s.start_at = None;
                    if std::mem::replace(&mut s.given_up, false) {
                        info!(
                            "{place} was given up {:?} ago (restart.retry_after): trying it \
                             again",
                            self.policy.restart.retry_after
                        );
                        s.restarts = Default::default();
                    }
                }
                self.effects.push(Effect::Spawn {
                    place,
                    role: Role::Current,
                });
            }
            self.step_reload(now);
        } else {
            self.stop_agent_last(now);
        }
        self.arm_due(now);
    }

    /// `ready = "delay"` workers become ready after `ready_delay`; any worker not ready within
    /// `ready_timeout` is killed and counts as a failed start. (Those whose hint is due.)
    fn check_readiness(&mut self, now: Instant) {
        let mut ready = Vec::new();
        let mut late = Vec::new();
        for key in self.due_workers() {
            let Some(w) = self.fleet.workers.get(key) else {
                continue;
            };
            if w.state != State::Starting {
                continue;
            }
            match self.ready_rule(w.place).0.check(w.uptime(now)) {
                Start::Ready => ready.push(key),
                Start::Late => late.push(key),
                Start::Waiting => {}
            }
        }
        for key in late {
            let timeout = self.ready_rule(self.fleet.workers[key].place).1;
            let worker = &mut self.fleet.workers[key];
            warn!(
                "worker not ready within {timeout:?} {} pid={}; killing it",
                worker.place, worker.pid
            );
            worker.state = State::Draining;
            self.kill(key);
            self.fail_slot(key, now, format!("not ready within {timeout:?}"));
        }
        // After the failures: a promotion moves a reload on to the next slot, which must not be
        // one that has just failed for good in this same look at the clock.
        for key in ready {
            self.ready(key, now);
        }
    }

    /// The next moment a worker now starting is ready by its delay or late (a scan: for tests;
    /// the clock reads [`Timers`](super::timers::Timers)).
    #[cfg(test)]
    pub fn next_readiness_deadline(&self) -> Option<Instant> {
        self.fleet
            .workers
            .iter()
            .filter(|(_, w)| w.state == State::Starting)
            .map(|(_, w)| self.ready_rule(w.place).0.deadline(w.started))
            .min()
    }

    /// The earliest of `w`'s own timers: its SIGKILL, its deferred stop signal, the check of
    /// its closed channel, and while it starts its readiness.
    pub(super) fn worker_due(&self, w: &Worker) -> Option<Instant> {
        let ready =
            (w.state == State::Starting).then(|| self.ready_rule(w.place).0.deadline(w.started));
        [w.kill_at, w.channel_closed_check, w.stop_signal_at, ready]
            .into_iter()
            .flatten()
            .min()
    }

    /// A look at the worker of `key` at its next moment: whoever sets one of its timers calls
    /// this.
    pub(super) fn arm_worker(&mut self, key: usize) {
        let at = self.fleet.workers.get(key).and_then(|w| self.worker_due(w));
        self.fleet.timers.arm(at, Timed::Worker(key));
    }

    /// Takes the hints due at `now` into what this tick looks at.
    pub(super) fn take_due(&mut self, now: Instant) {
        self.fleet.timers.take_due(now, &mut self.due);
    }

    /// The workers this tick looks at.
    pub(super) fn due_workers(&self) -> Vec<usize> {
        (self.due.iter())
            .filter_map(|t| match t {
                Timed::Worker(key) => Some(*key),
                Timed::Place(_) => None,
            })
            .collect()
    }

    /// The places this tick starts a worker for: [startable](super::Fleet::startable), their
    /// start due; the agent first, then by place, [`STARTS_PER_TICK`] at most.
    pub(super) fn due_starts(&self, now: Instant) -> Vec<Place> {
        let mut places: Vec<Place> = (self.due.iter())
            .filter_map(|t| match t {
                Timed::Place(place) => Some(*place),
                Timed::Worker(_) => None,
            })
            .filter(|&place| self.fleet.may_start(place))
            .filter(|&place| {
                self.fleet
                    .place(place)
                    .is_some_and(|s| s.start_at.is_some_and(|t| t <= now))
            })
            .collect();
        places.sort_by_key(|&place| (place != Place::Agent, place));
        places.truncate(STARTS_PER_TICK);
        places
    }

    /// After a tick: each worker and place it looked at is armed again for its next moment (a
    /// place only while it may be started: one that is not is armed when it becomes so), and
    /// the hints are compacted if stale ones piled up.
    pub(super) fn arm_due(&mut self, now: Instant) {
        let due = std::mem::take(&mut self.due);
        for &what in &due {
            match what {
                Timed::Worker(key) => self.arm_worker(key),
                Timed::Place(place) => {
                    // Also one still due (past this tick's starts): at once, next tick —
                    // while running, when the next tick acts on it (else the loop would wake
                    // for it again and again).
                    let at = self.fleet.place(place).and_then(|s| s.start_at);
                    let acted_on = |t: Instant| t > now || self.running();
                    if self.fleet.may_start(place) && at.is_some_and(acted_on) {
                        self.fleet.timers.arm(at, what);
                    }
                }
            }
        }
        self.due = due;
        self.due.clear();
        let entities = self.fleet.workers.len() + self.fleet.slots.len() + 1;
        if self.fleet.timers.held() > HINTS_PER_ENTITY * entities + 64 {
            self.fleet.timers.clear();
            self.fleet.arm_places();
            let keys: Vec<usize> = self.fleet.workers.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.arm_worker(key);
            }
        }
    }
}
