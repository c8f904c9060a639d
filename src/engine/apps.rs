//! The master of several apps (`[[app]]`): which app's master runs, is started, stopped,
//! restarted or reloaded — facts in (a master started, one exited, an operator's request, the
//! file read again), effects out. Each app is run by a master of its own (a child process), so
//! an app crash-looping, given up or reloaded never touches another's workers.
//!
//! - An app's master that exits on its own is started again after a backoff (1 s, doubling, at
//!   most 30 s); [`MAX_CRASHES`] within [`CRASH_WINDOW`] and it is given up.
//! - One that exits with [`EXIT_GIVEN_UP`] (every worker given up, or its listener refused) or
//!   [`EXIT_USAGE`] (its configuration) is given up at once: starting it again would fail the
//!   same way. A reload of the file that changes it starts it again.
//! - An app stopped by the operator stays stopped until started, or the master restarts.
//! - The master exits once every app is given up (1), or once stopping, when no app's master is
//!   left (0).

use std::time::{Duration, Instant};

/// What an app's master exits with when everything it runs was given up (or it cannot
/// serve): `rrbalancer`'s runtime failure.
pub const EXIT_GIVEN_UP: i32 = 1;
/// What an app's master exits with when its configuration does not load.
pub const EXIT_USAGE: i32 = 2;
/// Crashes of an app's master within [`CRASH_WINDOW`] before it is given up.
pub const MAX_CRASHES: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the shell is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start the master of this app (and report [`Apps::started`]).
    Start(String),
    /// Ask this app's master (its pid) to stop gracefully.
    Stop(String, i32),
    /// Ask this app's master to reload: its settings changed in the file.
    Reload(String),
    /// Every app's master has exited: exit with this code.
    Exit(i32),
}

/// Where an app stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Its master is being started; `stop`: stop it as soon as it runs.
    Starting { stop: bool },
    /// Its master runs.
    Running { pid: i32 },
    /// Its master was asked to stop and has not exited yet.
    Stopping { pid: i32 },
    /// To be started (again) at `at`.
    Waiting { at: Instant },
    /// Stopped by the operator (`stop APP`): stays so until started.
    Stopped,
    /// Not started again, and why.
    GivenUp { why: String },
}

/// What becomes of an app once its master has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Start it again at once (a changed app whose master was given up, `start`).
    Start,
    /// Keep it stopped.
    Stay,
    /// Forget it (removed from the file).
    Remove,
}

#[derive(Debug, Clone)]
struct App {
    name: String,
    fingerprint: String,
    phase: Phase,
    /// When its master last exited unasked.
    crashes: Vec<Instant>,
    /// Times its master was started again after exiting unasked.
    restarts: u64,
    /// Whether it listens (only such apps make the master ready or not).
    listens: bool,
    /// For a master asked to stop: what then.
    then: Then,
}

impl App {
    /// An app of the file, to be started at `now`.
    fn new(w: Wanted, now: Instant) -> App {
        App {
            name: w.name,
            fingerprint: w.fingerprint,
            phase: Phase::Waiting { at: now },
            crashes: Vec::new(),
            restarts: 0,
            listens: w.listens,
            then: Then::Stay,
        }
    }
}

/// An app as the views show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    pub name: String,
    pub phase: Phase,
    pub restarts: u64,
    pub listens: bool,
}

/// An app as the file has it: its name, its settings (compared on a reload), and whether it
/// listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub fingerprint: String,
    pub listens: bool,
}

/// Why an operator's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no app named {0}")]
    Unknown(String),
    #[error("the master is stopping")]
    Stopping,
}

/// The apps and their masters.
#[derive(Debug, Clone)]
pub struct Apps {
    apps: Vec<App>,
    stopping: bool,
    exited: bool,
}

impl Apps {
    /// The apps of the file; each is started at once.
    pub fn new(wanted: Vec<Wanted>, now: Instant) -> (Apps, Vec<Effect>) {
        let apps = wanted.into_iter().map(|w| App::new(w, now)).collect();
        let mut apps = Apps {
            apps,
            stopping: false,
            exited: false,
        };
        let effects = apps.tick(now);
        (apps, effects)
    }

    fn find(&mut self, name: &str) -> Result<&mut App, Refused> {
        // One on its way out of the file is no longer the operator's to start or stop.
        (self.apps.iter_mut())
            .find(|a| a.name == name && a.then != Then::Remove)
            .ok_or_else(|| Refused::Unknown(name.to_owned()))
    }

    /// The master of `name` was started: `pid` (asked to stop meanwhile: it is stopped).
    pub fn started(&mut self, name: &str, pid: i32) -> Vec<Effect> {
        let Some(app) = (self.apps.iter_mut()).find(|a| a.name == name && a.phase.starting())
        else {
            return Vec::new();
        };
        if app.phase == (Phase::Starting { stop: true }) {
            app.phase = Phase::Stopping { pid };
            return vec![Effect::Stop(app.name.clone(), pid)];
        }
        app.phase = Phase::Running { pid };
        Vec::new()
    }

    /// The master of `name` could not be started (`why`): tried again after a backoff, given up
    /// as a crash would be.
    pub fn start_failed(&mut self, name: &str, why: &str, now: Instant) -> Vec<Effect> {
        let Some(index) = (self.apps.iter()).position(|a| a.name == name && a.phase.starting())
        else {
            return Vec::new();
        };
        let app = &mut self.apps[index];
        if app.phase == (Phase::Starting { stop: true }) || self.stopping {
            match app.then {
                Then::Remove => {
                    self.apps.remove(index);
                }
                Then::Start if !self.stopping => app.phase = Phase::Waiting { at: now },
                _ => app.phase = Phase::Stopped,
            }
        } else {
            crashed(app, why, now);
        }
        self.tick(now)
    }

    /// A master exited: `pid`, with `code` (`None`: killed by a signal), having said `said` of
    /// why it failed, if it did (its last error: "cannot listen on …").
    pub fn exited(
        &mut self,
        pid: i32,
        code: Option<i32>,
        said: Option<&str>,
        now: Instant,
    ) -> Vec<Effect> {
        let stopping = self.stopping;
        let Some(index) = (self.apps.iter()).position(|a| {
            matches!(a.phase, Phase::Running { pid: p } | Phase::Stopping { pid: p } if p == pid)
        }) else {
            return Vec::new();
        };
        let app = &mut self.apps[index];
        let asked = matches!(app.phase, Phase::Stopping { .. });
        if asked || stopping {
            match app.then {
                Then::Remove => {
                    self.apps.remove(index);
                }
                Then::Start if !stopping => app.phase = Phase::Waiting { at: now },
                _ => app.phase = Phase::Stopped,
            }
        } else {
            match code {
                Some(EXIT_GIVEN_UP) => {
                    let why = said.map_or_else(
                        || "every worker given up, or it could not serve (see the log)".into(),
                        str::to_owned,
                    );
                    app.phase = Phase::GivenUp {
                        why: format!("its master exited: {why}"),
                    }
                }
                Some(EXIT_USAGE) => {
                    let why = said.map_or_else(
                        || "its configuration does not load (see the log)".into(),
                        str::to_owned,
                    );
                    app.phase = Phase::GivenUp {
                        why: format!("its master exited: {why}"),
                    }
                }
                Some(0) => app.phase = Phase::Stopped,
                Some(code) => crashed(app, &format!("its master exited with {code}"), now),
                None => crashed(app, "its master was killed", now),
            }
        }
        self.tick(now)
    }

    /// Whatever is due at `now`: apps to start again.
    pub fn tick(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.stopping {
            return self.settle();
        }
        for app in &mut self.apps {
            if matches!(app.phase, Phase::Waiting { at } if at <= now) {
                app.then = Then::Stay;
                app.phase = Phase::Starting { stop: false };
                effects.push(Effect::Start(app.name.clone()));
            }
        }
        effects.extend(self.settle());
        effects
    }

    /// When [`Apps::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.apps.iter())
            .filter_map(|a| match a.phase {
                Phase::Waiting { at } => Some(at),
                _ => None,
            })
            .min()
    }

    /// `stop APP`: its master stops gracefully, and it stays stopped until started.
    pub fn stop_app(&mut self, name: &str) -> Result<Vec<Effect>, Refused> {
        if self.stopping {
            return Err(Refused::Stopping);
        }
        let app = self.find(name)?;
        app.then = Then::Stay;
        Ok(match app.phase {
            Phase::Running { pid } => {
                app.phase = Phase::Stopping { pid };
                vec![Effect::Stop(app.name.clone(), pid)]
            }
            Phase::Stopping { .. } => Vec::new(),
            Phase::Starting { .. } => {
                app.phase = Phase::Starting { stop: true };
                Vec::new()
            }
            _ => {
                app.phase = Phase::Stopped;
                Vec::new()
            }
        })
    }

    /// `start APP`: a stopped or given-up app is started again (its crash history forgotten).
    pub fn start_app(&mut self, name: &str, now: Instant) -> Result<Vec<Effect>, Refused> {
        if self.stopping {
            return Err(Refused::Stopping);
        }
        let app = self.find(name)?;
        app.crashes.clear();
        match app.phase {
            Phase::Stopped | Phase::GivenUp { .. } | Phase::Waiting { .. } => {
                app.phase = Phase::Waiting { at: now };
            }
            // Started again once its master has exited.
            Phase::Stopping { .. } | Phase::Starting { stop: true } => app.then = Then::Start,
            Phase::Running { .. } | Phase::Starting { stop: false } => {}
        }
        Ok(self.tick(now))
    }

    /// The file was read again: new apps are started, removed ones stopped (and forgotten once
    /// their masters exit), changed ones reloaded (or started again, if given up); unchanged
    /// ones are not touched.
    pub fn reconfigure(&mut self, wanted: Vec<Wanted>, now: Instant) -> Vec<Effect> {
        if self.stopping {
            return Vec::new();
        }
        let mut effects = Vec::new();
        for app in &mut self.apps {
            if wanted.iter().any(|w| w.name == app.name) {
                continue;
            }
            app.then = Then::Remove;
            match app.phase {
                Phase::Running { pid } => {
                    app.phase = Phase::Stopping { pid };
                    effects.push(Effect::Stop(app.name.clone(), pid));
                }
                Phase::Stopping { .. } => {}
                Phase::Starting { .. } => app.phase = Phase::Starting { stop: true },
                _ => app.phase = Phase::Stopped,
            }
        }
        self.apps.retain(|a| {
            a.then != Then::Remove
                || matches!(a.phase, Phase::Stopping { .. } | Phase::Starting { .. })
        });
        let mut order = Vec::new();
        for w in wanted {
            match self.apps.iter().position(|a| a.name == w.name) {
                Some(i) => {
                    let app = &mut self.apps[i];
                    app.listens = w.listens;
                    if app.then == Then::Remove {
                        // Removed by an earlier reload, its master still stopping: back once
                        // it has exited, with the settings read now.
                        app.then = Then::Start;
                        app.fingerprint = w.fingerprint;
                        order.push(app.name.clone());
                        continue;
                    }
                    if app.fingerprint != w.fingerprint {
                        app.fingerprint = w.fingerprint;
                        match app.phase {
                            Phase::Running { .. } => effects.push(Effect::Reload(app.name.clone())),
                            Phase::GivenUp { .. } => {
                                app.crashes.clear();
                                app.phase = Phase::Waiting { at: now };
                            }
                            _ => {}
                        }
                    }
                    order.push(app.name.clone());
                }
                None => {
                    order.push(w.name.clone());
                    self.apps.push(App::new(w, now));
                }
            }
        }
        // The file's order; apps on their way out last.
        self.apps
            .sort_by_key(|a| (order.iter().position(|n| *n == a.name)).unwrap_or(usize::MAX));
        effects.extend(self.tick(now));
        effects
    }

    /// The master is stopping: every app's master stops gracefully; [`Effect::Exit`] once all
    /// have exited.
    pub fn stop_all(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.stopping {
            self.stopping = true;
            for app in &mut self.apps {
                match app.phase {
                    Phase::Running { pid } => {
                        app.phase = Phase::Stopping { pid };
                        effects.push(Effect::Stop(app.name.clone(), pid));
                    }
                    Phase::Waiting { .. } => app.phase = Phase::Stopped,
                    Phase::Starting { .. } => app.phase = Phase::Starting { stop: true },
                    _ => {}
                }
            }
        }
        effects.extend(self.settle());
        effects
    }

    /// Whether the master is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// The exit, when it is due (once).
    fn settle(&mut self) -> Vec<Effect> {
        if self.exited {
            return Vec::new();
        }
        let alive = |a: &App| {
            matches!(
                a.phase,
                Phase::Running { .. } | Phase::Stopping { .. } | Phase::Starting { .. }
            )
        };
        let code = if self.stopping {
            (!self.apps.iter().any(alive)).then_some(0)
        } else {
            let given_up = |a: &App| matches!(a.phase, Phase::GivenUp { .. });
            (!self.apps.is_empty() && self.apps.iter().all(given_up)).then_some(EXIT_GIVEN_UP)
        };
        match code {
            Some(code) => {
                self.exited = true;
                vec![Effect::Exit(code)]
            }
            None => Vec::new(),
        }
    }

    /// Every app, in the file's order.
    pub fn view(&self) -> Vec<AppView> {
        (self.apps.iter())
            .map(|a| AppView {
                name: a.name.clone(),
                phase: a.phase.clone(),
                restarts: a.restarts,
                listens: a.listens,
            })
            .collect()
    }

    /// The pid of `name`'s master, while it runs.
    pub fn pid(&self, name: &str) -> Option<i32> {
        let app = self.apps.iter().find(|a| a.name == name);
        app.and_then(|a| a.phase.pid())
    }
}

/// `app`'s master exited unasked (or did not start): again after a backoff, or given up.
fn crashed(app: &mut App, why: &str, now: Instant) {
    app.crashes
        .retain(|t| now.saturating_duration_since(*t) < CRASH_WINDOW);
    app.crashes.push(now);
    if app.crashes.len() >= MAX_CRASHES {
        app.phase = Phase::GivenUp {
            why: format!(
                "{why}; {} times within {}s",
                app.crashes.len(),
                CRASH_WINDOW.as_secs()
            ),
        };
        return;
    }
    let doublings = (app.crashes.len() - 1).min(8) as u32;
    let backoff = (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX);
    app.restarts += 1;
    app.phase = Phase::Waiting { at: now + backoff };
}

impl Phase {
    fn starting(&self) -> bool {
        matches!(self, Phase::Starting { .. })
    }

    /// Its master's pid, while one runs (stopping or not).
    pub fn pid(&self) -> Option<i32> {
        match *self {
            Phase::Running { pid } | Phase::Stopping { pid } => Some(pid),
            _ => None,
        }
    }

    /// One word for it, as `status` and the page show it.
    pub fn word(&self) -> &'static str {
        match self {
            Phase::Starting { .. } => "starting",
            Phase::Running { .. } => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Waiting { .. } => "restarting",
            Phase::Stopped => "stopped",
            Phase::GivenUp { .. } => "given up",
        }
    }
}

#[cfg(test)]
mod tests;
