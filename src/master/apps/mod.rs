//! The master of several apps (`[[app]]`): one master per app, each a child process running
//! the one-app master on its app's part of the file (`run --app NAME`), so that an app's
//! crash loop, reload or scale never touches another's workers and each app's hot path is
//! exactly a one-app master's. This one keeps them: starts them, restarts one that dies
//! (`engine::apps` decides), stops them, reads the file again (HUP, `reload`) and starts,
//! stops or reloads only the apps that changed; it answers the control socket for all of them
//! and serves `[metrics]` for all of them.
//!
//! Its event loop (signals, reaping, the decisions) is one thread; the control socket and the
//! metrics listener are served by threads of their own, a connection each (bounded), which ask
//! the apps' masters over their control sockets and this loop over a channel — a slow client
//! or a hung app's master never holds the loop.

mod agent;
mod ask;
mod children;
mod control;
mod fan_out;
mod http;
mod requests;
mod seats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::{Events, Poll, Token, Waker};
use nix::sys::signal::Signal;

use super::MasterError;
use super::control_files::{self, PidFile, Registration};
use super::signals::SignalSource;
use crate::config::{AppsConfig, Loaded};
use crate::engine::apps::{AppView, Apps, EXIT_GIVEN_UP, Effect, Phase, Wanted};
pub use children::Passthrough;

const SIGNALS: Token = Token(0);
const WAKE: Token = Token(1);
/// Connections served at once on the control socket, the metrics listener and the agent's,
/// each (a crowd on one never shuts the others).
const MAX_CONNECTIONS: usize = 64;

/// Reads the file again (HUP, `reload`), the way it was read at start.
pub type AppsLoader = Box<dyn FnMut() -> Result<Loaded, String>>;

/// What the loop's threads see of it: every app, where it stands, and where its master is.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub apps: Vec<AppView>,
    /// Each app's control socket, and how long its stop may take.
    pub places: BTreeMap<String, Place>,
    pub stopping: bool,
    /// The longest stop of any app.
    pub stop_within: Duration,
    /// The longest `[shutdown] drain` of any app.
    pub drain: Duration,
}

#[derive(Debug, Clone)]
pub struct Place {
    pub socket: PathBuf,
    pub stop_within: Duration,
}

/// What a thread asks the loop.
pub enum Command {
    /// Read the file again: answered with what changed, and the apps to reload (their
    /// sockets), which the asking thread reloads itself.
    Reload(Sender<Result<Reread, String>>),
    /// Stop every app, then exit (`now`: a quick stop).
    Stop {
        now: bool,
    },
    /// `stop APP` (`now`: without its drain), `start APP`: answered once asked of the loop.
    StopApp(String, bool, Sender<Result<(), String>>),
    StartApp(String, Sender<Result<(), String>>),
    /// At start: every app's master runs and answers (`Ok`), or one did not start (why).
    Settled(Result<(), String>),
}

/// What a reading of the file changed.
#[derive(Debug, Default)]
pub struct Reread {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    pub unchanged: Vec<String>,
    /// Changed apps whose masters run: name and control socket.
    pub reload: Vec<(String, PathBuf)>,
    /// The master-wide sections that changed, which only a restart applies.
    pub kept: Vec<String>,
}

/// What the threads share with the loop.
#[derive(Clone)]
pub struct Link {
    pub snapshot: Arc<Mutex<Snapshot>>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    /// The last reading of every app's status, for the balancer's and the monitor's frequent
    /// asks (`fan_out::recent_statuses`).
    pub recent: Arc<fan_out::Recent>,
}

impl Link {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks the loop; `false`: it has exited.
    pub fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok() && self.waker.wake().is_ok()
    }
}

/// An accepted connection; after a failed accept (out of file descriptors), a pause first, so
/// that an acceptor thread does not spin while the connections it serves finish.
pub fn accepted<T>(accept: std::io::Result<T>) -> Option<T> {
    accept
        .map_err(|_| std::thread::sleep(Duration::from_millis(50)))
        .ok()
}

/// Whether a connection of a listener whose connections `busy` counts may be served (at most
/// [`MAX_CONNECTIONS`] at once); released on drop.
pub fn admit(busy: &Arc<AtomicUsize>) -> Option<Admitted> {
    if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        busy.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(Admitted(busy.clone()))
}

/// A connection being served.
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct AppsMaster {
    config: AppsConfig,
    loader: AppsLoader,
    passthrough: Passthrough,
    apps: Apps,
    link: Link,
    /// A first TERM stops gracefully; a second (or QUIT) quickly.
    stops: u8,
    /// The apps whose masters are to stop without their drain (`stop --now`).
    now: Vec<String>,
    exit: Option<i32>,
    /// The apps' states as last told systemd (`STATUS=`).
    told: String,
}

/// Runs the master of several apps until it is stopped. `Ok` is a clean stop.
pub fn run(
    config: AppsConfig,
    loader: AppsLoader,
    passthrough: Passthrough,
    started: &mut dyn FnMut(&[String]),
) -> Result<(), MasterError> {
    let _pid_file = PidFile::acquire(&config.control.pid_file)?;
    let _registration = Registration::make(&config.control.socket);
    let mut poll = Poll::new().map_err(MasterError::EventLoop)?;
    let mut signals =
        SignalSource::new(poll.registry(), SIGNALS).map_err(MasterError::EventLoop)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE).map_err(MasterError::EventLoop)?);
    let (commands, received) = mpsc::channel();
    let link = Link {
        snapshot: Arc::default(),
        commands,
        waker,
        recent: Arc::default(),
    };
    let _control = serve_operators(&config, &link)?;
    let now = Instant::now();
    let (apps, effects) = Apps::new(wanted(&config), now);
    let names: Vec<String> = config.apps.iter().map(|a| a.name.clone()).collect();
    let environment = (config.environment.as_ref()).map_or(String::new(), |e| {
        format!(", environment {}", crate::text::quoted(e))
    });
    info!(
        "master of {} apps ({}) from {}{environment}",
        names.len(),
        names.join(", "),
        config.source.display()
    );
    let mut master = AppsMaster {
        config,
        loader,
        passthrough,
        apps,
        link,
        stops: 0,
        now: Vec::new(),
        exit: None,
        told: String::new(),
    };
    master.apply(effects, &mut Vec::new());
    master.publish();
    let listening: Vec<String> = (master.config.apps.iter())
        .flat_map(|a| a.config.listen.iter().map(|l| format!("{}={l}", a.name)))
        .collect();
    watch_start(master.link.clone(), names);
    let mut failed = None;
    if std::env::var_os(crate::wire::env::NOTIFY_SOCKET).is_some() {
        let link = master.link.clone();
        std::thread::spawn(move || ready_when_serving(&link));
    }
    let mut events = Events::with_capacity(16);
    let mut pending = Vec::new();
    let result = loop {
        let timeout = (master.apps.next_deadline())
            .map(|at| at.saturating_duration_since(Instant::now()) + Duration::from_millis(1));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break Err(MasterError::EventLoop(e));
            }
        }
        pending.clear();
        signals.drain(&mut pending);
        for &(signal, action) in &pending {
            master.on_signal(signal, action);
        }
        while let Ok(command) = received.try_recv() {
            match command {
                Command::Settled(Ok(())) => started(&listening),
                Command::Settled(Err(why)) => {
                    error!("{why}: stopping every app");
                    failed = Some(why);
                    master.stops = master.stops.max(1);
                    let effects = master.apps.stop_all();
                    master.apply(effects, &mut Vec::new());
                }
                command => master.on_command(command),
            }
        }
        let now = Instant::now();
        for (pid, code) in children::reap() {
            let app = master
                .apps
                .view()
                .into_iter()
                .map(|a| a.name)
                .find(|n| master.apps.pid(n) == Some(pid));
            let said = app
                .as_ref()
                .and_then(|a| children::reason(&master.reason_of(a)));
            let effects = master.apps.exited(pid, code, said.as_deref(), now);
            master.log_exit(app.as_deref(), pid, code);
            master.apply(effects, &mut Vec::new());
        }
        let effects = master.apps.tick(now);
        master.apply(effects, &mut Vec::new());
        master.publish();
        match (master.exit, failed.take()) {
            (Some(_), Some(why)) => break Err(MasterError::App(why)),
            (Some(0), None) => break Ok(()),
            (Some(_), None) => break Err(MasterError::GaveUp("every app")),
            (None, why) => failed = why,
        }
    };
    drop(received);
    result
}

/// The control socket, `[metrics]` and the HAProxy agent, each served by threads of its own;
/// the control socket, removed when dropped.
fn serve_operators(config: &AppsConfig, link: &Link) -> Result<control::Bound, MasterError> {
    let control = control::bind(&config.control.socket)?;
    let app_dir = crate::config::app_control(&config.control, "x").socket;
    if let Some(dir) = app_dir.parent() {
        control_files::create_private_dir(&dir.join("x"))?;
    }
    control::serve(&control.listener, link.clone());
    if let Some(m) = &config.metrics {
        let listener = bind_tcp(m.listen).map_err(|e| MasterError::Metrics(m.listen, e))?;
        info!(
            "metrics for every app on http://{}/metrics (health: /healthz, /readyz, /readyz/APP; \
             the status page: /)",
            m.listen
        );
        http::serve(listener, m.clone(), link.clone());
        if let Some(addr) = m.haproxy_agent {
            let listener = bind_tcp(addr).map_err(|e| MasterError::AgentCheck(addr, e))?;
            info!(
                "HAProxy agent-check on {addr}: every app summarized, or the one `agent-send` \
                 names"
            );
            agent::serve(listener, m.clone(), link.clone());
        }
    }
    Ok(control)
}

/// Tells the loop, once every app's master listens, that the start is done; or that an app
/// could not start, which fails the start, as a one-app master's listener would.
fn watch_start(link: Link, names: Vec<String>) {
    std::thread::spawn(move || {
        // Only an app given up fails the start (not one an operator stopped meanwhile).
        let failed = names
            .iter()
            .find_map(|app| match control::settled(&link, app) {
                Err(why @ control::NotStarted::GivenUp(_)) => Some((app, why)),
                _ => None,
            });
        let settled = failed.map_or(Ok(()), |(app, why)| Err(format!("app {app}: {why}")));
        link.send(Command::Settled(settled));
    });
}

/// A TCP listener of ours (metrics, agent): `SO_REUSEADDR`, close-on-exec.
fn bind_tcp(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The apps of the file, as the decisions take them.
fn wanted(config: &AppsConfig) -> Vec<Wanted> {
    (config.apps.iter())
        .map(|a| Wanted {
            name: a.name.clone(),
            fingerprint: a.fingerprint(),
            listens: !a.config.listen.is_empty(),
        })
        .collect()
}

/// Tells systemd `READY=1` once every app that listens serves or was given up (at most
/// [`READY_WAIT`] after start: then ready anyway, its status says which app does not serve).
fn ready_when_serving(link: &Link) {
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline {
        let apps = fan_out::statuses(&link.snapshot());
        let settled = (apps.iter())
            .filter(|a| a.listens)
            .all(|a| a.readiness().is_ok() || a.state == "given up" || a.state == "stopped");
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    notify(&[sd_notify::NotifyState::Ready]);
}

/// How long `READY=1` waits for the apps to serve.
const READY_WAIT: Duration = Duration::from_secs(120);

/// Tells systemd, when it started us with a `NOTIFY_SOCKET`.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os(crate::wire::env::NOTIFY_SOCKET).is_some() {
        let _ = sd_notify::notify(states);
    }
}

impl AppsMaster {
    /// Carries out the decisions; the apps to reload go to `reload`.
    fn apply(&mut self, mut effects: Vec<Effect>, reload: &mut Vec<String>) {
        let now = Instant::now();
        while !effects.is_empty() {
            for effect in std::mem::take(&mut effects) {
                match effect {
                    Effect::Start(name) => {
                        let reason = self.reason_of(&name);
                        let source = &self.config.source;
                        let more = match children::start(source, &name, &self.passthrough, &reason)
                        {
                            Ok(pid) => {
                                info!("app {name}: master started, pid={pid}");
                                self.apps.started(&name, pid)
                            }
                            Err(e) => {
                                error!("app {name}: cannot start its master: {e}");
                                self.apps.start_failed(&name, &e.to_string(), now)
                            }
                        };
                        effects.extend(more);
                    }
                    Effect::Stop(name, pid) => self.stop_master(&name, pid),
                    Effect::Reload(name) => reload.push(name),
                    Effect::Exit(code) => {
                        if code == EXIT_GIVEN_UP {
                            error!("every app is given up: exiting");
                        } else {
                            info!("every app's master has exited: stopped");
                        }
                        self.exit = Some(code);
                    }
                }
            }
        }
    }

    /// Asks the master `pid` of `name` to stop: gracefully (`SIGTERM`), without its drain
    /// (`stop --now`: asked on its control socket, from a thread), or quickly (`SIGQUIT`).
    fn stop_master(&self, name: &str, pid: i32) {
        if self.stops > 1 {
            info!("app {name}: stopping its master quickly, pid={pid}");
            children::signal(pid, Signal::SIGQUIT);
        } else if self.now.iter().any(|n| n == name) {
            info!("app {name}: stopping its master now (no drain), pid={pid}");
            let socket = self.socket_of(name);
            std::thread::spawn(move || {
                let request = crate::wire::control::Request::Stop { now: true };
                if ask::ask(&socket, &request, Duration::from_secs(5)).is_err() {
                    children::signal(pid, Signal::SIGTERM);
                }
            });
        } else {
            info!("app {name}: stopping its master, pid={pid}");
            children::signal(pid, Signal::SIGTERM);
        }
    }

    /// Says that the master `pid` of `app` exited, and what becomes of the app.
    fn log_exit(&self, app: Option<&str>, pid: i32, code: Option<i32>) {
        let how = code.map_or("killed by a signal".to_owned(), |c| {
            format!("exit code {c}")
        });
        let Some(name) = app else {
            return; // not an app's master: a process it left, reaped by us as the reaper
        };
        let phase = (self.apps.view().into_iter())
            .find(|a| a.name == name)
            .map(|a| a.phase);
        match phase {
            Some(Phase::GivenUp { why }) => {
                error!("app {name}: master pid={pid} exited ({how}): given up: {why}")
            }
            Some(Phase::Waiting { at }) => warn!(
                "app {name}: master pid={pid} exited ({how}): starting it again in {:.1}s",
                at.saturating_duration_since(Instant::now()).as_secs_f64()
            ),
            Some(Phase::Starting { .. } | Phase::Running { .. }) => {
                info!("app {name}: master pid={pid} exited ({how}); started again")
            }
            Some(Phase::Stopped) => info!("app {name}: master pid={pid} exited ({how}): stopped"),
            Some(Phase::Stopping { .. }) | None => {
                info!("app {name}: master pid={pid} exited ({how})")
            }
        }
    }

    /// Where the master of `name` writes why it failed.
    fn reason_of(&self, name: &str) -> PathBuf {
        self.socket_of(name).with_extension("exit")
    }

    fn socket_of(&self, name: &str) -> PathBuf {
        crate::config::app_control(&self.config.control, name).socket
    }

    /// What the threads see, brought up to date; systemd told the apps' states when they
    /// changed.
    fn publish(&mut self) {
        let mut places = BTreeMap::new();
        let (mut stop_within, mut drain) = (Duration::ZERO, Duration::ZERO);
        for app in &self.config.apps {
            let within = app.config.kill_timeout + app.config.drain;
            stop_within = stop_within.max(within);
            drain = drain.max(app.config.drain);
            places.insert(
                app.name.clone(),
                Place {
                    socket: self.socket_of(&app.name),
                    stop_within: within,
                },
            );
        }
        let snapshot = Snapshot {
            apps: self.apps.view(),
            places,
            stopping: self.apps.stopping(),
            stop_within,
            drain,
        };
        let states: Vec<String> = (snapshot.apps.iter())
            .map(|a| format!("{} {}", a.name, a.phase.word()))
            .collect();
        let told = format!("{} apps: {}", states.len(), states.join(", "));
        if told != self.told {
            notify(&[sd_notify::NotifyState::Status(&told)]);
            self.told = told;
        }
        if let Ok(mut shared) = self.link.snapshot.lock() {
            *shared = snapshot;
        }
    }
}
