//! Workers' stdout and stderr, when `[log] stdout`/`stderr` name files: each worker writes into a
//! pipe, the master reads it and appends each line to the file prefixed with `[slot N pid P]`
//! (`[agent pid P]`; `[app NAME]` first for one app of several; a timestamp with `date_format`)
//! — or, with `[log] format = "json"`, as one JSON object a line: `time`, `slot` (or `agent`),
//! `pid`, `stream`, `line` (the worker's own JSON object when the line is one, else its text).
//! Files are reopened on SIGUSR1, logrotate's convention.
//!
//! Memory is bounded per pipe: a line longer than [`MAX_LINE`] is written out in pieces, and a
//! worker that never writes a newline cannot make the master buffer more than that.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use log::{error, info};
use mio::unix::SourceFd;

use super::Master;
use crate::config::{LogConfig, LogFormat};
use crate::engine::ids::Place;
use crate::engine::log_ring::LogRing;
use crate::wire::control::{LogLine, Reply};

/// The longest piece of a line kept in memory before it is written out anyway.
pub const MAX_LINE: usize = 64 * 1024;

/// A file that captured output goes to, reopenable.
#[derive(Debug)]
pub struct Sink {
    path: PathBuf,
    file: File,
    date_format: Option<String>,
    /// `[log] format = "json"`: one JSON object a line, naming this `stream`.
    json: bool,
    stream: &'static str,
    /// The app, when this master runs one of several (`RRB_APP`): each line names it.
    app: Option<String>,
}

impl Sink {
    pub fn open(path: &Path, log: &LogConfig, stream: &'static str) -> io::Result<Sink> {
        Ok(Sink {
            path: path.to_owned(),
            file: open_append(path)?,
            date_format: log.date_format.clone(),
            json: log.format == LogFormat::Json,
            stream,
            app: std::env::var(crate::wire::env::APP)
                .ok()
                .filter(|a| crate::config::valid_app_name(a)),
        })
    }

    /// Reopens the file by name (after logrotate moved it away).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = open_append(&self.path)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one (piece of a) line with its prefix. Errors are the caller's to log.
    fn write_line(&mut self, slot: Place, pid: i32, line: &[u8]) -> io::Result<()> {
        if self.json {
            let now = chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            let mut out = json_line(&now, slot, pid, self.stream, line);
            if let Some(app) = &self.app {
                // `{"app":"api",…`: an app's name has no character JSON escapes.
                let key = format!("\"app\":\"{app}\",");
                out.splice(1..1, key.into_bytes());
            }
            out.push(b'\n');
            return self.file.write_all(&out);
        }
        let mut out = Vec::with_capacity(line.len() + 48);
        if let Some(format) = &self.date_format {
            let _ = write!(out, "{} ", chrono::Local::now().format(format));
        }
        if let Some(app) = &self.app {
            let _ = write!(out, "[app {app}] ");
        }
        match slot {
            Place::Slot(n) => write!(out, "[slot {n} pid {pid}] "),
            Place::Agent => write!(out, "[agent pid {pid}] "),
        }
        .ok();
        out.extend_from_slice(line);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        self.file.write_all(&out)
    }
}

/// Where a pipe's complete lines (or pieces of an endless one) go.
pub trait LineSink {
    fn line(&mut self, place: Place, pid: i32, line: &[u8]);
}

impl LineSink for Sink {
    fn line(&mut self, place: Place, pid: i32, line: &[u8]) {
        // A full disk must not stop the master; the file says nothing more until it has room.
        let _ = self.write_line(place, pid, line);
    }
}

/// A line to its file and to the ring `rrbalancer logs` reads.
pub struct Tee<'a> {
    pub sink: &'a mut Sink,
    pub ring: &'a mut LogRing,
    /// When the lines were read, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl LineSink for Tee<'_> {
    fn line(&mut self, place: Place, pid: i32, line: &[u8]) {
        self.sink.line(place, pid, line);
        self.ring
            .push(place, pid, self.sink.stream, self.time_ms, line);
    }
}

/// A captured line as JSON: `{"time", "slot"|"agent", "pid", "stream", "line"}`, `line` the
/// worker's own object when the line is a JSON object, else its text (lossy UTF-8), without
/// its line ending.
pub fn json_line(time: &str, place: Place, pid: i32, stream: &str, line: &[u8]) -> Vec<u8> {
    use serde_json::{Map, Value};
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let value = match serde_json::from_slice::<Value>(line) {
        Ok(object @ Value::Object(_)) => object,
        _ => Value::from(String::from_utf8_lossy(line)),
    };
    let mut out = Map::new();
    out.insert("time".into(), Value::from(time));
    match place {
        Place::Slot(n) => out.insert("slot".into(), Value::from(n)),
        Place::Agent => out.insert("agent".into(), Value::from(true)),
    };
    out.insert("pid".into(), Value::from(pid));
    out.insert("stream".into(), Value::from(stream));
    out.insert("line".into(), value);
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}

/// Opens a log file for appending, creating it (mode 0640) and its directory.
pub fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The read end of one worker stream's pipe, with its partial line.
#[derive(Debug)]
pub struct Pipe {
    fd: OwnedFd,
    partial: Vec<u8>,
}

/// What a read of a pipe came to.
#[derive(Debug, PartialEq, Eq)]
pub enum PipeState {
    Open,
    /// The worker closed it (usually: exited).
    Closed,
}

impl Pipe {
    pub fn new(fd: OwnedFd) -> io::Result<Pipe> {
        crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd), true)?;
        Ok(Pipe {
            fd,
            partial: Vec::new(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads what is available and writes every complete line to `sink`.
    pub fn drain(&mut self, sink: &mut impl LineSink, slot: Place, pid: i32) -> PipeState {
        let mut chunk = [0u8; 8192];
        loop {
            let n = match nix::unistd::read(&self.fd, &mut chunk).map_err(io::Error::from) {
                Ok(0) => {
                    self.flush_partial(sink, slot, pid);
                    return PipeState::Closed;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return PipeState::Open,
                Err(_) => {
                    self.flush_partial(sink, slot, pid);
                    return PipeState::Closed;
                }
            };
            self.feed(&chunk[..n], sink, slot, pid);
        }
    }

    /// Splits `data` into lines and writes the complete ones; a line longer than [`MAX_LINE`]
    /// goes out in pieces of that size (its newline may end the last full piece), whatever
    /// sizes the reads came in. `partial` never holds [`MAX_LINE`] bytes or more.
    fn feed(&mut self, mut data: &[u8], sink: &mut impl LineSink, slot: Place, pid: i32) {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &data[..data.len().min(room + 1)];
            if let Some(end) = window.iter().position(|&b| b == b'\n') {
                if self.partial.is_empty() {
                    sink.line(slot, pid, &data[..=end]);
                } else {
                    self.partial.extend_from_slice(&data[..=end]);
                    sink.line(slot, pid, &self.partial);
                    self.partial.clear();
                }
                data = &data[end + 1..];
                continue;
            }
            let taken = data.len().min(room);
            self.partial.extend_from_slice(&data[..taken]);
            data = &data[taken..];
            if self.partial.len() == MAX_LINE {
                sink.line(slot, pid, &self.partial);
                self.partial.clear();
            }
        }
    }

    fn flush_partial(&mut self, sink: &mut impl LineSink, slot: Place, pid: i32) {
        if !self.partial.is_empty() {
            sink.line(slot, pid, &self.partial);
            self.partial.clear();
        }
    }
}

/// The sinks `[log]` asks for: `[stdout, stderr]`, `None` where the workers inherit ours.
pub fn open_sinks(log: &LogConfig) -> io::Result<[Option<Sink>; 2]> {
    let open = |path: &Option<PathBuf>, stream| {
        path.as_deref()
            .map(|p| Sink::open(p, log, stream))
            .transpose()
    };
    Ok([open(&log.stdout, "stdout")?, open(&log.stderr, "stderr")?])
}

impl Master {
    /// A worker's stdout or stderr pipe is readable.
    pub(super) fn on_output(&mut self, key: usize, stream: usize) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        let (slot, pid) = (worker.place, worker.pid.as_raw());
        let Some(process) = self.workers.procs.get_mut(key) else {
            return;
        };
        let (Some(pipe), Some(sink)) = (
            process.output.get_mut(stream).and_then(Option::as_mut),
            self.workers.sinks.get_mut(stream).and_then(Option::as_mut),
        ) else {
            return;
        };
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let ring = &mut self.workers.log_ring;
        let mut tee = Tee {
            sink,
            ring,
            time_ms,
        };
        if pipe.drain(&mut tee, slot, pid) == PipeState::Closed {
            let fd = pipe.raw_fd();
            let _ = self.io.poll.registry().deregister(&mut SourceFd(&fd));
            process.output[stream] = None;
        }
    }

    /// Everything left in an exited worker's pipes, before its record goes.
    pub(super) fn drain_output(&mut self, key: usize) {
        for stream in 0..2 {
            self.on_output(key, stream);
            if let Some(pipe) = self
                .workers
                .procs
                .get_mut(key)
                .and_then(|p| p.output[stream].take())
            {
                // A grandchild may still hold the write end; we stop listening anyway.
                let _ = self
                    .io
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&pipe.raw_fd()));
            }
        }
    }

    /// SIGUSR1: reopen the captured-output files and the master's own log file by name.
    pub(super) fn reopen_logs(&mut self) {
        for sink in self.workers.sinks.iter_mut().flatten() {
            match sink.reopen() {
                Ok(()) => info!("reopened {}", sink.path().display()),
                Err(e) => error!("cannot reopen {}: {e}", sink.path().display()),
            }
        }
        if let Some(path) = &self.config.log.master_log {
            match redirect_stderr(path) {
                Ok(()) => info!("reopened {}", path.display()),
                Err(e) => error!("cannot reopen {}: {e}", path.display()),
            }
        }
    }
}

impl Master {
    /// `rrbalancer logs`: the last `lines` captured of `slot` (or the agent's, or everyone's),
    /// after line `after`; an error when nothing is captured.
    pub(super) fn logs_reply(
        &self,
        slot: Option<usize>,
        agent: bool,
        lines: usize,
        after: Option<u64>,
    ) -> Reply {
        if self.workers.sinks.iter().all(Option::is_none) {
            return Reply::error(
                "the workers' output is not captured: with [log] stdout and stderr unset it goes \
                 straight to the master's stderr (or the journal); set them to keep it here"
                    .into(),
            );
        }
        let slots = self.core.fleet().slots.len();
        if let Some(n) = slot.filter(|&n| n >= slots) {
            return Reply::error(format!(
                "no slot {n}: this master runs {slots} (0 to {})",
                slots.saturating_sub(1)
            ));
        }
        if agent && self.config.agent.is_none() {
            return Reply::error("no [agent] is configured".into());
        }
        let wanted = |place: Place| match (slot, agent) {
            (Some(n), _) => place == Place::Slot(n),
            (None, true) => place == Place::Agent,
            (None, false) => true,
        };
        let picked = self.workers.log_ring.tail(wanted, after, lines);
        Reply::logs(
            picked
                .into_iter()
                .map(|l| LogLine {
                    seq: l.seq,
                    time_ms: l.time_ms,
                    slot: l.place.slot(),
                    pid: l.pid,
                    stream: l.stream.into(),
                    line: l.text.clone(),
                    app: None,
                })
                .collect(),
        )
    }
}

/// Points our stderr (where the master's log goes) at `path`, appending.
pub fn redirect_stderr(path: &Path) -> io::Result<()> {
    let file = open_append(path)?;
    nix::unistd::dup2_stderr(&file).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path) -> Sink {
        Sink::open(&dir.join("out.log"), &LogConfig::default(), "stdout").unwrap()
    }

    #[test]
    fn in_json_each_line_is_an_object_and_a_workers_object_stays_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogConfig {
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        let mut sink = Sink::open(&dir.path().join("out.log"), &log, "stderr").unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut pipe = Pipe::new(r).unwrap();
        pipe.feed(
            b"{\"level\":\"info\",\"msg\":\"hi\"}\nplain \"text\"\r\n",
            &mut sink,
            Place::Slot(3),
            9,
        );
        pipe.feed(b"[1, 2]\n", &mut sink, Place::Agent, 8);
        let text = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["slot"], 3);
        assert_eq!(lines[0]["pid"], 9);
        assert_eq!(lines[0]["stream"], "stderr");
        assert_eq!(
            lines[0]["line"]["msg"], "hi",
            "the worker's object, not a string"
        );
        assert_eq!(
            lines[1]["line"], "plain \"text\"",
            "text, without its line ending"
        );
        assert_eq!(lines[2]["agent"], true);
        assert_eq!(lines[2]["line"], "[1, 2]", "only an object is taken as one");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn lines_are_prefixed_and_partial_lines_wait_for_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut pipe = Pipe::new(r).unwrap();
        pipe.feed(b"one\ntw", &mut sink, Place::Slot(2), 77);
        pipe.feed(b"o\n", &mut sink, Place::Slot(2), 77);
        let text = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        assert_eq!(text, "[slot 2 pid 77] one\n[slot 2 pid 77] two\n");
    }

    #[test]
    fn a_line_without_end_is_written_in_bounded_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut pipe = Pipe::new(r).unwrap();
        let big = vec![b'x'; MAX_LINE * 3 + 10];
        pipe.feed(&big, &mut sink, Place::Slot(0), 1);
        assert!(pipe.partial.len() < MAX_LINE, "memory stays bounded");
        let text = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn a_long_line_is_cut_at_the_bound_whatever_the_read_sizes() {
        // The operations test once saw 3 pieces of a 200,000-byte line instead of 4: a read
        // that brought the newline wrote the partial line and the rest of the read as one.
        let line: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
        for chunk in [1, 4096, 8192, 3737, 65_535, 65_536, 65_537, 200_001] {
            let dir = tempfile::tempdir().unwrap();
            let mut sink = sink(dir.path());
            let (r, _w) = nix::unistd::pipe().unwrap();
            let mut pipe = Pipe::new(r).unwrap();
            let mut input = line.clone();
            input.extend_from_slice(b"\nend\n");
            for piece in input.chunks(chunk) {
                pipe.feed(piece, &mut sink, Place::Slot(0), 1);
                assert!(pipe.partial.len() < MAX_LINE);
            }
            let text = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
            let pieces: Vec<&str> = text
                .lines()
                .map(|l| l.strip_prefix("[slot 0 pid 1] ").unwrap())
                .collect();
            assert_eq!(
                pieces.len(),
                5,
                "chunk {chunk}: 3 × 65536 + 3392, then `end`"
            );
            assert!(pieces.iter().all(|p| p.len() <= MAX_LINE), "chunk {chunk}");
            assert_eq!(pieces[..4].concat().as_bytes(), &line[..], "chunk {chunk}");
            assert_eq!(pieces[4], "end");
        }
    }

    #[test]
    fn reopen_follows_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = sink(dir.path());
        sink.write_line(Place::Slot(0), 1, b"before").unwrap();
        std::fs::rename(dir.path().join("out.log"), dir.path().join("out.log.1")).unwrap();
        sink.reopen().unwrap();
        sink.write_line(Place::Slot(0), 1, b"after").unwrap();
        let new = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        assert_eq!(new, "[slot 0 pid 1] after\n");
    }
}
