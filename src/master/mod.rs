//! The master: one thread, one `mio::Poll`, a flat `match` on tokens.
//!
//! Each turn of the loop: wait for events (or the nearest deadline), note what they say, reap
//! exited children, then *supervise* (compare the slots we want with the workers we have and act
//! on the difference), *dispatch* (hand queued and newly accepted sockets to workers in strict
//! rotation) and *flush* (send what each worker was assigned, batched). Handlers record facts;
//! the three passes act on them. Nothing here reads from a client socket.
//!
//! Submodules: `listeners` (sockets we accept on), `ledger` (who owns each accepted socket until
//! a worker acks it, and the rotation — pure, checked by the seeded simulator `sim`), `dispatch`
//! (who is next), `channel` and `node` (one worker's channel: the native wire and Node's),
//! `fleet` (worker records, slots, spawning), `restart` (restart policy), `reload` (rolling
//! reload and scaling), `output` (captured worker output), `signals` (what each signal means).

mod channel;
mod control;
mod dispatch;
mod fleet;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod ledger;
mod lifecycle;
mod listeners;
mod native;
mod node;
mod output;
mod reload;
mod restart;
mod signals;
#[cfg(test)]
mod sim;
mod sources;
mod wire;

use std::ffi::OsString;
use std::io;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::config::{Affinity, Config};
use crate::protocol::WorkerMessage;
use fleet::{Fleet, Role, Seat, State, Worker};
use ledger::Ledger;
use lifecycle::{Phase, REAP_GRACE, StopStep};
use listeners::Listener;
use restart::Decision;
use signals::{Action, SignalSource};
use sources::{Source, Sources};
use wire::{Flush, Handoff, Incoming};

pub use control::{ControlError, create_private_dir};
pub use listeners::ListenError;
pub use output::{open_append as open_log, redirect_stderr};

/// Connections accepted from one listener per loop turn before the others get a look.
const ACCEPT_BURST: usize = 256;
/// Pause after `EMFILE`/`ENFILE` before accepting again.
const FD_EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);
/// How long a worker whose channel closed has to exit before that counts as a failure.
const CHANNEL_CLOSED_GRACE: Duration = Duration::from_millis(200);

/// A failure that stops the master (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot set up the event loop: {0}")]
    EventLoop(io::Error),
    #[error("gave up: no worker could be kept running (see the errors above)")]
    GaveUp,
}

/// File descriptors the master may hold at once: per worker its window of sockets, its
/// channel, two output pipes and one spare; the listeners; and room for control connections,
/// the pid file, the poll and the log.
fn fds_needed(config: &Config) -> u64 {
    let per_worker = config.worker.max_unacked as u64 + 4;
    config.workers as u64 * per_worker + config.listen.len() as u64 + 64
}

/// An episode of `accept` failing for lack of file descriptors.
#[derive(Debug, Clone, Copy)]
struct FdShortage {
    since: Instant,
    refused: u64,
}

/// Reads the configuration again (on reload), the way it was read at start.
pub type Loader = Box<dyn FnMut() -> Result<Config, String>>;

/// Runs the master until it is stopped. `Ok` is a clean stop.
/// `started` is called once the master listens, with the listeners' addresses.
pub fn run(
    config: Config,
    loader: Loader,
    started: &mut dyn FnMut(&[String]),
) -> Result<(), MasterError> {
    match crate::sys::raise_fd_limit() {
        Ok(limit) => {
            debug!("open file limit: {limit}");
            let needed = fds_needed(&config);
            if limit < needed {
                warn!(
                    "the open file limit is {limit}, below the {needed} this configuration may \
                     need (workers × (max_unacked + 4) + listeners + 64): under load, accepts \
                     will pause for lack of file descriptors; raise it (ulimit -n, systemd's \
                     LimitNOFILE=)"
                );
            }
        }
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
    // First: a second master for the same configuration must fail on this, not on the port.
    let pid_file = control::PidFile::acquire(&config.control.pid_file)?;
    let listeners = config
        .listen
        .iter()
        .map(|addr| Listener::bind(addr, config.backlog))
        .collect::<Result<Vec<_>, _>>()?;
    for l in &listeners {
        // Socket-activation servers expect a blocking listener (systemd hands them one); Node
        // (libuv) expects a non-blocking one and would block its event loop in accept().
        if config.mode().socket_activation() {
            l.set_nonblocking(false).map_err(MasterError::EventLoop)?;
        }
        info!("listening on {}", l.local);
    }
    info!(
        "sched_policy={} (from {}), workers={}, worker={}",
        config.sched_policy.as_str(),
        config.policy_source,
        config.workers,
        config.worker.program.display()
    );
    let control = control::Control::bind(&config.control.socket)?;
    debug!(
        "control socket {}, pid file {}",
        config.control.socket.display(),
        config.control.pid_file.display()
    );
    let master = Master::new(config, listeners, loader, control).map_err(MasterError::EventLoop)?;
    started(&master.listen_names);
    let result = master.run();
    drop(pid_file); // removes it, last
    result
}

struct Master {
    poll: Poll,
    config: Config,
    base_env: Vec<(OsString, OsString)>,
    listeners: Vec<Listener>,
    /// Listener `i` may have connections waiting (edge-triggered: set on event, cleared on
    /// `WouldBlock`).
    accept_ready: Vec<bool>,
    /// The listeners are registered with the poll: only while some worker is free, so that
    /// clients arriving while every worker is busy do not wake the master for nothing.
    watching: bool,
    accept_paused_until: Option<Instant>,
    /// `accept` is failing for lack of file descriptors: accepting resumes as soon as one is
    /// freed (an ack, a closed channel), or after `FD_EXHAUSTED_PAUSE` at the latest.
    fd_shortage: Option<FdShortage>,
    signals: SignalSource,
    /// What each poll token stands for.
    sources: Sources,
    /// The tokens of the listeners, in `listeners` order.
    listener_tokens: Vec<Token>,
    fleet: Fleet,
    /// Every accepted socket until a worker acks it: queued, or in one worker's account.
    ledger: Ledger<Handoff>,
    phase: Phase,
    /// A SIGCHLD arrived: exited children wait to be reaped.
    reap_due: bool,
    gave_up: bool,
    /// The rolling reload under way, if any.
    reload: Option<reload::Reload>,
    loader: Loader,
    /// `on_giveup` commands still running (reaped like workers, killed at exit).
    hooks: Vec<Pid>,
    /// Files for the workers' stdout and stderr, when `[log]` names them.
    sinks: [Option<output::Sink>; 2],
    control: Option<control::Control>,
    /// The listeners' addresses as shown to users.
    listen_names: Vec<String>,
    /// Scratch buffers reused every turn.
    incoming: Vec<Incoming>,
    pending_signals: Vec<(i32, Action)>,
}

impl Master {
    fn new(
        config: Config,
        listeners: Vec<Listener>,
        loader: Loader,
        mut control: control::Control,
    ) -> io::Result<Master> {
        let poll = Poll::new()?;
        let mut sources = Sources::default();
        poll.registry().register(
            control.listener(),
            sources.add(Source::Control),
            Interest::READABLE,
        )?;
        let sinks = output::open_sinks(&config.log)?;
        let signals = SignalSource::new(poll.registry(), sources.add(Source::Signals))?;
        let listener_tokens = (0..listeners.len())
            .map(|i| sources.add(Source::Listener(i)))
            .collect();
        // The listeners are watched only while some worker is free (`watch_listeners`).
        let now = Instant::now();
        let listen_names = listeners.iter().map(|l| l.local.to_string()).collect();
        Ok(Master {
            poll,
            base_env: fleet::base_env(&config),
            accept_ready: vec![false; listeners.len()],
            watching: false,
            listeners,
            accept_paused_until: None,
            fd_shortage: None,
            signals,
            sources,
            listener_tokens,
            fleet: Fleet::new(config.workers, now),
            config,
            ledger: Ledger::default(),
            phase: Phase::Running,
            reap_due: true,
            gave_up: false,
            reload: None,
            loader,
            hooks: Vec::new(),
            sinks,
            control: Some(control),
            listen_names,
            incoming: Vec::new(),
            pending_signals: Vec::new(),
        })
    }

    fn run(mut self) -> Result<(), MasterError> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let timeout = if self.has_immediate_work() {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(MasterError::EventLoop(e));
                }
            }
            for event in events.iter() {
                match self.sources.get(event.token()) {
                    Some(Source::Signals) => self.on_signals(),
                    Some(Source::Control) => self.on_control_accept(),
                    Some(Source::ControlConn(key)) => self.on_control_conn(key),
                    Some(Source::Listener(i)) => {
                        if let Some(flag) = self.accept_ready.get_mut(i) {
                            *flag = true;
                        }
                    }
                    Some(Source::Output { worker, stream }) => self.on_output(worker, stream),
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
            // On SIGCHLD only (several exits may share one signal: `reap` takes them all), and
            // every turn while stopping, where nothing else is left to do.
            if std::mem::take(&mut self.reap_due) || self.phase != Phase::Running {
                self.reap();
            }
            let now = Instant::now();
            self.supervise(now);
            self.dispatch(now);
            self.flush(now);
            self.watch_listeners();
            let left = self.fleet.workers.len() + self.hooks.len();
            let exit = match self.phase.stop_step(now, left) {
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
                return if self.gave_up {
                    Err(MasterError::GaveUp)
                } else {
                    Ok(())
                };
            }
        }
    }

    /// Work that should not wait for an event: a channel read stopped by its budget, or a
    /// listener with connections still queued while some worker has room.
    fn has_immediate_work(&self) -> bool {
        self.unread_channels().next().is_some() || self.can_accept_more()
    }

    fn can_accept_more(&self) -> bool {
        self.phase == Phase::Running
            && self.config.mode().master_accepts()
            && self.accept_paused_until.is_none()
            && self.accept_ready.iter().any(|&r| r)
            && self.ledger.queued() == 0
            && self.free_slot().is_some()
    }

    /// Watches the listeners while some worker is free, and only then (`rr` mode). A client
    /// that arrives meanwhile waits in the kernel's backlog; when a worker becomes free the
    /// listeners are watched again and tried at once, since clients may be waiting.
    fn watch_listeners(&mut self) {
        let wanted = self.phase == Phase::Running
            && self.config.mode().master_accepts()
            && self.free_slot().is_some();
        if wanted == self.watching {
            return;
        }
        self.watching = wanted;
        for (i, l) in self.listeners.iter().enumerate() {
            let mut source = SourceFd(&l.raw_fd());
            let registry = self.poll.registry();
            let done = if wanted {
                registry.register(&mut source, self.listener_tokens[i], Interest::READABLE)
            } else {
                registry.deregister(&mut source)
            };
            if let Err(e) = done {
                error!("cannot (un)watch the listener {}: {e}", l.local);
            }
            if wanted {
                self.accept_ready[i] = true;
            }
        }
    }

    /// The slot whose turn it is among those free to take a connection now, without taking
    /// the turn.
    fn free_slot(&self) -> Option<usize> {
        let fleet = &self.fleet;
        self.ledger
            .free_slot(fleet.slots.len(), |s| fleet.serving(s))
    }

    /// When the oldest socket `worker` holds un-acked passes `ack_timeout`, unless it was
    /// killed for that already.
    fn ack_deadline(&self, worker: &Worker) -> Option<Instant> {
        if worker.stuck {
            return None;
        }
        self.ledger
            .account(worker.account)?
            .oldest_unacked()?
            .checked_add(self.config.worker.ack_timeout)
    }

    /// The nearest moment something is due: a slot restart, a SIGKILL, the end of a pause.
    fn next_deadline(&self) -> Option<Instant> {
        let slots = self.fleet.slots.iter().filter_map(|s| s.start_at);
        let kills = self
            .fleet
            .workers
            .iter()
            .flat_map(|(_, w)| {
                let ack_deadline = self.ack_deadline(w);
                w.kill_at
                    .into_iter()
                    .chain(w.channel_closed_check)
                    .chain(ack_deadline)
            })
            .chain(self.next_readiness_deadline());
        let left = self.fleet.workers.len() + self.hooks.len();
        let phase = match self.phase.stop_step(Instant::now(), left) {
            Some(StopStep::Wait(t)) => Some(t),
            Some(_) => Some(Instant::now()),
            None => None,
        };
        slots
            .chain(kills)
            .chain(phase)
            .chain(self.accept_paused_until)
            .min()
    }

    // ---- events -------------------------------------------------------------------------------

    fn on_signals(&mut self) {
        let mut pending = std::mem::take(&mut self.pending_signals);
        self.signals.drain(&mut pending);
        for (sig, action) in pending.drain(..) {
            if action != Action::Reap {
                info!("received {}", signals::name(sig));
            }
            match action {
                Action::GracefulStop => match self.phase {
                    Phase::Running => self.begin_stop(),
                    Phase::Stopping { .. } => {
                        info!("second stop signal: killing the workers now");
                        self.quick_stop();
                    }
                },
                Action::QuickStop => self.quick_stop(),
                Action::Reap => self.reap_due = true,
                Action::Reload => {
                    if let Err(e) = self.request_reload(None) {
                        warn!("reload refused: {e}");
                    }
                }
                Action::ScaleUp | Action::ScaleDown => {
                    let n = self.fleet.slots.len();
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
            }
        }
        self.pending_signals = pending;
    }

    /// A file descriptor was closed: if accepting is paused for lack of them, try again now.
    fn fd_freed(&mut self) {
        if self.fd_shortage.is_some() {
            self.accept_paused_until = None;
        }
    }

    /// Channels whose last read stopped for its budget, with messages perhaps still waiting.
    fn unread_channels(&self) -> impl Iterator<Item = usize> + '_ {
        self.fleet
            .workers
            .iter()
            .filter(|(_, w)| w.channel.as_ref().is_some_and(|c| c.has_unread()))
            .map(|(k, _)| k)
    }

    /// Reads on where a worker said more than one turn's budget: every worker gets a turn.
    fn read_unread(&mut self) {
        let keys: Vec<usize> = self.unread_channels().collect();
        for key in keys {
            self.on_channel(key, true);
        }
    }

    /// The channel of `key` takes writes again: it may be given connections again.
    fn on_channel_writable(&mut self, key: usize) {
        let account = self.fleet.workers.get(key).map(|w| w.account);
        if let Some(account) = account.and_then(|a| self.ledger.account_mut(a)) {
            account.on_writable();
        }
    }

    fn on_channel(&mut self, key: usize, readable: bool) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return; // a stale event for a worker already reaped
        };
        let Some(channel) = worker.channel.as_mut() else {
            return;
        };
        if readable {
            let mut incoming = std::mem::take(&mut self.incoming);
            if let Some(account) = self.ledger.account_mut(worker.account) {
                channel.read(account, &mut incoming);
            }
            // Refused connections (Node's `accepted: false`) are first in line for another.
            let refused = self.ledger.requeue_returned(worker.account);
            if refused > 0 {
                debug!(
                    "pid={} refused {refused} connection(s); handing them to another",
                    worker.pid
                );
            }
            for message in incoming.drain(..) {
                self.on_incoming(key, message);
            }
            self.incoming = incoming;
        }
        // Writable (or anything else): try to send what waits; `flush` runs every turn anyway.
    }

    fn on_incoming(&mut self, key: usize, incoming: Incoming) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.pid);
        match incoming {
            Incoming::Message(message) => {
                worker.spoke = true;
                match message {
                    WorkerMessage::Ready if worker.state == State::Starting => self.on_ready(key),
                    // Already ready by `ready_delay`, or retiring: nothing changes.
                    WorkerMessage::Ready => debug!("ready slot={slot} pid={pid} (ignored)"),
                    // The master's copies are closed: if accepts wait for a descriptor, resume.
                    WorkerMessage::Ack(_) => self.fd_freed(),
                    WorkerMessage::Idle => {}
                    WorkerMessage::Leaving => self.on_leaving(key),
                }
            }
            Incoming::Note(note) => {
                worker.spoke = true;
                worker.note(format_args!("{note}"));
            }
            Incoming::Warning(warning) => {
                worker.spoke = true;
                worker.warn(format_args!("{warning}"));
            }
            Incoming::Said { what, value } => {
                worker.spoke = true;
                worker.note(format_args!("{what}: {value}"));
            }
            Incoming::Closed => self.on_channel_closed(key),
            Incoming::Violation(detail) => {
                warn!("worker misbehaved slot={slot} pid={pid}: {detail}; replacing it");
                self.replace_misbehaving(key, detail);
            }
        }
    }

    /// A worker is serving: by its `ready`, or `ready_delay` after its start.
    fn on_ready(&mut self, key: usize) {
        let Some(worker) = self.fleet.workers.get_mut(key) else {
            return;
        };
        worker.state = State::Ready;
        let (slot, pid) = (worker.slot, worker.pid);
        info!(
            "worker ready slot={slot} pid={pid} after {:?}",
            worker.uptime(Instant::now())
        );
        if self.fleet.role(key) == Role::Candidate {
            self.promote(key);
        }
    }

    /// The seeds' "suicide": route nothing more to it and start its successor now.
    fn on_leaving(&mut self, key: usize) {
        let worker = &self.fleet.workers[key];
        let (slot, pid) = (worker.slot, worker.pid);
        let role = self.fleet.role(key);
        if role == Role::Candidate {
            self.reload_failed(key, "it said `leaving` before it was ready".into());
        }
        self.fleet.detach(key);
        self.requeue_outbox(key);
        if role == Role::Current && self.phase == Phase::Running {
            info!("worker leaving slot={slot} pid={pid}; starting its successor");
            if let Some(s) = self.fleet.slots.get_mut(slot) {
                s.start_at = Some(Instant::now());
            }
        }
    }

    fn on_channel_closed(&mut self, key: usize) {
        let now = Instant::now();
        let shared = self.config.mode().workers_accept();
        self.release_channel(key);
        let worker = &mut self.fleet.workers[key];
        let (slot, pid) = (worker.slot, worker.pid);
        if shared && !worker.spoke {
            // A plain socket-activation server may close fds it does not know; it serves anyway.
            debug!("worker closed its channel slot={slot} pid={pid} (it never used it)");
            return;
        }
        if worker.state == State::Draining {
            return; // expected: it is on its way out
        }
        // Usually the worker is exiting and its exit status is the real story; give the exit a
        // moment to be reaped before calling the closed channel itself the failure.
        worker.channel_closed_check = Some(now + CHANNEL_CLOSED_GRACE);
    }

    fn replace_misbehaving(&mut self, key: usize, detail: String) {
        let now = Instant::now();
        let grace = self.config.kill_timeout;
        self.release_channel(key);
        self.fleet.workers[key].request_stop(now, grace);
        self.fail_slot(key, now, detail);
    }

    /// The worker at `key` failed: detach it and let the restart policy decide about its slot.
    fn fail_slot(&mut self, key: usize, now: Instant, cause: String) {
        let worker = &self.fleet.workers[key];
        let (slot, pid, uptime) = (worker.slot, worker.pid, worker.uptime(now));
        match self.fleet.role(key) {
            Role::Current => {
                self.fleet.detach(key);
                self.slot_failed(slot, pid, uptime, now, cause);
            }
            Role::Candidate => self.reload_failed(key, cause),
            Role::Detached => {}
        }
    }

    fn slot_failed(
        &mut self,
        slot: usize,
        pid: Pid,
        uptime: Duration,
        now: Instant,
        cause: String,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        let policy = self.config.restart;
        let Some(s) = self.fleet.slots.get_mut(slot) else {
            return; // scaled away meanwhile
        };
        s.remember_cause(format!("pid {pid}: {cause}"));
        match s.restarts.on_failure(&policy, now, uptime) {
            Decision::RestartAfter(delay) => {
                s.start_at = Some(now + delay);
                s.restart_count += 1;
                info!("restarting slot={slot} in {delay:?}");
            }
            Decision::GiveUp => {
                s.given_up = true;
                s.start_at = None;
                let causes: Vec<&str> = s.last_causes.iter().map(String::as_str).collect();
                let reason = format!(
                    "{} unasked exits within {:?} (max_restarts={}); last causes: {}",
                    s.restarts.recent(),
                    policy.window,
                    policy.max_restarts,
                    causes.join("; ")
                );
                error!("giveup slot={slot}: {reason}; not restarting it");
                self.run_giveup_hook(slot, pid, &reason);
                if self.fleet.ready_count() == 0 {
                    error!("no ready worker is left; stopping");
                    self.gave_up = true;
                    self.begin_stop();
                }
            }
        }
    }

    /// Runs `on_giveup` (if set) so someone gets paged: `sh -c` with the slot, pid and reason
    /// in its environment, its output where the workers' goes. Reaped like a worker.
    fn run_giveup_hook(&mut self, slot: usize, pid: Pid, reason: &str) {
        let Some(command) = self.config.on_giveup.clone() else {
            return;
        };
        let mut env = self.base_env.clone();
        env.push(("RRB_GIVEUP_SLOT".into(), slot.to_string().into()));
        env.push(("RRB_GIVEUP_PID".into(), pid.to_string().into()));
        env.push(("RRB_GIVEUP_REASON".into(), reason.into()));
        let spawned = crate::sys::spawn(crate::sys::SpawnSpec {
            program: std::path::Path::new("/bin/sh"),
            arg0: "sh".as_ref(),
            args: &["-c".to_owned(), command.clone()],
            env: &env,
            cwd: self.config.worker.cwd.as_deref(),
            inherit: &[],
            listen_pid: false,
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        });
        match spawned {
            Ok(child) => {
                let hook = Pid::from_raw(child.id() as i32);
                info!("on_giveup command started pid={hook}: {command}");
                self.hooks.push(hook);
            }
            Err(e) => error!("cannot run on_giveup command {command:?}: {e}"),
        }
    }

    /// Closes the master's side of the channel of `key`. Sockets the worker never got go to
    /// the front of the queue for the next worker at once; those it was sent and had not
    /// acked are held until it is dead (it may still have them: none is served twice).
    fn release_channel(&mut self, key: usize) {
        let worker = &mut self.fleet.workers[key];
        self.ledger.close(worker.account);
        let Some(channel) = worker.channel.take() else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&channel.raw_fd()));
        drop(channel);
        self.fd_freed();
    }

    /// Sockets assigned to `key` but not yet sent (or given back) go to someone else, first in
    /// line: they are older than anything still to be accepted.
    fn requeue_outbox(&mut self, key: usize) {
        self.ledger.requeue_unsent(self.fleet.workers[key].account);
    }

    // ---- reaping ------------------------------------------------------------------------------

    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return, // Err: ECHILD, no children
                Ok(status) => status,
            };
            let (pid, cause) = match status {
                WaitStatus::Exited(pid, code) => (pid, format!("exit code {code}")),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    format!(
                        "killed by {}{}",
                        sig.as_str(),
                        if core { " (core dumped)" } else { "" }
                    ),
                ),
                _ => continue, // stopped/continued: not an exit
            };
            self.on_exit(pid, cause);
        }
    }

    fn on_exit(&mut self, pid: Pid, cause: String) {
        let Some(key) = self.fleet.key_of(pid) else {
            if let Some(i) = self.hooks.iter().position(|&h| h == pid) {
                self.hooks.swap_remove(i);
                info!("on_giveup command pid={pid} finished: {cause}");
            } else {
                debug!("reaped pid={pid} ({cause})");
            }
            return;
        };
        // What it said last (an `ack`, a `leaving`) may still wait in its channel, and decides
        // both which sockets it owned and whether this exit was planned: read it first.
        if self.fleet.workers[key].channel.is_some() {
            self.on_channel(key, true);
        }
        self.release_channel(key);
        let worker = &self.fleet.workers[key];
        let held = self.ledger.remove(worker.account);
        if held > 0 {
            info!("re-dispatching {held} connection(s) pid={pid} had not acked");
        }
        self.drain_output(key);
        let now = Instant::now();
        let role = self.fleet.role(key);
        if role == Role::Candidate {
            self.reload_failed(key, cause.clone());
        }
        let (worker, role) = self.fleet.remove(key);
        for &token in &worker.tokens {
            self.sources.remove(token);
        }
        let slot = worker.slot;
        if role == Role::Current && self.phase == Phase::Running {
            warn!(
                "worker exited unasked slot={slot} pid={pid}: {cause} (up {:?})",
                worker.uptime(now)
            );
            self.slot_failed(slot, pid, worker.uptime(now), now, cause);
        } else {
            info!("worker exited slot={slot} pid={pid}: {cause}");
        }
    }

    // ---- supervision --------------------------------------------------------------------------

    /// Wanted vs alive: start what is due, kill what overstayed its grace.
    fn supervise(&mut self, now: Instant) {
        let closed: Vec<usize> = self
            .fleet
            .workers
            .iter()
            .filter(|(_, w)| w.channel_closed_check.is_some_and(|t| t <= now))
            .map(|(k, _)| k)
            .collect();
        for key in closed {
            let grace = self.config.kill_timeout;
            let worker = &mut self.fleet.workers[key];
            worker.channel_closed_check = None;
            warn!(
                "worker closed its channel but kept running slot={} pid={}; replacing it",
                worker.slot, worker.pid
            );
            worker.request_stop(now, grace);
            self.fail_slot(key, now, "closed its channel".into());
        }
        self.check_readiness(now);
        self.check_acks(now);
        for (_, worker) in self.fleet.workers.iter_mut() {
            if worker.kill_at.is_some_and(|t| t <= now) {
                warn!(
                    "worker did not exit in time slot={} pid={}; sending SIGKILL",
                    worker.slot, worker.pid
                );
                worker.signal_group(Signal::SIGKILL);
                worker.kill_at = None;
            }
        }
        match self.phase {
            Phase::Running => {
                for slot in 0..self.fleet.slots.len() {
                    let s = &self.fleet.slots[slot];
                    let empty = s.current.is_none() && s.candidate.is_none();
                    if empty && s.start_at.is_some_and(|t| t <= now) {
                        self.fleet.slots[slot].start_at = None;
                        self.start_worker(slot, Role::Current, now);
                    }
                }
                self.step_reload(now);
            }
            Phase::Stopping { .. } => {
                let left = self.fleet.workers.len() + self.hooks.len();
                if self.phase.stop_step(now, left) == Some(StopStep::KillAll) {
                    for (_, worker) in self.fleet.workers.iter() {
                        warn!(
                            "kill_timeout passed; SIGKILL slot={} pid={}",
                            worker.slot, worker.pid
                        );
                        worker.signal_group(Signal::SIGKILL);
                    }
                    for &hook in &self.hooks {
                        let _ = nix::sys::signal::killpg(hook, Signal::SIGKILL);
                    }
                    self.phase.mark_killed();
                }
            }
        }
    }

    /// A worker holding a socket un-acked past `ack_timeout` is stuck: it gets nothing more,
    /// is killed, and its slot is refilled under the restart policy. What it held goes to
    /// other workers once it is reaped, not before: it might still serve it otherwise.
    fn check_acks(&mut self, now: Instant) {
        let timeout = self.config.worker.ack_timeout;
        let stuck: Vec<usize> = self
            .fleet
            .workers
            .iter()
            .filter(|(_, w)| self.ack_deadline(w).is_some_and(|t| t <= now))
            .map(|(k, _)| k)
            .collect();
        for key in stuck {
            let worker = &mut self.fleet.workers[key];
            worker.stuck = true;
            worker.state = State::Draining;
            let (held, oldest) = self
                .ledger
                .account(worker.account)
                .map_or((0, None), |a| (a.in_flight(), a.oldest_unacked()));
            let age = oldest.map_or(timeout, |t| now.saturating_duration_since(t));
            warn!(
                "worker stuck slot={} pid={}: {held} connection(s) un-acked, the oldest for \
                 {age:.1?} (ack_timeout {timeout:?}); killing it",
                worker.slot, worker.pid
            );
            worker.signal_group(Signal::SIGKILL);
            self.fail_slot(key, now, format!("no ack within ack_timeout ({timeout:?})"));
        }
    }

    /// Starts a worker for `slot` as its current worker or as a reload candidate. `None` if
    /// it could not be started (already logged and, for a current worker, counted as a
    /// failure).
    fn start_worker(&mut self, slot: usize, role: Role, now: Instant) -> Option<usize> {
        let capture = [self.sinks[0].is_some(), self.sinks[1].is_some()];
        let seat = Seat {
            slot,
            slots: self.fleet.slots.len(),
            account: self.ledger.open(self.config.worker.max_unacked),
        };
        let spawned = fleet::spawn(
            &self.config,
            &self.base_env,
            &self.listeners,
            seat,
            capture,
            now,
        );
        let worker = match spawned {
            Ok(worker) => worker,
            Err(e) => {
                self.ledger.remove(seat.account);
                error!(
                    "cannot start worker slot={slot} ({}): {e}",
                    self.config.worker.program.display()
                );
                if role == Role::Current {
                    let cause = format!("spawn failed: {e}");
                    self.slot_failed(slot, Pid::from_raw(0), Duration::ZERO, now, cause);
                }
                return None;
            }
        };
        let pid = worker.pid;
        let key = self.fleet.insert(worker, role);
        let worker = &self.fleet.workers[key];
        let mut watch: Vec<(i32, Token, Interest)> = Vec::with_capacity(3);
        if let Some(channel) = &worker.channel {
            let token = self.sources.add(Source::Channel(key));
            watch.push((
                channel.raw_fd(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ));
        }
        for (stream, pipe) in worker.output.iter().enumerate() {
            if let Some(pipe) = pipe {
                let token = self.sources.add(Source::Output {
                    worker: key,
                    stream,
                });
                watch.push((pipe.raw_fd(), token, Interest::READABLE));
            }
        }
        self.fleet.workers[key]
            .tokens
            .extend(watch.iter().map(|&(_, token, _)| token));
        for (fd, token, interest) in watch {
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), token, interest)
            {
                error!("cannot watch fd {fd} of pid={pid}: {e}");
            }
        }
        let what = if role == Role::Candidate {
            " (reload candidate)"
        } else {
            ""
        };
        info!("worker started slot={slot} pid={pid}{what}");
        Some(key)
    }

    // ---- dispatch -----------------------------------------------------------------------------

    /// Gives `handoff` to its home slot's worker if client affinity is on and that worker can
    /// queue it, else to the worker whose turn it is among those free now; `Err` gives it back
    /// when nobody can take it.
    fn place(&mut self, handoff: Handoff) -> Result<usize, Handoff> {
        let fleet = &self.fleet;
        let affinity = self.config.affinity == Affinity::ClientIp;
        self.ledger
            .place(handoff, fleet.slots.len(), |s| fleet.serving(s), affinity)
    }

    /// First the sockets waiting for a new owner, then new connections while anyone is free.
    /// A connection is bound to a worker only here, just before [`Master::flush`] sends it;
    /// while nobody is free it waits in the backlog or, not yet accepted, in the kernel's.
    fn dispatch(&mut self, now: Instant) {
        if !self.config.mode().master_accepts() {
            return;
        }
        let fleet = &self.fleet;
        let affinity = self.config.affinity == Affinity::ClientIp;
        let emptied = self
            .ledger
            .dispatch(fleet.slots.len(), |s| fleet.serving(s), affinity);
        if self.phase != Phase::Running {
            // Stopping: what comes back now (from a worker that died holding it) finds nobody
            // to take it. Close it at once, and say so, rather than silently at exit.
            let dropped = self.ledger.drop_queue();
            if dropped > 0 {
                warn!("closing {dropped} connection(s) no worker could take");
            }
            return;
        }
        if !emptied {
            return; // nobody has room: the kernel's backlog holds new clients meanwhile
        }
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for i in 0..self.listeners.len() {
            let mut accepted = 0;
            while self.accept_ready[i] && accepted < ACCEPT_BURST {
                // Look for room without taking a turn: the accept may find nobody waiting.
                if self.free_slot().is_none() {
                    return;
                }
                match self.listeners[i].accept() {
                    Ok((socket, peer)) => {
                        accepted += 1;
                        if let Some(shortage) = self.fd_shortage.take() {
                            info!(
                                "accepting again after {:.1?}: {} accept(s) had failed for lack \
                                 of file descriptors",
                                now.saturating_duration_since(shortage.since),
                                shortage.refused
                            );
                        }
                        let handoff = Handoff {
                            socket,
                            listener: i,
                            peer,
                            sent: None,
                        };
                        if let Err(handoff) = self.place(handoff) {
                            self.ledger.enqueue(handoff); // unreachable: room was checked
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_ready[i] = false,
                    Err(e) if listeners::is_transient_accept_error(&e) => {}
                    Err(e) if listeners::is_fd_exhaustion(&e) => {
                        let shortage = self.fd_shortage.get_or_insert_with(|| {
                            warn!(
                                "accept on {}: {e}; pausing accepts until a file descriptor is \
                                 freed",
                                self.listeners[i].local
                            );
                            FdShortage {
                                since: now,
                                refused: 0,
                            }
                        });
                        shortage.refused += 1;
                        self.accept_paused_until = Some(now + FD_EXHAUSTED_PAUSE);
                        return;
                    }
                    Err(e) => {
                        error!("accept on {}: {e}", self.listeners[i].local);
                        self.accept_paused_until = Some(now + FD_EXHAUSTED_PAUSE);
                        return;
                    }
                }
            }
        }
    }

    /// Sends what each worker was assigned (and queued `stop`s). A socket that could not be
    /// sent (the channel is full) is not left waiting for that worker: it goes back to the
    /// front of the backlog, for whoever is free next.
    fn flush(&mut self, now: Instant) {
        let mut broken = Vec::new();
        for (key, worker) in self.fleet.workers.iter_mut() {
            let Some(channel) = worker.channel.as_mut() else {
                continue;
            };
            let Some(account) = self.ledger.account_mut(worker.account) else {
                continue;
            };
            if !channel.wants_flush(account) {
                continue;
            }
            match channel.flush(account, now) {
                Flush::Done | Flush::Blocked => {}
                Flush::Broken(e) => {
                    debug!("channel of pid={} broke: {e}", worker.pid);
                    broken.push(key);
                }
            }
            // Running, what a full channel could not take goes to whoever is free next. Stopping,
            // nobody takes new work: a draining worker keeps its outbox, sent when its channel
            // is writable again, before its `stop`.
            if self.phase == Phase::Running {
                self.ledger.requeue_unsent(worker.account);
            }
        }
        for key in broken {
            // Its last words (a `leaving`, acks) may wait unread: they decide what happens next.
            self.on_channel(key, true);
            if self
                .fleet
                .workers
                .get(key)
                .is_some_and(|w| w.channel.is_some())
            {
                self.on_channel_closed(key);
            }
        }
    }

    // ---- stopping -----------------------------------------------------------------------------

    /// Graceful stop: stop accepting, hand out what is queued, tell every worker to finish.
    fn begin_stop(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let now = Instant::now();
        let grace = self.config.kill_timeout;
        info!("stopping gracefully (kill_timeout {grace:?})");
        if let Some(reload) = self.reload.take() {
            self.answer_all(reload.into_waiters(), Err("the master is stopping".into()));
        }
        self.phase = Phase::stopping(now, grace);
        self.watch_listeners(); // no longer: we are stopping
        self.accept_ready.iter_mut().for_each(|r| *r = false);
        // Give queued sockets to whoever can still take them, before `stop` follows them; the
        // rest is closed (dispatch does, once stopping).
        self.dispatch(now);
        self.listeners.clear(); // closes them (and removes Unix socket files)
        for slot in &mut self.fleet.slots {
            slot.start_at = None;
        }
        for (_, worker) in self.fleet.workers.iter_mut() {
            worker.request_stop(now, grace);
        }
    }

    /// Quick stop: SIGKILL every worker now.
    fn quick_stop(&mut self) {
        let now = Instant::now();
        if self.phase == Phase::Running {
            self.listeners.clear();
        }
        for slot in &mut self.fleet.slots {
            slot.start_at = None;
        }
        for (_, worker) in self.fleet.workers.iter() {
            worker.signal_group(Signal::SIGKILL);
        }
        for &hook in &self.hooks {
            let _ = nix::sys::signal::killpg(hook, Signal::SIGKILL);
        }
        self.phase = Phase::killed(now);
    }
}
