//! The master: one thread, one `mio::Poll`, a `match` on what each token stands for.
//!
//! Each turn of the loop: wait for events (or the nearest deadline), note what they say, reap
//! exited children, then *supervise* (compare the slots we want with the workers we have and act
//! on the difference), *dispatch* (hand queued and newly accepted sockets to workers in strict
//! rotation) and *flush* (send what each worker was assigned, batched). Handlers record facts;
//! the three passes act on them. Nothing here reads from a client socket.
//!
//! This is the shell: it does the I/O and drives the sans-I/O core in `crate::engine` (the
//! supervisor, the ledger, the upgrade's state machine …), which imports nothing of it. This
//! file is the loop and `Master`: the configuration, the engine's supervisor and ledger, and
//! the shell's state in `parts`. It may import `engine`, `config`, `wire`, `sys`, `text`
//! (`tests/tidy.rs`; no import cycle between its modules).
//!
//! One accepted socket crosses four files, never back: `listeners` accepts it; `handoff` wraps
//! it as a [`wire_shared::Handoff`] and admits it to the engine's `ledger`, which owns it
//! (queue, outbox, un-acked window) until the worker's ack drops the master's copy; the wire,
//! `native` or `node`, borrows it for `sendmsg` and applies the ack (`channel` gives it no
//! socket).

mod agent_check_io;
mod apps;
mod channel;
mod client_io;
mod control_files;
mod control_socket;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
mod giveup_hook;
mod handoff;
mod key_set;
mod launch;
mod listeners;
mod memory;
mod monitor;
mod monitor_routes;
mod native;
mod node;
mod node_servers;
mod notify;
mod output;
mod parts;
mod process;
mod relay_io;
mod relisten;
mod signals;
mod sources;
mod startup;
mod status;
mod stopping;
mod supervisor_io;
mod upgrade_link;
mod watch_io;
mod wire_shared;

use std::io;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Interest, Poll, Token};

use crate::config::Config;
use crate::engine::ledger::Ledger;
use crate::engine::lifecycle::{Phase, REAP_GRACE, StopStep};
use crate::engine::supervisor::{Policy, Supervisor};
use crate::engine::{metrics, relay, upgrade};
use listeners::{Listener, ListenerId};
use parts::{Accepting, EventLoop, Listening, Operations, Upgrading, Workers};
use signals::{Action, SignalSource};
use sources::{Source, Sources};
use wire_shared::Handoff;

pub use apps::{Passthrough, run as run_apps};
pub use control_files::{ControlError, PidFile, create_dir_for, create_private_dir};
pub use listeners::ListenError;
use monitor_routes::STATUS_PAGE;
pub use output::{open_append as open_log, redirect_stderr};
pub use startup::{Loader, run};
pub use upgrade_link::Predecessor;

/// Connections accepted from one listener per loop turn before the others get a look.
const ACCEPT_BURST: usize = 256;
/// Pause after `EMFILE`/`ENFILE` before accepting again.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);

/// A failure that stops the master (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot set up the event loop: {0}")]
    EventLoop(io::Error),
    /// Every slot was given up, or the agent before it was ever ready: why.
    #[error("gave up: {0} (see the errors above)")]
    GaveUp(&'static str),
    /// The listening sockets the master was started with do not fit `listen`: a configuration
    /// error (exit 2).
    #[error("socket activation: {0}")]
    Inherited(io::Error),
    /// Started by an upgrade, this master did not take over (the old one serves on).
    #[error("upgrade: {0}")]
    Upgrade(String),
    #[error("cannot listen for metrics on {0}: {1}")]
    Metrics(std::net::SocketAddr, io::Error),
    #[error("cannot listen for HAProxy's agent-check on {0} (`[metrics] haproxy_agent`): {1}")]
    AgentCheck(std::net::SocketAddr, io::Error),
    /// `[master] user`: the drop failed.
    #[error("cannot drop to {0} (`[master] user`): {1}")]
    Privileges(String, io::Error),
    /// An app of several did not start (the master of all stopped the others): why.
    #[error("{0}")]
    App(String),
}

struct Master {
    /// The event loop's plumbing: the poll, what each token stands for, signals, reaping.
    io: EventLoop,
    config: Config,
    /// The listeners and the state of accepting on them (rr mode).
    accept: Accepting,
    /// Every decision about the workers' lives (fleet, stop phase, reload), without I/O.
    core: Supervisor,
    /// Every accepted socket until a worker acks it: queued, or in one worker's account.
    ledger: Ledger<Handoff>,
    /// What the master holds for the worker processes, and what it starts them with.
    workers: Workers,
    /// An in-place upgrade, on either side.
    upgrade: Upgrading,
    /// What operators see and ask: the control socket, metrics, systemd, the message relay.
    /// Last: its pid file is removed once everything else is gone.
    ops: Operations,
}

impl Master {
    fn new(
        config: Config,
        listeners: Vec<Listener>,
        loader: Loader,
        mut control: control_socket::Control,
        (pid_file, registration): (control_files::PidFile, control_files::Registration),
        predecessor: Option<Predecessor>,
    ) -> io::Result<Master> {
        let predecessor_present = predecessor.is_some();
        let poll = Poll::new()?;
        let mut sources = Sources::default();
        poll.registry().register(
            control.listener(),
            sources.add(Source::Control),
            Interest::READABLE,
        )?;
        let sinks = output::open_sinks(&config.log)?;
        let signals = SignalSource::new(poll.registry(), sources.add(Source::Signals))?;
        let next_id = listeners.len() as u32;
        // The listeners are watched only while some worker is free (`watch_listeners`).
        let listeners = (0..)
            .zip(listeners)
            .map(|(i, socket)| {
                let id = ListenerId(i);
                Listening {
                    socket,
                    id,
                    token: sources.add(Source::Listener(id)),
                    ready: false,
                    held: false,
                }
            })
            .collect();
        let now = Instant::now();
        Ok(Master {
            io: EventLoop {
                poll,
                sources,
                signals,
                pending_signals: Vec::new(),
                reap_due: true,
            },
            accept: Accepting {
                listeners,
                next_id,
                watching: false,
                accept_paused_until: None,
                fd_shortage: None,
                incoming: Vec::new(),
            },
            core: Supervisor::new(config.workers, Policy::of(&config), now),
            ledger: Ledger::default(),
            workers: Workers {
                procs: process::Processes::default(),
                unread: Default::default(),
                flush_due: Default::default(),
                owners: Vec::new(),
                scratch: [Vec::new(), Vec::new()],
                backlogged: Default::default(),
                effects: Vec::new(),
                base_env: launch::base_env(&config, &config.worker.command.env),
                sinks,
                log_ring: Default::default(),
                hooks: Vec::new(),
                next_memory_sample: now,
                configured_workers: config.workers,
            },
            upgrade: Upgrading {
                handover: None,
                successor: None,
                predecessor,
                failed: None,
                exe: upgrade_link::own_executable(),
                argv: std::env::args_os().skip(1).collect(),
            },
            ops: Operations {
                control: Some(control),
                monitor: None,
                agent_check: None,
                watcher: None,
                watch_token: None,
                // A new master speaks to systemd only once it took over.
                notifier: notify::Notifier::from_env(now, predecessor_present),
                counters: metrics::Counters::default(),
                retained: relay::Retained::default(),
                relay_paused: false,
                drain: Default::default(),
                started_serving: false,
                loader,
                _registration: registration,
                pid_file: Some(pid_file),
            },
            config,
        })
    }

    fn run(mut self) -> Result<(), MasterError> {
        self.take_policy();
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let timeout = if self.has_immediate_work() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.io.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(MasterError::EventLoop(e));
                }
            }
            for event in events.iter() {
                match self.io.sources.get(event.token()) {
                    Some(Source::Signals) => self.on_signals(),
                    Some(Source::Control) => self.on_control_accept(),
                    Some(Source::ControlConn(key)) => self.on_control_conn(key),
                    Some(Source::Listener(id)) => {
                        if let Some(l) = self.accept.listeners.iter_mut().find(|l| l.id == id) {
                            l.ready = true;
                        }
                    }
                    Some(Source::Output { worker, stream }) => self.on_output(worker, stream),
                    Some(Source::Successor) => self.on_successor(event.is_writable()),
                    Some(Source::Predecessor) => self.on_predecessor(),
                    Some(Source::Monitor) => self.on_monitor_accept(),
                    Some(Source::AgentCheck) => self.on_agent_check(),
                    Some(Source::MonitorConn(key)) => self.on_monitor_conn(key),
                    Some(Source::Watch) => self.on_watch(),
                    Some(Source::Channel(key)) => {
                        if event.is_writable() {
                            self.on_channel_writable(key);
                        }
                        self.on_channel(key, event.is_readable() || event.is_read_closed());
                    }
                    None => {} // a source already gone
                }
            }
            self.read_unread();
            if self.ops.agent_check.as_ref().is_some_and(|a| a.pending) {
                self.on_agent_check();
            }
            // On SIGCHLD only (several exits may share one signal: `reap` takes them all), and
            // every turn while stopping, where nothing else is left to do.
            if std::mem::take(&mut self.io.reap_due) || self.core.phase() != Phase::Running {
                self.reap();
            }
            let now = Instant::now();
            if self.ops.drain.ends(now) {
                info!("drain over: stopping gracefully");
                self.begin_stop();
            }
            self.control_turn(now);
            self.monitor_turn(now);
            self.agent_turn(now);
            self.supervise(now);
            self.upgrade_turn(now);
            self.watch_turn(now);
            self.succession_turn();
            self.release_held();
            if !self.ops.started_serving {
                self.ops.started_serving = self.core.fleet().started();
            }
            self.dispatch(now);
            self.flush(now);
            self.relay_turn(now);
            self.watch_listeners();
            if self.ops.notifier.active() {
                let fleet = notify::Fleet {
                    ready: self.core.fleet().ready_count(),
                    wanted: self.core.fleet().slots.len(),
                    handed: self
                        .config
                        .mode()
                        .master_accepts()
                        .then(|| self.ledger.handed_total()),
                    draining: self.ops.drain.active(),
                };
                let (reloading, stopping) =
                    (self.core.reloading(), self.core.phase() != Phase::Running);
                self.ops.notifier.turn(fleet, reloading, stopping, now);
            }
            let left = self.processes_left();
            let exit = match self.core.phase().stop_step(now, left) {
                Some(StopStep::Exit) => {
                    info!("all workers have exited; bye");
                    true
                }
                Some(StopStep::ExitUnreaped) => {
                    error!(
                        "{left} process(es) not reaped {REAP_GRACE:?} after SIGKILL; exiting \
                         anyway"
                    );
                    true
                }
                _ => false,
            };
            if exit {
                return if self.core.gave_up() {
                    Err(MasterError::GaveUp(self.core.gave_up_why()))
                } else if let Some(reason) = self.upgrade.failed.take() {
                    Err(MasterError::Upgrade(reason))
                } else {
                    Ok(())
                };
            }
        }
    }

    /// The supervisor decides by the configuration as read now (at the start, at a reload).
    pub(super) fn take_policy(&mut self) {
        self.core.set_policy(Policy::of(&self.config));
        let max_age = self.config.recycle.max_age.is_some();
        self.core.set_max_age(max_age);
    }

    /// Work that should not wait for an event: a channel read stopped by its budget, or a
    /// listener with connections still queued while some worker has room.
    fn has_immediate_work(&self) -> bool {
        self.unread_channels().next().is_some()
            || self.can_accept_more()
            || self.ops.agent_check.as_ref().is_some_and(|a| a.pending)
    }

    /// The nearest moment something is due: a slot restart, a SIGKILL, the end of a pause.
    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let left = self.processes_left();
        let ack_timeout = self.config.worker.ack_timeout;
        let memory = self
            .config
            .recycle
            .max_memory
            .map(|_| self.workers.next_memory_sample);
        let core = self.core.next_deadline(now, ack_timeout, left);
        core.into_iter()
            .chain(self.accept.accept_paused_until)
            .chain(self.ops.drain.until())
            .chain(memory)
            .chain(self.ops.notifier.deadline())
            .chain(
                self.upgrade
                    .handover
                    .as_ref()
                    .and_then(upgrade::Handover::deadline),
            )
            .chain(self.next_stall_deadline())
            .chain(self.ledger.next_full_retry())
            .chain(self.control_deadline())
            .chain(self.monitor_deadline())
            .chain(self.ops.agent_check.as_ref().map(|a| a.deadline()))
            .chain(
                self.ops
                    .watcher
                    .as_ref()
                    .and_then(watch_io::Watcher::deadline),
            )
            .min()
    }

    /// Watches a new connection (control, monitoring) for reading and writing under a token
    /// for `source`; the token, or `None` (the token freed) if the poll refuses it.
    fn watch_conn(
        &mut self,
        stream: &mut impl mio::event::Source,
        source: Source,
    ) -> Option<Token> {
        let token = self.io.sources.add(source);
        let registered = self.io.poll.registry().register(
            stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.io.sources.remove(token);
            return None;
        }
        Some(token)
    }

    /// Processes this master waits for before it exits: its children — workers, `on_giveup`
    /// commands, a new master it gave up on (one that took over outlives it) — and the old
    /// master it took over from while that one finishes (so that `stop` returns when both are
    /// gone, and the port is free).
    fn processes_left(&self) -> usize {
        self.core.fleet().workers.len()
            + self.workers.hooks.len()
            + self.successor_to_reap()
            + self.predecessor_draining()
    }

    // ---- events -------------------------------------------------------------------------------

    fn on_signals(&mut self) {
        let mut pending = std::mem::take(&mut self.io.pending_signals);
        self.io.signals.drain(&mut pending);
        for (sig, action) in pending.drain(..) {
            if action != Action::Reap {
                info!("received {}", signals::name(sig));
            }
            match action {
                Action::GracefulStop => match self.core.phase() {
                    Phase::Running => _ = self.ask_stop(false),
                    Phase::Stopping { .. } => {
                        info!("another stop signal while stopping: killing the workers now");
                        self.quick_stop();
                    }
                },
                Action::QuickStop => self.quick_stop(),
                Action::Reap => self.io.reap_due = true,
                Action::Reload => {
                    if let Err(e) = self.request_reload(None, false) {
                        warn!("reload refused: {e}");
                    }
                }
                Action::ScaleUp | Action::ScaleDown => {
                    let n = self.core.fleet().slots.len();
                    let n = if action == Action::ScaleUp {
                        n + 1
                    } else {
                        n - 1
                    };
                    if let Err(e) = self.scale_to(n) {
                        warn!("scale refused: {e}");
                    }
                }
                Action::ReopenLogs => self.reopen_logs(),
                Action::Upgrade => self.request_upgrade(None, None, false),
            }
        }
        self.io.pending_signals = pending;
    }

    // ---- reaping ------------------------------------------------------------------------------

    // ---- supervision --------------------------------------------------------------------------

    // ---- dispatch -----------------------------------------------------------------------------

    // ---- stopping -----------------------------------------------------------------------------
}
