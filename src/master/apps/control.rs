//! The control socket of the master of several apps: a thread a connection (bounded), one
//! request each (`wire::apps_control`). What concerns one app's workers is passed to its
//! master and its answer passed back; what concerns the apps themselves (start, stop, the file
//! read again, status of all) is asked of the loop.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Uid;

use super::super::control_files::{self, ControlError};
use super::ask;
use super::fan_out::{every_apps_logs, for_each_app, statuses};
use super::{Command, Link, Reread};
use crate::engine::apps::Phase;
use crate::wire::apps_control::{AppsCommand, AppsRequest, parse_apps_request};
use crate::wire::control::{MAX_REQUEST, Reply, Request};

/// How long a client has to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// How long an app's master has to answer a `status`.
pub(super) const STATUS_WAIT: Duration = Duration::from_secs(2);
/// How long a reload or a start may take (each new worker within its `ready_timeout`).
const LONG_WAIT: Duration = Duration::from_secs(600);

/// The bound control socket; its file is removed when this is dropped (if still ours).
pub struct Bound {
    pub listener: UnixListener,
    path: PathBuf,
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds the control socket at `path` (mode 0600, in a private directory); the pid file we
/// hold says a socket file found there is a dead master's.
pub fn bind(path: &Path) -> Result<Bound, ControlError> {
    control_files::create_private_dir(path)?;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(control_files::io_err(path)(e));
        }
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(control_files::io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(control_files::io_err(path))?;
    Ok(Bound {
        listener,
        path: path.to_owned(),
    })
}

/// Serves the control socket on a thread of its own, a thread per connection.
pub fn serve(listener: &UnixListener, link: Link) {
    let Ok(listener) = listener.try_clone() else {
        warn!("control socket: cannot serve it");
        return;
    };
    let busy = std::sync::Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Some(stream) = super::accepted(stream) else {
                continue;
            };
            let uid = getsockopt(&stream, PeerCredentials).map(|cred| cred.uid());
            if !uid.is_ok_and(|uid| uid == 0 || Uid::from_raw(uid) == Uid::effective()) {
                warn!("control socket: refused a client of another user");
                continue;
            }
            let Some(admitted) = super::admit(&busy) else {
                let mut stream = stream;
                let _ = answer(&mut stream, Reply::error("busy: too many clients".into()));
                continue;
            };
            let link = link.clone();
            std::thread::spawn(move || {
                let _admitted = admitted;
                handle(stream, &link);
            });
        }
    });
}

/// Sends `reply`, with our pid unless it names another (the app's master a `stop` waits for).
pub(super) fn answer(stream: &mut UnixStream, mut reply: Reply) -> io::Result<()> {
    reply.pid = reply.pid.or(Some(std::process::id() as i32));
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line)
}

/// One request, read within [`REQUEST_WAIT`] and at most [`MAX_REQUEST`] bytes.
fn read_request(stream: &UnixStream) -> Result<Vec<u8>, String> {
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream.take(MAX_REQUEST as u64 + 1));
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("no request: {e}"))?;
    if line.len() > MAX_REQUEST {
        return Err(format!("request too long (limit {MAX_REQUEST} bytes)"));
    }
    Ok(line)
}

fn handle(mut stream: UnixStream, link: &Link) {
    let line = match read_request(&stream) {
        Ok(line) if line.trim_ascii().is_empty() => return,
        Ok(line) => line,
        Err(why) => {
            let _ = answer(&mut stream, Reply::error(why));
            return;
        }
    };
    let request = match parse_apps_request(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = answer(&mut stream, Reply::error(e.to_string()));
            return;
        }
    };
    debug!("control: {request:?}");
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    match request {
        AppsRequest {
            app: Some(app),
            command,
        } => for_app(&mut stream, link, &app, command),
        AppsRequest {
            app: None,
            command: AppsCommand::Request(request),
        } => for_all(&mut stream, link, request),
        AppsRequest { app: None, .. } => {
            let _ = answer(&mut stream, Reply::error("start: name the app".into()));
        }
    }
}

/// A request without `app`: the apps themselves, or refused with what to name.
fn for_all(stream: &mut UnixStream, link: &Link, request: Request) {
    let reply = match request {
        Request::Status => {
            let mut reply = Reply::ok(String::new());
            reply.message = None;
            reply.apps = Some(statuses(&link.snapshot()));
            reply
        }
        Request::Reload { wait } => match ask_loop(link, Command::Reload) {
            Ok(reread) => Reply::from(reload_apps(link, reread, wait)),
            Err(e) => Reply::error(e),
        },
        Request::Stop { now } => {
            let snapshot = link.snapshot();
            let drain = (!now && !snapshot.drain.is_zero()).then_some(snapshot.drain);
            let running = (snapshot.apps.iter())
                .filter(|a| a.phase.pid().is_some())
                .count();
            let mut reply = Reply::ok(format!(
                "stopping {running} app{}{}",
                if running == 1 { "" } else { "s" },
                match drain {
                    _ if now => " now".to_owned(),
                    Some(d) => format!(", each draining first ({}s at most)", d.as_secs()),
                    None => String::new(),
                }
            ));
            reply.within_ms = Some(snapshot.stop_within.as_millis() as u64 + 5_000);
            reply.drain_ms = drain.map(|d| d.as_millis() as u64);
            if !link.send(Command::Stop { now }) {
                return;
            }
            let _ = answer(stream, reply);
            // Open until this process exits: EOF tells the client it has.
            let mut rest = Vec::new();
            let _ = stream.set_read_timeout(None);
            let _ = stream.read_to_end(&mut rest);
            return;
        }
        Request::Metrics => {
            let mut reply = Reply::ok(super::http::metrics(link));
            reply.message = reply.message.take();
            reply
        }
        Request::Send { .. } => {
            for_each_app(stream, link, &request);
            return;
        }
        Request::Scale { .. } => Reply::error(
            "this master runs several apps: name the one to scale (rrbalancer scale APP N)".into(),
        ),
        Request::Logs {
            slot: None,
            agent: false,
            lines,
            after,
        } => every_apps_logs(link, lines, after),
        Request::Logs { .. } => Reply::error(
            "this master runs several apps: a slot or the agent is one app's (--app APP)".into(),
        ),
        Request::Upgrade { .. } => Reply::error(
            "an in-place upgrade is not available for a file with [[app]] sections: `rrbalancer \
             restart` starts the new binary"
                .into(),
        ),
    };
    let _ = answer(stream, reply);
}

/// Asks the loop; its answer.
fn ask_loop<T>(
    link: &Link,
    command: impl FnOnce(mpsc::Sender<Result<T, String>>) -> Command,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    if !link.send(command(tx)) {
        return Err("the master is exiting".into());
    }
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|_| "the master did not answer".to_owned())?
}

/// The file read again: what changed, each changed app's master reloaded (in turn), each
/// added app seen to start; what only a restart applies named.
fn reload_apps(link: &Link, reread: Reread, wait: bool) -> Result<String, String> {
    let mut said = vec![reread.summary()];
    let mut failed = false;
    for app in &reread.started {
        if let Err(why) = settled(link, app) {
            failed = true;
            said.push(format!("{app}: did not start: {why}"));
        }
    }
    for kept in &reread.kept {
        failed = true;
        said.push(format!("{kept}: unchanged until the master restarts"));
    }
    for (app, socket) in &reread.reload {
        match reload_app(socket, wait) {
            Ok(m) => said.push(format!("{app}: {m}")),
            Err(e) => {
                failed = true;
                said.push(format!("{app}: reload failed: {e}"));
            }
        }
    }
    if failed {
        Err(said.join("\n"))
    } else {
        Ok(said.join("\n"))
    }
}

/// Reloads the master whose control socket is `socket`.
pub fn reload_app(socket: &Path, wait: bool) -> Result<String, String> {
    let reply = ask::ask(socket, &Request::Reload { wait }, LONG_WAIT)?;
    let message = reply.message.unwrap_or_default();
    if reply.ok { Ok(message) } else { Err(message) }
}

/// A request for one app.
fn for_app(stream: &mut UnixStream, link: &Link, app: &str, command: AppsCommand) {
    let snapshot = link.snapshot();
    let Some(view) = snapshot.apps.iter().find(|a| a.name == app) else {
        let names: Vec<&str> = snapshot.apps.iter().map(|a| a.name.as_str()).collect();
        let why = format!(
            "no app named {}: this master runs {}",
            crate::text::quoted(app),
            names.join(", ")
        );
        let _ = answer(stream, Reply::error(why));
        return;
    };
    let place = snapshot.places.get(app).cloned();
    let within = place.as_ref().map_or(LONG_WAIT, |p| p.stop_within);
    match command {
        AppsCommand::Start => {
            let reply = match view.phase {
                Phase::Running { pid } => Reply::ok(format!(
                    "app {app} is running already (its master is pid {pid})"
                )),
                _ => Reply::from(
                    ask_loop(link, |tx| Command::StartApp(app.to_owned(), tx))
                        .and_then(|()| settled(link, app).map_err(|e| e.to_string()))
                        .map(|said| format!("app {app} started: {said}"))
                        .map_err(|why| format!("app {app} did not start: {why}")),
                ),
            };
            let _ = answer(stream, reply);
        }
        AppsCommand::Request(Request::Stop { now }) => {
            if let Err(e) = ask_loop(link, |tx| Command::StopApp(app.to_owned(), now, tx)) {
                let _ = answer(stream, Reply::error(e));
                return;
            }
            let mut reply = Reply::ok(format!("stopping app {app}"));
            reply.pid = view.phase.pid();
            reply.within_ms = Some(within.as_millis() as u64 + 5_000);
            let _ = answer(stream, reply);
            // Closed once its master has exited.
            let _ = wait_for(link, app, within + Duration::from_secs(10), |p| {
                !matches!(p, Phase::Stopping { .. } | Phase::Running { .. })
            });
        }
        AppsCommand::Request(request) => {
            let Some(place) = place.filter(|_| matches!(view.phase, Phase::Running { .. })) else {
                let why = format!(
                    "app {app} is {}: its master does not run{}",
                    describe(&view.phase),
                    if matches!(view.phase, Phase::Stopped | Phase::GivenUp { .. }) {
                        format!(" (rrbalancer start {app})")
                    } else {
                        String::new()
                    }
                );
                let _ = answer(stream, Reply::error(why));
                return;
            };
            let line = crate::wire::apps_control::request_line(None, Some(&request));
            if let Err(e) = ask::forward(&place.socket, &line, stream, LONG_WAIT) {
                let _ = answer(stream, Reply::error(format!("app {app}: {e}")));
            }
        }
    }
}

fn describe(phase: &Phase) -> String {
    match phase {
        Phase::GivenUp { why } => format!("given up ({why})"),
        other => other.word().to_owned(),
    }
}

/// How long an app's master may take to start and listen.
const START_WAIT: Duration = Duration::from_secs(60);

/// Why an app did not start.
#[derive(Debug)]
pub enum NotStarted {
    /// It was given up: why.
    GivenUp(String),
    /// Stopped or removed meanwhile, or no answer in time: what.
    Else(String),
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::GivenUp(why) => write!(f, "given up: {why}"),
            NotStarted::Else(what) => f.write_str(what),
        }
    }
}

/// Waits until `app`'s master runs and answers (it has bound its listeners: it serves, or
/// will once its workers are ready); what it said, or why it did not start (given up, or not
/// within [`START_WAIT`]).
pub fn settled(link: &Link, app: &str) -> Result<String, NotStarted> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        let snapshot = link.snapshot();
        let phase = (snapshot.apps.iter().find(|a| a.name == app)).map(|a| a.phase.clone());
        match phase {
            Some(Phase::Running { pid }) => {
                let socket = snapshot.places.get(app).map(|p| p.socket.clone());
                let status = socket.and_then(|s| ask::ask(&s, &Request::Status, STATUS_WAIT).ok());
                if let Some(status) = status.and_then(|r| r.status) {
                    let listening = if status.listeners.is_empty() {
                        "no listener".to_owned()
                    } else {
                        format!("listening on {}", status.listeners.join(", "))
                    };
                    return Ok(format!("its master is pid {pid}, {listening}"));
                }
            }
            Some(Phase::GivenUp { why }) => return Err(NotStarted::GivenUp(why)),
            Some(Phase::Stopped | Phase::Stopping { .. }) => {
                return Err(NotStarted::Else("stopped".into()));
            }
            None => return Err(NotStarted::Else("no longer in the file".into())),
            Some(_) => {}
        }
        if Instant::now() >= deadline {
            let what = format!("its master does not answer within {START_WAIT:?}");
            return Err(NotStarted::Else(what));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (polling the loop's snapshot) until `app`'s phase satisfies `done`, or `within`.
fn wait_for(
    link: &Link,
    app: &str,
    within: Duration,
    done: impl Fn(&Phase) -> bool,
) -> Result<Phase, String> {
    let deadline = Instant::now() + within;
    loop {
        let phase = (link.snapshot().apps.into_iter())
            .find(|a| a.name == app)
            .map(|a| a.phase);
        match phase {
            None => return Ok(Phase::Stopped),
            Some(p) if done(&p) => return Ok(p),
            Some(_) if Instant::now() >= deadline => {
                return Err(format!("app {app}: not done within {within:?}"));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
