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
//! Here: the [`Reload`] plan and the `reload --wait` clients' [`DrainWait`] — pure, naming no
//! supervisor. The decisions that move them are the supervisor's (`supervisor/reloading.rs`);
//! reading the configuration again is the shell's (`supervisor_io.rs`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::ids::{Place, Waiter};

/// A rolling reload under way.
#[derive(Debug)]
pub struct Reload {
    /// Places still to roll, in order (the agent first, if there is one).
    pending: VecDeque<Place>,
    /// The place whose candidate we wait for.
    rolling: Option<Place>,
    /// Slots replaced so far, of `total`; and whether the agent was.
    replaced: usize,
    total: usize,
    agent_replaced: bool,
    started: Instant,
    pub(super) waiters: Vec<Waiter>,
    /// Those that asked to be answered only once the old workers have exited (`--wait`).
    pub(super) drain_waiters: Vec<Waiter>,
    /// The old workers it asked to stop.
    pub(super) retired: Vec<Pid>,
    /// It changed the number of workers (from, to): the configuration's `workers` changed.
    pub(super) resized: Option<(usize, usize)>,
    /// Changes in the file that a reload cannot apply (`reconfigure::merge`): said in the
    /// outcome, which is then an error (the operator asked for something that did not happen).
    pub(super) kept: Vec<String>,
    /// Changes in the file applied beside the workers (`relisten`): said in the outcome.
    pub(super) applied: Vec<String>,
}

/// Control clients waiting, after a reload completed, for the old workers it retired to exit
/// (`rrbalancer reload --wait`).
#[derive(Debug)]
pub struct DrainWait {
    pub(super) waiters: Vec<Waiter>,
    pids: Vec<Pid>,
    /// The reload's outcome (without its old workers still draining), to which the wait adds
    /// its own; and whether it is an error (changes were not applied).
    completed: String,
    not_applied: bool,
    since: Instant,
}

/// What a reload does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollStep {
    /// Start a candidate for this slot (or the agent).
    Roll(Place),
    /// A candidate is starting: wait for it to be ready (or to fail).
    Wait,
    /// Every slot is replaced.
    Done,
}

/// The reload as data: which slots are left, which one rolls now, who waits. Pure: the master
/// starts candidates and promotes them; this decides the order and reports the outcome.
impl Reload {
    /// A reload of `slots`, in that order (the places that have a current worker).
    /// `wait_drained`: the waiter is answered once the old workers have exited too.
    pub fn new(
        slots: VecDeque<Place>,
        started: Instant,
        waiter: Option<Waiter>,
        wait_drained: bool,
    ) -> Reload {
        let (waiters, drain_waiters) = match waiter {
            Some(w) if wait_drained => (Vec::new(), vec![w]),
            w => (w.into_iter().collect(), Vec::new()),
        };
        Reload {
            total: slots.iter().filter(|p| **p != Place::Agent).count(),
            agent_replaced: false,
            pending: slots,
            rolling: None,
            replaced: 0,
            started,
            waiters,
            drain_waiters,
            retired: Vec::new(),
            resized: None,
            kept: Vec::new(),
            applied: Vec::new(),
        }
    }

    /// The next step. A slot that is no longer `live` (scaled away, or its worker gone and
    /// restarting anyway, so its next worker is new) is skipped.
    pub fn next(&mut self, live: impl Fn(Place) -> bool) -> RollStep {
        if self.rolling.is_some() {
            return RollStep::Wait;
        }
        while let Some(slot) = self.pending.pop_front() {
            if live(slot) {
                self.rolling = Some(slot);
                return RollStep::Roll(slot);
            }
        }
        RollStep::Done
    }

    /// The candidate of `slot` took over; `old`, the worker it replaced, was asked to stop.
    pub fn promoted(&mut self, slot: Place, old: Option<Pid>) {
        self.retired.extend(old);
        if self.rolling == Some(slot) {
            self.rolling = None;
            match slot {
                Place::Agent => self.agent_replaced = true,
                Place::Slot(_) => self.replaced += 1,
            }
        }
    }

    /// Why another reload is refused now.
    pub fn busy(&self) -> String {
        format!(
            "a reload is already in progress ({} of {} slots replaced); try again when it ends",
            self.replaced, self.total
        )
    }

    /// The outcome when every slot is done: the new workers are ready; `draining` of the old
    /// ones have not exited yet (they have `kill_timeout` to).
    pub fn completed(&self, now: Instant, draining: usize, kill_timeout: Duration) -> String {
        let mut message = format!(
            "reload complete: {} worker(s){} replaced in {:.1?}, the new ones ready",
            self.replaced,
            if self.agent_replaced {
                " and the agent"
            } else {
                ""
            },
            now.duration_since(self.started)
        );
        match self.resized {
            Some((from, to)) if to > from => message.push_str(&format!(
                "; scaled from {from} to {to} worker(s) as the configuration says ({} new \
                 worker(s) started beside, `status` shows when they are ready)",
                to - from
            )),
            Some((from, to)) => message.push_str(&format!(
                "; scaled from {from} to {to} worker(s) as the configuration says ({} retired)",
                from - to
            )),
            None => {}
        }
        for line in &self.applied {
            message.push_str("; ");
            message.push_str(line);
        }
        if draining > 0 {
            message.push_str(&format!(
                "; {draining} old worker(s) still finishing their connections (SIGKILL after \
                 {kill_timeout:?})"
            ));
        }
        if !self.kept.is_empty() {
            message.push_str(&format!(
                "; NOT applied, kept as they were: {}",
                self.kept.join("; ")
            ));
        }
        message
    }

    /// The old workers retired, with their waiters, once every slot is done: who still waits.
    pub fn into_drain_wait(self, completed: String, now: Instant) -> DrainWait {
        DrainWait {
            not_applied: !self.kept.is_empty(),
            waiters: self.drain_waiters,
            pids: self.retired,
            completed,
            since: now,
        }
    }

    /// `message` as the outcome: an error when some change was not applied.
    pub fn outcome(&self, message: String) -> Result<String, String> {
        if self.kept.is_empty() {
            Ok(message)
        } else {
            Err(message)
        }
    }

    /// The outcome when the candidate of `slot` failed: the old worker keeps serving.
    pub fn failed(&self, slot: Place, cause: &str) -> String {
        let mut message = format!(
            "reload failed at {slot}: the new worker did not become ready ({cause}); \
             the old worker keeps serving; {} of {} slot(s) had been replaced",
            self.replaced, self.total
        );
        for line in &self.applied {
            // Removed addresses stay removed; new ones are closed again (`relisten`).
            message.push_str(&format!(
                "; {line} — but as the reload failed, a new address is closed again in rr \
                 mode, where only workers started knowing it may serve it (reload again once \
                 the cause is fixed)"
            ));
        }
        message
    }

    /// Everyone waiting for its outcome (a failed reload answers them all at once).
    pub fn into_waiters(mut self) -> Vec<Waiter> {
        self.waiters.append(&mut self.drain_waiters);
        self.waiters
    }

    /// Whether control connection `key` waits for this reload's outcome.
    pub fn is_waiting(&self, key: Waiter) -> bool {
        self.waiters.contains(&key) || self.drain_waiters.contains(&key)
    }
}

impl DrainWait {
    /// The answer once none of its old workers is `alive` any more, else `None`: an error
    /// when the reload did not apply every change.
    pub(super) fn answer(
        &self,
        alive: impl Fn(Pid) -> bool,
        now: Instant,
    ) -> Option<Result<String, String>> {
        if self.pids.iter().any(|&pid| alive(pid)) {
            return None;
        }
        let message = format!(
            "{}; the {} old worker(s) have exited, the last {:.1?} after the new ones were ready",
            self.completed,
            self.pids.len(),
            now.duration_since(self.since)
        );
        Some(if self.not_applied {
            Err(message)
        } else {
            Ok(message)
        })
    }
}

/// How many workers a reload runs: the number running now (a `scale` since the last read of the
/// configuration stays), unless the configuration's own count changed since that read — then
/// the new value wins. With what to log.
pub fn reload_size(
    running: usize,
    configured_before: usize,
    configured_now: usize,
) -> (usize, String) {
    if configured_now != configured_before {
        let note = format!(
            "reload: `workers` changed from {configured_before} to {configured_now} in the \
             configuration; running {configured_now}"
        );
        (configured_now, note)
    } else if running != configured_now {
        let note = format!(
            "reload: keeping the {running} worker(s) running (scaled since the configuration, which \
             says {configured_now}, was read)"
        );
        (running, note)
    } else {
        (running, format!("reload: {running} worker(s)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reload(slots: &[usize]) -> Reload {
        Reload::new(
            slots.iter().map(|&s| Place::Slot(s)).collect(),
            Instant::now(),
            Some(7),
            false,
        )
    }

    #[test]
    fn slots_roll_one_at_a_time_in_order_each_after_the_last_is_promoted() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(0)));
        assert_eq!(
            r.next(|_| true),
            RollStep::Wait,
            "slot 0's candidate is not ready"
        );
        r.promoted(Place::Slot(0), None);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(1)));
        r.promoted(Place::Slot(1), None);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(2)));
        r.promoted(Place::Slot(2), None);
        assert_eq!(r.next(|_| true), RollStep::Done);
        let done = r.completed(Instant::now(), 0, Duration::from_secs(5));
        assert!(
            done.contains("3 worker(s) replaced") && !done.contains("old"),
            "{done}"
        );
        assert!(r.is_waiting(7) && !r.is_waiting(8));
    }

    #[test]
    fn a_slot_scaled_away_or_restarting_meanwhile_is_skipped() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(
            r.next(|s| s != Place::Slot(0)),
            RollStep::Roll(Place::Slot(1))
        );
        r.promoted(Place::Slot(1), None);
        assert_eq!(r.next(|s| s != Place::Slot(2)), RollStep::Done);
        let done = r.completed(Instant::now(), 1, Duration::from_secs(5));
        assert!(done.contains("1 worker(s) replaced"), "{done}");
        assert!(done.contains("1 old worker(s) still finishing"), "{done}");
    }

    #[test]
    fn a_promotion_of_another_slot_does_not_move_it_on() {
        let mut r = reload(&[0, 1]);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(0)));
        r.promoted(Place::Slot(1), None); // e.g. a slot restarting on its own: not the one rolling
        assert_eq!(r.next(|_| true), RollStep::Wait);
    }

    #[test]
    fn refusals_and_failures_say_how_far_it_got() {
        let mut r = reload(&[0, 1, 2]);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(0)));
        r.promoted(Place::Slot(0), None);
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(1)));
        assert!(r.busy().contains("1 of 3 slots replaced"), "{}", r.busy());
        let failed = r.failed(Place::Slot(1), "not ready within 30s");
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
    fn a_reload_keeps_a_scale_unless_the_configured_count_changed() {
        assert_eq!(reload_size(2, 2, 2).0, 2);
        let (n, note) = reload_size(4, 2, 2);
        assert_eq!(n, 4, "scaled to 4 since: stays 4");
        assert!(note.contains("keeping the 4"), "{note}");
        let (n, note) = reload_size(4, 2, 3);
        assert_eq!(n, 3, "the file now says 3: 3");
        assert!(note.contains("changed from 2 to 3"), "{note}");
        assert_eq!(reload_size(2, 2, 5).0, 5);
    }

    #[test]
    fn an_empty_fleet_reloads_at_once() {
        assert_eq!(reload(&[]).next(|_| true), RollStep::Done);
    }

    #[test]
    fn a_failed_reload_still_says_what_it_applied_and_what_that_waits_for() {
        let mut r = reload(&[0]);
        r.applied = vec!["`listen`: listening also on b".into()];
        let failed = r.failed(Place::Slot(0), "exited");
        assert!(
            failed.contains("reload failed at slot=0")
                && failed.contains("`listen`: listening also on b")
                && failed.contains("closed again")
                && failed.contains("reload again"),
            "{failed}"
        );
    }

    #[test]
    fn what_a_reload_applied_beside_the_workers_is_said_and_is_no_error() {
        let mut r = reload(&[0]);
        r.applied = vec!["`listen`: listening also on b".into()];
        r.next(|_| true);
        r.promoted(Place::Slot(0), None);
        let done = r.completed(Instant::now(), 0, Duration::from_secs(5));
        assert!(
            done.contains("1 worker(s) replaced")
                && done.contains("; `listen`: listening also on b"),
            "{done}"
        );
        assert_eq!(r.outcome(done.clone()), Ok(done));
    }

    #[test]
    fn a_reload_that_kept_changes_says_which_and_is_an_error_also_after_the_drain() {
        let mut r = reload(&[0]);
        r.kept = vec!["`sched_policy` changed (a → b): still a (only a restart applies it)".into()];
        assert_eq!(r.next(|_| true), RollStep::Roll(Place::Slot(0)));
        r.promoted(Place::Slot(0), Some(Pid::from_raw(41)));
        let done = r.completed(Instant::now(), 0, Duration::from_secs(5));
        assert!(
            done.contains("reload complete")
                && done.contains("NOT applied")
                && done.contains("`sched_policy` changed (a → b)")
                && done.contains("only a restart"),
            "{done}"
        );
        assert_eq!(r.outcome(done.clone()), Err(done.clone()));
        let wait = r.into_drain_wait(done, Instant::now());
        assert!(
            matches!(wait.answer(|_| false, Instant::now()), Some(Err(m)) if m.contains("NOT applied"))
        );
        let mut clean = reload(&[0]);
        clean.next(|_| true);
        clean.promoted(Place::Slot(0), None);
        let done = clean.completed(Instant::now(), 0, Duration::from_secs(5));
        assert!(!done.contains("NOT applied"), "{done}");
        assert_eq!(clean.outcome(done.clone()), Ok(done.clone()));
        let wait = clean.into_drain_wait(done, Instant::now());
        assert!(matches!(
            wait.answer(|_| false, Instant::now()),
            Some(Ok(_))
        ));
    }
}
