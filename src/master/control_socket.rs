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

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;
use mio::net::{UnixListener, UnixStream};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{Uid, getpid};
use slab::Slab;

use super::Master;
use super::client_io;
use super::control_files::{
    ControlError, Staged, create_private_dir, io_err, same_file, staged_path,
};
use super::sources::Source;
use crate::engine::client_limits::{
    self, CONTROL_DISCARD_BYTES, CONTROL_DISCARD_TIME, CONTROL_REQUEST_TIME, CONTROL_WRITE_TIME,
    Refusals,
};
use crate::engine::ids::Waiter;
use crate::engine::metrics::TurnedAway;
use crate::wire::control::{BadRequest, MAX_REQUEST, Reply, Request};

/// Most control connections open at once. A newcomer beyond this takes the place of the client
/// heard from longest ago that has not sent a whole request; only when every client waits for
/// an outcome it asked for (a reload, a stop) is the newcomer refused.
const MAX_CONNS: usize = 64;

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
            Request::Status => self.answer(key, Reply::status(self.status())),
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
            Request::Stop { now } => {
                info!(
                    "stop requested on the control socket{}",
                    if now { " (--now)" } else { "" }
                );
                let reply = self.stop_requested(now);
                // Held open until we exit: the client reads to EOF to wait for the end.
                self.hold_until_exit(key);
                self.answer(key, reply);
            }
            Request::Metrics => self.answer(key, Reply::ok(self.metrics_text())),
            Request::Send {
                to,
                retain,
                message,
            } => {
                let reply = self.send_reply(&to, retain, &message);
                self.answer(key, reply);
            }
            Request::Logs {
                slot,
                agent,
                lines,
                after,
            } => self.answer(key, self.logs_reply(slot, agent, lines, after)),
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
}
