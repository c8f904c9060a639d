//! When the supervisor next has something to do, asked with `now` like every other decision:
//! the shell sleeps until then (or an event) and ticks it. Every timer of the workers' lives
//! is read here, none by the shell.

use std::time::{Duration, Instant};

use super::super::effect::Effect;
use super::super::fleet::Worker;
use super::super::ledger::{Conn, Ledger};
use super::super::lifecycle::StopStep;
use super::super::stop_signal;
use super::Supervisor;

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
    pub fn next_deadline<C: Conn>(
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

    /// Stop signals deferred by [`stop_signal::channel_closed`] that are due at `now`.
    pub(super) fn due_stop_signals(&mut self, now: Instant) {
        for (key, worker) in self.fleet.workers.iter_mut() {
            if let Some(signal) = stop_signal::tick(worker, now) {
                self.effects.push(Effect::Signal(key, signal));
            }
        }
    }
}
