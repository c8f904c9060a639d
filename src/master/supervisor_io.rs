//! Supervision, the shell's side: it feeds the [`Supervisor`](crate::engine::supervisor::Supervisor)
//! the facts it sees — what workers say, exits reaped on SIGCHLD, stuck workers, the clock — and
//! carries out the [`Effect`]s it decides: spawning, stopping and killing workers, giving their
//! sockets back, running `on_giveup`, answering control clients, closing the listeners.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::Master;
use super::launch::{self, Seat};
use super::sources::Source;
use super::wire_shared::Incoming;
use super::{memory, process};
use crate::config::Config;
use crate::engine::effect::{Effect, Outcome};
use crate::engine::ids::{Place, Role, Waiter};
use crate::engine::metrics;
use crate::engine::stop_signal::Tell;
use crate::wire::protocol::WorkerMessage;

/// How often the workers' memory is measured, with `[recycle] max_memory` set.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Master {
    pub(super) fn on_incoming(&mut self, key: usize, incoming: Incoming) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        let (place, pid) = (worker.place, worker.pid);
        let now = Instant::now();
        if matches!(
            incoming,
            Incoming::Message(_) | Incoming::Note(_) | Incoming::Said { .. } | Incoming::Relay(_)
        ) {
            // Its first words: its app runs; if its `stop` has left, the signal it was owed.
            let channel = self.workers.procs.channel(key);
            let stop_left = channel.is_some_and(|c| !c.stop_pending());
            process::send_stop_signal(pid, self.core.heard(key, stop_left));
        }
        if !matches!(incoming, Incoming::Closed | Incoming::Violation(_)) {
            // It speaks the protocol: its `stop` can go on its channel.
            self.core.spoke(key);
        }
        match incoming {
            Incoming::Message(message) => match message {
                WorkerMessage::Ready => self.core.ready(key, now),
                // The master's copies are closed: if accepts wait for a descriptor, resume.
                WorkerMessage::Ack(_) => self.fd_freed(),
                WorkerMessage::Idle => {}
                WorkerMessage::Full(n) => {
                    self.core.note(
                        key,
                        format_args!(
                            "out of file descriptors: {n} connection(s) given back, handed to \
                             others; nothing more to it for now"
                        ),
                    );
                    self.core.full(key, now);
                }
                WorkerMessage::Leaving => self.core.leaving(key, now),
                WorkerMessage::Subscribe => self.subscribe(key),
            },
            Incoming::Relay(outgoing) => self.relay_from_worker(key, outgoing),
            Incoming::Note(note) => self.core.note(key, format_args!("{note}")),
            Incoming::Warning(warning) => self.core.warn(key, format_args!("{warning}")),
            Incoming::Said { what, value } => self.core.note(key, format_args!("{what}: {value}")),
            Incoming::Closed => self.on_channel_closed(key),
            Incoming::Violation(detail) => {
                warn!("worker misbehaved {place} pid={pid}: {detail}; replacing it");
                self.release_channel(key);
                self.core.misbehaved(key, now, detail);
            }
        }
        self.apply_effects();
    }

    /// The worker closed its channel (or it broke): release it, let the supervisor judge.
    pub(super) fn on_channel_closed(&mut self, key: usize) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        // A plain socket-activation server may close fds it does not know; it serves anyway.
        let silent =
            self.config.mode().workers_accept() && !worker.spoke && worker.place != Place::Agent;
        self.release_channel(key);
        self.core.channel_closed(key, Instant::now(), silent);
        self.apply_effects();
    }

    pub(super) fn reap(&mut self) {
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

    pub(super) fn on_exit(&mut self, pid: Pid, cause: String) {
        let Some(key) = self.core.fleet().key_of(pid) else {
            if self.successor_exited(pid, &cause) {
                return;
            }
            if let Some(i) = self.workers.hooks.iter().position(|&h| h == pid) {
                self.workers.hooks.swap_remove(i);
                info!("on_giveup command pid={pid} finished: {cause}");
            } else {
                debug!("reaped pid={pid} ({cause})");
            }
            return;
        };
        // What it said last (an `ack`, a `leaving`) may still wait in its channel, and decides
        // both which sockets it owned and whether this exit was planned: read it first.
        if self.workers.procs.channel(key).is_some() {
            self.read_channel(key, true, true);
        }
        self.release_channel(key);
        let (account, place, asked, stuck) = {
            let w = &self.core.fleet().workers[key];
            (
                w.account,
                w.place,
                w.state == crate::engine::fleet::State::Draining,
                w.stuck,
            )
        };
        let (held, served) = self.ledger.retire(account);
        let c = &mut self.ops.counters;
        match place {
            Place::Slot(slot) => {
                c.retire(slot, &served);
                c.count_rerouted(slot, metrics::reroute_cause(stuck), held as u64);
                c.count_exit(slot, metrics::exit_cause(asked, &cause));
            }
            Place::Agent => c.agent_exits[metrics::exit_cause(asked, &cause)] += 1,
        }
        if held > 0 {
            info!("re-dispatching {held} connection(s) pid={pid} had not acked");
        }
        self.drain_output(key);
        self.core.exited(key, Instant::now(), cause);
        if let Some(process) = self.workers.procs.remove(key) {
            for &token in &process.tokens {
                self.io.sources.remove(token);
            }
        }
        self.apply_effects();
    }

    /// Wanted vs alive: workers stuck on an un-acked socket, then the supervisor's own look
    /// at the clock; then what it decided is done.
    pub(super) fn supervise(&mut self, now: Instant) {
        let timeout = self.config.worker.ack_timeout;
        let stuck = self.core.overdue(&self.ledger, timeout, now);
        for key in stuck {
            let worker = &self.core.fleet().workers[key];
            let (held, oldest) = self
                .ledger
                .account(worker.account)
                .map_or((0, None), |a| (a.in_flight(), a.oldest_unacked()));
            let age = oldest.map_or(timeout, |t| now.saturating_duration_since(t));
            warn!(
                "worker stuck {} pid={}: {held} connection(s) un-acked, the oldest for \
                 {age:.1?} (ack_timeout {timeout:?}); killing it",
                worker.place, worker.pid
            );
            self.core.stuck(key, now);
        }
        self.measure_memory(now);
        let limits = self.config.recycle;
        let any = limits.max_connections.is_some()
            || limits.max_memory.is_some()
            || limits.max_age.is_some();
        if let Some((key, reason)) = any
            .then(|| self.core.recycle_due(&self.ledger, limits.max_memory, now))
            .flatten()
        {
            // Its successor is on its way: it serves on with no limit left to keep, so that a
            // worker past its own, waiting for its turn, is the one passed over.
            let account = self.core.fleet().workers.get(key).map(|w| w.account);
            if self.core.recycle(key, &reason, now) {
                if let Some(a) = account.and_then(|k| self.ledger.account_mut(k)) {
                    a.set_limit(None);
                }
            }
        }
        self.ledger.retry_full(now);
        self.core.tick(now, self.workers.hooks.len());
        self.apply_effects();
    }

    /// Every [`MEMORY_SAMPLE_EVERY`], with `[recycle] max_memory` set: each worker's resident
    /// memory (its process group's), for `Supervisor::recycle_due`.
    fn measure_memory(&mut self, now: Instant) {
        if self.config.recycle.max_memory.is_none() || now < self.workers.next_memory_sample {
            return;
        }
        self.workers.next_memory_sample = now + MEMORY_SAMPLE_EVERY;
        let groups: Vec<Pid> = self
            .core
            .fleet()
            .workers
            .iter()
            .map(|(_, w)| w.pid)
            .collect();
        let resident = memory::resident_by_group(&groups);
        self.core.memory_measured(|pid| resident.get(&pid).copied());
    }

    /// Carries out what the supervisor decided, until it decides nothing more (a failed spawn
    /// or the end of accepting may lead to further decisions).
    pub(super) fn apply_effects(&mut self) {
        let mut effects = std::mem::take(&mut self.workers.effects);
        loop {
            self.core.drain_effects(&mut effects);
            if effects.is_empty() {
                break;
            }
            for effect in effects.drain(..) {
                self.apply(effect);
            }
        }
        self.workers.effects = effects;
    }

    fn apply(&mut self, effect: Effect) {
        let now = Instant::now();
        match effect {
            Effect::Spawn { place, role } => {
                if let Err(e) = self.start_worker(place, role, now) {
                    self.core.spawn_failed(place, role, now, e);
                }
            }
            Effect::Stop(key) => {
                let signal = self.config.stop_signal;
                let Some(worker) = self.core.fleet().workers.get(key) else {
                    return;
                };
                let node = launch::speaks_node(&self.config, worker.place);
                let disconnect = self.config.disconnect;
                let channel = self.workers.procs.channel_mut(key);
                match self
                    .core
                    .ask_to_stop(key, signal, node, disconnect, channel.is_some())
                {
                    // The signal goes with the `stop` (see `flush`).
                    Some((_, Tell::Channel)) => {
                        channel.expect("asked on its channel").queue_stop();
                        self.workers.flush_due.insert(key);
                    }
                    Some((pid, Tell::Signal(signal))) => {
                        debug!("pid={pid}: sending {signal} to stop it");
                        process::signal_group(pid, signal);
                    }
                    None => {}
                }
            }
            Effect::Signal(key, signal) => {
                if let Some(worker) = self.core.fleet().workers.get(key) {
                    process::send_stop_signal(worker.pid, Some(signal));
                }
            }
            Effect::Kill(key) => {
                if let Some(worker) = self.core.fleet().workers.get(key) {
                    process::signal_group(worker.pid, Signal::SIGKILL);
                }
            }
            Effect::KillHooks => {
                for &hook in &self.workers.hooks {
                    let _ = nix::sys::signal::killpg(hook, Signal::SIGKILL);
                }
                self.kill_successor();
            }
            Effect::Requeue(key) => self.requeue_outbox(key),
            Effect::Hook { place, pid, reason } => self.run_giveup_hook(place, pid, &reason),
            Effect::Answer { waiters, outcome } => self.answer_all(waiters, outcome),
            Effect::StopAccepting => {
                self.watch_listeners(); // no longer: we are stopping
                self.accept
                    .listeners
                    .iter_mut()
                    .for_each(|l| l.ready = false);
                // The kernel's queue and the master's go to the workers, before `stop` follows
                // them; what nobody can take is closed.
                self.hand_out_before_stop(now);
                self.accept.listeners.clear(); // closes them (and removes Unix socket files)
                self.core.stop_workers(now);
            }
            Effect::CloseListeners => self.accept.listeners.clear(),
        }
    }

    /// Graceful stop (SIGTERM, SIGINT, `rrbalancer stop`, or every slot given up).
    /// Starts a worker for `place` (a slot, or the agent) as its current worker or as a reload
    /// candidate; why not if it could not be started (logged here; the supervisor decides what
    /// follows).
    pub(super) fn start_worker(
        &mut self,
        place: Place,
        role: Role,
        now: Instant,
    ) -> Result<usize, String> {
        let capture = [
            self.workers.sinks[0].is_some(),
            self.workers.sinks[1].is_some(),
        ];
        // The agent takes no connection; its account stays empty.
        let seat = Seat {
            place,
            slots: self.core.fleet().slots.len(),
            account: self.ledger.open(self.config.worker.max_unacked),
        };
        let (env, program) = match (place, &self.config.agent) {
            (Place::Agent, Some(agent)) => (
                std::borrow::Cow::Owned(launch::base_env(&self.config, &agent.command.env)),
                &agent.command.program,
            ),
            _ => (
                std::borrow::Cow::Borrowed(&self.workers.base_env),
                &self.config.worker.command.program,
            ),
        };
        let spawned = launch::spawn(
            &self.config,
            &env,
            &self.accept.listeners,
            seat,
            capture,
            now,
        );
        let (worker, process) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                self.ledger.remove(seat.account);
                error!("cannot start worker {place} ({}): {e}", program.display());
                return Err(e.to_string());
            }
        };
        let pid = worker.pid;
        if let Some(account) = self.ledger.account_mut(seat.account) {
            account.set_limit(worker.limits.connections);
        }
        match place {
            Place::Slot(slot) => metrics::Counters::add(&mut self.ops.counters.starts, slot, 1),
            Place::Agent => self.ops.counters.agent_starts += 1,
        }
        let node = process.channel.as_ref().is_some_and(|c| c.subscribed());
        let key = self.core.spawned(worker, role);
        self.workers.procs.insert(key, process);
        self.workers.own(seat.account, key);
        if node {
            // A Node process takes messages from its start: the retained values go first.
            self.subscribe(key);
        }
        let Some(process) = self.workers.procs.get_mut(key) else {
            return Ok(key);
        };
        let mut watch: Vec<(i32, Token, Interest)> = Vec::with_capacity(3);
        if let Some(channel) = &process.channel {
            let token = self.io.sources.add(Source::Channel(key));
            watch.push((
                channel.raw_fd(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ));
        }
        for (stream, pipe) in process.output.iter().enumerate() {
            if let Some(pipe) = pipe {
                let token = self.io.sources.add(Source::Output {
                    worker: key,
                    stream,
                });
                watch.push((pipe.raw_fd(), token, Interest::READABLE));
            }
        }
        (process.tokens).extend(watch.iter().map(|&(_, token, _)| token));
        for (fd, token, interest) in watch {
            if let Err(e) = self
                .io
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
        let command = launch::command_of(&self.config, place);
        let user = match command.and_then(|c| c.identity.as_ref()) {
            Some(id) => format!(" as {}:{}", id.user, id.group),
            None => String::new(),
        };
        info!("worker started {place} pid={pid}{user}{what}");
        Ok(key)
    }

    /// Starts a rolling reload with the configuration read again. `Err` when refused at once
    /// (one already runs, the master is stopping, the file no longer parses); otherwise the
    /// outcome is reported to `waiter` when the reload ends.
    /// `wait_drained`: `waiter` is answered once the old workers have exited, not when the new
    /// ones are ready.
    pub(super) fn request_reload(
        &mut self,
        waiter: Option<Waiter>,
        wait_drained: bool,
    ) -> Result<(), String> {
        self.core.can_reload()?;
        self.not_while_upgrading("reload")?;
        let config = (self.ops.loader)().map_err(|e| {
            format!("the configuration no longer loads, so the running fleet is kept: {e}")
        })?;
        // The last step that may refuse: after it, the reload goes ahead.
        let relistened = self.relisten(&config)?;
        if let Some(line) = &relistened {
            info!("reload: {line}");
        }
        let (workers, note) = crate::engine::reload::reload_size(
            self.config.workers,
            self.workers.configured_workers,
            config.workers,
        );
        info!("{note}");
        self.workers.configured_workers = config.workers;
        let kept = self.apply_config(config);
        self.config.workers = workers;
        self.take_policy();
        self.core
            .begin_reload(waiter, wait_drained, workers, Instant::now());
        self.core.keeping(kept, relistened.into_iter().collect());
        self.apply_effects();
        Ok(())
    }

    /// Takes what can change without rebinding; warns about what cannot, and returns it.
    fn apply_config(&mut self, config: Config) -> Vec<String> {
        let (mut config, kept) = crate::engine::reconfigure::merge(&self.config, config);
        for change in &kept {
            warn!("reload: {change}");
        }
        if let (Some(metrics), Some(monitor)) = (&config.metrics, self.ops.monitor.as_mut()) {
            // Who may connect changes at once (connections open stay).
            monitor.reconfigure(metrics.clone());
        }
        if config.log != self.config.log {
            match super::output::open_sinks(&config.log) {
                Ok(sinks) => self.workers.sinks = sinks,
                Err(e) => {
                    warn!("reload: cannot open the new log files ({e}); keeping the old ones");
                    config.log = self.config.log.clone();
                }
            }
        }
        self.workers.base_env = launch::base_env(&config, &config.worker.command.env);
        let rewatch = config.watch != self.config.watch;
        self.config = config;
        if rewatch {
            self.set_watch();
        }
        kept
    }

    /// Sets the number of workers to `n`: new slots start now; removed slots (from the end)
    /// have their workers stopped gracefully.
    pub(super) fn scale_to(&mut self, n: usize) -> Outcome {
        self.not_while_upgrading("scale")?;
        let outcome = self.core.scale(n, Instant::now());
        if outcome.is_ok() {
            self.config.workers = n;
        }
        self.apply_effects();
        outcome
    }
}
