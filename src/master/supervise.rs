//! Supervision, the master's side of it: what a worker's words, its exit and the clock mean for
//! its slot — readiness, leaving, failures under the restart policy and give-up, stuck workers,
//! starting workers — and the graceful and quick stop. The timing rules are
//! [`lifecycle`](super::lifecycle)'s and [`restart`](super::restart)'s.

use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::fleet::{self, Role, Seat, State};
use super::lifecycle::{Phase, StopStep};
use super::restart::Decision;
use super::sources::Source;
use super::wire::Incoming;
use super::{CHANNEL_CLOSED_GRACE, Master};
use crate::protocol::WorkerMessage;

impl Master {
    pub(super) fn on_incoming(&mut self, key: usize, incoming: Incoming) {
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
    pub(super) fn on_ready(&mut self, key: usize) {
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
    pub(super) fn on_leaving(&mut self, key: usize) {
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

    pub(super) fn on_channel_closed(&mut self, key: usize) {
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

    pub(super) fn replace_misbehaving(&mut self, key: usize, detail: String) {
        let now = Instant::now();
        let grace = self.config.kill_timeout;
        self.release_channel(key);
        self.fleet.workers[key].request_stop(now, grace);
        self.fail_slot(key, now, detail);
    }

    /// The worker at `key` failed: detach it and let the restart policy decide about its slot.
    pub(super) fn fail_slot(&mut self, key: usize, now: Instant, cause: String) {
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

    pub(super) fn slot_failed(
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
    pub(super) fn run_giveup_hook(&mut self, slot: usize, pid: Pid, reason: &str) {
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

    /// Wanted vs alive: start what is due, kill what overstayed its grace.
    pub(super) fn supervise(&mut self, now: Instant) {
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
    pub(super) fn check_acks(&mut self, now: Instant) {
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
    pub(super) fn start_worker(&mut self, slot: usize, role: Role, now: Instant) -> Option<usize> {
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

    /// Graceful stop: stop accepting, hand out what is queued, tell every worker to finish.
    pub(super) fn begin_stop(&mut self) {
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
    pub(super) fn quick_stop(&mut self) {
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
