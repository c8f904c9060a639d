//! The control socket: how `rrbalancer status|reload|scale|stop` reach a running master, and the
//! pid file that says one runs.
//!
//! A Unix stream socket, mode 0600 in a 0700 directory, accepting only clients of the same uid
//! or root (`SO_PEERCRED`). One request per connection, one JSON object per line each way (see
//! [`crate::wire::control`] for the shapes). A `reload` is answered when it ends; a `stop` is answered
//! at once and the connection then stays open until the master exits, so the client can wait
//! for the end by reading to EOF.
//!
//! Its places are bounded, and no client keeps one for nothing ([`client_limits`]): a client
//! has [`CONTROL_REQUEST_TIME`] to send its request, and when all [`MAX_CONNS`] places are
//! taken a newcomer takes that of the client heard from longest ago that has not sent a whole
//! request — so idle clients, however many, cannot lock the operator out. Whoever is turned
//! away is told why in a reply line (`too many control clients`, `request too long`), and the
//! log tells of each crowding once, with a count when it is over.

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
use super::client_limits::{
    self, CONTROL_DISCARD_BYTES, CONTROL_DISCARD_TIME, CONTROL_REQUEST_TIME, CONTROL_WRITE_TIME,
    Refusals,
};
use super::fleet::State;
use super::ids::{self, Role, Waiter};
use super::metrics::TurnedAway;
use super::projection;
use super::sources::Source;
use super::{Master, Phase};
use crate::config::host;
use crate::wire::control::{
    AgentStatus, BadRequest, MAX_REQUEST, Reply, Request, SlotStatus, Status, WorkerStatus,
};

/// Most control connections open at once. A newcomer beyond this takes the place of the client
/// heard from longest ago that has not sent a whole request; only when every client waits for
/// an outcome it asked for (a reload, a stop) is the newcomer refused.
const MAX_CONNS: usize = 64;

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
    place: Staged,
    lock: Flock<File>,
}

/// Where a pid file or control socket is, and — while staged by a new master — where it is to
/// be renamed when it takes over.
#[derive(Debug)]
struct Staged {
    path: PathBuf,
    target: Option<PathBuf>,
}

impl Staged {
    fn at(path: &Path) -> Staged {
        Staged {
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
            place: Staged::at(path),
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

/// Where a client connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its request is not whole yet.
    Reading,
    /// Answered, or waiting for the outcome it asked for: closed once `output` is written
    /// (unless `hold`, or waited on).
    Answered,
    /// Its request was too long: answered, its side shut for writing once the answer is out,
    /// and what it still sends read and dropped (`discarded` bytes so far) until it closes or
    /// [`CONTROL_DISCARD_BYTES`] or [`CONTROL_DISCARD_TIME`] is reached.
    Discarding { discarded: usize },
}

/// One client connection.
#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    stage: Stage,
    /// Keep it open until the master exits (`stop`).
    hold: bool,
    token: Token,
    /// When it last sent something: when places run out, the client heard from longest ago
    /// gives way first.
    heard: Instant,
    /// When it is closed, whatever it is doing: `None` while it waits for an outcome it asked
    /// for (with its answer written so far).
    deadline: Option<Instant>,
    /// Its side is shut for writing (a discarded request's answer is out).
    shut: bool,
}

impl Conn {
    /// It may give way to a newcomer (it has not sent a whole request): since when it has been
    /// silent.
    fn may_give_way(&self) -> Option<Instant> {
        (self.stage != Stage::Answered).then_some(self.heard)
    }
}

/// The listening control socket and its connections.
#[derive(Debug)]
pub struct Control {
    listener: UnixListener,
    place: Staged,
    /// The socket file's identity: it is removed at exit only if still ours.
    id: Option<(u64, u64)>,
    conns: Slab<Conn>,
    /// Clients turned away for want of room (refused, or made to give way), for the log.
    crowded: Refusals,
    /// Clients of another user refused, for the log.
    strangers: Refusals,
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
            place: Staged::at(path),
            id,
            conns: Slab::new(),
            crowded: Refusals::default(),
            strangers: Refusals::default(),
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

/// A reply as sent: one JSON line, with our pid.
fn reply_line(mut reply: Reply) -> Vec<u8> {
    reply.pid = Some(getpid().as_raw());
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Tells a client it is turned away and why, as far as its socket takes it now (a short line
/// always fits an unread socket's buffer), before it is closed. What it sent stays unread: its
/// own reads still get this line first.
fn turn_away(stream: &mut UnixStream, why: &str) {
    let mut line = reply_line(Reply::error(why.to_owned()));
    let _ = client_io::write_pending(stream, &mut line);
}

impl Master {
    /// New control connections: accept, check who it is, make room if need be, watch it.
    pub(super) fn on_control_accept(&mut self) {
        loop {
            let Some(control) = &mut self.ops.control else {
                return;
            };
            let (mut stream, _) = match control.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    return;
                }
            };
            let now = Instant::now();
            let uid = getsockopt(&stream, PeerCredentials).map(|cred| cred.uid());
            if !uid.is_ok_and(|uid| uid == 0 || Uid::from_raw(uid) == Uid::effective()) {
                self.ops.counters.turn_away(TurnedAway::ControlOtherUser);
                if control.strangers.note(now) {
                    warn!(
                        "control socket: refused a client of another user ({}): only uid {} and \
                         root may use it (further refusals are counted until {:?} pass without \
                         one)",
                        uid.map_or_else(|e| format!("uid unknown: {e}"), |u| format!("uid {u}")),
                        Uid::effective(),
                        client_limits::QUIET
                    );
                }
                turn_away(
                    &mut stream,
                    "refused: only the master's own user (or root) may use its control socket",
                );
                continue;
            }
            if control.conns.len() >= MAX_CONNS {
                let idle = client_limits::give_way(
                    control.conns.iter().map(|(k, c)| (k, c.may_give_way())),
                );
                self.ops.counters.turn_away(TurnedAway::ControlCrowded);
                if control.crowded.note(now) {
                    warn!(
                        "control socket: too many control clients ({MAX_CONNS} connected): each \
                         newcomer takes the place of the client silent longest that has not sent \
                         a whole request, or is refused if every one waits for an answer \
                         (counted until {:?} pass without one)",
                        client_limits::QUIET
                    );
                }
                match idle {
                    Some(key) => {
                        if let Some(conn) = control.conns.get_mut(key) {
                            turn_away(
                                &mut conn.stream,
                                &format!(
                                    "too many control clients ({MAX_CONNS}): this one had sent \
                                     no whole request and was closed to make room"
                                ),
                            );
                        }
                        self.close_control(key);
                    }
                    None => {
                        turn_away(
                            &mut stream,
                            &format!(
                                "too many control clients: all {MAX_CONNS} wait for a reload, \
                                 stop or upgrade to end; try again later"
                            ),
                        );
                        continue;
                    }
                }
            }
            let Some(control) = self.ops.control.as_mut() else {
                return;
            };
            let key = control.conns.vacant_key();
            let Some(token) = self.watch_conn(&mut stream, Source::ControlConn(key)) else {
                continue;
            };
            if let Some(control) = self.ops.control.as_mut() {
                control.conns.insert(Conn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    stage: Stage::Reading,
                    hold: false,
                    token,
                    heard: now,
                    deadline: Some(now + CONTROL_REQUEST_TIME),
                    shut: false,
                });
            }
        }
    }

    /// A control connection is readable or writable.
    pub(super) fn on_control_conn(&mut self, key: usize) {
        let now = Instant::now();
        let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        let mut request = None;
        if conn.stage == Stage::Reading {
            let before = conn.input.len();
            let got = client_io::read_available(&mut conn.stream, &mut conn.input, MAX_REQUEST);
            if conn.input.len() > before {
                conn.heard = now;
            }
            request =
                crate::wire::control::parse_request(&conn.input, got == client_io::Got::Ended);
            match (&request, got) {
                // Gone, or ended with nothing asked.
                (_, client_io::Got::Broken) | (None, client_io::Got::Ended) => {
                    return self.close_control(key);
                }
                (None, client_io::Got::Open) => {}
                (Some(_), _) => {
                    conn.stage = Stage::Answered;
                    conn.deadline = None;
                }
            }
        }
        match request {
            Some(Ok(request)) => self.on_request(key, request),
            Some(Err(BadRequest::TooLong)) => self.on_request_too_long(key, now),
            Some(Err(e)) => self.answer(key, Reply::error(format!("bad request: {e}"))),
            None => {}
        }
        self.discard_control_input(key);
        self.write_control(key);
    }

    /// A request too long to be one: answered why (in full before the master closes: see
    /// [`Stage::Discarding`]), logged once.
    fn on_request_too_long(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        let discarded = std::mem::take(&mut conn.input).len();
        conn.stage = Stage::Discarding { discarded };
        conn.deadline = Some(now + CONTROL_DISCARD_TIME);
        self.ops.counters.turn_away(TurnedAway::ControlTooLong);
        warn!(
            "control socket: a request longer than {MAX_REQUEST} bytes: answered \
             \"request too long\"; the rest is read and dropped (up to {} MiB, {:?}) so that the \
             client reads the answer",
            CONTROL_DISCARD_BYTES >> 20,
            CONTROL_DISCARD_TIME
        );
        self.answer(
            key,
            Reply::error(format!("bad request: {}", BadRequest::TooLong)),
        );
    }

    /// Reads and drops what a client whose request was too long still sends; closes it once it
    /// has closed its side, or a bound is reached.
    fn discard_control_input(&mut self, key: usize) {
        let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        let Stage::Discarding { discarded } = conn.stage else {
            return;
        };
        let budget = CONTROL_DISCARD_BYTES.saturating_sub(discarded);
        let (got, n) = client_io::discard_available(&mut conn.stream, budget);
        conn.stage = Stage::Discarding {
            discarded: discarded + n,
        };
        if got != client_io::Got::Open || n >= budget {
            // Closed with its input unread past the bound: its write fails, but the answer
            // waits in its socket.
            if n >= budget {
                debug!("control socket: a too-long request passed {CONTROL_DISCARD_BYTES} bytes");
            }
            // Whatever of the answer could go has gone (it fits in the socket's buffer).
            let _ = client_io::write_pending(&mut conn.stream, &mut conn.output);
            self.close_control(key);
        }
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
        if let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) {
            conn.hold = true;
        }
    }

    /// Queues `reply` on connection `key` (if it is still there) and writes what it can.
    pub(super) fn answer(&mut self, key: Waiter, reply: Reply) {
        let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) else {
            return;
        };
        conn.output.extend_from_slice(&reply_line(reply));
        if conn.stage == Stage::Reading {
            conn.stage = Stage::Answered;
            conn.deadline = None;
        }
        self.write_control(key);
    }

    pub(super) fn answer_all(&mut self, waiters: Vec<Waiter>, outcome: Result<String, String>) {
        for key in waiters {
            self.answer(key, outcome.clone().into());
        }
    }

    fn write_control(&mut self, key: usize) {
        let Some(control) = self.ops.control.as_mut() else {
            return;
        };
        let Some(conn) = control.conns.get_mut(key) else {
            return;
        };
        let broken = match client_io::write_pending(&mut conn.stream, &mut conn.output) {
            client_io::Sent::All => false,
            client_io::Sent::Blocked => {
                // Owed nothing more once its answer is out: it has that long to read it.
                if conn.stage != Stage::Reading && conn.deadline.is_none() {
                    conn.deadline = Some(Instant::now() + CONTROL_WRITE_TIME);
                }
                return;
            }
            client_io::Sent::Broken => {
                conn.hold = false;
                true
            }
        };
        match conn.stage {
            Stage::Reading => return,
            Stage::Discarding { .. } if !broken => {
                // The answer is out: the client reads it, then EOF.
                if !conn.shut {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                    conn.shut = true;
                }
                return;
            }
            Stage::Discarding { .. } | Stage::Answered => {}
        }
        if !conn.hold && !self.is_control_waiter(key) {
            self.close_control(key);
        } else if let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key)) {
            conn.deadline = None;
        }
    }

    /// Connection `key` waits for the outcome of a reload or an upgrade it asked for.
    fn is_control_waiter(&self, key: usize) -> bool {
        self.core.is_waiting(key)
            || self
                .upgrade
                .handover
                .as_ref()
                .is_some_and(|u| u.waiters.contains(&key))
    }

    fn close_control(&mut self, key: usize) {
        let Some(control) = self.ops.control.as_mut() else {
            return;
        };
        if let Some(mut conn) = control.conns.try_remove(key) {
            let _ = self.io.poll.registry().deregister(&mut conn.stream);
            self.io.sources.remove(conn.token);
        }
    }

    /// The nearest moment a control client is due to be closed, or a crowding over.
    pub(super) fn control_deadline(&self) -> Option<Instant> {
        let control = self.ops.control.as_ref()?;
        (control.conns.iter())
            .filter_map(|(_, c)| c.deadline)
            .chain(control.crowded.deadline())
            .chain(control.strangers.deadline())
            .min()
    }

    /// Closes the control clients whose time is up (a request not sent whole in time is
    /// answered why), and tells of crowdings that are over.
    pub(super) fn control_turn(&mut self, now: Instant) {
        let Some(control) = self.ops.control.as_mut() else {
            return;
        };
        for (refusals, what) in [
            (&mut control.crowded, "turned away for want of room"),
            (&mut control.strangers, "of other users refused"),
        ] {
            if let Some(ended) = refusals.ended(now) {
                info!(
                    "control socket: {} client(s) {what} over {:.1?}; none since {:?}",
                    ended.count,
                    ended.lasted,
                    client_limits::QUIET
                );
            }
        }
        let due: Vec<(usize, Stage)> = (control.conns.iter())
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(key, c)| (key, c.stage))
            .collect();
        for (key, stage) in due {
            match stage {
                Stage::Reading => {
                    self.ops.counters.turn_away(TurnedAway::ControlTimeout);
                    debug!(
                        "control socket: no whole request within {CONTROL_REQUEST_TIME:?}: closed"
                    );
                    let conn = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key));
                    if let Some(conn) = conn {
                        turn_away(
                            &mut conn.stream,
                            &format!(
                                "no whole request within {CONTROL_REQUEST_TIME:?} (one JSON \
                                 object on one line): closed"
                            ),
                        );
                    }
                }
                Stage::Answered => {
                    self.ops.counters.turn_away(TurnedAway::ControlTimeout);
                    debug!("control socket: a client did not read its answer in time: closed");
                }
                Stage::Discarding { .. } => {
                    debug!(
                        "control socket: a too-long request still coming after \
                         {CONTROL_DISCARD_TIME:?}: closed"
                    );
                }
            }
            if stage != Stage::Answered || !self.is_control_waiter(key) {
                self.close_control(key);
            } else if let Some(conn) = self.ops.control.as_mut().and_then(|c| c.conns.get_mut(key))
            {
                // Still owed an outcome: kept, with no deadline until its answer is written.
                conn.deadline = None;
            }
        }
    }

    /// What `rrbalancer status` shows.
    fn status(&self) -> Status {
        let now = Instant::now();
        let stopping = self.core.phase != Phase::Running;
        let workers = self
            .core
            .fleet
            .workers
            .iter()
            .filter(|(_, w)| w.place != ids::Place::Agent)
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
                state: projection::of(&self.core.fleet, ids::Place::Slot(slot), stopping)
                    .map_or_else(String::new, |state| state.describe(now)),
                restarts: s.restart_count,
                last_causes: s.last_causes.iter().cloned().collect(),
            })
            .collect();
        Status {
            pid: getpid().as_raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config: self.config.source.as_ref().map(|p| p.display().to_string()),
            sched_policy: self.config.sched_policy.as_str().to_owned(),
            listeners: self.accept.listen_names.clone(),
            workers_wanted: self.core.fleet.slots.len(),
            stopping,
            reload_in_progress: self.core.reload.is_some(),
            recycling: self
                .core
                .recycling
                .as_ref()
                .map(|r| format!("slot {} pid {}: {}", r.slot, r.pid, r.reason)),
            upgrade: self
                .upgrade
                .handover
                .as_ref()
                .filter(|u| u.in_progress() || u.stage == super::upgrade::Stage::HandedOver)
                .map(super::upgrade::Handover::describe)
                .or_else(|| self.predecessor_status()),
            workers,
            empty_slots: slots,
            agent: self.agent_status(stopping, now),
        }
    }

    /// The agent's part of the status (`stopping`: the master is).
    fn agent_status(&self, stopping: bool, now: Instant) -> Option<AgentStatus> {
        let fleet = &self.core.fleet;
        let place = fleet.agent.as_ref()?;
        let current = place.current.and_then(|k| fleet.workers.get(k));
        let stat = current.and_then(|w| super::memory::cpu_and_resident(&w.pid.to_string()));
        let state = projection::of(fleet, ids::Place::Agent, stopping)
            .map_or_else(String::new, |s| s.describe(now));
        Some(AgentStatus {
            state,
            pid: current.map(|w| w.pid.as_raw()),
            uptime_secs: current.map(|w| w.uptime(now).as_secs_f64()),
            restarts: place.restart_count,
            rss_bytes: current.and_then(|w| w.rss).or(stat.map(|(_, rss)| rss)),
            cpu_seconds: stat.map(|(cpu, _)| cpu),
            last_causes: place.last_causes.iter().cloned().collect(),
            others: (fleet.workers.iter())
                .filter(|&(k, w)| w.place == ids::Place::Agent && Some(k) != place.current)
                .map(|(_, w)| w.pid.as_raw())
                .collect(),
        })
    }
}
