//! Test support: start the real `rrbalancer` binary on a temp config, talk to it over loopback,
//! and always clean up. Every wait has a deadline; nothing sleeps blindly.
//!
//! The master runs in its own process group, and its workers in theirs (rrbalancer puts each
//! worker in a group of its own); dropping an [`Rrb`] SIGKILLs the master's group and every
//! worker group it ever had, so no test leaves a process behind even when it fails.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rrbalancer");

/// A test that cannot run here says why and passes — but not in CI (`CI` set), where
/// `.ci/run` installs everything the suite needs: there a skip is a failure.
pub fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("SKIPPED in CI, where nothing may be skipped: {why}");
    }
    eprintln!("SKIPPED: {why}");
}

/// An installer (`npm ci`, `pip install`) failed: a skip if its output says the registry could
/// not be reached (no network here), a failure for anything else — a broken lock or
/// requirements file, a missing venv module — which a user would hit too.
pub fn install_failed(what: &str, output: &std::process::Output) {
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    const UNREACHABLE: [&str; 9] = [
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ETIMEDOUT",
        "ENETUNREACH",
        "NewConnectionError",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Max retries exceeded",
    ];
    if UNREACHABLE.iter().any(|m| said.contains(m)) {
        skip(&format!("{what}: the registry is not reachable:\n{said}"));
    } else {
        panic!("{what} failed ({}):\n{said}", output.status);
    }
}

/// A worker's `sh -c` script: it exits 7 while `broken` exists (and `only_if`, a shell test,
/// holds), else it runs the demo worker — a slot that fails until the test mends it by removing
/// the file.
pub fn failing_while(broken: &Path, only_if: &str) -> String {
    format!(
        "if {only_if} [ -e '{}' ]; then exit 7; fi; exec '{BIN}' demo-worker",
        broken.display()
    )
}

/// The repository root, for scripts the tests run as workers.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running rrbalancer.
pub struct Rrb {
    pub child: Child,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
    /// The reader of its stderr reached the end: every line it wrote is in `log`.
    log_done: Arc<std::sync::atomic::AtomicBool>,
    pub addr: String,
    known_workers: Mutex<Vec<i32>>,
}

/// How to start one.
#[derive(Default)]
pub struct Start<'a> {
    pub config: &'a str,
    pub args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Wait until this many workers have said `ready`.
    pub ready: usize,
    /// Its open-file limit, soft and hard (`ulimit -n`), which its workers inherit.
    pub nofile: Option<u32>,
    /// Its soft open-file limit only (`ulimit -Sn`), the hard one left as the test's.
    pub soft_nofile: Option<u32>,
}

impl Rrb {
    /// Starts rrbalancer with `config` (TOML) listening on a free loopback port, and waits for
    /// `ready` workers.
    pub fn start(config: &str, ready: usize) -> Rrb {
        Rrb::start_with(Start {
            config,
            ready,
            ..Start::default()
        })
    }

    pub fn start_with(start: Start<'_>) -> Rrb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("cluster.toml");
        let mut config = start.config.to_owned();
        if !config.contains("listen") {
            config = format!("listen = [\"127.0.0.1:0\"]\n{config}");
        }
        std::fs::write(&path, config).expect("write config");
        let ulimit = match (start.nofile, start.soft_nofile) {
            (Some(n), _) => Some(format!("ulimit -n {n}")),
            (None, Some(n)) => Some(format!("ulimit -Sn {n}")),
            (None, None) => None,
        };
        let mut command = match ulimit {
            // The same process (`exec`), in its own group as without.
            Some(ulimit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("{ulimit} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                sh
            }
            None => Command::new(BIN),
        };
        command
            .arg("--config")
            .arg(&path)
            .args(start.args)
            .env("RUST_LOG", "debug")
            .env_remove("RRB_SCHED_POLICY")
            .env_remove("NODE_CLUSTER_SCHED_POLICY")
            // The pid file and control socket go to the test's own directory.
            .env("XDG_RUNTIME_DIR", dir.path())
            .envs(start.env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("start rrbalancer");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        let log_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = Arc::clone(&log_done);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RRB_TEST_ECHO").is_some() {
                    eprintln!("{line}");
                }
                sink.lock().unwrap().push(line);
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let mut rrb = Rrb {
            child,
            dir,
            log,
            log_done,
            addr: String::new(),
            known_workers: Mutex::new(Vec::new()),
        };
        let line = rrb.wait_for_log("listening on ", Duration::from_secs(10));
        // (A JSON log line quotes it.)
        rrb.addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
            .expect("address")
            .to_owned();
        rrb.wait_ready(start.ready);
        rrb
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The config file it runs.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// Runs `rrbalancer --config <its config> <args>` (status, reload, …) as a user would:
    /// exit code, stdout, stderr.
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run rrbalancer");
        outcome(out)
    }

    /// Its control socket (at the default place, in its runtime directory).
    pub fn control_socket(&self) -> PathBuf {
        std::fs::read_dir(self.dir.path().join("rrbalancer"))
            .expect("runtime directory")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .expect("control socket")
    }

    /// How many file descriptors the master holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// Waits until the master holds at most `n` file descriptors; how many it holds then.
    pub fn wait_open_fds_at_most(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let fds = self.open_fds();
            if fds <= n || Instant::now() > deadline {
                return fds;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the master holds at least `n` file descriptors (it has accepted clients
    /// that connected); how many it holds then.
    pub fn wait_open_fds_at_least(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let fds = self.open_fds();
            if fds >= n || Instant::now() > deadline {
                return fds;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until a log line contains `needle` (at least `count` such lines).
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let log = self.log.lock().unwrap();
                let matching: Vec<&String> = log.iter().filter(|l| l.contains(needle)).collect();
                if matching.len() >= count {
                    return matching[count - 1].clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no {count}× {needle:?} within {timeout:?}; log:\n{}",
                    self.log().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits for `n` "worker ready" lines in total.
    pub fn wait_ready(&self, n: usize) {
        if n > 0 {
            self.wait_for_log_count("worker ready", n, Duration::from_secs(20));
        }
    }

    /// The master's live child processes (its workers).
    pub fn workers(&self) -> Vec<i32> {
        let children = children_of(self.pid());
        let mut known = self.known_workers.lock().unwrap();
        for &pid in &children {
            if !known.contains(&pid) {
                known.push(pid);
            }
        }
        children
    }

    /// Waits until the master has exactly `n` live children.
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Vec<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let workers = self.workers();
            if workers.len() == n {
                return workers;
            }
            if Instant::now() > deadline {
                panic!("expected {n} workers, have {workers:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET /` with `Connection: close`; the body.
    /// Each current worker's slot restarts and state, from `status --json`.
    pub fn slot_states(&self) -> Vec<(u64, String)> {
        let (code, json, err) = self.ctl(&["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        (status["workers"].as_array().unwrap().iter())
            .filter(|w| w["role"] == "current")
            .map(|w| {
                let restarts = w["restarts"].as_u64().unwrap();
                (restarts, w["state"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    /// A fresh client is answered (with `expect` in the body) within `within`, retrying while
    /// a backlog drains; how long it took.
    pub fn served_within(&self, expect: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            match self.get() {
                Ok(body) if body.contains(expect) => return start.elapsed(),
                other if start.elapsed() > within => {
                    panic!("no answer within {within:?}: {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub fn get(&self) -> Result<String, String> {
        http_get(&self.addr)
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the master to exit, and then (a little) for the last lines it wrote to be
    /// read, so that a test looking at the log after the exit sees all of it. (Workers share
    /// that stderr: the end of it may come a moment after the master's exit.)
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let read = Instant::now() + Duration::from_secs(2);
                while !self.log_done.load(std::sync::atomic::Ordering::SeqCst)
                    && Instant::now() < read
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Rrb {
    fn drop(&mut self) {
        let _ = self.workers();
        kill_upgraded_masters(self.dir.path());
        // SAFETY: signalling process groups this test created.
        unsafe {
            libc::killpg(self.pid(), libc::SIGKILL);
            for &pid in self.known_workers.lock().unwrap().iter() {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// SIGKILLs the process group of every master whose pid file (staged or in place) is in the
/// runtime directory `xdg` (`$XDG_RUNTIME_DIR/rrbalancer/`): a master started by an upgrade
/// has a process group of its own, which the test's group kill does not reach. (Its workers
/// die with it.)
pub fn kill_upgraded_masters(xdg: &Path) {
    let Ok(entries) = std::fs::read_dir(xdg.join("rrbalancer")) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(".pid") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(pid) = text.trim().parse::<i32>().ok().filter(|&p| p > 1) {
                // SAFETY: a master the test started, directly or through an upgrade.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Starts `command` (a master) in its own process group, with `dir` as its runtime directory
/// and working directory, stdin and stderr closed: for tests that start a master themselves.
pub fn spawn_in(command: &mut Command, dir: &Path) -> std::process::Child {
    command
        .env("XDG_RUNTIME_DIR", dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// The new master's pid in `upgrade`'s answer ("upgraded: pid N serves …").
pub fn upgraded_pid(out: &str) -> i32 {
    out.split("pid ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

/// What a finished command said: exit code (-1 for a signal), stdout, stderr.
pub fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An address nothing listens on (bound once to find it, then released).
pub fn free_addr() -> String {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    free.local_addr().unwrap().to_string()
}

/// Every process's pid and command line (arguments joined by spaces), from /proc.
pub fn command_lines() -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let text = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, text.trim_end().to_owned()))
        })
        .collect()
}

/// The pids whose parent is `parent`, from /proc.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((ppid, state)) = stat_of(pid) {
            if ppid == parent && state != 'Z' {
                out.push(pid);
            }
        }
    }
    out.sort();
    out
}

/// (parent pid, state) of a process.
pub fn stat_of(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ..." — comm may contain spaces; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_of(pid).is_some_and(|(_, state)| state != 'Z')
}

impl Rrb {
    /// The address its `[metrics] listen` serves on, from its log.
    pub fn metrics_addr(&self) -> String {
        let line = self.wait_for_log("metrics on http://", Duration::from_secs(10));
        line.split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .expect("an address")
            .to_owned()
    }
}

/// The number right after `marker` in a log line (`"accepted the 35 connection(s)"`, with
/// marker `"accepted the "`), or 0.
pub fn number_after(line: &str, marker: &str) -> usize {
    line.split(marker)
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.1 request on a new connection; the response body.
pub fn http_get(addr: &str) -> Result<String, String> {
    http_get_path(addr, "/")
}

/// [`http_get`] of `path`.
pub fn http_get_path(addr: &str, path: &str) -> Result<String, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    request(stream, path)
}

/// [`http_get`] from the client address `source` (any 127.x.y.z works on loopback): how the
/// tests play several clients.
pub fn http_get_from(addr: &str, source: std::net::Ipv4Addr) -> Result<String, String> {
    use socket2::{Domain, Socket, Type};
    let target: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    let from = std::net::SocketAddr::from((source, 0));
    socket
        .bind(&from.into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    socket
        .connect(&target.into())
        .map_err(|e| format!("connect from {source}: {e}"))?;
    request(socket.into(), "/")
}

fn request(mut stream: TcpStream, path: &str) -> Result<String, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if !response.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {response:?}"));
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| format!("no body in {response:?}"))
}

/// The worker id in a demo or Python worker's answer "handled by worker <id>, pid <pid>".
pub fn worker_id_of(body: &str) -> usize {
    body.split("worker ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker id in {body:?}"))
}

/// The pid in such an answer.
pub fn pid_of(body: &str) -> i32 {
    body.split("pid ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

/// Runs `rrbalancer ARGS` to completion (for usage errors); (exit code, stderr).
pub fn run_to_exit(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RRB_SCHED_POLICY")
        .env_remove("NODE_CLUSTER_SCHED_POLICY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start rrbalancer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            let mut stdout = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut stdout)
                .unwrap();
            return (status.code().unwrap_or(-1), stderr + &stdout);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child's group.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!("rrbalancer {args:?} did not exit within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a keep-alive load saw.
#[derive(Debug, Default)]
pub struct KeepAliveLoad {
    /// Complete answers whose body contained the expected text.
    pub ok: usize,
    /// Requests that got no complete answer (connect refused, reset, closed before the answer
    /// was whole) or a wrong one, as wrk counts its errors.
    pub errors: Vec<String>,
    /// Connections the server closed after an answer saying `connection: close`.
    pub closed_by_server: usize,
}

/// Like `wrk -c conns`: `conns` keep-alive connections to `addr`, each sending `GET /` again as
/// soon as it has its answer, reconnecting only when an answer said `connection: close`; until
/// `stop` is set (or 60 s pass). Each answer's body must contain `expect`.
pub fn keep_alive_load(
    addr: String,
    conns: usize,
    expect: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<KeepAliveLoad> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let threads: Vec<_> = (0..conns)
            .map(|_| {
                let (addr, stop) = (addr.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = KeepAliveLoad::default();
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let reader = match conn.as_mut() {
                            Some(reader) => reader,
                            None => match TcpStream::connect(&addr) {
                                Ok(s) => {
                                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                    conn.insert(BufReader::new(s))
                                }
                                Err(e) => {
                                    seen.errors.push(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        match keep_alive_request(reader, expect) {
                            Ok(keep) => {
                                seen.ok += 1;
                                if !keep {
                                    seen.closed_by_server += 1;
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                seen.errors.push(e);
                                conn = None;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all = KeepAliveLoad::default();
        for t in threads {
            let seen = t.join().unwrap();
            all.ok += seen.ok;
            all.closed_by_server += seen.closed_by_server;
            all.errors.extend(seen.errors);
        }
        all
    })
}

/// One request on a keep-alive connection: `Ok(keep)`, `keep` false when the answer said
/// `connection: close`.
fn keep_alive_request(reader: &mut BufReader<TcpStream>, expect: &str) -> Result<bool, String> {
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut length = None;
    let mut keep = true;
    let mut status = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if status.is_empty() {
            status = line.trim().to_owned();
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        if name == "content-length" {
            length = value.parse::<usize>().ok();
        } else if name == "connection" && value.contains("close") {
            keep = false;
        }
    }
    let length = length.ok_or_else(|| format!("no content-length: {status}"))?;
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("body: {e}"))?;
    let body = String::from_utf8_lossy(&body);
    if !status.contains(" 200 ") || !body.contains(expect) {
        return Err(format!("{status}: {body}"));
    }
    Ok(keep)
}

/// Fires new-connection requests from `threads` threads until `stop` is set (or `limit`
/// requests or 20 s pass); returns (ok, failed, failure messages).
pub fn close_load(
    addr: String,
    threads: usize,
    limit: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, Vec<String>)> {
    std::thread::spawn(move || {
        let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let issued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let messages = Arc::new(std::sync::Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(20);
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (addr, stop, ok, failed, messages, issued) = (
                    addr.clone(),
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    messages.clone(),
                    issued.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && Instant::now() < deadline
                        && issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < limit
                    {
                        match http_get(&addr) {
                            Ok(body) if body.contains("handled by worker") => {
                                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok(other) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                messages.lock().unwrap().push(other);
                            }
                            Err(e) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                messages.lock().unwrap().push(e);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let messages = messages.lock().unwrap().clone();
        (
            ok.load(std::sync::atomic::Ordering::Relaxed),
            failed.load(std::sync::atomic::Ordering::Relaxed),
            messages,
        )
    })
}

/// The bin directory of target/test-venv with tests/support/pypi/requirements.txt installed
/// (real servers, a Prometheus parser), or `None` (said on stderr) when it cannot be. Installed
/// again when the requirements change (a copy is kept beside the venv).
pub fn pypi_venv() -> Option<PathBuf> {
    static INSTALLED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let venv = repo().join("target/test-venv");
            let bin = venv.join("bin");
            let requirements = repo().join("tests/support/pypi/requirements.txt");
            let wanted = std::fs::read_to_string(&requirements).unwrap_or_default();
            let stamp = venv.join("requirements.installed");
            if std::fs::read_to_string(&stamp).ok().as_ref() == Some(&wanted) {
                return Some(bin);
            }
            let steps = [
                Command::new("python3")
                    .arg("-m")
                    .arg("venv")
                    .arg(&venv)
                    .output(),
                Command::new(bin.join("pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(&requirements)
                    .output(),
            ];
            for step in steps {
                match step {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => {
                        let what = format!("installing {}", requirements.display());
                        install_failed(&what, &out);
                        return None;
                    }
                    Err(e) => panic!("cannot run python3 for a venv: {e}"),
                }
            }
            let _ = std::fs::write(&stamp, wanted);
            Some(bin)
        })
        .clone()
}
