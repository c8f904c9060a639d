//! Changing the fleet while it serves: rolling reload (SIGHUP, `rrbalancer reload`) and scaling
//! (SIGTTIN/SIGTTOU, `rrbalancer scale N`).
//!
//! A reload re-reads the configuration, then replaces the workers one slot at a time: start a
//! *candidate* for the slot, wait for it to be ready, only then promote it and ask the old worker
//! to stop (it gets no new connection from that moment and finishes what it has within
//! `kill_timeout`). If a candidate fails to become ready, it is killed, the old worker keeps its
//! slot and the reload stops there, reported as failed: the fleet never has fewer ready workers
//! than before. One reload at a time; another request while one runs is refused.
//!
//! Here: the [`Reload`] plan, and the reload and scaling decisions of the
//! [`Supervisor`](super::supervisor::Supervisor) — pure. Reading the configuration again is the
//! shell's (`supervise.rs`).

use std::collections::VecDeque;
use std::time::Instant;

use log::{error, info};

use super::fleet::{Role, Slot};
use super::supervisor::{Effect, Supervisor};
use crate::config::MAX_WORKERS;

/// Who asked for a reload and waits for its outcome.
pub type Waiter = super::control::Waiter;

/// A rolling reload under way.
#[derive(Debug)]
pub struct Reload {
    /// Slots still to roll, in order.
    pending: VecDeque<usize>,
    /// The slot whose candidate we wait for.
    rolling: Option<usize>,
    replaced: usize,
    total: usize,
    started: Instant,
    waiters: Vec<Waiter>,
}

/// What a reload does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start a candidate for this slot.
    Roll(usize),
    /// A candidate is starting: wait for it to be ready (or to fail).
    Wait,
    /// Every slot is replaced.
    Done,
}

/// The reload as data: which slots are left, which one rolls now, who waits. Pure: the master
/// starts candidates and promotes them; this decides the order and reports the outcome.
impl Reload {
    /// A reload of `slots`, in that order (the slots that have a current worker).
    pub fn new(slots: VecDeque<usize>, started: Instant, waiter: Option<Waiter>) -> Reload {
        Reload {
            total: slots.len(),
            pending: slots,
            rolling: None,
            replaced: 0,
            started,
            waiters: waiter.into_iter().collect(),
        }
    }

    /// The next step. A slot that is no longer `live` (scaled away, or its worker gone and
    /// restarting anyway, so its next worker is new) is skipped.
    pub fn next(&mut self, live: impl Fn(usize) -> bool) -> Step {
        if self.rolling.is_some() {
            return Step::Wait;
        }
        while let Some(slot) = self.pending.pop_front() {
            if live(slot) {
                self.rolling = Some(slot);
                return Step::Roll(slot);
            }
        }
        Step::Done
    }

    /// The candidate of `slot` took over.
    pub fn promoted(&mut self, slot: usize) {
        if self.rolling == Some(slot) {
            self.rolling = None;
            self.replaced += 1;
        }
    }

    /// Why another reload is refused now.
    pub fn busy(&self) -> String {
        format!(
            "a reload is already in progress ({} of {} slots replaced); try again when it ends",
            self.replaced, self.total
        )
    }

    /// The outcome when every slot is done.
    pub fn completed(&self, now: Instant) -> String {
        format!(
            "reload complete: {} worker(s) replaced in {:.1?}",
            self.replaced,
            now.duration_since(self.started)
        )
    }

    /// The outcome when the candidate of `slot` failed: the old worker keeps serving.
    pub fn failed(&self, slot: usize, cause: &str) -> String {
        format!(
            "reload failed at slot={slot}: the new worker did not become ready ({cause}); \
             the old worker keeps serving; {} of {} slot(s) had been replaced",
            self.replaced, self.total
        )
    }

    pub fn into_waiters(self) -> Vec<Waiter> {
        self.waiters
    }

    /// Whether control connection `key` waits for this reload's outcome.
    pub fn is_waiting(&self, key: Waiter) -> bool {
        self.waiters.contains(&key)
    }
}

/// The outcome of a request, for the log and the control client.
pub type Outcome = Result<String, String>;

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
    pub fn begin_reload(&mut self, waiter: Option<Waiter>, workers: usize, now: Instant) {
        if workers != self.fleet.slots.len() {
            self.resize(workers, now);
        }
        let mut pending = VecDeque::new();
        for (slot, s) in self.fleet.slots.iter_mut().enumerate() {
            if s.given_up {
                // The new configuration deserves a fresh chance.
                info!("reload: slot={slot} was given up; starting it again");
                s.given_up = false;
                s.restarts = Default::default();
                s.start_at = Some(now);
            } else if s.current.is_some() {
                pending.push_back(slot);
            }
        }
        info!(
            "reload: replacing {} worker(s), one at a time",
            pending.len()
        );
        self.reload = Some(Reload::new(pending, now, waiter));
        self.step_reload(now);
    }

    /// Moves the reload on: start the next candidate, or finish.
    pub(super) fn step_reload(&mut self, now: Instant) {
        let Some(reload) = &mut self.reload else {
            return;
        };
        let slots = &self.fleet.slots;
        let live = |slot: usize| {
            slots
                .get(slot)
                .is_some_and(|s| s.current.is_some() && s.candidate.is_none())
        };
        match reload.next(live) {
            Step::Wait => {}
            Step::Done => {
                let done = self.reload.take().expect("checked above");
                let message = done.completed(now);
                info!("{message}");
                self.effects.push(Effect::Answer {
                    waiters: done.into_waiters(),
                    outcome: Ok(message),
                });
            }
            Step::Roll(slot) => self.effects.push(Effect::Spawn {
                slot,
                role: Role::Candidate,
            }),
        }
    }

    /// A candidate is ready: it takes the slot and the old worker is asked to finish.
    pub(super) fn promote(&mut self, key: usize, now: Instant) {
        let slot = self.fleet.workers[key].slot;
        let new_pid = self.fleet.workers[key].pid;
        let old = self.fleet.promote(key);
        if let Some(s) = self.fleet.slots.get_mut(slot).filter(|s| s.given_up) {
            // Its old worker failed for good while this one started: the new one serves, so
            // the slot is not given up any more (a reload's fresh chance, as for slots given up
            // before it began).
            info!("reload: slot={slot} was given up; pid={new_pid} serves it again");
            s.given_up = false;
            s.restarts = Default::default();
        }
        if let Some(old) = old {
            self.fleet.detach(old);
            self.effects.push(Effect::Requeue(old));
            if let Some(worker) = self.fleet.workers.get(old) {
                info!(
                    "reload: slot={slot} pid={new_pid} replaces pid={}; it finishes within {:?}",
                    worker.pid, self.policy.kill_timeout
                );
            }
            self.drain(old, now);
        }
        if let Some(reload) = &mut self.reload {
            reload.promoted(slot);
        }
        self.step_reload(now);
    }

    /// The candidate at `key` failed (exited, misbehaved, not ready in time): kill it, keep the
    /// old worker, and end the reload as failed.
    pub(super) fn reload_failed(&mut self, key: usize, now: Instant, cause: String) {
        let Some(worker) = self.fleet.workers.get(key) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.pid);
        self.fleet.detach(key);
        self.kill(key);
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.kill_at = Some(now + self.policy.kill_timeout);
        }
        self.fail_reload(slot, format!("pid {pid}: {cause}"));
    }

    pub(super) fn fail_reload(&mut self, slot: usize, cause: String) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        let message = reload.failed(slot, &cause);
        error!("{message}");
        self.effects.push(Effect::Answer {
            waiters: reload.into_waiters(),
            outcome: Err(message),
        });
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

    pub(super) fn resize(&mut self, n: usize, now: Instant) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reload(slots: &[usize]) -> Reload {
        Reload::new(slots.iter().copied().collect(), Instant::now(), Some(7))
    }

    #[test]
    fn slots_roll_one_at_a_time_in_order_each_after_the_last_is_promoted() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(r.next(|_| true), Step::Roll(0));
        assert_eq!(
            r.next(|_| true),
            Step::Wait,
            "slot 0's candidate is not ready"
        );
        r.promoted(0);
        assert_eq!(r.next(|_| true), Step::Roll(1));
        r.promoted(1);
        assert_eq!(r.next(|_| true), Step::Roll(2));
        r.promoted(2);
        assert_eq!(r.next(|_| true), Step::Done);
        assert!(r.completed(Instant::now()).contains("3 worker(s) replaced"));
        assert!(r.is_waiting(7) && !r.is_waiting(8));
    }

    #[test]
    fn a_slot_scaled_away_or_restarting_meanwhile_is_skipped() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(r.next(|s| s != 0), Step::Roll(1));
        r.promoted(1);
        assert_eq!(r.next(|s| s != 2), Step::Done);
        assert!(r.completed(Instant::now()).contains("1 worker(s) replaced"));
    }

    #[test]
    fn a_promotion_of_another_slot_does_not_move_it_on() {
        let mut r = reload(&[0, 1]);
        assert_eq!(r.next(|_| true), Step::Roll(0));
        r.promoted(1); // e.g. a slot restarting on its own: not the one rolling
        assert_eq!(r.next(|_| true), Step::Wait);
    }

    #[test]
    fn refusals_and_failures_say_how_far_it_got() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(r.next(|_| true), Step::Roll(0));
        r.promoted(0);
        assert_eq!(r.next(|_| true), Step::Roll(1));
        assert!(r.busy().contains("1 of 3 slots replaced"), "{}", r.busy());
        let failed = r.failed(1, "not ready within 30s");
        assert!(
            failed.contains("slot=1")
                && failed.contains("not ready within 30s")
                && failed.contains("old worker keeps serving")
                && failed.contains("1 of 3"),
            "{failed}"
        );
        assert_eq!(r.into_waiters(), [7]);
    }

    #[test]
    fn an_empty_fleet_reloads_at_once() {
        assert_eq!(reload(&[]).next(|_| true), Step::Done);
    }
}
