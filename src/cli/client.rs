//! `rrbalancer status|reload|scale|stop`: talk to a running master over its control socket
//! (see [`crate::wire::control`]) and show the answer to a human, or as JSON.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wire::control::{Reply, Request, Status};
use crate::wire::registry;

/// Why a control command failed; each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no rrbalancer is running for this configuration (nothing answers at {0})")]
    NotRunning(String),
    #[error(
        "no rrbalancer is running (no control socket in {0} answers); a master run by another \
         user, or upgraded after it dropped root to one (`[master] user`), is not listed here: \
         name it with --config FILE or --control SOCKET"
    )]
    NoneRunning(String),
    #[error(
        "{} rrbalancer masters are running; name one with --config FILE or --control SOCKET:\n{}",
        .0.len(),
        .0.iter().map(Found::to_string).collect::<Vec<_>>().join("\n")
    )]
    Several(Vec<Found>),
    #[error("control socket {path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("the master's answer is not understood: {0}")]
    BadReply(String),
    #[error("{0}")]
    Refused(String),
    /// `status --ready`: the master answers but does not serve. `json`: the text is
    /// `status --json`'s, for stdout as when it serves (only the exit differs).
    #[error("{text}")]
    NotReady { text: String, json: bool },
}

/// A running master found by [`discover`].
#[derive(Debug)]
pub struct Found {
    pub socket: std::path::PathBuf,
    pub pid: i32,
    pub config: Option<String>,
    pub listeners: Vec<String>,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  pid {}  config {}  listening on {}  (--control {})",
            self.pid,
            self.config.as_deref().unwrap_or("(embedded default)"),
            self.listeners.join(", "),
            self.socket.display()
        )
    }
}

/// The one master running for this user: every control socket in `dir` (the default runtime
/// directory) and every master registered there ([`registry`]: a master whose `[control]`
/// puts its socket elsewhere) is asked for its status; those that answer are the running
/// masters (a socket left by a master that was killed answers nothing, and a registration
/// whose master is gone is removed). Several: which, for the user to choose — never one of
/// them picked.
pub fn discover(dir: &Path) -> Result<Found, ClientError> {
    let none = || ClientError::NoneRunning(dir.display().to_string());
    let entries = std::fs::read_dir(dir).map_err(|_| none())?;
    let mut sockets: Vec<PathBuf> = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(pid) = name.as_deref().and_then(registry::entry_pid) {
            if !running(pid as i32) {
                let _ = std::fs::remove_file(&path); // a killed master's: stale
            } else if let Ok(target) = std::fs::read_link(&path) {
                sockets.push(target);
            }
        } else if path.extension().is_some_and(|x| x == "sock") {
            sockets.push(path);
        }
    }
    // The same socket seen twice (in the directory and registered) is one master.
    let mut seen = std::collections::BTreeSet::new();
    sockets.retain(|s| seen.insert(std::fs::canonicalize(s).unwrap_or_else(|_| s.clone())));
    sockets.sort();
    let mut found: Vec<Found> = sockets
        .into_iter()
        .filter_map(|socket| {
            let reply = request(&socket, &Request::Status, Duration::from_secs(2)).ok()?;
            if let Some(apps) = reply.apps {
                // A master of several apps: its file is each app's.
                let statuses = apps.iter().filter_map(|a| a.status.as_ref());
                return Some(Found {
                    socket,
                    pid: reply.pid.unwrap_or_default(),
                    config: statuses.clone().find_map(|s| s.config.clone()),
                    listeners: statuses.flat_map(|s| s.listeners.clone()).collect(),
                });
            }
            let status = reply.status?;
            Some(Found {
                socket,
                pid: status.pid,
                config: status.config,
                listeners: status.listeners,
            })
        })
        .collect();
    match found.len() {
        0 => Err(none()),
        1 => Ok(found.remove(0)),
        _ => Err(ClientError::Several(found)),
    }
}

/// Sends `request` and returns the master's reply. `wait` bounds how long the answer may take
/// (a reload answers when it is done).
pub fn request(socket: &Path, request: &Request, wait: Duration) -> Result<Reply, ClientError> {
    let (_, reply) = exchange(socket, &line_of(request), wait)?;
    Ok(reply)
}

/// [`request`] of a request written out already (`line`, one JSON line).
pub fn request_line(socket: &Path, line: &[u8], wait: Duration) -> Result<Reply, ClientError> {
    let (_, reply) = exchange(socket, line, wait)?;
    Ok(reply)
}

fn line_of(request: &Request) -> Vec<u8> {
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    line
}

/// `stop`, `upgrade --wait`: sends `request`, then waits (up to `wait`) until the master that
/// answered has exited.
pub fn until_exit(socket: &Path, request: &Request, wait: Duration) -> Result<String, ClientError> {
    until_exit_line(socket, &line_of(request), wait)
}

/// [`until_exit`] of a request written out already.
pub fn until_exit_line(socket: &Path, line: &[u8], wait: Duration) -> Result<String, ClientError> {
    let (mut reader, reply) = exchange(socket, line, wait)?;
    let message = reply.message.unwrap_or_default();
    if !reply.ok {
        return Err(ClientError::Refused(message));
    }
    // The master says how long its stop may take (a drain first, from a file since edited):
    // that long at least, and a margin.
    let wait = reply.within_ms.map_or(wait, |ms| {
        wait.max(Duration::from_millis(ms) + Duration::from_secs(10))
    });
    let _ = reader.get_ref().set_read_timeout(Some(wait));
    if reply.drain_ms.is_some() {
        // Said now: the wait may be long.
        eprintln!(
            "rrbalancer: {message} (`rrbalancer stop --now` skips the rest of the drain; \
             Ctrl-C here leaves it stopping)"
        );
    }
    // The master keeps this connection open until it exits: EOF means it is (nearly) gone.
    let mut rest = Vec::new();
    match io::Read::read_to_end(&mut reader, &mut rest) {
        Ok(_) => {}
        Err(e) if is_timeout(&e) => {
            return Err(ClientError::Refused(format!(
                "{message}; still running after {wait:?}"
            )));
        }
        Err(_) => {} // reset: it is gone
    }
    // Its fds close a moment before the process is gone; wait for that moment too.
    if let Some(pid) = reply.pid {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while running(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(message)
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `request` and reads the reply line; the reader, for what follows it. A master that
/// refuses a request before reading it all (too long, too many clients) answers why and closes:
/// our write then fails (`EPIPE`) while its answer waits to be read, so the answer is read
/// whatever became of the write, and the write's error is told only if none came.
fn exchange(
    socket: &Path,
    line: &[u8],
    wait: Duration,
) -> Result<(BufReader<UnixStream>, Reply), ClientError> {
    let shown = socket.display().to_string();
    let io_err = |error| ClientError::Io {
        path: shown.clone(),
        error,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning(shown.clone())
        }
        _ => io_err(e),
    })?;
    stream.set_read_timeout(Some(wait)).map_err(io_err)?;
    stream.set_write_timeout(Some(wait)).map_err(io_err)?;
    let written = stream.write_all(line);
    let mut reader = BufReader::new(stream);
    match (read_reply(socket, &mut reader), written) {
        (Ok(reply), _) => Ok((reader, reply)),
        (Err(_), Err(e)) => Err(io_err(e)),
        (Err(e), Ok(())) => Err(e),
    }
}

fn read_reply(socket: &Path, reader: &mut BufReader<UnixStream>) -> Result<Reply, ClientError> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err(ClientError::Refused(
            "the master closed the connection without answering: it exited, or was killed (see \
             its log)"
                .into(),
        )),
        Ok(_) => serde_json::from_str(&line).map_err(|e| ClientError::BadReply(e.to_string())),
        Err(e) if is_timeout(&e) => Err(ClientError::Refused(
            "no answer from the master in time".into(),
        )),
        Err(error) => Err(ClientError::Io {
            path: socket.display().to_string(),
            error,
        }),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `status` for humans: a header, then one row per worker process.
pub fn format_status(s: &Status) -> String {
    let mut out = String::new();
    let config = s.config.as_deref().unwrap_or("(embedded default)");
    let environment = s.environment.as_ref().map_or_else(String::new, |name| {
        format!("  environment {}", crate::text::quoted(name))
    });
    out.push_str(&format!(
        "rrbalancer {} pid {}  config {}{environment}\npolicy {}  listening on {}  workers {}{}\n\n",
        s.version,
        s.pid,
        config,
        s.sched_policy,
        if s.listeners.is_empty() {
            "(nothing: serves no connection)".to_owned()
        } else {
            s.listeners.join(", ")
        },
        s.workers_wanted,
        notes(s),
    ));
    if let Some(upgrade) = &s.upgrade {
        out.push_str(&format!("upgrade {upgrade}\n\n"));
    }
    if let Some(recycling) = &s.recycling {
        out.push_str(&format!("recycling {recycling}\n\n"));
    }
    let header = [
        "SLOT", "PID", "STATE", "UPTIME", "RESTARTS", "RECYCLED", "HANDED", "CONN/S", "UNACKED",
        "RSS", "CPU",
    ];
    let mut rows: Vec<[String; 11]> = s
        .workers
        .iter()
        .map(|w| {
            let state = if w.role == "retiring" && w.state != "draining" {
                format!("{} (retiring)", w.state)
            } else {
                w.state.clone()
            };
            [
                w.slot.to_string(),
                w.pid.to_string(),
                state,
                uptime(w.uptime_secs),
                w.restarts.to_string(),
                w.recycled.to_string(),
                w.handed.to_string(),
                w.conn_per_sec.map_or("-".into(), |r| format!("{r:.1}")),
                match w.oldest_unacked_secs {
                    Some(age) if w.unacked > 0 => format!("{} (oldest {age:.1}s)", w.unacked),
                    _ => w.unacked.to_string(),
                },
                w.rss_bytes.map_or("-".into(), |b| {
                    bytesize::ByteSize::b(b).display().iec().to_string()
                }),
                w.cpu_seconds.map_or("-".into(), |c| format!("{c:.2}s")),
            ]
        })
        .collect();
    rows.extend(s.empty_slots.iter().map(|e| {
        [
            e.slot.to_string(),
            "-".into(),
            e.state.clone(),
            "-".into(),
            e.restarts.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ]
    }));
    rows.sort_by_key(|r| r[0].parse::<usize>().unwrap_or(usize::MAX));
    if let Some(a) = &s.agent {
        // Last, under the slots: it serves none.
        let mut state = a.state.clone();
        if !a.others.is_empty() {
            let pids: Vec<String> = a.others.iter().map(i32::to_string).collect();
            state.push_str(&format!(" (also pid {})", pids.join(", ")));
        }
        rows.push([
            "agent".into(),
            a.pid.map_or("-".into(), |p| p.to_string()),
            state,
            a.uptime_secs.map_or("-".into(), uptime),
            a.restarts.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            a.rss_bytes.map_or("-".into(), |b| {
                bytesize::ByteSize::b(b).display().iec().to_string()
            }),
            a.cpu_seconds.map_or("-".into(), |c| format!("{c:.2}s")),
        ]);
    }
    out.push_str(&table(header, &rows));
    for e in &s.empty_slots {
        if let Some(cause) = e.last_causes.last() {
            out.push_str(&format!("slot {} last exit: {cause}\n", e.slot));
        }
    }
    if let Some(cause) = (s.agent.iter())
        .filter(|a| a.pid.is_none())
        .find_map(|a| a.last_causes.last())
    {
        out.push_str(&format!("agent last exit: {cause}\n"));
    }
    out
}

/// What the master is in the middle of, for a header line: `  (reload in progress)`,
/// `  (draining, then stopping)`, `  (stopping)`, or nothing.
pub fn notes(s: &Status) -> &'static str {
    match (s.reload_in_progress, s.stopping) {
        (_, true) => "  (stopping)",
        _ if s.drain_left_ms.is_some() => "  (draining, then stopping)",
        (true, false) => "  (reload in progress)",
        (false, false) => "",
    }
}

/// Columns aligned to their widest cell, two spaces apart, a header first.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(&header);
    for row in rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

pub fn uptime(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

/// `logs`: prints the workers' last `lines` (of `slot`, or the agent's), one a line —
/// `TIME [slot N pid P stream] text` — and with `follow` keeps asking for newer ones.
pub fn logs(
    socket: &Path,
    slot: Option<usize>,
    agent: bool,
    lines: usize,
    follow: bool,
) -> Result<(), ClientError> {
    // At least one line is asked for, so that `-f -n 0` learns where "now" is.
    let (mut after, mut ask_for, mut show) = (None, lines.max(1), lines);
    loop {
        let ask = Request::Logs {
            slot,
            agent,
            lines: ask_for,
            after,
        };
        let reply = request(socket, &ask, Duration::from_secs(5))?;
        if !reply.ok {
            return Err(ClientError::Refused(reply.message.unwrap_or_default()));
        }
        let got = reply.logs.unwrap_or_default();
        let mut out = io::stdout().lock();
        for line in &got[got.len().saturating_sub(show)..] {
            let time = chrono::DateTime::from_timestamp_millis(line.time_ms as i64)
                .map(|t| {
                    t.with_timezone(&chrono::Local)
                        .format("%H:%M:%S%.3f")
                        .to_string()
                })
                .unwrap_or_default();
            let place = line
                .slot
                .map_or("agent".to_owned(), |n| format!("slot {n}"));
            let place = match &line.app {
                Some(app) => format!("{app} {place}"),
                None => place,
            };
            let _ = writeln!(
                out,
                "{time} [{place} pid {} {}] {}",
                line.pid, line.stream, line.line
            );
        }
        let _ = out.flush();
        if !follow {
            return Ok(());
        }
        // From now on, everything newer than the last line seen.
        after = got.last().map(|l| l.seq).or(after).or(Some(0));
        (ask_for, show) = (1_000, 1_000);
        std::thread::sleep(Duration::from_millis(300));
    }
}
