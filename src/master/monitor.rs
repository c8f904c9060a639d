//! The monitoring listener (`[metrics] listen`): `/metrics` (Prometheus text), `/healthz` and
//! `/readyz`, answered by the master's own event loop — no thread, nothing on the hand-off path.
//! A minimal HTTP/1.1 server: one request per connection, answered and closed; requests are
//! read into a bounded buffer, connections are bounded in number (the oldest idle one goes).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, warn};
use mio::Token;
use mio::net::{TcpListener, TcpStream};
use slab::Slab;

use super::client_io;
use super::fleet::{Place, Role, Slot, State, Worker};
use super::memory;
use super::metrics::{self, Snapshot};
use super::sources::Source;
use super::{Master, Phase};

/// Longest request read; anything longer is answered 400.
const MAX_REQUEST: usize = 8 * 1024;
/// Connections open at once; a new one beyond this closes the oldest.
const MAX_CONNS: usize = 32;

/// What `/healthz` and `/readyz` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// At least one worker is ready.
    pub healthy: bool,
    /// Every initial worker was ready once, one still is, and the master is not stopping.
    pub ready: bool,
}

/// The health rules, from what the master knows.
pub fn health(ready_workers: usize, started: bool, stopping: bool) -> Health {
    Health {
        healthy: ready_workers > 0,
        ready: started && ready_workers > 0 && !stopping,
    }
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    answered: bool,
    token: Token,
    since: Instant,
}

/// The listener and its connections.
#[derive(Debug)]
pub struct Monitor {
    listener: TcpListener,
    pub local: SocketAddr,
    conns: Slab<Conn>,
}

impl Monitor {
    /// Binds `addr` with `SO_REUSEPORT` as well: during an in-place upgrade the new master binds
    /// it while the old one still serves it (the kernel lets only the same user share it).
    pub fn bind(addr: SocketAddr) -> io::Result<Monitor> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(64)?;
        socket.set_nonblocking(true)?;
        let std: std::net::TcpListener = socket.into();
        let local = std.local_addr()?;
        Ok(Monitor {
            listener: TcpListener::from_std(std),
            local,
            conns: Slab::new(),
        })
    }

    pub fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }
}

impl Master {
    pub(super) fn on_monitor_accept(&mut self) {
        loop {
            let Some(monitor) = self.monitor.as_mut() else {
                return;
            };
            let (stream, _) = match monitor.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("metrics listener: accept: {e}");
                    return;
                }
            };
            if monitor.conns.len() >= MAX_CONNS {
                let oldest = monitor
                    .conns
                    .iter()
                    .min_by_key(|(_, c)| c.since)
                    .map(|(k, _)| k);
                if let Some(key) = oldest {
                    self.close_monitor_conn(key);
                }
            }
            let Some(monitor) = self.monitor.as_mut() else {
                return;
            };
            let key = monitor.conns.vacant_key();
            let mut stream = stream;
            let Some(token) = self.watch_conn(&mut stream, Source::MonitorConn(key)) else {
                continue;
            };
            if let Some(monitor) = self.monitor.as_mut() {
                monitor.conns.insert(Conn {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    answered: false,
                    token,
                    since: Instant::now(),
                });
            }
        }
    }

    pub(super) fn on_monitor_conn(&mut self, key: usize) {
        let mut request = None;
        {
            let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) else {
                return;
            };
            if !conn.answered {
                // Ended: the request may still be whole (the client shut its side after it).
                let got = client_io::read_available(&mut conn.stream, &mut conn.input, MAX_REQUEST);
                if got == client_io::Got::Broken {
                    return self.close_monitor_conn(key);
                }
                if conn.input.len() > MAX_REQUEST {
                    request = Some(None);
                } else if let Some(end) = conn.input.windows(4).position(|w| w == b"\r\n\r\n") {
                    request = Some(request_target(&conn.input[..end]));
                }
            }
        }
        if let Some(target) = request {
            let (status, content_type, body) = match target.as_deref() {
                None => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
                Some("/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics_text(),
                ),
                Some("/healthz") => {
                    if self.health().healthy {
                        ("200 OK", "text/plain", "ok\n".to_owned())
                    } else {
                        (
                            "503 Service Unavailable",
                            "text/plain",
                            "no worker is ready\n".into(),
                        )
                    }
                }
                Some("/readyz") => {
                    let stopping = self.core.phase != Phase::Running;
                    match (self.health().ready, stopping) {
                        (true, _) => ("200 OK", "text/plain", "ready\n".to_owned()),
                        (false, true) => {
                            ("503 Service Unavailable", "text/plain", "stopping\n".into())
                        }
                        (false, false) => (
                            "503 Service Unavailable",
                            "text/plain",
                            "not ready\n".into(),
                        ),
                    }
                }
                Some(_) => (
                    "404 Not Found",
                    "text/plain",
                    "not found: /metrics, /healthz, /readyz\n".into(),
                ),
            };
            if let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) {
                conn.answered = true;
                conn.output = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes();
            }
        }
        let Some(conn) = self.monitor.as_mut().and_then(|m| m.conns.get_mut(key)) else {
            return;
        };
        if client_io::write_pending(&mut conn.stream, &mut conn.output) == client_io::Sent::Blocked
        {
            return;
        }
        if conn.answered {
            self.close_monitor_conn(key);
        }
    }

    fn close_monitor_conn(&mut self, key: usize) {
        let Some(monitor) = self.monitor.as_mut() else {
            return;
        };
        if let Some(mut conn) = monitor.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.sources.remove(conn.token);
        }
    }

    /// What `/healthz` and `/readyz` say now.
    pub(super) fn health(&self) -> Health {
        health(
            self.core.fleet.ready_count(),
            self.started_serving,
            self.core.phase != Phase::Running,
        )
    }

    /// The metrics text now (`/metrics`, `rrbalancer metrics`).
    pub(super) fn metrics_text(&self) -> String {
        let now = Instant::now();
        let fleet = &self.core.fleet;
        let stopping = self.core.phase != Phase::Running;
        let slots = fleet
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                // Workers gone, and those alive (current, candidate, draining).
                let mut served = self.counters.retired.get(i).cloned().unwrap_or_default();
                fleet
                    .workers
                    .iter()
                    .filter(|(_, w)| w.place == Place::Slot(i))
                    .filter_map(|(_, w)| self.ledger.account(w.account))
                    .for_each(|a| served.add(a.served()));
                let current = slot
                    .current
                    .and_then(|k| fleet.workers.get(k))
                    .filter(|_| slot.current.is_some_and(|k| fleet.role(k) == Role::Current));
                let account = current.and_then(|w| self.ledger.account(w.account));
                let stat = current.and_then(|w| memory::cpu_and_resident(&w.pid.to_string()));
                let state = state_of(slot, current, stopping);
                metrics::Slot {
                    state,
                    served,
                    unacked: account.map_or(0, |a| a.in_flight()),
                    oldest_unacked_secs: account
                        .and_then(|a| a.oldest_unacked())
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    restarts: slot.restart_count,
                    recycles: slot.recycled,
                    giveups: slot.giveups,
                    // Its process group's memory where `[recycle]` measures it, else its own.
                    rss_bytes: current.and_then(|w| w.rss.or(stat.map(|(_, rss)| rss))),
                    cpu_seconds: stat.map(|(cpu, _)| cpu),
                }
            })
            .collect();
        debug!("metrics scraped");
        metrics::render(&Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            sched_policy: self.config.sched_policy.as_str(),
            listeners: &self.listen_names,
            counters: &self.counters,
            queued: self.ledger.queued(),
            workers_wanted: fleet.slots.len(),
            workers_ready: fleet.ready_count(),
            reloads: self.core.reloads,
            retained: (self.retained.len(), self.retained.bytes()),
            slots,
            agent: fleet.agent.as_ref().map(|a| {
                let current = a.current.and_then(|k| fleet.workers.get(k));
                state_of(a, current, stopping)
            }),
            process: metrics::own_process(),
        })
    }
}

/// A slot's (or the agent's) state in [`metrics::STATES`], given its `current` process.
fn state_of(slot: &Slot, current: Option<&Worker>, stopping: bool) -> &'static str {
    match (current.map(|w| w.state), slot.given_up) {
        (_, true) => "given_up",
        (Some(State::Ready), _) => "ready",
        (Some(State::Starting), _) => "starting",
        (Some(State::Draining), _) => "stopping",
        (None, _) if stopping => "stopping",
        (None, _) if slot.start_at.is_some() => "restarting",
        (None, _) => "starting",
    }
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
mod tests {
    use super::*;

    #[test]
    fn health_follows_readiness_and_stop() {
        assert_eq!(
            health(0, false, false),
            Health {
                healthy: false,
                ready: false
            }
        );
        // Not ready until the initial workers all were.
        assert_eq!(
            health(1, false, false),
            Health {
                healthy: true,
                ready: false
            }
        );
        assert_eq!(
            health(2, true, false),
            Health {
                healthy: true,
                ready: true
            }
        );
        // Every slot given up, or stopping.
        assert_eq!(
            health(0, true, false),
            Health {
                healthy: false,
                ready: false
            }
        );
        assert_eq!(
            health(2, true, true),
            Health {
                healthy: true,
                ready: false
            }
        );
    }

    #[test]
    fn request_lines_parse_and_others_do_not() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1"),
            Some("/metrics".into())
        );
        assert_eq!(
            request_target(b"GET /readyz?x=1 HTTP/1.0\r\nHost: a"),
            Some("/readyz".into())
        );
        assert_eq!(request_target(b"POST /metrics HTTP/1.1"), None);
        assert_eq!(request_target(b"\xff\xfe"), None);
        assert_eq!(request_target(b"GET"), None);
    }
}
