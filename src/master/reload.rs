//! Changing the fleet while it serves: rolling reload (SIGHUP, `rrbalancer reload`) and scaling
//! (SIGTTIN/SIGTTOU, `rrbalancer scale N`).
//!
//! A reload re-reads the configuration, then replaces the workers one slot at a time: start a
//! *candidate* for the slot, wait for it to be ready, only then promote it and ask the old worker
//! to stop (it gets no new connection from that moment and finishes what it has within
//! `kill_timeout`). If a candidate fails to become ready, it is killed, the old worker keeps its
//! slot and the reload stops there, reported as failed: the fleet never has fewer ready workers
//! than before. One reload at a time; another request while one runs is refused.

use std::collections::VecDeque;
use std::time::Instant;

use log::warn;

use super::Master;
use super::fleet;
use super::supervisor::Policy;
use crate::config::Config;

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

impl Master {
    /// Starts a rolling reload with the configuration read again. `Err` when refused at once
    /// (one already runs, the master is stopping, the file no longer parses); otherwise the
    /// outcome is reported to `waiter` when the reload ends.
    pub(super) fn request_reload(&mut self, waiter: Option<Waiter>) -> Result<(), String> {
        self.core.can_reload()?;
        let config = (self.loader)().map_err(|e| {
            format!("the configuration no longer loads, so the running fleet is kept: {e}")
        })?;
        self.apply_config(config);
        self.core.set_policy(Policy::of(&self.config));
        self.core
            .begin_reload(waiter, self.config.workers, Instant::now());
        self.apply_effects();
        Ok(())
    }

    /// Takes what can change without rebinding; warns about what cannot.
    fn apply_config(&mut self, mut config: Config) {
        if config.listen != self.config.listen {
            warn!("reload: `listen` changed; that needs a restart, keeping the current listeners");
        }
        if config.sched_policy != self.config.sched_policy {
            warn!(
                "reload: sched_policy changed to {}; that needs a restart, keeping {}",
                config.sched_policy.as_str(),
                self.config.sched_policy.as_str()
            );
        }
        if config.control != self.config.control {
            warn!("reload: `[control]` changed; that needs a restart, keeping the current paths");
        }
        if config.worker.protocol != self.config.worker.protocol {
            warn!(
                "reload: `worker.protocol` changed; that needs a restart, keeping the current one"
            );
            // The window goes with the protocol (Node's is one).
            config.worker.max_unacked = self.config.worker.max_unacked;
        }
        config.worker.protocol = self.config.worker.protocol;
        config.listen = self.config.listen.clone();
        config.sched_policy = self.config.sched_policy;
        config.policy_source = self.config.policy_source;
        config.control = self.config.control.clone();
        config.source = self.config.source.clone();
        if config.log != self.config.log {
            match super::output::open_sinks(&config.log) {
                Ok(sinks) => self.sinks = sinks,
                Err(e) => {
                    warn!("reload: cannot open the new log files ({e}); keeping the old ones");
                    config.log = self.config.log.clone();
                }
            }
        }
        self.base_env = fleet::base_env(&config);
        self.config = config;
    }

    /// Sets the number of workers to `n`: new slots start now; removed slots (from the end)
    /// have their workers stopped gracefully.
    pub(super) fn scale_to(&mut self, n: usize) -> Outcome {
        let outcome = self.core.scale(n, Instant::now());
        if outcome.is_ok() {
            self.config.workers = n;
        }
        self.apply_effects();
        outcome
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
