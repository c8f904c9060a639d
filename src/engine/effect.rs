//! What the supervisor asks of the shell: the [`Effect`]s it queues and the shell carries out in
//! order. A leaf beside [`ids`](super::ids): the core names them, the shell executes them.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::ids::{Place, Role, Waiter};

/// The outcome of a request, for the log and the control client.
pub type Outcome = Result<String, String>;

/// What the shell is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a worker for `place` (a slot, or the agent); report a failure back with
    /// `Supervisor::spawn_failed`.
    Spawn { place: Place, role: Role },
    /// Ask the worker to finish: `stop` on its channel if it speaks the protocol, else SIGTERM.
    Stop(usize),
    /// SIGKILL the worker's process group.
    Kill(usize),
    /// Send the worker's process group the stop signal its `stop` was owed, now due
    /// ([`stop_signal::tick`](super::stop_signal::tick)).
    Signal(usize, Signal),
    /// SIGKILL the `on_giveup` commands still running.
    KillHooks,
    /// The worker's sockets not yet sent go to other workers.
    Requeue(usize),
    /// Run `on_giveup` for a slot (or the agent) given up.
    Hook {
        place: Place,
        pid: Pid,
        reason: String,
    },
    /// Tell the control clients waiting for a reload how it ended.
    Answer {
        waiters: Vec<Waiter>,
        outcome: Outcome,
    },
    /// A graceful stop begins: stop watching the listeners, hand queued sockets to whoever can
    /// still take them (the rest is closed), close the listeners; then call
    /// `Supervisor::stop_workers`.
    StopAccepting,
    /// A quick stop: close the listeners.
    CloseListeners,
}
