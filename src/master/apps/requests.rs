//! What the master of several apps is asked — by a signal, or by a thread over the loop's
//! channel — and the file read again.

use std::time::Instant;

use log::{error, info, warn};
use nix::sys::signal::Signal;

use super::super::signals::{self, Action};
use super::{AppsMaster, Command, Reread, children, control, notify, wanted};
use crate::config::Loaded;
use crate::engine::apps::{Effect, Phase};

impl AppsMaster {
    pub(super) fn on_signal(&mut self, signal: i32, action: Action) {
        let name = signals::name(signal);
        match action {
            Action::GracefulStop | Action::QuickStop => {
                self.stops += if action == Action::QuickStop { 2 } else { 1 };
                self.stop(&format!("{name}: "));
            }
            Action::Reload => {
                info!("{name}: reading {} again", self.config.source.display());
                match self.reread() {
                    Ok(reread) => {
                        info!("{}", reread.summary());
                        std::thread::spawn(move || {
                            for (app, socket) in reread.reload {
                                match control::reload_app(&socket, false) {
                                    Ok(m) => info!("app {app}: {m}"),
                                    Err(e) => error!("app {app}: reload: {e}"),
                                }
                            }
                        });
                    }
                    Err(e) => error!("reload refused: {e}"),
                }
            }
            Action::ScaleUp | Action::ScaleDown | Action::ReopenLogs => {
                let to: Vec<String> = (self.apps.view().into_iter())
                    .filter(|a| self.apps.pid(&a.name).is_some())
                    .map(|a| a.name)
                    .collect();
                info!(
                    "{name}: passed on to the master of every app ({})",
                    to.join(", ")
                );
                if let Ok(signal) = Signal::try_from(signal) {
                    for app in &to {
                        children::signal(self.apps.pid(app).unwrap_or(0), signal);
                    }
                }
                if action == Action::ReopenLogs {
                    if let Some(path) = &self.config.log.master_log {
                        match super::super::redirect_stderr(path) {
                            Ok(()) => info!("{name}: reopened {}", path.display()),
                            Err(e) => error!("{name}: cannot reopen {}: {e}", path.display()),
                        }
                    }
                }
            }
            Action::Upgrade => warn!(
                "{name}: an in-place upgrade is not available for a file with [[app]] \
                 sections; `rrbalancer restart` starts the new binary (each app's listeners \
                 closed in between), or run each app on its own (--app)"
            ),
            Action::Reap => {}
        }
    }

    pub(super) fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Reload(reply) => {
                let _ = reply.send(self.reread());
            }
            Command::Stop { now } => {
                if now {
                    self.now = self.apps.view().into_iter().map(|a| a.name).collect();
                }
                self.stops = self.stops.max(1);
                self.stop("stop asked on the control socket: ");
            }
            Command::StopApp(name, now, reply) => {
                if now {
                    self.now.push(name.clone());
                    // One draining already: cut its drain short.
                    if let Some(Phase::Stopping { pid }) = (self.apps.view().into_iter())
                        .find(|a| a.name == name)
                        .map(|a| a.phase)
                    {
                        self.stop_master(&name, pid);
                    }
                }
                let result = self.apps.stop_app(&name).map_err(|e| e.to_string());
                let result = result.map(|effects| {
                    info!("app {name}: stop asked");
                    self.apply(effects, &mut Vec::new());
                });
                // What the asking thread then watches is there before it is answered.
                self.publish();
                let _ = reply.send(result);
            }
            Command::StartApp(name, reply) => {
                let result = self.apps.start_app(&name, now).map_err(|e| e.to_string());
                let result = result.map(|effects| {
                    info!("app {name}: start asked");
                    self.apply(effects, &mut Vec::new());
                });
                self.publish();
                let _ = reply.send(result);
            }
            // The loop's own, at start.
            Command::Settled(_) => {}
        }
        self.publish();
    }

    /// Stops every app (`said`: why, for the log): gracefully, quickly after a second request
    /// (or `QUIT`), and those in `now` without their drain; a master already stopping is asked
    /// again, so that a second request cuts it short.
    fn stop(&mut self, said: &str) {
        if self.stops > 1 {
            info!("{said}quick stop of every app");
        } else {
            info!("{said}graceful stop of every app");
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        for app in self.apps.view() {
            let again = self.stops > 1 || self.now.contains(&app.name);
            if let (Phase::Stopping { pid }, true) = (app.phase, again) {
                self.stop_master(&app.name, pid);
            }
        }
        let effects = self.apps.stop_all();
        self.apply(effects, &mut Vec::new());
    }

    /// Reads the file again and applies what changed.
    pub(super) fn reread(&mut self) -> Result<Reread, String> {
        let config = match (self.loader)()? {
            Loaded::Apps(config) => *config,
            Loaded::One(_) => {
                return Err(format!(
                    "{} no longer has [[app]] sections: restart to run it as one app",
                    self.config.source.display()
                ));
            }
        };
        let mut reread = Reread::default();
        if config.control != self.config.control {
            reread.kept.push("[control]".into());
        }
        if config.metrics != self.config.metrics {
            reread.kept.push("[metrics]".into());
        }
        for kept in &reread.kept {
            warn!("reload: {kept} changed: unchanged until the master restarts");
        }
        let before: Vec<String> = self.apps.view().into_iter().map(|a| a.name).collect();
        let effects = self.apps.reconfigure(wanted(&config), Instant::now());
        for effect in &effects {
            if let Effect::Start(name) = effect {
                if !before.contains(name) {
                    reread.started.push(name.clone());
                }
            }
        }
        // Removed: stopped now, or already not running (stopped, given up).
        for name in &before {
            if !config.apps.iter().any(|a| a.name == *name) {
                reread.stopped.push(name.clone());
            }
        }
        self.config.apps = config.apps;
        let mut reload = Vec::new();
        self.apply(effects, &mut reload);
        for app in &self.config.apps {
            if !reload.contains(&app.name) && !reread.started.contains(&app.name) {
                reread.unchanged.push(app.name.clone());
            }
        }
        reread.reload = (reload.into_iter())
            .map(|name| {
                let socket = self.socket_of(&name);
                (name, socket)
            })
            .collect();
        self.publish();
        Ok(reread)
    }
}

impl Reread {
    pub fn summary(&self) -> String {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let reloaded: Vec<String> = self.reload.iter().map(|(n, _)| n.clone()).collect();
        format!(
            "apps started: {}; stopped: {}; reloaded: {}; unchanged: {}",
            list(&self.started),
            list(&self.stopped),
            list(&reloaded),
            list(&self.unchanged)
        )
    }
}
