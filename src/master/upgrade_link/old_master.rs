//! The old master's side of an upgrade: start the new master with the listeners, follow what
//! it says through the [`Handover`], carry out each [`UpgradeStep`], and after the handover pass it the
//! sockets no old worker could take.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, error, info, warn};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::super::Master;
use super::super::control_files::staged_path;
use super::super::listeners::place_of;
use super::super::sources::Source;
use super::new_master::Succession;
use super::{Link, Read};
use crate::engine::ids::Waiter;
use crate::engine::upgrade::{self, Handover, Stage, UpgradeStep};
use crate::sys;
use crate::wire::env;
use crate::wire::upgrade::{ADOPT_BATCH, CarriedCheck, CheckKind, Message};

impl Master {
    // ---- the old master -------------------------------------------------------------------

    /// `rrbalancer upgrade` or SIGUSR2: start the new master. Refused (and answered) if it
    /// cannot begin; otherwise `waiter` is answered when it ends.
    pub(in crate::master) fn request_upgrade(
        &mut self,
        waiter: Option<Waiter>,
        binary: Option<PathBuf>,
        wait_exit: bool,
    ) {
        let refused = self.start_upgrade(waiter, binary);
        if let (Ok(()), Some(key), true) = (&refused, waiter, wait_exit) {
            if let Some(h) = self.upgrade.handover.as_mut() {
                h.wait_exit.push(key);
            }
        }
        if let Err(reason) = refused {
            warn!("upgrade refused: {reason}");
            if let Some(key) = waiter {
                self.answer(key, crate::wire::control::Reply::error(reason));
            }
        }
    }

    /// A reload or a scale would change a fleet about to be replaced, the new one not knowing:
    /// refused while an upgrade is under way, on either side.
    pub(in crate::master) fn not_while_upgrading(&self, what: &str) -> Result<(), String> {
        if let Some(h) = self.upgrade.handover.as_ref().filter(|h| h.in_progress()) {
            return Err(format!(
                "an upgrade is under way (new master pid {}): {what} once it is done",
                h.child
            ));
        }
        if self
            .upgrade
            .predecessor
            .as_ref()
            .is_some_and(|p| p.state != Succession::TookOver)
        {
            return Err(format!(
                "this master is taking over from another (an upgrade): {what} once it is done"
            ));
        }
        Ok(())
    }

    fn start_upgrade(
        &mut self,
        waiter: Option<Waiter>,
        binary: Option<PathBuf>,
    ) -> Result<(), String> {
        if let Some(app) = &self.config.app {
            // Its new master would not be the master of all's child: nothing would supervise it.
            return Err(format!(
                "app {app} runs under the master of a file with [[app]] sections: no in-place                  upgrade of one app (`rrbalancer reload {app}` replaces its workers)"
            ));
        }
        let taking_over = self
            .upgrade
            .predecessor
            .as_ref()
            .is_some_and(|p| p.state != Succession::TookOver);
        if taking_over {
            return Err("this master has not taken over from the previous one yet".into());
        }
        upgrade::may_begin(
            self.core.phase(),
            self.core.reloading(),
            self.upgrade
                .handover
                .as_ref()
                .filter(|h| h.in_progress())
                .map(|h| h.child),
            std::process::id() == 1,
        )?;
        let serves_on = |e: String| format!("{e}; pid {} serves on", std::process::id());
        let binary = binary.unwrap_or_else(|| self.upgrade.exe.clone());
        check_executable(&binary).map_err(serves_on)?;
        let args: Vec<String> = self
            .upgrade
            .argv
            .iter()
            .map(|a| {
                a.clone().into_string().map_err(|a| {
                    format!("the command line has an argument that is not UTF-8: {a:?}")
                })
            })
            .collect::<Result<_, _>>()?;
        let (ours, theirs) = sys::seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
        let env = successor_env();
        let child = sys::spawn(sys::SpawnSpec {
            program: &binary,
            arg0: binary.as_os_str(),
            args: &args,
            env: &env,
            cwd: None,
            inherit: &[theirs.as_fd()],
            listen_pid: false,
            new_master: true,
            identity: None,
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        })
        .map_err(|e| serves_on(format!("cannot start {}: {e}", binary.display())))?;
        drop(theirs);
        let pid = Pid::from_raw(child.id() as i32);
        info!(
            "upgrade: started pid {pid} ({}); this master serves until its workers are ready",
            binary.display()
        );
        let now = Instant::now();
        self.upgrade.handover = Some(Handover::new(
            pid,
            binary,
            waiter.into_iter().collect(),
            now,
        ));
        let mut link = Link::new(ours);
        let hello = Message::Hello {
            pid: std::process::id() as i32,
            listeners: self.running_listeners(),
            blocking: self.config.mode().socket_activation(),
            workers: self.core.fleet().slots.len(),
            configured_workers: self.workers.configured_workers,
            checks: self.check_listeners().map(|(c, _)| c).collect(),
        };
        let token = self.io.sources.add(Source::Successor);
        let fds: Vec<BorrowedFd<'_>> = (self.accept.listeners.iter())
            .map(|l| l.socket.as_fd())
            .chain(self.check_listeners().map(|(_, fd)| fd))
            .collect();
        let sent = link
            .send(&hello, &fds)
            .and_then(|()| link.register(self.io.poll.registry(), token));
        self.upgrade.successor = Some(link);
        if let Err(e) = sent {
            warn!("upgrade: cannot talk to pid {pid}: {e}");
            self.close_successor_link();
            if let Some(h) = self.upgrade.handover.as_mut() {
                h.on_channel_closed(now);
            }
        }
        Ok(())
    }

    /// The listeners balancers check, still open, to pass to the new master after the
    /// listening sockets (in `hello`'s `checks` order).
    fn check_listeners(&self) -> impl Iterator<Item = (CarriedCheck, BorrowedFd<'_>)> {
        let metrics = (self.ops.monitor.as_ref())
            .and_then(|m| Some((CheckKind::Metrics, m.local, m.listening()?.as_fd())));
        let agent = (self.ops.agent_check.as_ref())
            .map(|a| (CheckKind::Agent, a.local, a.listening().as_fd()));
        metrics.into_iter().chain(agent).map(|(kind, local, fd)| {
            let local = local.to_string();
            (CarriedCheck { kind, local }, fd)
        })
    }

    /// The new master's channel: what it says, or room to pass it sockets.
    pub(in crate::master) fn on_successor(&mut self, writable: bool) {
        let now = Instant::now();
        let kill_timeout = self.config.kill_timeout;
        loop {
            let Some(link) = self.upgrade.successor.as_mut() else {
                return;
            };
            let step = match link.read() {
                Read::Empty => break,
                Read::Closed => {
                    self.close_successor_link();
                    if let Some(h) = self.upgrade.handover.as_mut() {
                        h.on_channel_closed(now);
                    }
                    UpgradeStep::Nothing
                }
                Read::Message(message, fds) => {
                    drop(fds); // it has no sockets to give us
                    match message {
                        Ok(message) => {
                            debug!("upgrade: the new master says {message:?}");
                            self.upgrade
                                .handover
                                .as_mut()
                                .map_or(UpgradeStep::Nothing, |h| {
                                    h.on_message(message, now, kill_timeout)
                                })
                        }
                        Err(e) => {
                            self.close_successor_link();
                            warn!("upgrade: the new master sent {e}");
                            if let Some(h) = self.upgrade.handover.as_mut() {
                                h.on_channel_closed(now);
                            }
                            UpgradeStep::Nothing
                        }
                    }
                }
            };
            self.upgrade_step(step);
        }
        if writable {
            self.pass_leftovers();
        }
    }

    /// Each turn: the handover's clock, and the SIGKILL of a new master given up on.
    pub(in crate::master) fn upgrade_turn(&mut self, now: Instant) {
        let kill_timeout = self.config.kill_timeout;
        let Some(h) = self.upgrade.handover.as_mut() else {
            return;
        };
        if h.kill_at.is_some_and(|t| t <= now) && !h.exited {
            warn!("upgrade: pid {} has not exited; SIGKILL", h.child);
            h.kill_at = None;
            let _ = killpg(h.child, Signal::SIGKILL);
        }
        let step = h.tick(now, kill_timeout);
        self.upgrade_step(step);
    }

    /// The new master was reaped. Whether `pid` was it.
    pub(in crate::master) fn successor_exited(&mut self, pid: Pid, cause: &str) -> bool {
        if self
            .upgrade
            .handover
            .as_ref()
            .is_none_or(|h| h.child != pid)
        {
            return false;
        }
        // The channel may still hold its last words (`failed`): they come first.
        self.on_successor(false);
        self.close_successor_link();
        let kill_timeout = self.config.kill_timeout;
        let Some(h) = self.upgrade.handover.as_mut() else {
            return true;
        };
        let step = h.on_exit(cause, Instant::now(), kill_timeout);
        if step == UpgradeStep::Nothing {
            info!("upgrade: pid {pid} exited: {cause}");
        }
        if h.stage != Stage::HandedOver {
            // A new master given up on: whatever it started in its process group goes with it
            // (a script given as --binary that left a child behind).
            let _ = killpg(pid, Signal::SIGKILL);
        }
        self.upgrade_step(step);
        true
    }

    /// This master stops: an upgrade under way is called off.
    pub(in crate::master) fn upgrade_on_stop(&mut self) {
        let kill_timeout = self.config.kill_timeout;
        if let Some(h) = self.upgrade.handover.as_mut() {
            let step = h.on_stop(Instant::now(), kill_timeout);
            self.upgrade_step(step);
        }
    }

    /// A new master to wait for before exiting (one given up on, still stopping).
    pub(in crate::master) fn successor_to_reap(&self) -> usize {
        self.upgrade
            .handover
            .as_ref()
            .is_some_and(Handover::must_reap) as usize
    }

    /// SIGKILL a new master given up on (this master's stop reached its SIGKILL).
    pub(in crate::master) fn kill_successor(&mut self) {
        if let Some(h) = self.upgrade.handover.as_ref().filter(|h| h.must_reap()) {
            let _ = killpg(h.child, Signal::SIGKILL);
        }
    }

    fn upgrade_step(&mut self, step: UpgradeStep) {
        let Some(child) = self.upgrade.handover.as_ref().map(|h| h.child) else {
            return;
        };
        match step {
            UpgradeStep::Nothing => {}
            UpgradeStep::TakeOver => {
                info!("upgrade: pid {child} is ready; handing over");
                self.ops.notifier.hand_over(child.as_raw() as u32);
                let sent = self
                    .upgrade
                    .successor
                    .as_mut()
                    .map(|l| l.send(&Message::TakeOver, &[]));
                if !matches!(sent, Some(Ok(()))) {
                    self.close_successor_link();
                    if let Some(h) = self.upgrade.handover.as_mut() {
                        h.on_channel_closed(Instant::now());
                    }
                }
            }
            UpgradeStep::HandedOver(message) => {
                info!(
                    "{message}; stopping this master (pid {})",
                    std::process::id()
                );
                let (waiters, holds) = self
                    .upgrade
                    .handover
                    .as_mut()
                    .map(|h| {
                        (
                            std::mem::take(&mut h.waiters),
                            std::mem::take(&mut h.wait_exit),
                        )
                    })
                    .unwrap_or_default();
                let agent = if self.core.fleet().agent.is_some() {
                    ", then its agent"
                } else {
                    ""
                };
                let message = format!(
                    "{message}; pid {} stops: its {} worker(s) finish what they hold{agent} (at \
                     most {:?})",
                    std::process::id(),
                    self.core.fleet().workers_alive(),
                    self.config.kill_timeout
                );
                for &key in &holds {
                    self.hold_until_exit(key);
                }
                self.answer_all(waiters, Ok(message));
                for l in &mut self.accept.listeners {
                    l.socket.release_path();
                }
                let taken = (self.upgrade.handover.as_mut())
                    .map(|h| std::mem::take(&mut h.checks_taken))
                    .unwrap_or_default();
                self.leave_checks_to_successor(&taken);
                self.begin_stop();
            }
            UpgradeStep::Failed {
                reason,
                abort,
                serves_on,
            } => {
                if serves_on {
                    error!("upgrade failed: {reason}; this master serves on");
                } else {
                    warn!("upgrade {reason}");
                }
                let waiters = self
                    .upgrade
                    .handover
                    .as_mut()
                    .map(|h| std::mem::take(&mut h.waiters))
                    .unwrap_or_default();
                let exited = self.upgrade.handover.as_ref().is_some_and(|h| h.exited);
                if abort {
                    if let Some(link) = self.upgrade.successor.as_mut() {
                        let _ = link.send(
                            &Message::Abort {
                                reason: reason.clone(),
                            },
                            &[],
                        );
                    }
                    if !exited {
                        let _ = killpg(child, Signal::SIGTERM);
                    }
                }
                self.close_successor_link();
                self.ops.notifier.reclaim();
                // What it may have left staged beside ours.
                for path in [&self.config.control.socket, &self.config.control.pid_file] {
                    let _ = std::fs::remove_file(staged_path(path, child.as_raw() as u32));
                }
                let outcome = Err(if serves_on {
                    format!("{reason}; pid {} serves on", std::process::id())
                } else {
                    format!("upgrade {reason}")
                });
                self.answer_all(waiters, outcome);
            }
        }
    }

    fn close_successor_link(&mut self) {
        if let Some(link) = self.upgrade.successor.take() {
            self.release_link(link);
        }
    }

    /// After the handover, while this master stops: sockets in its queue (no worker of its
    /// could take them, or one died holding them) go to the new master rather than being
    /// closed. Whether the queue is now empty.
    pub(in crate::master) fn pass_leftovers(&mut self) -> bool {
        let handed_over = self
            .upgrade
            .handover
            .as_ref()
            .is_some_and(|h| h.stage == Stage::HandedOver);
        let Some(link) = self.upgrade.successor.as_mut().filter(|_| handed_over) else {
            return self.ledger.queued() == 0;
        };
        while self.ledger.queued() > 0 {
            let batch = self.ledger.take_queued(ADOPT_BATCH);
            let message = Message::Adopt {
                // By their place in what the new master was passed (the `listen` order of
                // this one's; one a reload removed, were it still queued, as the first).
                listeners: batch
                    .iter()
                    .map(|h| {
                        let ids = self.accept.listeners.iter().map(|l| l.id);
                        place_of(ids, h.listener)
                    })
                    .collect(),
            };
            let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|h| h.socket.as_fd()).collect();
            match link.send(&message, &fds) {
                Ok(()) => {
                    info!(
                        "upgrade: passed {} connection(s) to the new master",
                        batch.len()
                    );
                    drop(fds);
                    drop(batch); // our copies; the new master has its own
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(fds);
                    self.ledger.return_queued(batch);
                    return false; // the channel's writable event brings us back
                }
                Err(e) => {
                    drop(fds);
                    self.ledger.return_queued(batch);
                    warn!("upgrade: cannot pass connections to the new master: {e}");
                    self.close_successor_link();
                    return false;
                }
            }
        }
        true
    }
}

/// The new master's environment: ours, without what was meant for this process alone
/// (systemd's sockets and watchdog, an upgrade channel of our own start), with its channel.
fn successor_env() -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !env::NOT_PASSED_TO_SUCCESSOR.iter().any(|n| k == n))
        .collect();
    env.push((
        env::UPGRADE_FD.into(),
        sys::FIRST_INHERITED_FD.to_string().into(),
    ));
    env
}

/// Why `path` cannot be started as the new master, if it cannot.
fn check_executable(path: &Path) -> Result<(), String> {
    std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !crate::config::is_executable_file(path) {
        return Err(format!("{} is not an executable file", path.display()));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// This program's path, as started (a binary replaced since is found at the same path).
pub fn own_executable() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}
