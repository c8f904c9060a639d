//! systemd's readiness protocol (`sd_notify`, for `Type=notify` units): `READY=1` once the first
//! workers are ready, `RELOADING=1` (with `MONOTONIC_USEC`) when a reload begins and `READY=1`
//! when it ends, `STOPPING=1`, a one-line `STATUS=` (workers ready of wanted, connections handed;
//! refreshed every 10 s when it changed), and `WATCHDOG=1` at half of `WATCHDOG_USEC`.
//! Silent when `NOTIFY_SOCKET` is unset. Workers never see these variables (`fleet::base_env`).
//!
//! Across an upgrade: the old master tells systemd `MAINPID=` the new one when it hands over,
//! then says nothing more (not its `STOPPING=1`); the new master is silent until it took over,
//! then says `READY=1` as any master does once its workers are ready.

use std::time::{Duration, Instant};

use log::debug;
use sd_notify::NotifyState;

/// How often the `STATUS=` line is refreshed (when it changed) between the events that send it.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// What the `STATUS=` line reports.
#[derive(Debug, Clone, Copy)]
pub struct Fleet {
    pub ready: usize,
    pub wanted: usize,
    /// Connections handed to workers so far; `None` when workers accept themselves.
    pub handed: Option<u64>,
    /// A graceful stop is draining (`[shutdown] drain`).
    pub draining: bool,
}

/// What the master has told systemd, and when the watchdog is next due.
#[derive(Debug)]
pub struct Notifier {
    enabled: bool,
    /// Silent for now: a new master that has not taken over, or an old one that handed over.
    held: bool,
    ready_sent: bool,
    reloading: bool,
    draining: bool,
    stopping: bool,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    /// The last `STATUS=` sent, and when the next refresh is due.
    last_status: String,
    next_status: Instant,
}

impl Notifier {
    /// `held`: silent until [`Notifier::release`] (a new master, until it took over).
    pub fn from_env(now: Instant, held: bool) -> Notifier {
        let enabled = std::env::var_os(crate::wire::env::NOTIFY_SOCKET).is_some();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        Notifier {
            enabled,
            held,
            ready_sent: false,
            reloading: false,
            draining: false,
            stopping: false,
            watchdog,
            next_watchdog: watchdog.map(|w| now + w),
            last_status: String::new(),
            next_status: now + STATUS_EVERY,
        }
    }

    /// The loop's turn: `ready` workers serve of `wanted`, `handed` connections so far (when
    /// the master hands them out), a reload runs or not, the master is stopping or not.
    pub fn turn(&mut self, fleet: Fleet, reloading: bool, stopping: bool, now: Instant) {
        if !self.enabled || self.held {
            return;
        }
        if stopping {
            if !std::mem::replace(&mut self.stopping, true) {
                self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
            }
            return;
        }
        if fleet.draining {
            // Said once; the periodic status would say the fleet serves, as it does, but not
            // that it is about to stop.
            if !std::mem::replace(&mut self.draining, true) {
                self.last_status = "draining, then stopping".into();
                self.send(&[NotifyState::Status("draining, then stopping")]);
            }
        } else {
            self.serving_turn(fleet, reloading, now);
        }
        if let (Some(every), Some(due)) = (self.watchdog, self.next_watchdog) {
            if now >= due {
                self.next_watchdog = Some(now + every);
                self.send(&[NotifyState::Watchdog]);
            }
        }
    }

    /// Serving: ready once all are, reloading, and the status line refreshed when due.
    fn serving_turn(&mut self, fleet: Fleet, reloading: bool, now: Instant) {
        if !self.ready_sent && fleet.ready >= fleet.wanted && fleet.wanted > 0 {
            self.ready_sent = true;
            let status = self.status(fleet, now);
            self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
        if reloading && !self.reloading {
            self.reloading = true;
            let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
            if let Ok(usec) = NotifyState::monotonic_usec_now() {
                states.push(usec);
            }
            self.last_status = "reloading".into();
            self.send(&states);
        } else if !reloading && self.reloading {
            self.reloading = false;
            let status = self.status(fleet, now);
            self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        } else if self.ready_sent && !self.reloading && now >= self.next_status {
            // Built only when due: this runs every loop turn.
            let before = std::mem::take(&mut self.last_status);
            let status = self.status(fleet, now);
            if status != before {
                self.send(&[NotifyState::Status(&status)]);
            }
        }
    }

    /// Whether anything is to be said at all (skip building [`Fleet`] otherwise).
    pub fn active(&self) -> bool {
        self.enabled && !self.held
    }

    /// The `STATUS=` line now (remembered as the last one sent).
    fn status(&mut self, fleet: Fleet, now: Instant) -> String {
        let mut line = format!("{}/{} workers ready", fleet.ready, fleet.wanted);
        if let Some(handed) = fleet.handed {
            let s = if handed == 1 { "" } else { "s" };
            line.push_str(&format!(", {handed} connection{s} handed"));
        }
        self.next_status = now + STATUS_EVERY;
        self.last_status = line.clone();
        line
    }

    /// When the watchdog is next due, for the poll timeout.
    pub fn deadline(&self) -> Option<Instant> {
        let refresh = self.ready_sent.then_some(self.next_status);
        self.next_watchdog
            .into_iter()
            .chain(refresh)
            .filter(|_| self.enabled && !self.held && !self.stopping)
            .min()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_ready_of_wanted_and_handed_when_the_master_hands_out() {
        let now = Instant::now();
        let mut n = Notifier::from_env(now, false);
        let rr = Fleet {
            ready: 2,
            wanted: 3,
            handed: Some(1234),
            draining: false,
        };
        assert_eq!(
            n.status(rr, now),
            "2/3 workers ready, 1234 connections handed"
        );
        assert_eq!(n.next_status, now + STATUS_EVERY, "refreshed from now on");
        let none = Fleet { handed: None, ..rr };
        assert_eq!(n.status(none, now), "2/3 workers ready");
    }
}
