//! When the supervisor next has something to do, asked with `now` like every other decision:
//! the shell sleeps until then (or an event) and ticks it. Every timer of the workers' lives
//! is read here, none by the shell — through [`Timers`], so that neither this nor the tick
//! walks the fleet on every turn of the loop, and through a floor for the acks (see
//! [`Supervisor::overdue`]).

use std::time::{Duration, Instant};

use super::super::effect::Effect;
use super::super::fleet::Worker;
#[cfg(test)]
use super::super::ids::Place;
use super::super::ledger::{Conn, Ledger};
use super::super::lifecycle::StopStep;
use super::super::stop_signal;
#[cfg(test)]
use super::super::timers::Timed;
use super::{Supervisor, overdue};

/// When the oldest connection `worker` holds un-acked passes `timeout`, unless it was killed
/// for that already. (The ledger knows since when; the shell and the simulator both ask here.)
pub fn ack_deadline<C: Conn>(
    worker: &Worker,
    ledger: &Ledger<C>,
    timeout: Duration,
) -> Option<Instant> {
    if worker.stuck {
        return None;
    }
    ledger
        .account(worker.account)?
        .oldest_unacked()?
        .checked_add(timeout)
}

impl Supervisor {
    /// The nearest moment something is due: a slot's (re)start, a worker's stop signal, its
    /// SIGKILL, the check of a closed channel, the oldest un-acked connection's `ack_timeout`,
    /// a readiness timeout, the stop's next step (`now` when it can take it: `left` processes
    /// remain to be reaped), a recycle check.
    pub fn next_deadline(
        &self,
        now: Instant,
        ack_timeout: Duration,
        left: usize,
    ) -> Option<Instant> {
        let stop = match self.phase.stop_step(now, left) {
            Some(StopStep::Wait(t)) => Some(t),
            Some(_) => Some(now),
            None => None,
        };
        let acks = self.ack_floor.map(|t| t + ack_timeout);
        self.fleet
            .timers
            .next()
            .into_iter()
            .chain(acks)
            .chain(stop)
            .chain(self.next_recycle_check(now))
            .min()
    }

    /// The same, found by walking every worker and place (what the timers stand for): for
    /// tests, which check that the timers never answer later than this.
    #[cfg(test)]
    pub fn next_deadline_by_walk<C: Conn>(
        &self,
        now: Instant,
        ledger: &Ledger<C>,
        ack_timeout: Duration,
        left: usize,
    ) -> Option<Instant> {
        let workers = self.fleet.workers.iter().flat_map(|(_, w)| {
            w.kill_at
                .into_iter()
                .chain(w.channel_closed_check)
                .chain(w.stop_signal_at)
                .chain(ack_deadline(w, ledger, ack_timeout))
        });
        let stop = match self.phase.stop_step(now, left) {
            Some(StopStep::Wait(t)) => Some(t),
            Some(_) => Some(now),
            None => None,
        };
        self.fleet
            .next_start()
            .into_iter()
            .chain(workers)
            .chain(self.next_readiness_deadline())
            .chain(stop)
            .chain(self.next_recycle_check(now))
            .min()
    }

    /// The workers past their ack deadline at `now`, each to be reported
    /// [`Supervisor::stuck`] by the caller (as [`overdue`], which walks them all). It walks them
    /// only once the floor it keeps says one may be due: no connection was sent before the
    /// oldest un-acked one it saw at its last walk, or before that walk itself — which holds
    /// as long as the shell stamps what it sends with a clock read no earlier than the `now`
    /// it last asked with. So the walk comes once per `ack_timeout` or so, not every turn.
    pub fn overdue<C: Conn>(
        &mut self,
        ledger: &Ledger<C>,
        timeout: Duration,
        now: Instant,
    ) -> Vec<usize> {
        if self.ack_floor.is_some_and(|t| t + timeout > now) {
            return Vec::new();
        }
        let stuck = overdue(&self.fleet, ledger, timeout, now);
        let oldest = (self.fleet.workers.iter())
            .filter(|(k, _)| !stuck.contains(k))
            .filter_map(|(_, w)| Some(ack_deadline(w, ledger, timeout)? - timeout))
            .min();
        self.ack_floor = Some(oldest.map_or(now, |t| t.min(now)));
        stuck
    }

    /// What the clock relies on instead of a walk, checked by one: every worker's timers and
    /// every startable place's start have a hint at or before them, and no worker (not
    /// already killed for it) holds a connection sent before the ack floor.
    #[cfg(test)]
    pub fn check_timers<C: Conn>(&self, ledger: &Ledger<C>) -> Result<(), String> {
        for (key, w) in self.fleet.workers.iter() {
            let due = self.worker_due(w);
            if due.is_some_and(|t| !self.fleet.timers.covers(Timed::Worker(key), t)) {
                return Err(format!("worker {key}'s timer at {due:?} has no hint"));
            }
            let oldest = ledger.account(w.account).and_then(|a| a.oldest_unacked());
            if !w.stuck && oldest.is_some_and(|o| self.ack_floor.is_none_or(|f| o < f)) {
                return Err(format!(
                    "worker {key} holds a connection sent {oldest:?}, before the ack floor {:?}",
                    self.ack_floor
                ));
            }
        }
        let places = (0..self.fleet.slots.len()).map(Place::Slot);
        for place in places.chain(self.fleet.agent.as_ref().map(|_| Place::Agent)) {
            let at = self.fleet.place(place).and_then(|s| s.start_at);
            let covered = |t| self.fleet.timers.covers(Timed::Place(place), t);
            if self.fleet.may_start(place) && at.is_some_and(|t| !covered(t)) {
                return Err(format!("{place}'s start at {at:?} has no hint"));
            }
        }
        Ok(())
    }

    /// Stop signals deferred by [`stop_signal::channel_closed`] that are due at `now`.
    pub(super) fn due_stop_signals(&mut self, now: Instant) {
        for key in self.due_workers() {
            let Some(worker) = self.fleet.workers.get_mut(key) else {
                continue;
            };
            if let Some(signal) = stop_signal::tick(worker, now) {
                self.effects.push(Effect::Signal(key, signal));
            }
        }
    }
}
