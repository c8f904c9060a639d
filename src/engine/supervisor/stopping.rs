//! The master's stop, as the supervisor sees it: a graceful stop (accept no more, then each
//! worker told to finish within `kill_timeout`, the agent last) and a quick one (every worker
//! killed now).

use std::time::Instant;

use log::info;

use super::Supervisor;
use crate::engine::effect::Effect;
use crate::engine::fleet::State;
use crate::engine::ids::Place;
use crate::engine::lifecycle::Phase;

impl Supervisor {
    /// Graceful stop: stop accepting (the shell hands out what is queued, then calls
    /// [`Supervisor::stop_workers`]), start nothing more.
    pub fn begin_stop(&mut self, now: Instant) {
        if !self.running() {
            return;
        }
        let grace = self.policy.kill_timeout;
        info!("stopping gracefully (kill_timeout {grace:?})");
        self.recycling = None; // its successor is stopped with the others
        if let Some(reload) = self.reload.take() {
            self.reloads[2] += 1;
            self.effects.push(Effect::Answer {
                waiters: reload.into_waiters(),
                outcome: Err("the master is stopping".into()),
            });
        }
        self.phase = Phase::stopping(now, grace);
        self.fleet.start_nothing();
        self.effects.push(Effect::StopAccepting);
    }

    /// Every worker is told to finish within `kill_timeout` (after the queue was handed out);
    /// the agent once they have exited ([`Supervisor::stop_agent_last`]).
    pub fn stop_workers(&mut self, now: Instant) {
        let keys: Vec<usize> = (self.fleet.workers.iter())
            .filter(|(_, w)| w.place != Place::Agent)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.drain(key, now);
        }
        self.stop_agent_last(now);
    }

    /// While stopping: once no worker is left, the agent is told to finish too (it outlives
    /// them, so they have its messages to the end).
    pub(super) fn stop_agent_last(&mut self, now: Instant) {
        let workers_left = (self.fleet.workers.iter()).any(|(_, w)| w.place != Place::Agent);
        if workers_left {
            return;
        }
        let agents: Vec<usize> = (self.fleet.workers.iter())
            .filter(|(_, w)| w.place == Place::Agent && w.kill_at.is_none())
            .map(|(k, _)| k)
            .collect();
        for key in agents {
            self.drain(key, now);
        }
    }

    /// Quick stop: SIGKILL every worker now.
    pub fn quick_stop(&mut self, now: Instant) {
        if self.running() {
            self.effects.push(Effect::CloseListeners);
        }
        self.fleet.start_nothing();
        let keys: Vec<usize> = self.fleet.workers.iter().map(|(k, _)| k).collect();
        for key in keys {
            // Killed: nothing more for it, not even what waits in the queue.
            self.fleet.workers[key].state = State::Draining;
            self.kill(key);
        }
        self.effects.push(Effect::KillHooks);
        self.phase = Phase::killed(now);
    }
}
