//! systemd's readiness protocol (`sd_notify`, for `Type=notify` units): `READY=1` once the first
//! workers are ready, `RELOADING=1` (with `MONOTONIC_USEC`) when a reload begins and `READY=1`
//! when it ends, `STOPPING=1`, a one-line `STATUS=`, and `WATCHDOG=1` at half of `WATCHDOG_USEC`.
//! Silent when `NOTIFY_SOCKET` is unset. Workers never see these variables (`fleet::base_env`).
//!
//! Across an upgrade: the old master tells systemd `MAINPID=` the new one when it hands over,
//! then says nothing more (not its `STOPPING=1`); the new master is silent until it took over,
//! then says `READY=1` as any master does once its workers are ready.

use std::time::{Duration, Instant};

use log::debug;
use sd_notify::NotifyState;

/// What the master has told systemd, and when the watchdog is next due.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// Silent for now: a new master that has not taken over, or an old one that handed over.
    held: bool,
    ready_sent: bool,
    reloading: bool,
    stopping: bool,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
}

impl Notifier {
    /// `held`: silent until [`Notifier::release`] (a new master, until it took over).
    pub fn from_env(now: Instant, held: bool) -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        Notifier {
            enabled,
            held,
            ready_sent: false,
            reloading: false,
            stopping: false,
            watchdog,
            next_watchdog: watchdog.map(|w| now + w),
        }
    }

    /// The loop's turn: `ready` workers serve of `wanted`, a reload runs or not, the master is
    /// stopping or not.
    pub fn turn(
        &mut self,
        ready: usize,
        wanted: usize,
        reloading: bool,
        stopping: bool,
        now: Instant,
    ) {
        if !self.enabled || self.held {
            return;
        }
        // Built only when sent: this runs every loop turn.
        let status = || format!("{ready}/{wanted} workers ready");
        if stopping {
            if !std::mem::replace(&mut self.stopping, true) {
                self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
            }
            return;
        }
        if !self.ready_sent && ready >= wanted && wanted > 0 {
            self.ready_sent = true;
            self.send(&[NotifyState::Ready, NotifyState::Status(&status())]);
        }
        if reloading && !self.reloading {
            self.reloading = true;
            let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
            if let Ok(usec) = NotifyState::monotonic_usec_now() {
                states.push(usec);
            }
            self.send(&states);
        } else if !reloading && self.reloading {
            self.reloading = false;
            self.send(&[NotifyState::Ready, NotifyState::Status(&status())]);
        }
        if let (Some(every), Some(due)) = (self.watchdog, self.next_watchdog) {
            if now >= due {
                self.next_watchdog = Some(now + every);
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// When the watchdog is next due, for the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_watchdog
            .filter(|_| self.enabled && !self.held && !self.stopping)
    }

    /// A new master that took over speaks from now on.
    pub fn release(&mut self) {
        self.held = false;
    }

    /// The old master hands over to `pid`: systemd is to follow it, and hears no more from us.
    pub fn hand_over(&mut self, pid: u32) {
        if self.enabled && !self.held {
            self.send(&[
                NotifyState::MainPid(pid),
                NotifyState::Status(&format!("handing over to pid {pid}")),
            ]);
        }
        self.held = true;
    }

    /// The handover failed after all: systemd follows us again.
    pub fn reclaim(&mut self) {
        if self.enabled && self.held {
            self.send(&[NotifyState::MainPid(std::process::id())]);
            self.held = false;
        }
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            debug!("sd_notify: {e}");
        }
    }
}
