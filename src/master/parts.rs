//! The master's state, grouped by what belongs together: the event loop's plumbing, accepting,
//! the worker processes, an upgrade, and the operators' side. [`Master`](super::Master) holds
//! one of each beside the core (the supervisor and the ledger) and the configuration. Plain
//! data: the behaviour is in the files that `impl Master`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use mio::{Poll, Token};
use nix::unistd::Pid;

use super::key_set::KeySet;
use super::listeners::{Listener, ListenerId};
use super::signals::{Action, SignalSource};
use super::sources::Sources;
use super::upgrade_link::Link;
use super::wire_shared::Incoming;
use super::{
    Loader, Predecessor, control_files, control_socket, metrics, monitor, notify, output, process,
    relay,
};
use crate::engine::effect::Effect;
use crate::engine::upgrade::Handover;

/// The event loop's plumbing.
pub(super) struct EventLoop {
    pub poll: Poll,
    /// What each poll token stands for.
    pub sources: Sources,
    pub signals: SignalSource,
    /// Signals read this turn, to act on (reused).
    pub pending_signals: Vec<(i32, Action)>,
    /// A SIGCHLD arrived: exited children wait to be reaped.
    pub reap_due: bool,
}

/// One listener, in `listen` order, and the state of accepting on it.
pub(super) struct Listening {
    pub socket: Listener,
    pub id: ListenerId,
    pub token: Token,
    /// Connections may be waiting (edge-triggered: set on event, cleared on `WouldBlock`).
    pub ready: bool,
    /// Added by a reload: not accepted on until every worker that may be handed its
    /// connections was started knowing it (`relisten::release_held`).
    pub held: bool,
}

/// The listeners and the state of accepting on them.
pub(super) struct Accepting {
    pub listeners: Vec<Listening>,
    /// The id the next listener gets.
    pub next_id: u32,
    /// The listeners are registered with the poll: only while some worker is free, so that
    /// clients arriving while every worker is busy do not wake the master for nothing.
    pub watching: bool,
    pub accept_paused_until: Option<Instant>,
    /// `accept` is failing for lack of file descriptors: accepting resumes as soon as one is
    /// freed (an ack, a closed channel), or after `FD_EXHAUSTED_PAUSE` at the latest.
    pub fd_shortage: Option<FdShortage>,
    /// Sockets accepted this turn (reused).
    pub incoming: Vec<Incoming>,
}

/// An episode of `accept` failing for lack of file descriptors.
#[derive(Debug, Clone, Copy)]
pub(super) struct FdShortage {
    pub since: Instant,
    pub refused: u64,
}

/// What the master holds for the worker processes, and what it starts them with.
pub(super) struct Workers {
    /// What the master holds open for each worker (channel, captured output, their tokens), by
    /// the key of the core's record of it.
    pub procs: process::Processes,
    /// Keys of channels whose last read stopped before all was read (its budget, or held back
    /// by flow control): read again without waiting for an event.
    pub unread: KeySet,
    /// Keys of channels with something to send, or that may have: [`Master::flush`] looks at
    /// these, not at every worker. Listed by what gives them something (the ledger's touched
    /// accounts, a read, a writable event, a `stop`, a relayed message); one still wanting a
    /// flush after it stays listed.
    pub flush_due: KeySet,
    /// The worker key of each ledger account (by account), for the ledger's touched accounts.
    pub owners: Vec<Option<usize>>,
    /// Reused each turn, so that a turn allocates nothing.
    pub scratch: [Vec<usize>; 2],
    /// Keys of channels that may have relayed messages waiting (a backlog): the only ones
    /// flow control and the stall check look at.
    pub backlogged: KeySet,
    /// What the core decided and the shell has yet to do (reused).
    pub effects: Vec<Effect>,
    /// The environment every worker starts with, before its own variables.
    pub base_env: Vec<(OsString, OsString)>,
    /// Files for the workers' stdout and stderr, when `[log]` names them.
    pub sinks: [Option<output::Sink>; 2],
    /// The last lines captured, for `rrbalancer logs`.
    pub log_ring: crate::engine::log_ring::LogRing,
    /// `on_giveup` commands still running (reaped like workers, killed at exit).
    pub hooks: Vec<Pid>,
    /// When to measure the workers' memory next (`[recycle] max_memory`).
    pub next_memory_sample: Instant,
    /// `workers` as the configuration said when last read: a reload keeps a `scale` made since,
    /// unless the configuration's own count changed.
    pub configured_workers: usize,
}

impl Workers {
    /// The ledger `account` is the worker of `key`'s.
    pub fn own(&mut self, account: usize, key: usize) {
        if account >= self.owners.len() {
            self.owners.resize(account + 1, None);
        }
        self.owners[account] = Some(key);
    }
}

/// An in-place upgrade, on either side.
pub(super) struct Upgrading {
    /// An upgrade this master started (the new master), and the channel to it.
    pub handover: Option<Handover>,
    pub successor: Option<Link>,
    /// The master this one was started to take over from.
    pub predecessor: Option<Predecessor>,
    /// Started by an upgrade, this master failed to take over: why (it exits with an error).
    pub failed: Option<String>,
    /// This program and its arguments, as started: an upgrade starts them again.
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
}

/// What operators see and ask of the master.
pub(super) struct Operations {
    pub control: Option<control_socket::Control>,
    /// The monitoring listener (`[metrics] listen`), if any.
    pub monitor: Option<monitor::Monitor>,
    /// HAProxy's agent-check listener (`[metrics] haproxy_agent`), if any.
    pub agent_check: Option<super::agent_check_io::AgentCheck>,
    /// Watch mode (`[watch]`, `--watch`), if on.
    pub watcher: Option<super::watch_io::Watcher>,
    pub watch_token: Option<Token>,
    /// What systemd is told (`NOTIFY_SOCKET`).
    pub notifier: notify::Notifier,
    /// What is counted for `/metrics`.
    pub counters: metrics::Counters,
    /// The latest value of each retained message key.
    pub retained: relay::Retained,
    /// Flow control: some receiver's backlog passed the high-water mark; senders' channels
    /// are not read until every backlog is back under the low-water mark.
    pub relay_paused: bool,
    /// A graceful stop's drain (`[shutdown] drain`), while it lasts.
    pub drain: crate::engine::drain::Drain,
    /// Every initial worker has been ready (for `/readyz`).
    pub started_serving: bool,
    /// Reads the configuration again on reload.
    pub loader: Loader,
    /// This master's entry in the registry of running masters: held for its `Drop`, which
    /// removes it at exit.
    pub _registration: control_files::Registration,
    /// Dropped last: removes the pid file (if still ours) once everything else is gone.
    pub pid_file: Option<control_files::PidFile>,
}
