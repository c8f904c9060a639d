//! How the master stops: a graceful stop asked (by a signal, `rrbalancer stop`) drains first
//! when `[shutdown] drain` says so ([`Drain`](crate::engine::drain::Drain) decides), then
//! asks every worker to stop; a quick stop kills them now.

use std::time::Instant;

use log::info;
use nix::unistd::getpid;

use super::{Master, Phase};
use crate::engine::drain::StopNext;
use crate::wire::control::Reply;

impl Master {
    /// How long the stop under way may take from now: what is left of its drain, then
    /// `kill_timeout` (`rrbalancer stop` waits that long, whatever its file says now).
    pub(super) fn stop_takes(&self) -> std::time::Duration {
        let left = self.ops.drain.left(Instant::now()).unwrap_or_default();
        left + self.config.kill_timeout
    }

    /// Stopping, or draining before a stop: not ready for a balancer in front (`/readyz`, the
    /// HAProxy agent), though a drain still serves.
    pub(super) fn leaving(&self) -> bool {
        self.core.phase() != Phase::Running || self.ops.drain.active()
    }

    /// `rrbalancer stop` (`now`: `--now`): what it is answered, with how long the stop may
    /// take and, if it drains first, how long that lasts.
    pub(super) fn stop_requested(&mut self, now: bool) -> Reply {
        let (message, drains) = self.stop_answer(now);
        let mut reply = Reply::ok(message);
        reply.within_ms = Some(self.stop_takes().as_millis() as u64);
        reply.drain_ms = drains.then_some(self.config.drain.as_millis() as u64);
        reply
    }

    /// What `stop` is answered, and whether the master drains first.
    fn stop_answer(&mut self, now: bool) -> (String, bool) {
        if self.core.phase() != Phase::Running {
            return ("already stopping".into(), false);
        }
        let draining = self.ops.drain.active();
        let (pid, kill_timeout) = (getpid(), self.config.kill_timeout);
        match self.ask_stop(now) {
            StopNext::DrainUntil(_) => (
                format!(
                    "draining for {:?} (serving on, /readyz 503), then stopping pid {pid} \
                     (kill_timeout {kill_timeout:?})",
                    self.config.drain
                ),
                true,
            ),
            StopNext::Stop if draining => (
                format!(
                    "stopping pid {pid} now, the rest of its drain skipped (kill_timeout \
                     {kill_timeout:?})"
                ),
                false,
            ),
            StopNext::Stop => (
                format!("stopping pid {pid} (kill_timeout {kill_timeout:?})"),
                false,
            ),
        }
    }

    /// A graceful stop is asked (`skip`: without its drain, `stop --now`): it drains first if
    /// `[shutdown] drain` says so, unless draining already (then what is left is skipped).
    pub(super) fn ask_stop(&mut self, skip: bool) -> StopNext {
        let draining = self.ops.drain.active();
        let next = self.ops.drain.ask(self.config.drain, skip, Instant::now());
        match next {
            StopNext::DrainUntil(_) => info!(
                "draining for {:?} before stopping: serving on, /readyz answers 503 \
                 (a second stop signal or `stop --now` skips the rest)",
                self.config.drain
            ),
            StopNext::Stop if draining => {
                info!("stop asked again while draining: skipping the rest of the drain");
                self.begin_stop();
            }
            StopNext::Stop => self.begin_stop(),
        }
        next
    }

    pub(super) fn begin_stop(&mut self) {
        self.upgrade_on_stop();
        self.core.begin_stop(Instant::now());
        self.apply_effects();
    }

    /// Quick stop: SIGKILL every worker now.
    pub(super) fn quick_stop(&mut self) {
        self.upgrade_on_stop();
        self.core.quick_stop(Instant::now());
        self.apply_effects();
    }
}
