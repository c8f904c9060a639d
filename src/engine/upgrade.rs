//! In-place upgrade (`rrbalancer upgrade`, SIGUSR2): a new master — usually a new binary at the
//! same path — takes over from this one without a listening socket ever being closed.
//!
//! The messages on the channel between the two masters are `crate::wire::upgrade`'s. After
//! `took_over` the old master stops gracefully, as on SIGTERM (its workers finish what they
//! hold) and exits. Until then it serves as before; if the new master fails, exits or stays
//! silent too long, it answers the `upgrade` with the reason and carries on.
//!
//! Here, pure: the old master's [`Handover`], the new master's [`verdict`] on its
//! own start, which inherited listener serves which `listen` entry ([`carry_over`]), and when
//! an upgrade may begin ([`may_begin`]). The I/O is `upgrade_link/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::fleet::Fleet;
use super::ids::Waiter;
use super::lifecycle::Phase;
use crate::config::ListenAddr;
use crate::wire::upgrade::{Carried, CheckKind, Message};

/// From the new master's start until it says `starting`: reading its configuration, taking the
/// listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to the new master's `ready_timeout`: its workers' start, bounded by its own rules.
pub const READY_SLACK: Duration = Duration::from_secs(15);
/// From `take_over` to `took_over`: two renames.
pub const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(10);
/// From its channel closing to its exit being reaped: the exit status is the better reason.
pub const EXIT_GRACE: Duration = Duration::from_millis(300);

/// Why an upgrade cannot begin now, if it cannot.
pub fn may_begin(
    phase: Phase,
    reloading: bool,
    upgrading: Option<Pid>,
    am_pid_one: bool,
) -> Result<(), String> {
    if phase != Phase::Running {
        Err("the master is stopping".into())
    } else if let Some(pid) = upgrading {
        Err(format!(
            "an upgrade is already under way (new master pid {pid})"
        ))
    } else if reloading {
        Err("a reload is under way: upgrade once it is done".into())
    } else if am_pid_one {
        Err(
            "the master is PID 1 (a container's init): when it exits the container ends; \
             replace the container instead"
                .into(),
        )
    } else {
        Ok(())
    }
}

/// Which passed socket serves each `listen` entry of the new configuration: the one configured
/// with the same text, else the one bound to that address. `None`: a new address, to bind.
/// Passed sockets no entry takes are closed by the new master (the old one closes its copies
/// when it exits).
pub fn carry_over(listen: &[ListenAddr], passed: &[Carried]) -> Vec<Option<usize>> {
    let mut taken = vec![false; passed.len()];
    let mut pick = |matches: &dyn Fn(&Carried) -> bool| {
        let i = (0..passed.len()).find(|&i| !taken[i] && matches(&passed[i]))?;
        taken[i] = true;
        Some(i)
    };
    let by_text: Vec<Option<usize>> = listen
        .iter()
        .map(|want| {
            let want = want.to_string();
            pick(&|c| c.configured == want)
        })
        .collect();
    listen
        .iter()
        .zip(by_text)
        .map(|(want, got)| {
            got.or_else(|| {
                let want = want.to_string();
                pick(&|c| c.local == want)
            })
        })
        .collect()
}

/// Whether a balancer-check listener the old master passed serves `want`, the new
/// configuration's address for it: the same address, or any port (`:0`) on the same one.
/// Else the new master binds `want` and the passed socket is closed.
pub fn check_carried_over(want: SocketAddr, passed: &str) -> bool {
    passed
        .parse::<SocketAddr>()
        .is_ok_and(|local| local == want || (want.port() == 0 && local.ip() == want.ip()))
}

/// The new master's judgement of its own start, before it takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Waiting,
    /// Every slot has a ready worker.
    Ready(usize),
    /// A worker failed before every slot was ready: the new version (or its configuration) is
    /// not trusted with the service.
    Failed(String),
}

/// Every slot ready, or the first failure — a worker that exited, was not ready in time, could
/// not be started. Stricter than a normal start (which restarts and carries on): the old master
/// still serves, so a doubtful new one is refused, not given time.
pub fn verdict(fleet: &Fleet) -> Verdict {
    for (slot, s) in fleet.slots.iter().enumerate() {
        if s.given_up || s.restart_count > 0 || !s.last_causes.is_empty() {
            let cause = s.last_causes.back().map_or("given up", String::as_str);
            return Verdict::Failed(format!("its worker in slot {slot} failed: {cause}"));
        }
    }
    let wanted = fleet.slots.len();
    let ready = (0..wanted).filter(|&s| fleet.serving_if(s, |_| true).is_some());
    if wanted > 0 && ready.count() == wanted {
        Verdict::Ready(wanted)
    } else {
        Verdict::Waiting
    }
}

/// Where an upgrade stands, on the old master's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Started; not heard from yet.
    Launched,
    /// It has its configuration and listeners; its workers are starting.
    Starting,
    /// `take_over` sent.
    TakingOver,
    /// It took over: this master is stopping.
    HandedOver,
    /// It failed or was given up on; this master serves on. It may still be exiting.
    Failed,
}

/// What the old master does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    Nothing,
    /// Tell systemd `MAINPID=new`, then send `take_over`.
    TakeOver,
    /// It took over: answer the waiters with this, release the pid file, the control socket
    /// and the Unix socket paths, and stop gracefully.
    HandedOver(String),
    /// Answer the waiters with this error. `abort`: send `abort`, and SIGTERM the new master (it
    /// is still running and may not know). `serves_on`: this master carries on (not when the
    /// upgrade ended because it stops).
    Failed {
        reason: String,
        abort: bool,
        serves_on: bool,
    },
}

/// The old master's account of an upgrade.
#[derive(Debug)]
pub struct Handover {
    pub child: Pid,
    pub binary: PathBuf,
    pub stage: Stage,
    /// Control clients waiting for the outcome.
    pub waiters: Vec<Waiter>,
    /// Those of them to keep connected, once handed over, until this master has exited
    /// (`upgrade --wait`).
    pub wait_exit: Vec<Waiter>,
    /// When the current stage must have ended.
    deadline: Option<Instant>,
    /// The new master's process has been reaped.
    pub exited: bool,
    /// SIGKILL it then if it has not exited (after an abort).
    pub kill_at: Option<Instant>,
    /// Its channel closed before the handover: failed, unless its exit (the better reason)
    /// is reaped before then.
    closed_at: Option<Instant>,
    started: Instant,
    workers: usize,
    /// The new master's version, once it said.
    version: String,
    /// The check listeners it took from those passed (it said so when starting): they stay
    /// open with it, so this master closes its copies without answering what waits.
    pub checks_taken: Vec<CheckKind>,
}

impl Handover {
    pub fn new(child: Pid, binary: PathBuf, waiters: Vec<Waiter>, now: Instant) -> Handover {
        Handover {
            child,
            binary,
            stage: Stage::Launched,
            waiters,
            wait_exit: Vec::new(),
            deadline: Some(now + START_TIMEOUT),
            exited: false,
            kill_at: None,
            closed_at: None,
            started: now,
            workers: 0,
            version: String::new(),
            checks_taken: Vec::new(),
        }
    }

    /// Under way: neither handed over nor failed.
    pub fn in_progress(&self) -> bool {
        matches!(
            self.stage,
            Stage::Launched | Stage::Starting | Stage::TakingOver
        )
    }

    /// The new master is a process this one must still reap before it may exit itself: one it
    /// failed and stopped. (One that took over outlives us.)
    pub fn must_reap(&self) -> bool {
        !self.exited && self.stage != Stage::HandedOver
    }

    /// The nearest moment something is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
            .filter(|_| self.in_progress())
            .into_iter()
            .chain(self.closed_at.map(|t| t + EXIT_GRACE))
            .chain(self.kill_at.filter(|_| !self.exited))
            .min()
    }

    /// What the new master said.
    pub fn on_message(
        &mut self,
        message: Message,
        now: Instant,
        kill_timeout: Duration,
    ) -> UpgradeStep {
        match (self.stage, message) {
            (
                Stage::Launched,
                Message::Starting {
                    ready_timeout_ms,
                    version,
                    checks,
                    ..
                },
            ) => {
                self.stage = Stage::Starting;
                self.version = version;
                self.checks_taken = checks;
                let ready = Duration::from_millis(ready_timeout_ms.min(86_400_000));
                self.deadline = Some(now + ready + READY_SLACK);
                UpgradeStep::Nothing
            }
            (Stage::Launched | Stage::Starting, Message::Ready { workers }) => {
                self.stage = Stage::TakingOver;
                self.workers = workers;
                self.deadline = Some(now + TAKE_OVER_TIMEOUT);
                UpgradeStep::TakeOver
            }
            (Stage::TakingOver, Message::TookOver) => {
                self.stage = Stage::HandedOver;
                self.deadline = None;
                let versions = match self.version.as_str() {
                    "" => String::new(),
                    new => format!(" (rrbalancer {} → {new})", env!("CARGO_PKG_VERSION")),
                };
                UpgradeStep::HandedOver(format!(
                    "upgraded: pid {} serves with {} worker(s){versions}, started {:.1?} ago \
                     from {}",
                    self.child,
                    self.workers,
                    now.saturating_duration_since(self.started),
                    self.binary.display()
                ))
            }
            (Stage::Launched | Stage::Starting | Stage::TakingOver, Message::Failed { reason }) => {
                // It stops by itself; make sure it does.
                self.fail(now, kill_timeout);
                UpgradeStep::Failed {
                    reason: format!("the new master (pid {}) failed: {reason}", self.child),
                    abort: false,
                    serves_on: true,
                }
            }
            (stage, message) if self.in_progress() => {
                self.fail(now, kill_timeout);
                UpgradeStep::Failed {
                    reason: format!(
                        "the new master (pid {}) broke the upgrade protocol: {message:?} while \
                         {stage:?}",
                        self.child
                    ),
                    abort: true,
                    serves_on: true,
                }
            }
            _ => UpgradeStep::Nothing, // after the outcome: nothing it says changes it
        }
    }

    /// Its end of the channel closed (it exited, or closed it). Before the handover, a
    /// failure — reported with its exit status if that comes within [`EXIT_GRACE`].
    pub fn on_channel_closed(&mut self, now: Instant) {
        if self.in_progress() && self.closed_at.is_none() {
            self.closed_at = Some(now);
        }
    }

    /// Its process was reaped.
    pub fn on_exit(&mut self, cause: &str, now: Instant, kill_timeout: Duration) -> UpgradeStep {
        self.exited = true;
        self.kill_at = None;
        if !self.in_progress() {
            return UpgradeStep::Nothing;
        }
        self.fail(now, kill_timeout);
        UpgradeStep::Failed {
            reason: format!(
                "the new master (pid {}, {}) exited before it was ready: {cause} (its reason is \
                 in the log)",
                self.child,
                self.binary.display()
            ),
            abort: false,
            serves_on: true,
        }
    }

    /// The clock: a stage that lasted too long, or a channel closed by a process that does not
    /// exit, fails the upgrade.
    pub fn tick(&mut self, now: Instant, kill_timeout: Duration) -> UpgradeStep {
        if !self.in_progress() {
            return UpgradeStep::Nothing;
        }
        if self.closed_at.is_some_and(|t| t + EXIT_GRACE <= now) {
            self.fail(now, kill_timeout);
            return UpgradeStep::Failed {
                reason: format!(
                    "the new master (pid {}, {}) closed its channel before it was ready",
                    self.child,
                    self.binary.display()
                ),
                abort: true,
                serves_on: true,
            };
        }
        if self.deadline.is_none_or(|d| d > now) {
            return UpgradeStep::Nothing;
        }
        let what = match self.stage {
            Stage::Launched => format!("did not start within {START_TIMEOUT:?}"),
            Stage::Starting => "did not have its workers ready in time".to_owned(),
            _ => format!("did not take over within {TAKE_OVER_TIMEOUT:?}"),
        };
        self.fail(now, kill_timeout);
        UpgradeStep::Failed {
            reason: format!("the new master (pid {}) {what}", self.child),
            abort: true,
            serves_on: true,
        }
    }

    /// This master stops: an upgrade under way ends here.
    pub fn on_stop(&mut self, now: Instant, kill_timeout: Duration) -> UpgradeStep {
        if !self.in_progress() {
            return UpgradeStep::Nothing;
        }
        self.fail(now, kill_timeout);
        UpgradeStep::Failed {
            reason: "called off: the master is stopping".into(),
            abort: true,
            serves_on: false,
        }
    }

    fn fail(&mut self, now: Instant, kill_timeout: Duration) {
        self.stage = Stage::Failed;
        self.deadline = None;
        self.closed_at = None;
        if !self.exited {
            // Its own graceful stop takes up to its kill_timeout; ours is the best guess.
            self.kill_at = Some(now + kill_timeout + Duration::from_secs(5));
        }
    }

    /// For `status`.
    pub fn describe(&self) -> String {
        let stage = match self.stage {
            Stage::Launched => "starting",
            Stage::Starting => "starting its workers",
            Stage::TakingOver => "taking over",
            Stage::HandedOver => "took over; this master is stopping",
            Stage::Failed => "failed; stopping it",
        };
        format!("to pid {} ({}): {stage}", self.child, self.binary.display())
    }
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
