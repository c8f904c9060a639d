//! The control socket: how `rrbalancer status|reload|scale|stop` reach a running master, and the
//! pid file that says one runs.
//!
//! A Unix stream socket, mode 0600 in a 0700 directory, accepting only clients of the same uid
//! or root (`SO_PEERCRED`). One request per connection, one JSON object per line each way (see
//! [`crate::control`] for the shapes). A `reload` is answered when it ends; a `stop` is answered
//! at once and the connection then stays open until the master exits, so the client can wait
//! for the end by reading to EOF.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;
use mio::net::{UnixListener, UnixStream};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Uid, getpid};
use slab::Slab;

use super::client_io;
use super::fleet::{self, Role, State};
use super::sources::Source;
use super::{Master, Phase};
use crate::config::host;
use crate::control::{AgentStatus, MAX_REQUEST, Reply, Request, SlotStatus, Status, WorkerStatus};

/// Most control connections open at once; more are refused.
const MAX_CONNS: usize = 64;

/// A control connection waiting for the outcome of a reload.
pub type Waiter = usize;

/// Why the master could not set up its control socket or pid file.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("rrbalancer is already running with this configuration (pid {pid}, pid file {path})")]
    AlreadyRunning { pid: String, path: PathBuf },
    #[error("refusing {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Dir(#[from] host::DirError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |error| ControlError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Creates the directory that will hold `path`, private to our user (0700), after checking
/// the one that holds it now as `check` did ([`host::check_control_dir`]: the default runtime
/// directory must be ours alone, one named in `[control]` no other user's to change); one we
/// create must then really be ours (someone may have made it first): otherwise another user
/// could plant a link where we write our pid or remove our control socket.
pub fn create_private_dir(path: &Path) -> Result<(), ControlError> {
    let dir = host::parent_dir(path);
    host::check_control_dir(dir)?;
    let existed = dir.symlink_metadata().is_ok();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    if !existed {
        host::check_created_dir(dir)?;
    }
    Ok(())
}

/// The pid file, locked (`flock`) for the master's lifetime: a live master holds the lock, a
/// stale file from a crashed one does not, so it is simply taken over.
///
/// A new master started by an upgrade first holds one at a staged path beside it and renames it
/// into place when it takes over ([`PidFile::install`]); the old master's then no longer sits at
/// the path, which is why each removes the file at exit only if it is still its own.
#[derive(Debug)]
pub struct PidFile {
    place: Place,
    lock: Flock<File>,
}

/// Where a pid file or control socket is, and — while staged by a new master — where it is to
/// be renamed when it takes over.
#[derive(Debug)]
struct Place {
    path: PathBuf,
    target: Option<PathBuf>,
}

impl Place {
    fn at(path: &Path) -> Place {
        Place {
            path: path.to_owned(),
            target: None,
        }
    }

    /// Renames a staged file into place, atomically: the target path always names a live
    /// master (the old one's until now).
    fn install(&mut self) -> Result<(), ControlError> {
        if let Some(target) = self.target.take() {
            fs::rename(&self.path, &target).map_err(io_err(&target))?;
            self.path = target;
        }
        Ok(())
    }
}

/// Where a new master started by an upgrade keeps its pid file or control socket until it takes
/// over: beside `path`, named for its pid (and not ending in `.sock`, so that `status` without
/// `--config` does not list it).
pub fn staged_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.new"));
    PathBuf::from(name)
}

/// The file at `path` is the one with identity `id` (device, inode).
fn same_file(path: &Path, id: Option<(u64, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let now = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    now.is_some() && now == id
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<PidFile, ControlError> {
        create_private_dir(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // Never write our pid through a link someone planted.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => ControlError::Unsafe {
                    path: path.to_owned(),
                    reason: "it is a symbolic link".into(),
                },
                _ => io_err(path)(e),
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(ControlError::AlreadyRunning {
                    pid: pid.trim().to_owned(),
                    path: path.to_owned(),
                });
            }
        };
        lock.set_len(0).map_err(io_err(path))?;
        writeln!(*lock, "{}", getpid()).map_err(io_err(path))?;
        Ok(PidFile {
            place: Place::at(path),
            lock,
        })
    }

    /// A new master's pid file, at [`staged_path`] until [`PidFile::install`].
    pub fn acquire_staged(path: &Path) -> Result<PidFile, ControlError> {
        let mut staged = PidFile::acquire(&staged_path(path, std::process::id()))?;
        staged.place.target = Some(path.to_owned());
        Ok(staged)
    }

    /// Renames a staged pid file into place.
    pub fn install(&mut self) -> Result<(), ControlError> {
        self.place.install()
    }

    fn id(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.lock.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Not if a new master's has replaced it (an upgrade).
        if same_file(&self.place.path, self.id()) {
            let _ = fs::remove_file(&self.place.path);
        }
    }
}

/// One client connection.
#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Answered: close once `output` is written (unless `hold`).
    done: bool,
    /// Keep it open until the master exits (`stop`).
    hold: bool,
    token: Token,
}

/// The listening control socket and its connections.
#[derive(Debug)]
pub struct Control {
    listener: UnixListener,
    place: Place,
    /// The socket file's identity: it is removed at exit only if still ours.
    id: Option<(u64, u64)>,
    conns: Slab<Conn>,
}

impl Control {
    pub fn bind(path: &Path) -> Result<Control, ControlError> {
        use std::os::unix::fs::MetadataExt;
        create_private_dir(path)?;
        // We hold the pid file's lock, so a socket file here is a dead master's.
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(path)(e)),
            _ => {}
        }
        let listener = UnixListener::bind(path).map_err(io_err(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
        let id = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        Ok(Control {
            listener,
            place: Place::at(path),
            id,
            conns: Slab::new(),
        })
    }

    /// A new master's control socket, at [`staged_path`] until [`Control::install`]: clients
    /// keep reaching the old master until then.
    pub fn bind_staged(path: &Path) -> Result<Control, ControlError> {
        let mut staged = Control::bind(&staged_path(path, std::process::id()))?;
        staged.place.target = Some(path.to_owned());
        Ok(staged)
    }

    /// Renames a staged control socket into place: from then on clients reach this master.
    pub fn install(&mut self) -> Result<(), ControlError> {
        self.place.install()
    }

    pub fn listener(&mut self) -> &mut UnixListener {
        &mut self.listener
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if same_file(&self.place.path, self.id) {
            let _ = fs::remove_file(&self.place.path);
        }
    }
}

impl Master {
    /// New control connections: accept, check who it is, watch it.
    pub(super) fn on_control_accept(&mut self) {
        loop {
            let Some(control) = &mut self.control else {
                return;
            };
            let (stream, _) = match control.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    return;
                }
            };
            let allowed = match getsockopt(&stream, PeerCredentials) {
                Ok(cred) => cred.uid() == 0 || Uid::from_raw(cred.uid()) == Uid::effective(),
                Err(_) => false,
            };
            if !allowed || control.conns.len() >= MAX_CONNS {
                warn!("control socket: refused a client (another user, or too many clients)");
                continue; // dropping closes it
            }
            let key = control.conns.vacant_key();
            let mut stream = stream;
            let Some(token) = self.watch_conn(&mut stream, Source::ControlConn(key)) else {
                continue;
            };
            if let Some(control) = self.control.as_mut() {
                control.conns.insert(Conn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    done: false,
                    hold: false,
                    token,
                });
            }
        }
    }

    /// A control connection is readable or writable.
    pub(super) fn on_control_conn(&mut self, key: usize) {
        let Some(conn) = self.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        let mut request = None;
        if !conn.done {
            // Ended: the client gave up.
            let got = client_io::read_available(&mut conn.stream, &mut conn.input, MAX_REQUEST);
            conn.done = got != client_io::Got::Open;
            request = crate::control::parse_request(&conn.input);
            conn.done |= request.is_some();
        }
        if let Some(request) = request {
            match request {
                Ok(request) => self.on_request(key, request),
                Err(e) => self.answer(key, Reply::error(format!("bad request: {e}"))),
            }
        }
        self.write_control(key);
    }

    fn on_request(&mut self, key: usize, request: Request) {
        debug!("control request: {request:?}");
        match request {
            Request::Status => {
                let status = self.status();
                self.answer(key, Reply::status(status));
            }
            Request::Reload { wait } => {
                info!("reload requested on the control socket");
                if let Err(e) = self.request_reload(Some(key), wait) {
                    warn!("reload refused: {e}");
                    self.answer(key, Reply::error(e));
                }
            }
            Request::Scale { workers } => {
                info!("scale to {workers} requested on the control socket");
                let outcome = self.scale_to(workers);
                if let Err(e) = &outcome {
                    warn!("scale refused: {e}");
                }
                self.answer(key, outcome.into());
            }
            Request::Stop => {
                info!("stop requested on the control socket");
                let reply = match self.core.phase {
                    Phase::Running => Reply::ok(format!(
                        "stopping pid {} (kill_timeout {:?})",
                        getpid(),
                        self.config.kill_timeout
                    )),
                    Phase::Stopping { .. } => Reply::ok("already stopping".into()),
                };
                // Held open until we exit: the client reads to EOF to wait for the end.
                self.hold_until_exit(key);
                self.answer(key, reply);
                self.begin_stop();
            }
            Request::Metrics => {
                let text = self.metrics_text();
                self.answer(key, Reply::ok(text));
            }
            Request::Send {
                to,
                retain,
                message,
            } => {
                let reply = match self.send_from_control(&to, retain, &message) {
                    Ok(n) => Reply::ok(format!("sent to {n} receiver(s)")),
                    Err(why) => Reply::error(why),
                };
                self.answer(key, reply);
            }
            Request::Upgrade { binary, wait } => {
                info!("upgrade requested on the control socket");
                self.request_upgrade(Some(key), binary, wait);
            }
        }
    }

    /// Keeps connection `key` open until this master exits (the client reads to EOF to wait for
    /// the end).
    pub(super) fn hold_until_exit(&mut self, key: Waiter) {
        if let Some(conn) = self.control.as_mut().and_then(|c| c.conns.get_mut(key)) {
            conn.hold = true;
        }
    }

    /// Queues `reply` on connection `key` (if it is still there) and writes what it can.
    pub(super) fn answer(&mut self, key: Waiter, mut reply: Reply) {
        reply.pid = Some(getpid().as_raw());
        let Some(conn) = self.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        if let Ok(mut line) = serde_json::to_vec(&reply) {
            line.push(b'\n');
            conn.output.extend_from_slice(&line);
        }
        conn.done = true;
        self.write_control(key);
    }

    pub(super) fn answer_all(&mut self, waiters: Vec<Waiter>, outcome: Result<String, String>) {
        for key in waiters {
            self.answer(key, outcome.clone().into());
        }
    }

    fn write_control(&mut self, key: usize) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        let Some(conn) = control.conns.get_mut(key) else {
            return;
        };
        match client_io::write_pending(&mut conn.stream, &mut conn.output) {
            client_io::Sent::All => {}
            client_io::Sent::Blocked => return,
            client_io::Sent::Broken => conn.hold = false,
        }
        let waiting = self.core.is_waiting(key)
            || self
                .upgrade
                .as_ref()
                .is_some_and(|u| u.waiters.contains(&key));
        if conn.done && !conn.hold && !waiting {
            let mut conn = control.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.sources.remove(conn.token);
        }
    }

    /// What `rrbalancer status` shows.
    fn status(&self) -> Status {
        let now = Instant::now();
        let workers = self
            .core
            .fleet
            .workers
            .iter()
            .filter(|(_, w)| w.place != fleet::Place::Agent)
            .map(|(key, w)| {
                let account = self.ledger.account(w.account);
                let stat = super::memory::cpu_and_resident(&w.pid.to_string());
                WorkerStatus {
                    slot: w.place.slot().unwrap_or_default(),
                    pid: w.pid.as_raw(),
                    state: match (w.state, self.core.fleet.role(key)) {
                        _ if w.stuck => "stuck (killed)",
                        (State::Starting, _) => "starting",
                        (State::Ready, Role::Candidate) => "ready (candidate)",
                        (State::Ready, _) => "ready",
                        (State::Draining, _) => "draining",
                    }
                    .to_owned(),
                    role: match self.core.fleet.role(key) {
                        Role::Current => "current",
                        Role::Candidate => "candidate",
                        Role::Detached => "retiring",
                    }
                    .to_owned(),
                    uptime_secs: w.uptime(now).as_secs_f64(),
                    restarts: self
                        .core
                        .fleet
                        .place(w.place)
                        .map_or(0, |s| s.restart_count),
                    recycled: self.core.fleet.place(w.place).map_or(0, |s| s.recycled),
                    rss_bytes: w.rss.or(stat.map(|(_, rss)| rss)),
                    cpu_seconds: stat.map(|(cpu, _)| cpu),
                    conn_per_sec: account
                        .filter(|_| self.config.mode().master_accepts())
                        .and_then(|a| a.rate().per_second(w.started, now)),
                    handed: account.map_or(0, |a| a.handed()),
                    unacked: account.map_or(0, |a| a.in_flight()),
                    oldest_unacked_secs: account
                        .and_then(|a| a.oldest_unacked())
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                }
            })
            .collect();
        let slots = self
            .core
            .fleet
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.current.is_none())
            .map(|(slot, s)| SlotStatus {
                slot,
                state: if s.given_up {
                    "given up".to_owned()
                } else if !self.core.fleet.may_start_slots() {
                    "waiting for the agent".to_owned()
                } else if let Some(at) = s.start_at {
                    format!("restarting in {:.1?}", at.saturating_duration_since(now))
                } else {
                    "starting".to_owned()
                },
                restarts: s.restart_count,
                last_causes: s.last_causes.iter().cloned().collect(),
            })
            .collect();
        Status {
            pid: getpid().as_raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.config.source.as_ref().map(|p| p.display().to_string()),
            sched_policy: self.config.sched_policy.as_str().to_owned(),
            listeners: self.listen_names.clone(),
            workers_wanted: self.core.fleet.slots.len(),
            stopping: self.core.phase != Phase::Running,
            reload_in_progress: self.core.reload.is_some(),
            recycling: self
                .core
                .recycling
                .as_ref()
                .map(|r| format!("slot {} pid {}: {}", r.slot, r.pid, r.reason)),
            upgrade: self
                .upgrade
                .as_ref()
                .filter(|u| u.in_progress() || u.stage == super::upgrade::Stage::HandedOver)
                .map(super::upgrade::Handover::describe)
                .or_else(|| self.predecessor_status()),
            workers,
            empty_slots: slots,
            agent: self.agent_status(now),
        }
    }

    /// The agent's part of the status.
    fn agent_status(&self, now: Instant) -> Option<AgentStatus> {
        let fleet = &self.core.fleet;
        let place = fleet.agent.as_ref()?;
        let current = place.current.and_then(|k| fleet.workers.get(k));
        let stat = current.and_then(|w| super::memory::cpu_and_resident(&w.pid.to_string()));
        let state = match current.map(|w| w.state) {
            _ if self.core.phase != Phase::Running => "stopping".to_owned(),
            Some(State::Ready) => "ready".to_owned(),
            Some(State::Starting) => "starting".to_owned(),
            Some(State::Draining) => "stopping".to_owned(),
            None if place.given_up => "given up".to_owned(),
            None => match place.start_at {
                Some(at) => format!("restarting in {:.1?}", at.saturating_duration_since(now)),
                None => "starting".to_owned(),
            },
        };
        Some(AgentStatus {
            state,
            pid: current.map(|w| w.pid.as_raw()),
            uptime_secs: current.map(|w| w.uptime(now).as_secs_f64()),
            restarts: place.restart_count,
            rss_bytes: current.and_then(|w| w.rss).or(stat.map(|(_, rss)| rss)),
            cpu_seconds: stat.map(|(cpu, _)| cpu),
            last_causes: place.last_causes.iter().cloned().collect(),
            others: (fleet.workers.iter())
                .filter(|&(k, w)| w.place == fleet::Place::Agent && Some(k) != place.current)
                .map(|(_, w)| w.pid.as_raw())
                .collect(),
        })
    }
}
