//! The monitoring listener (`[metrics] listen`): `/metrics` (Prometheus text), `/healthz` and
//! `/readyz`, the status page at `/` and what it reads, `/status.json` (the projection `status
//! --json` prints), answered by the master's own event loop — no thread, nothing on the hand-off path.
//! A minimal HTTP/1.1 server: one request per connection, answered and closed.
//!
//! Every connection is bounded, so that no client — closing mid-request, sending what is not
//! HTTP, or sending its head a byte at a time — keeps a file descriptor for long: a client from
//! outside `[metrics] allow` is closed at once; the request is read into a bounded buffer and
//! judged as it comes ([`judge`]: input that cannot begin a `GET`/`HEAD` request line is
//! answered 400 at once, without waiting for more); a client that closes before its request is
//! whole is closed; one whose head is not whole within [`METRICS_HEADER_TIME`] is answered 408;
//! after the answer the master shuts its side for writing and reads (and drops) what still
//! comes until the client closes, for [`METRICS_LINGER_TIME`] at most (closing with unread
//! input would reset the connection and could destroy the answer); at most [`MAX_CONNS`] are
//! open (a newcomer closes the oldest).

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Token;
use mio::net::{TcpListener, TcpStream};
use slab::Slab;

use super::Master;
use super::client_io;
use super::sources::Source;
use crate::config::MetricsConfig;
use crate::engine::client_limits::{
    self, METRICS_HEADER_TIME, METRICS_LINGER_BYTES, METRICS_LINGER_TIME, METRICS_WRITE_TIME,
    Refusals,
};
use crate::engine::metrics::TurnedAway;

/// Longest request read; anything longer is answered 400.
const MAX_REQUEST: usize = 8 * 1024;

/// Connections open at once; a new one beyond this closes the oldest.
const MAX_CONNS: usize = 32;

/// A non-blocking listener on `addr` that a new master can bind beside an old one during an
/// upgrade (`SO_REUSEPORT`), and the address it got.
pub(super) fn bind_beside(addr: SocketAddr, backlog: i32) -> io::Result<(TcpListener, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    let std: std::net::TcpListener = socket.into();
    let local = std.local_addr()?;
    Ok((TcpListener::from_std(std), local))
}

/// [`bind_beside`], or the socket an upgrade's old master passed for `addr` (see
/// [`Predecessor::check_listener`](super::Predecessor::check_listener)), made non-blocking.
pub(super) fn bind_or_take(
    addr: SocketAddr,
    backlog: i32,
    passed: Option<OwnedFd>,
) -> io::Result<(TcpListener, SocketAddr)> {
    let Some(fd) = passed else {
        return bind_beside(addr, backlog);
    };
    let std = std::net::TcpListener::from(fd);
    std.set_nonblocking(true)?;
    let local = std.local_addr()?;
    Ok((TcpListener::from_std(std), local))
}

/// What `/healthz` and `/readyz` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// At least one worker is ready.
    pub healthy: bool,
    /// Every initial worker was ready once, one still is, and the master is neither stopping
    /// nor draining before a stop.
    pub ready: bool,
}

/// The health rules, from what the master knows.
pub fn health(ready_workers: usize, started: bool, stopping: bool) -> Health {
    Health {
        healthy: ready_workers > 0,
        ready: started && ready_workers > 0 && !stopping,
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its request head is not whole yet.
    Reading,
    /// Answered: the answer is being written.
    Writing,
    /// The answer is out and our side shut for writing: what still comes is read and dropped
    /// (`discarded` bytes so far) until the client closes.
    Lingering { discarded: usize },
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    stage: Stage,
    token: Token,
    since: Instant,
    /// When it is closed (or, still reading, answered 408), whatever it is doing.
    deadline: Instant,
}

/// The listener and its connections.
#[derive(Debug)]
pub struct Monitor {
    /// `None` once an upgrade's new master answers for this host ([`Monitor::close_listener`]).
    listener: Option<TcpListener>,
    pub local: SocketAddr,
    config: MetricsConfig,
    conns: Slab<Conn>,
    /// Clients refused for their address (`[metrics] allow`), for the log.
    refused: Refusals,
    /// The last `/status.json` and when it was made, shared by the clients of the next moment.
    pub(super) status_json: Option<(Instant, String)>,
    /// Passed by an upgrade's old master, which answers on it until it hands over: not
    /// watched before ([`Master::watch_checks`]).
    pub(super) held: bool,
}

impl Monitor {
    /// Binds `config.listen` with `SO_REUSEPORT` as well: during an in-place upgrade the new
    /// master binds it while the old one still serves it (the kernel lets only the same user
    /// share it).
    /// `passed`: the socket an upgrade's old master serves it on, taken instead.
    pub fn bind(config: MetricsConfig, passed: Option<OwnedFd>) -> io::Result<Monitor> {
        let held = passed.is_some();
        let (listener, local) = bind_or_take(config.listen, 64, passed)?;
        Ok(Monitor {
            listener: Some(listener),
            local,
            config,
            conns: Slab::new(),
            refused: Refusals::default(),
            status_json: None,
            held,
        })
    }

    pub fn listener(&mut self) -> Option<&mut TcpListener> {
        self.listener.as_mut()
    }

    /// The listener while it is open.
    pub fn listening(&self) -> Option<&TcpListener> {
        self.listener.as_ref()
    }

    /// Stops listening (the connections open are still answered): the socket is closed, so
    /// that the kernel gives new clients to the other sockets bound beside it.
    pub fn close_listener(&mut self, registry: &mio::Registry) {
        if let Some(mut listener) = self.listener.take() {
            let _ = registry.deregister(&mut listener);
        }
    }

    /// Takes a reloaded `[metrics]` with the same `listen`: who may connect from now on.
    pub fn reconfigure(&mut self, config: MetricsConfig) {
        if config.allow != self.config.allow {
            info!(
                "reload: metrics clients allowed from now on: {}",
                config.allow.as_ref().map_or("any".to_owned(), |nets| {
                    let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                    nets.join(", ")
                })
            );
        }
        self.config = config;
    }
}

impl Master {
    pub(super) fn on_monitor_accept(&mut self) {
        loop {
            let Some(monitor) = self.ops.monitor.as_mut() else {
                return;
            };
            let Some(listener) = monitor.listener.as_mut() else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("metrics listener: accept: {e}");
                    return;
                }
            };
            let now = Instant::now();
            if !monitor.config.allows(peer.ip()) {
                self.ops.counters.turn_away(TurnedAway::MetricsNotAllowed);
                if monitor.refused.note(now) {
                    warn!(
                        "metrics listener: refused a client from {}: not in metrics.allow \
                         (further refusals are counted until {:?} pass without one)",
                        peer.ip(),
                        client_limits::QUIET
                    );
                }
                continue; // dropping closes it
            }
            if monitor.conns.len() >= MAX_CONNS {
                let oldest = make_room(monitor.conns.iter().map(|(k, c)| (k, c.stage, c.since)));
                if let Some(key) = oldest {
                    self.ops.counters.turn_away(TurnedAway::MetricsCrowded);
                    self.close_monitor_conn(key);
                }
            }
            let Some(monitor) = self.ops.monitor.as_mut() else {
                return;
            };
            let key = monitor.conns.vacant_key();
            let Some(token) = self.watch_conn(&mut stream, Source::MonitorConn(key)) else {
                continue;
            };
            if let Some(monitor) = self.ops.monitor.as_mut() {
                monitor.conns.insert(Conn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    stage: Stage::Reading,
                    token,
                    since: now,
                    deadline: now + METRICS_HEADER_TIME,
                });
            }
            // What it sent before we accepted it is judged now, not after the rest of a burst
            // of newcomers is accepted: a client gone or answered frees its place at once.
            self.on_monitor_conn(key);
        }
    }

    pub(super) fn on_monitor_conn(&mut self, key: usize) {
        let Some(conn) = self.ops.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) else {
            return;
        };
        if conn.stage == Stage::Reading {
            // Ended: the request may still be whole (the client shut its side after it).
            let got = client_io::read_available(&mut conn.stream, &mut conn.input, MAX_REQUEST);
            match (judge(&conn.input), got) {
                (_, client_io::Got::Broken) | (Head::Incomplete, client_io::Got::Ended) => {
                    return self.close_monitor_conn(key);
                }
                (Head::Incomplete, client_io::Got::Open) => {}
                (Head::Bad, _) => {
                    self.ops.counters.turn_away(TurnedAway::MetricsBadRequest);
                    debug!("metrics listener: not an HTTP GET or HEAD request: answered 400");
                    let bad = ("400 Bad Request", "text/plain", "bad request\n".to_owned());
                    self.respond(key, bad);
                }
                (Head::Get(target), _) => {
                    let answer = self.route(&target);
                    self.respond(key, answer);
                }
            }
        }
        self.flush_monitor_conn(key);
    }

    /// Queues the answer on connection `key`; [`Master::flush_monitor_conn`] writes it.
    fn respond(&mut self, key: usize, (status, content_type, body): (&str, &str, String)) {
        let Some(conn) = self.ops.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) else {
            return;
        };
        conn.stage = Stage::Writing;
        conn.deadline = Instant::now() + METRICS_WRITE_TIME;
        conn.output = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }

    /// Writes what the answer still has to go; once it is out, shuts our side and reads what
    /// still comes until the client closes (or a bound is reached), then closes.
    fn flush_monitor_conn(&mut self, key: usize) {
        let Some(conn) = self.ops.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) else {
            return;
        };
        if conn.stage == Stage::Writing {
            match client_io::write_pending(&mut conn.stream, &mut conn.output) {
                client_io::Sent::Blocked => return,
                client_io::Sent::Broken => return self.close_monitor_conn(key),
                client_io::Sent::All => {
                    if conn.stream.shutdown(std::net::Shutdown::Write).is_err() {
                        return self.close_monitor_conn(key);
                    }
                    conn.stage = Stage::Lingering { discarded: 0 };
                    conn.deadline = Instant::now() + METRICS_LINGER_TIME;
                }
            }
        }
        if let Stage::Lingering { discarded } = conn.stage {
            let budget = METRICS_LINGER_BYTES.saturating_sub(discarded);
            let (got, n) = client_io::discard_available(&mut conn.stream, budget);
            conn.stage = Stage::Lingering {
                discarded: discarded + n,
            };
            if got != client_io::Got::Open || n >= budget {
                self.close_monitor_conn(key);
            }
        }
    }

    fn close_monitor_conn(&mut self, key: usize) {
        let Some(monitor) = self.ops.monitor.as_mut() else {
            return;
        };
        if let Some(mut conn) = monitor.conns.try_remove(key) {
            let _ = self.io.poll.registry().deregister(&mut conn.stream);
            self.io.sources.remove(conn.token);
        }
    }

    /// The nearest moment a metrics client is due to be answered 408 or closed, or an episode
    /// of refusals over.
    pub(super) fn monitor_deadline(&self) -> Option<Instant> {
        let monitor = self.ops.monitor.as_ref()?;
        (monitor.conns.iter())
            .map(|(_, c)| c.deadline)
            .chain(monitor.refused.deadline())
            .min()
    }

    /// Answers 408 to the clients whose request head did not come in time, closes those whose
    /// time to read the answer or to close is up, and tells of refusals that are over.
    pub(super) fn monitor_turn(&mut self, now: Instant) {
        let Some(monitor) = self.ops.monitor.as_mut() else {
            return;
        };
        if let Some(ended) = monitor.refused.ended(now) {
            info!(
                "metrics listener: {} client(s) from outside metrics.allow refused over {:.1?}; \
                 none since {:?}",
                ended.count,
                ended.lasted,
                client_limits::QUIET
            );
        }
        let due: Vec<(usize, Stage)> = (monitor.conns.iter())
            .filter(|(_, c)| c.deadline <= now)
            .map(|(key, c)| (key, c.stage))
            .collect();
        for (key, stage) in due {
            match stage {
                Stage::Reading => {
                    self.ops.counters.turn_away(TurnedAway::MetricsTimeout);
                    debug!(
                        "metrics listener: no whole request head within {METRICS_HEADER_TIME:?}: \
                         answered 408"
                    );
                    let late = (
                        "408 Request Timeout",
                        "text/plain",
                        "request head not received in time\n".to_owned(),
                    );
                    self.respond(key, late);
                    self.flush_monitor_conn(key);
                }
                Stage::Writing => {
                    self.ops.counters.turn_away(TurnedAway::MetricsTimeout);
                    debug!("metrics listener: a client did not read its answer in time: closed");
                    self.close_monitor_conn(key);
                }
                Stage::Lingering { .. } => self.close_monitor_conn(key),
            }
        }
    }
}

/// Which connection gives way to a newcomer when every place is taken: one already answered
/// (lingering until the client closes) before one still reading its request, before one whose
/// answer is being written; the oldest first within each.
fn make_room<K>(conns: impl IntoIterator<Item = (K, Stage, Instant)>) -> Option<K> {
    let rank = |stage: Stage| match stage {
        Stage::Lingering { .. } => 0,
        Stage::Reading => 1,
        Stage::Writing => 2,
    };
    (conns.into_iter())
        .min_by_key(|&(_, stage, since)| (rank(stage), since))
        .map(|(key, _, _)| key)
}

/// What a client has sent so far, as a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Head {
    /// It may still become a request: wait for more (or for the header deadline).
    Incomplete,
    /// A whole `GET`/`HEAD` request head for this target (without the query).
    Get(String),
    /// Not HTTP, another method, or too long: answered 400 without waiting for more.
    Bad,
}

/// Judges what a client has sent so far, as soon as it can: bytes that cannot begin a
/// `GET`/`HEAD` request line are [`Head::Bad`] at once; a whole request line that is not one is
/// too; a request line is [`Head::Get`] once the head's blank line has come.
fn judge(input: &[u8]) -> Head {
    if input.len() > MAX_REQUEST {
        return Head::Bad;
    }
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        return if may_begin_request(input) {
            Head::Incomplete
        } else {
            Head::Bad
        };
    };
    match request_target(&input[..end]) {
        None => Head::Bad,
        Some(_) if !has_head_end(input) => Head::Incomplete,
        Some(target) => Head::Get(target),
    }
}

/// `input` (no line end yet) can begin `GET ` or `HEAD ` followed by printable text.
fn may_begin_request(input: &[u8]) -> bool {
    ["GET ", "HEAD "].iter().any(|method| {
        let method = method.as_bytes();
        let n = input.len().min(method.len());
        input[..n] == method[..n]
            && input[n..]
                .iter()
                .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\r')
    })
}

/// The head's blank line has come (`\r\n\r\n`, or a lenient `\n\n`).
fn has_head_end(input: &[u8]) -> bool {
    input.windows(4).any(|w| w == b"\r\n\r\n") || input.windows(2).any(|w| w == b"\n\n")
}

/// The target of a request line `GET /path?query HTTP/1.1` (without the query), if it is one.
fn request_target(head: &[u8]) -> Option<String> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    if !matches!(method, "GET" | "HEAD") || !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    Some(target.split('?').next().unwrap_or(target).to_owned())
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
