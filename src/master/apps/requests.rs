//! What the master of several apps is asked — by a signal, or by a thread over the loop's
//! channel — and the file read again.

use std::time::Instant;

use log::{error, info, warn};
use nix::sys::signal::Signal;

use super::super::signals::{self, Action};
use super::{AppsMaster, Command, Reread, children, control, notify, wanted};
use crate::config::Loaded;
use crate::engine::apps::Effect;

impl AppsMaster {
    pub(super) fn on_signal(&mut self, signal: i32, action: Action) {
        let name = signals::name(signal);
        match action {
            Action::GracefulStop | Action::QuickStop => {
                self.stops += if action == Action::QuickStop { 2 } else { 1 };
                if self.stops > 1 {
                    info!("{name}: quick stop of every app");
                    for app in self.apps.view() {
                        if let Some(pid) = self.apps.pid(&app.name) {
                            children::signal(pid, Signal::SIGQUIT);
                        }
                    }
                } else {
                    info!("{name}: graceful stop of every app");
                }
                notify(&[sd_notify::NotifyState::Stopping]);
                let effects = self.apps.stop_all();
                self.apply(effects, &mut Vec::new());
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
            Command::Stop { now: quick } => {
                let (signal, action) = if quick {
                    (Signal::SIGQUIT, Action::QuickStop)
                } else {
                    (Signal::SIGTERM, Action::GracefulStop)
                };
                self.on_signal(signal as i32, action);
            }
            Command::StopApp(name, reply) => {
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
        }
        self.publish();
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
        if config.control != self.config.control || config.metrics != self.config.metrics {
            warn!("reload: [control] and [metrics] changes apply at the next restart");
        }
        let before: Vec<String> = self.apps.view().into_iter().map(|a| a.name).collect();
        let effects = self.apps.reconfigure(wanted(&config), Instant::now());
        let mut reread = Reread::default();
        for effect in &effects {
            match effect {
                Effect::Start(name) if !before.contains(name) => reread.started.push(name.clone()),
                Effect::Stop(name, _) => reread.stopped.push(name.clone()),
                _ => {}
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
