//! The shell's record of each worker process: what the master holds open for it — the master's
//! end of its channel, the pipes of its captured output, their poll tokens — kept apart from the
//! core's record of the same worker ([`fleet::Worker`](crate::engine::fleet::Worker): pid, place, state,
//! timers), under the same key. And the signals sent to a worker's process group.

use log::debug;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::channel::Channel;

use super::output::Pipe;

/// What the master holds open for one live worker.
#[derive(Debug, Default)]
pub struct Process {
    /// `None` once the channel broke or was closed by the worker.
    pub channel: Option<Channel>,
    /// Its stdout and stderr, when `[log]` captures them.
    pub output: [Option<Pipe>; 2],
    /// The poll tokens of its channel and output pipes, forgotten when it is reaped.
    pub tokens: Vec<mio::Token>,
}

/// The process records by worker key (the key of the core's record in
/// [`Fleet::workers`](crate::engine::fleet::Fleet::workers)): indexed, not hashed, as the hand-off
/// reaches a worker's channel for every connection.
#[derive(Debug, Default)]
pub struct Processes {
    by_key: Vec<Option<Process>>,
}

impl Processes {
    /// Records the process of the worker at `key` (a key the fleet just gave out).
    pub fn insert(&mut self, key: usize, process: Process) {
        if self.by_key.len() <= key {
            self.by_key.resize_with(key + 1, || None);
        }
        self.by_key[key] = Some(process);
    }

    /// Forgets the process of a reaped worker; returns what it held.
    pub fn remove(&mut self, key: usize) -> Option<Process> {
        self.by_key.get_mut(key)?.take()
    }

    pub fn get(&self, key: usize) -> Option<&Process> {
        self.by_key.get(key)?.as_ref()
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Process> {
        self.by_key.get_mut(key)?.as_mut()
    }

    /// The open channel of the worker at `key`.
    pub fn channel(&self, key: usize) -> Option<&Channel> {
        self.get(key)?.channel.as_ref()
    }

    /// The open channel of the worker at `key`.
    pub fn channel_mut(&mut self, key: usize) -> Option<&mut Channel> {
        self.get_mut(key)?.channel.as_mut()
    }
}

/// Sends the stop signal the core found due ([`stop_signal`](crate::engine::stop_signal)), if any.
pub fn send_stop_signal(pid: Pid, signal: Option<Signal>) {
    if let Some(signal) = signal {
        debug!("pid={pid}: {signal} with its `stop`");
        signal_group(pid, signal);
    }
}

/// Sends a signal to the process group of `pid` (a worker leads one, reaching its own
/// children), or to the process alone if it has no group (yet).
pub fn signal_group(pid: Pid, signal: Signal) {
    if killpg(pid, signal).is_err() {
        let _ = kill(pid, signal);
    }
}
