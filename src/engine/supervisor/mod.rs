//! The supervisor: every decision about the workers' lives, without I/O. It takes facts — a
//! worker said `ready` or `leaving`, its channel closed, it misbehaved or is stuck, it exited, a
//! spawn failed, the clock moved, a reload, scale or stop was asked for — and answers with
//! [`Effect`]s into a buffer the master's shell executes: start a worker, ask one to stop, kill
//! one, give back its unsent sockets, run `on_giveup`, answer a control client, stop accepting.
//! It reads no clock (`now` is an argument) and makes no system call, so its rules are tested
//! here without processes.
//!
//! It owns the [`Fleet`], the stop [`Phase`], the [`Reload`] and the recycle under way (decided
//! in `reloading.rs`, `recycling.rs`: the plans never name it), and whether it gave up.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use nix::unistd::Pid;

use super::effect::Effect;
use super::fleet::{Fleet, State, Worker};
use super::ids::{Place, Role};
use super::ledger::{Conn, Ledger};
use super::lifecycle::{Phase, ReadyRule};
use super::recycle::Recycling;
use super::reload::{DrainWait, Reload};
use super::restart::Decision;
use super::timers::Timed;
use crate::config::{AllGivenUp, Config, RestartConfig};

mod clock;
mod deadline;
pub use deadline::ack_deadline;
mod recycling;
mod reloading;
mod stopping;
mod told;

use super::stop_signal::CHANNEL_CLOSED_GRACE;

/// The workers past their ack deadline at `now`: each is to be reported [`Supervisor::stuck`].
pub fn overdue<C: Conn>(
    fleet: &Fleet,
    ledger: &Ledger<C>,
    timeout: Duration,
    now: Instant,
) -> Vec<usize> {
    fleet
        .workers
        .iter()
        .filter(|(_, w)| ack_deadline(w, ledger, timeout).is_some_and(|t| t <= now))
        .map(|(k, _)| k)
        .collect()
}

/// The settings the supervisor decides by (taken again on reload).
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub restart: RestartConfig,
    pub kill_timeout: Duration,
    pub ready: ReadyRule,
    pub ready_timeout: Duration,
    /// The agent's (`[agent] ready`…), if one is configured.
    pub agent_ready: Option<(ReadyRule, Duration)>,
    pub ack_timeout: Duration,
}

impl Policy {
    pub fn of(config: &Config) -> Policy {
        Policy {
            restart: config.restart,
            kill_timeout: config.kill_timeout,
            ready: ReadyRule::new(&config.worker),
            ready_timeout: config.worker.ready_timeout,
            agent_ready: config
                .agent
                .as_ref()
                .map(|a| (ReadyRule::of_agent(a), a.ready_timeout)),
            ack_timeout: config.worker.ack_timeout,
        }
    }
}

#[derive(Debug)]
pub struct Supervisor {
    pub(in crate::engine) fleet: Fleet,
    pub(in crate::engine) phase: Phase,
    /// The rolling reload under way, if any.
    pub(in crate::engine) reload: Option<Reload>,
    /// `reload --wait` clients whose reload completed, waiting for its old workers to exit.
    pub(super) drain_waits: Vec<DrainWait>,
    /// The slot being recycled (`[recycle]`), if one is.
    pub(in crate::engine) recycling: Option<Recycling>,
    /// A recycle's successor failed: no other begins before then.
    pub(super) recycle_paused_until: Option<Instant>,
    /// Some worker may have a `max_age` (`[recycle] max_age` is set, or was when it started):
    /// without, [`Supervisor::next_recycle_check`] walks nothing.
    pub(super) ages: bool,
    /// Every slot was given up: the master stops and exits with an error.
    pub(in crate::engine) gave_up: bool,
    /// Reloads ended, by [`metrics::RELOAD_OUTCOMES`](super::metrics::RELOAD_OUTCOMES).
    pub(in crate::engine) reloads: [u64; 3],
    pub(super) policy: Policy,
    pub(super) effects: Vec<Effect>,
    /// What the clock looks at in this tick: the hints taken from `fleet.timers`.
    pub(super) due: Vec<Timed>,
    /// No worker's oldest un-acked connection is older than this ([`Supervisor::overdue`]).
    pub(super) ack_floor: Option<Instant>,
}

impl Supervisor {
    /// `slots` workers, and the agent first if the policy has one.
    pub fn new(slots: usize, policy: Policy, now: Instant) -> Supervisor {
        Supervisor {
            fleet: Fleet::new(slots, policy.agent_ready.is_some(), now),
            phase: Phase::Running,
            reload: None,
            drain_waits: Vec::new(),
            recycling: None,
            recycle_paused_until: None,
            ages: true,
            gave_up: false,
            reloads: [0; 3],
            policy,
            effects: Vec::new(),
            due: Vec::new(),
            // Nothing was sent before the master started.
            ack_floor: Some(now),
        }
    }

    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Whether `[recycle] max_age` is set (true until told): the shell, which reads the
    /// configuration, says so at the start and at each reload. Workers started under an
    /// earlier one keep their `max_age`, so `false` is taken only once none of them is left.
    pub fn set_max_age(&mut self, configured: bool) {
        let aged = self
            .fleet
            .workers
            .iter()
            .any(|(_, w)| w.limits.age.is_some());
        self.ages = configured || aged;
    }

    /// The slots and the workers, for the shell to read (it writes nothing of them: what it
    /// sees of a worker it tells the supervisor, `told.rs`).
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Running, stopping (since when, until when) or killed.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The slot being recycled (`[recycle]`), if one is.
    pub fn recycling(&self) -> Option<&Recycling> {
        self.recycling.as_ref()
    }

    /// A rolling reload is under way.
    pub fn reloading(&self) -> bool {
        self.reload.is_some()
    }

    /// Every slot was given up (or the agent before it was ever ready): the master stops and
    /// exits with an error ([`Supervisor::gave_up_why`]).
    pub fn gave_up(&self) -> bool {
        self.gave_up
    }

    /// Reloads ended, by [`metrics::RELOAD_OUTCOMES`](super::metrics::RELOAD_OUTCOMES).
    pub fn reloads(&self) -> [u64; 3] {
        self.reloads
    }

    /// Moves the effects decided so far into `out`, in order.
    pub fn drain_effects(&mut self, out: &mut Vec<Effect>) {
        out.append(&mut self.effects);
    }

    pub(super) fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    // ---- what workers say -------------------------------------------------------------------

    /// A worker is serving: by its `ready`, or `ready_delay` after its start. A candidate takes
    /// its slot.
    pub fn ready(&mut self, key: usize, now: Instant) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        if worker.state != State::Starting {
            debug!("ready {} pid={} (ignored)", worker.place, worker.pid);
            return;
        }
        worker.state = State::Ready;
        info!(
            "worker ready {} pid={} after {:?}",
            worker.place,
            worker.pid,
            worker.uptime(now)
        );
        if worker.place == Place::Agent && !self.fleet.agent_started {
            info!("the agent is ready: starting the workers");
            self.fleet.agent_started = true;
            self.fleet.arm_places();
        }
        // Once stopping, the reload it belonged to is over: it takes nothing over (an agent's
        // candidate would have its predecessor stopped before the workers).
        if self.fleet.role(key) == Role::Candidate && self.running() {
            self.promote(key, now);
        }
    }

    /// The seeds' "suicide": route nothing more to it and start its successor now.
    pub fn leaving(&mut self, key: usize, now: Instant) {
        let Some(worker) = self.fleet.workers.get(key) else {
            return;
        };
        let (place, pid) = (worker.place, worker.pid);
        let role = self.fleet.role(key);
        if role == Role::Candidate {
            self.reload_failed(key, now, "it said `leaving` before it was ready".into());
        }
        self.fleet.detach(key);
        self.effects.push(Effect::Requeue(key));
        if role == Role::Current && self.running() {
            info!("worker leaving {place} pid={pid}; starting its successor");
            self.fleet.start_at(place, now);
        }
    }

    /// It said `full`: it is out of file descriptors (its connections were given back to
    /// others by the ledger). Remembered: should it exit soon, load made it, not a bug.
    pub fn full(&mut self, key: usize, now: Instant) {
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.full_at = Some(now);
        }
    }

    /// A worker that does not keep up with its messages: replaced as one `leaving` is (its
    /// successor starts now) and asked to stop. A recycle of its slot, not a failure.
    pub fn replace_slow(&mut self, key: usize, now: Instant) {
        let Some(worker) = self.fleet.workers.get(key) else {
            return;
        };
        let place = worker.place;
        let current = self.fleet.role(key) == Role::Current;
        self.leaving(key, now);
        self.drain(key, now);
        if let Some(s) = self.fleet.place_mut(place).filter(|_| current) {
            s.recycled += 1;
        }
    }

    /// Its channel closed (the shell has released it). `silent`: a worker that never spoke on
    /// a channel it did not need (a socket-activation server in `none` mode) — not a failure.
    pub fn channel_closed(&mut self, key: usize, now: Instant, silent: bool) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        if silent {
            debug!(
                "worker closed its channel {} pid={} (it never used it)",
                worker.place, worker.pid
            );
            return;
        }
        if worker.state == State::Draining {
            return; // expected: it is on its way out
        }
        // Usually the worker is exiting and its exit status is the real story; give the exit a
        // moment to be reaped before calling the closed channel itself the failure.
        worker.channel_closed_check = Some(now + CHANNEL_CLOSED_GRACE);
        self.arm_worker(key);
    }

    /// It broke the protocol (the shell has released its channel): replace it.
    pub fn misbehaved(&mut self, key: usize, now: Instant, detail: String) {
        if !self.fleet.workers.contains(key) {
            return;
        }
        self.drain(key, now);
        self.fail_slot(key, now, detail);
    }

    /// It held a socket un-acked past `ack_timeout`: it gets nothing more, is killed, and its
    /// slot is refilled under the restart policy.
    pub fn stuck(&mut self, key: usize, now: Instant) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        worker.stuck = true;
        worker.state = State::Draining;
        self.kill(key);
        let timeout = self.policy.ack_timeout;
        self.fail_slot(key, now, format!("no ack within ack_timeout ({timeout:?})"));
    }

    /// It exited (the shell has read its last words, released its channel and sockets): forget
    /// it, and let the restart policy decide about its slot if it left unasked. Returns its
    /// record.
    pub fn exited(&mut self, key: usize, now: Instant, cause: String) -> Option<Worker> {
        if !self.fleet.workers.contains(key) {
            return None;
        }
        if self.fleet.role(key) == Role::Candidate {
            self.reload_failed(key, now, cause.clone());
        }
        let (worker, role) = self.fleet.remove(key);
        let (place, pid) = (worker.place, worker.pid);
        if role == Role::Current && self.running() {
            warn!(
                "worker exited unasked {place} pid={pid}: {cause} (up {:?})",
                worker.uptime(now)
            );
            let load = worker.short_of_fds(now);
            self.slot_failed(place, pid, worker.uptime(now), now, cause, load);
        } else {
            info!("worker exited {place} pid={pid}: {cause}");
        }
        self.old_workers_exited(now);
        Some(worker)
    }

    /// A worker for `place` could not be started.
    pub fn spawn_failed(&mut self, place: Place, role: Role, now: Instant, error: String) {
        match role {
            Role::Current => {
                let cause = format!("spawn failed: {error}");
                self.slot_failed(place, Pid::from_raw(0), Duration::ZERO, now, cause, false);
            }
            Role::Candidate => {
                self.fail_reload(place, "the candidate could not be started".into(), now)
            }
            Role::Detached => {}
        }
    }

    // ---- the clock ----------------------------------------------------------------------------

    /// The readiness rule of a process at `place`, and its timeout.
    fn ready_rule(&self, place: Place) -> (ReadyRule, Duration) {
        match (place, self.policy.agent_ready) {
            (Place::Agent, Some(rule)) => rule,
            _ => (self.policy.ready, self.policy.ready_timeout),
        }
    }

    // ---- failures -----------------------------------------------------------------------------

    /// SIGKILL for `key`, once per batch of effects.
    pub(super) fn kill(&mut self, key: usize) {
        if !self.effects.contains(&Effect::Kill(key)) {
            self.effects.push(Effect::Kill(key));
        }
    }

    /// Asks a worker to finish within `kill_timeout`: it gets nothing new from now on.
    pub(super) fn drain(&mut self, key: usize, now: Instant) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        worker.state = State::Draining;
        let deadline = now + self.policy.kill_timeout;
        worker.kill_at = Some(worker.kill_at.map_or(deadline, |t| t.min(deadline)));
        self.arm_worker(key);
        self.effects.push(Effect::Stop(key));
    }

    /// The worker at `key` failed: detach it and let the restart policy decide about its slot.
    fn fail_slot(&mut self, key: usize, now: Instant, cause: String) {
        let Some(worker) = self.fleet.workers.get(key) else {
            return;
        };
        let (place, pid, uptime) = (worker.place, worker.pid, worker.uptime(now));
        match self.fleet.role(key) {
            Role::Current => {
                self.fleet.detach(key);
                self.slot_failed(place, pid, uptime, now, cause, false);
            }
            Role::Candidate => self.reload_failed(key, now, cause),
            Role::Detached => {}
        }
    }

    /// The worker of `place` failed: the restart policy decides. `load`: it was out of file
    /// descriptors (it said `full` lately), which clients caused: it is restarted after the
    /// first back-off, and the failure does not count toward giving up.
    fn slot_failed(
        &mut self,
        place: Place,
        pid: Pid,
        uptime: Duration,
        now: Instant,
        cause: String,
        load: bool,
    ) {
        if !self.running() {
            return;
        }
        let policy = self.policy.restart;
        let agent_started = self.fleet.agent_started;
        let Some(s) = self.fleet.place_mut(place) else {
            return; // scaled away meanwhile
        };
        s.remember_cause(format!("pid {pid}: {cause}"));
        let decision = if load {
            info!(
                "{place} pid={pid} exited at its open-file limit (load, not a crash): not \
                 counted toward giving up"
            );
            Decision::RestartAfter(policy.backoff_initial)
        } else {
            s.restarts.on_failure(&policy, now, uptime)
        };
        match decision {
            Decision::RestartAfter(delay) => {
                s.restart_count += 1;
                self.fleet.start_at(place, now + delay);
                info!("restarting {place} in {delay:?}");
            }
            Decision::GiveUp => {
                s.given_up = true;
                s.giveups += 1;
                let causes: Vec<&str> = s.last_causes.iter().map(String::as_str).collect();
                let reason = format!(
                    "{} unasked exits within {:?} (max_restarts={}); last causes: {}",
                    s.restarts.recent(),
                    policy.window,
                    policy.max_restarts,
                    causes.join("; ")
                );
                // Tried again later with a fresh window (the cause may pass: a database back,
                // a disk freed), unless the master stops below.
                self.fleet.start_at(place, now + policy.retry_after);
                let stops = if place == Place::Agent {
                    !agent_started
                } else {
                    self.fleet.none_left() && policy.on_all_given_up == AllGivenUp::Exit
                };
                if stops {
                    error!("giveup {place}: {reason}; not restarting it");
                } else {
                    error!(
                        "giveup {place}: {reason}; trying it again in {:?} (restart.retry_after)",
                        policy.retry_after
                    );
                }
                self.effects.push(Effect::Hook { place, pid, reason });
                if stops && place == Place::Agent {
                    error!(
                        "the agent never became ready, and the workers start only once it is; \
                         stopping"
                    );
                    self.gave_up = true;
                    self.begin_stop(now);
                } else if place == Place::Agent {
                    error!(
                        "the workers serve on without the agent: no message comes from it until \
                         it is tried again in {:?} (restart.retry_after), or a reload",
                        policy.retry_after
                    );
                } else if stops {
                    error!(
                        "every slot gave up: no worker is left to serve; stopping \
                         (restart.on_all_given_up = \"exit\")"
                    );
                    self.gave_up = true;
                    self.begin_stop(now);
                } else if self.fleet.none_left() {
                    error!(
                        "every slot gave up: no worker serves now; the listeners stay open \
                         (clients wait in the backlog) and each slot is tried again \
                         {:?} after it was given up (restart.retry_after)",
                        policy.retry_after
                    );
                }
            }
        }
    }

    /// Why the master gave up (with [`Supervisor::gave_up`]).
    pub fn gave_up_why(&self) -> &'static str {
        if self.fleet.agent.is_some() && !self.fleet.agent_started {
            "the agent never became ready, so no worker was started"
        } else {
            "no worker could be kept running"
        }
    }
}

#[cfg(test)]
mod tests;
