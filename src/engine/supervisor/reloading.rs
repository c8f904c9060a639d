//! The supervisor's reload and scaling decisions: a rolling reload begun, moved on, completed
//! or failed; slots added and removed; the agent added or removed by a reload. The plan
//! ([`Reload`]) and its rules are in [`reload`](super::super::reload).

use std::collections::VecDeque;
use std::time::Instant;

use log::{error, info};

use super::super::effect::{Effect, Outcome};
use super::super::fleet::Slot;
use super::super::ids::{Place, Role, Waiter};
use super::super::reload::{Reload, RollStep};
use super::Supervisor;
use crate::config::MAX_WORKERS;

/// The reload and scaling decisions of the [`Supervisor`]: pure, like the rest of it.
impl Supervisor {
    /// Whether a reload may begin now; why not otherwise.
    pub fn can_reload(&self) -> Result<(), String> {
        if !self.running() {
            return Err("the master is stopping".into());
        }
        match &self.reload {
            Some(r) => Err(r.busy()),
            None => Ok(()),
        }
    }

    /// Begins a rolling reload to `workers` slots (the configuration read again is applied):
    /// slots given up get a fresh start, the others are replaced one at a time.
    /// `wait_drained`: `waiter` is answered only once the old workers have exited too.
    pub fn begin_reload(
        &mut self,
        waiter: Option<Waiter>,
        wait_drained: bool,
        workers: usize,
        now: Instant,
    ) {
        self.abandon_recycle("a reload replaces every worker", now);
        let before = self.fleet.slots.len();
        if workers != before {
            self.resize(workers, now);
        }
        self.set_agent(self.policy.agent_ready.is_some(), now);
        let mut pending = VecDeque::new();
        let fleet = &mut self.fleet;
        // The agent first: the new workers get the new agent's messages.
        let places = (fleet.agent.iter_mut().map(|a| (Place::Agent, a))).chain(
            fleet
                .slots
                .iter_mut()
                .enumerate()
                .map(|(i, s)| (Place::Slot(i), s)),
        );
        for (place, s) in places {
            if s.given_up {
                // The new configuration deserves a fresh chance.
                info!("reload: {place} was given up; starting it again");
                s.given_up = false;
                s.restarts = Default::default();
                s.start_at = Some(now);
            } else if s.current.is_some() {
                pending.push_back(place);
            }
        }
        self.fleet.arm_places(); // those given up start again
        let agent = pending.contains(&Place::Agent);
        info!(
            "reload: replacing {}{} worker(s), one at a time",
            if agent { "the agent, then " } else { "" },
            pending.len() - usize::from(agent)
        );
        let mut reload = Reload::new(pending, now, waiter, wait_drained);
        reload.resized = (workers != before).then_some((before, workers));
        self.reload = Some(reload);
        self.step_reload(now);
    }

    /// Moves the reload on: start the next candidate, or finish.
    pub(super) fn step_reload(&mut self, now: Instant) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let fleet = &self.fleet;
        let live = |place: Place| {
            fleet
                .place(place)
                .is_some_and(|s| s.current.is_some() && s.candidate.is_none())
        };
        match reload.next(live) {
            RollStep::Wait => {}
            RollStep::Done => {
                let mut done = self.reload.take().expect("checked above");
                self.reloads[0] += 1;
                let fleet = &self.fleet;
                let draining = done
                    .retired
                    .iter()
                    .filter(|&&p| fleet.key_of(p).is_some())
                    .count();
                let mut message = done.completed(now, draining, self.policy.kill_timeout);
                if self.policy.ready.at_start() {
                    message.push_str(
                        "; with ready = \"start\" a worker counts as ready when started, before \
                         its app has loaded (ready = \"message\" waits for it to say so)",
                    );
                }
                info!("{message}");
                // A reload has one waiter at most: answered now, or once its old workers
                // have exited (`reload --wait`).
                if !done.waiters.is_empty() {
                    self.effects.push(Effect::Answer {
                        waiters: std::mem::take(&mut done.waiters),
                        outcome: done.outcome(message),
                    });
                }
                if !done.drain_waiters.is_empty() {
                    // Its answer comes later, when none is still draining: said without them.
                    let kill_timeout = self.policy.kill_timeout;
                    let summary = done.completed(now, 0, kill_timeout);
                    self.drain_waits.push(done.into_drain_wait(summary, now));
                    self.old_workers_exited(now);
                }
            }
            RollStep::Roll(place) => self.effects.push(Effect::Spawn {
                place,
                role: Role::Candidate,
            }),
        }
    }

    /// A candidate is ready: it takes the slot and the old worker is asked to finish.
    pub(super) fn promote(&mut self, key: usize, now: Instant) {
        let slot = self.fleet.workers[key].place;
        let new_pid = self.fleet.workers[key].pid;
        let old = self.fleet.promote(key);
        if let Some(s) = self.fleet.place_mut(slot).filter(|s| s.given_up) {
            // Its old worker failed for good while this one started: the new one serves, so
            // the slot is not given up any more (a reload's fresh chance, as for slots given up
            // before it began).
            info!("reload: {slot} was given up; pid={new_pid} serves it again");
            s.given_up = false;
            s.restarts = Default::default();
        }
        let old_pid = old.and_then(|k| self.fleet.workers.get(k)).map(|w| w.pid);
        if let Some(old) = old {
            self.fleet.detach(old);
            self.effects.push(Effect::Requeue(old));
            let what = match &self.recycling {
                Some(r) if Place::Slot(r.slot) == slot => "recycle",
                _ => "reload",
            };
            if let Some(worker) = self.fleet.workers.get(old) {
                info!(
                    "{what}: {slot} pid={new_pid} replaces pid={}; it finishes within {:?}",
                    worker.pid, self.policy.kill_timeout
                );
            }
            self.drain(old, now);
        }
        if let Place::Slot(slot) = slot {
            self.recycled(slot, new_pid);
        }
        if let Some(reload) = &mut self.reload {
            reload.promoted(slot, old_pid);
        }
        self.step_reload(now);
    }

    /// The candidate at `key` failed (exited, misbehaved, not ready in time): kill it, keep the
    /// old worker, and end the reload as failed.
    pub(super) fn reload_failed(&mut self, key: usize, now: Instant, cause: String) {
        let Some(worker) = self.fleet.workers.get(key) else {
            return;
        };
        let (slot, pid) = (worker.place, worker.pid);
        self.fleet.detach(key);
        self.kill(key);
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.kill_at = Some(now + self.policy.kill_timeout);
            self.arm_worker(key);
        }
        self.fail_reload(slot, format!("pid {pid}: {cause}"), now);
    }

    /// The candidate of `slot` failed: the reload (or the recycle) it belonged to ends there.
    pub(super) fn fail_reload(&mut self, slot: Place, cause: String, now: Instant) {
        if let Place::Slot(slot) = slot {
            self.recycle_failed(slot, &cause, now);
        }
        let Some(reload) = self.reload.take() else {
            return;
        };
        self.reloads[1] += 1;
        let message = reload.failed(slot, &cause);
        error!("{message}");
        self.effects.push(Effect::Answer {
            waiters: reload.into_waiters(),
            outcome: Err(message),
        });
    }

    /// The reload just begun leaves `kept` (changes in the file it cannot apply) as they
    /// were: its outcome says so, as an error. `applied`: what the shell changed beside the
    /// workers (the listeners), said in the outcome too.
    pub fn keeping(&mut self, kept: Vec<String>, applied: Vec<String>) {
        if let Some(reload) = self.reload.as_mut() {
            reload.kept = kept;
            reload.applied = applied;
        }
    }

    /// A worker exited: answers the `reload --wait` clients whose old workers are all gone.
    pub(super) fn old_workers_exited(&mut self, now: Instant) {
        let fleet = &self.fleet;
        let mut i = 0;
        while i < self.drain_waits.len() {
            match self.drain_waits[i].answer(|pid| fleet.key_of(pid).is_some(), now) {
                Some(outcome) => {
                    info!("{}", outcome.as_ref().unwrap_or_else(|e| e));
                    let wait = self.drain_waits.swap_remove(i);
                    self.effects.push(Effect::Answer {
                        waiters: wait.waiters,
                        outcome,
                    });
                }
                None => i += 1,
            }
        }
    }

    /// Whether control connection `key` waits for a reload, or for its old workers to exit.
    pub fn is_waiting(&self, key: Waiter) -> bool {
        self.reload.as_ref().is_some_and(|r| r.is_waiting(key))
            || self.drain_waits.iter().any(|w| w.waiters.contains(&key))
    }

    /// Sets the number of workers to `n`: new slots start now; removed slots (from the end)
    /// have their workers stopped gracefully.
    pub fn scale(&mut self, n: usize, now: Instant) -> Outcome {
        if !self.running() {
            return Err("the master is stopping".into());
        }
        if self.reload.is_some() {
            return Err("a reload is in progress; scale when it ends".into());
        }
        if !(1..=MAX_WORKERS).contains(&n) {
            return Err(format!(
                "workers must be between 1 and {MAX_WORKERS}, not {n}"
            ));
        }
        let before = self.fleet.slots.len();
        if n == before {
            return Ok(format!("already {n} worker(s)"));
        }
        self.resize(n, now);
        let message = format!("scaled from {before} to {n} worker(s)");
        info!("{message}");
        Ok(message)
    }

    /// A reload's configuration has an `[agent]` (`wanted`) or none: one added starts now
    /// (the workers run already: they do not wait for it); one removed is asked to stop.
    fn set_agent(&mut self, wanted: bool, now: Instant) {
        match (&self.fleet.agent, wanted) {
            (None, true) => {
                info!("reload: [agent] added; starting it");
                self.fleet.agent = Some(Slot {
                    start_at: Some(now),
                    ..Default::default()
                });
                self.fleet.agent_started = true;
                self.fleet.arm_places();
            }
            (Some(agent), false) => {
                info!("reload: [agent] removed; stopping it");
                let keys: Vec<usize> = [agent.current, agent.candidate]
                    .into_iter()
                    .flatten()
                    .collect();
                for key in keys {
                    self.fleet.detach(key);
                    self.drain(key, now);
                }
                self.fleet.agent = None;
            }
            _ => {}
        }
    }

    pub(super) fn resize(&mut self, n: usize, now: Instant) {
        if self.recycling.as_ref().is_some_and(|r| r.slot >= n) {
            self.abandon_recycle("its slot is scaled away", now);
        }
        let before = self.fleet.slots.len();
        for slot in n..before {
            let s = &self.fleet.slots[slot];
            for key in [s.current, s.candidate].into_iter().flatten() {
                self.fleet.detach(key);
                self.effects.push(Effect::Requeue(key));
                if let Some(worker) = self.fleet.workers.get(key) {
                    info!("retiring slot={slot} pid={}", worker.pid);
                }
                self.drain(key, now);
            }
        }
        self.fleet.slots.truncate(n);
        for _ in before..n {
            self.fleet.slots.push(Slot {
                start_at: Some(now),
                ..Default::default()
            });
        }
        self.fleet.arm_places();
    }
}
