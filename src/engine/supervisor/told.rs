//! What the shell tells the supervisor about one worker's channel and process, besides the
//! events of its life (`mod.rs`): its first words, that it speaks the protocol, a line it asked
//! to log, its `stop` asked for, flushed or stranded by a released channel, its memory
//! measured. Each is a method of the supervisor so that the shell, which reads the fleet
//! through [`Supervisor::fleet`], never writes a worker record; the stop-signal rules they
//! apply are [`stop_signal`]'s. A stale key (a worker already reaped) changes nothing.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Supervisor;
use crate::config::StopSignal;
use crate::engine::fleet::Worker;
use crate::engine::ids::Role;
use crate::engine::stop_signal::{self, Tell};

impl Supervisor {
    /// The shell started `worker` (its record built by [`Worker::new`]) as its place's `role`:
    /// its key, which the shell's process record takes too.
    pub fn spawned(&mut self, worker: Worker, role: Role) -> usize {
        let key = self.fleet.insert(worker, role);
        self.arm_worker(key); // its readiness
        key
    }

    /// The worker of `key` said something on its channel (`stop_left`: its `stop` has left
    /// already): the signal its first words make due, for the shell to send now.
    pub fn heard(&mut self, key: usize, stop_left: bool) -> Option<Signal> {
        let worker = self.fleet.workers.get_mut(key)?;
        stop_signal::heard(worker, stop_left)
    }

    /// What it said was in the protocol's terms: from now on its `stop` goes on its channel.
    pub fn spoke(&mut self, key: usize) {
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.spoke = true;
        }
    }

    /// Logs a line of the worker's at info level, while its budget of notes lasts.
    pub fn note(&mut self, key: usize, note: std::fmt::Arguments<'_>) {
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.note(note);
        }
    }

    /// The same at warn level: something the operator must see.
    pub fn warn(&mut self, key: usize, warning: std::fmt::Arguments<'_>) {
        if let Some(worker) = self.fleet.workers.get_mut(key) {
            worker.warn(warning);
        }
    }

    /// The supervisor's `Stop(key)` is being carried out: how to tell it ([`stop_signal::ask`]:
    /// `node`, it speaks Node's IPC; `channel`, its channel is open). `None` for a stale key.
    pub fn ask_to_stop(
        &mut self,
        key: usize,
        signal: StopSignal,
        node: bool,
        disconnect: bool,
        channel: bool,
    ) -> Option<(Pid, Tell)> {
        let worker = self.fleet.workers.get_mut(key)?;
        let tell = stop_signal::ask(worker, signal, node, disconnect, channel);
        Some((worker.pid, tell))
    }

    /// Its channel is about to be flushed (`stop_is_next`: its `stop` is the next thing on
    /// it): the signal due just before it, if any.
    pub fn before_flush(&mut self, key: usize, stop_is_next: bool) -> Option<Signal> {
        stop_signal::before_flush(self.fleet.workers.get_mut(key)?, stop_is_next)
    }

    /// Its channel was flushed (`stop_pending`: its `stop` still waits): the signal due now
    /// that the `stop` has left, if any.
    pub fn after_flush(&mut self, key: usize, stop_pending: bool) -> Option<Signal> {
        stop_signal::after_flush(self.fleet.workers.get_mut(key)?, stop_pending)
    }

    /// The shell released the master's end of its channel at `now` (closed or broken): its
    /// `stop` will never leave, so the signal it was owed goes now (or, for a Node worker not
    /// yet heard, a grace later, at the supervisor's tick).
    pub fn channel_released(&mut self, key: usize, now: Instant) -> Option<Signal> {
        let worker = self.fleet.workers.get_mut(key)?;
        worker.channel_open = false;
        let signal = stop_signal::channel_closed(worker, now);
        self.arm_worker(key); // a deferred signal
        signal
    }

    /// Each worker's resident memory as just measured (`[recycle] max_memory`): `rss` of its
    /// pid, `None` where it could not be read.
    pub fn memory_measured(&mut self, rss: impl Fn(Pid) -> Option<u64>) {
        for (_, worker) in self.fleet.workers.iter_mut() {
            worker.rss = rss(worker.pid);
        }
    }
}
