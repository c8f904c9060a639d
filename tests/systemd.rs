//! rrbalancer started by systemd's socket activation, as `systemd-socket-activate` (Debian's
//! systemd package) does it: the listening sockets are bound by the parent and passed as fd 3…
//! with `LISTEN_FDS`/`LISTEN_PID`, and the program gets no environment but those and what `-E`
//! names. Skipped, saying so, where `systemd-socket-activate` is absent.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, http_get, pid_of};

fn activator() -> Option<&'static str> {
    let path = "/usr/bin/systemd-socket-activate";
    if std::path::Path::new(path).exists() {
        Some(path)
    } else {
        common::skip(&format!("{path} is absent (apt-get install systemd)"));
        None
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `systemd-socket-activate -l ADDR… rrbalancer ARGS…`, in a process group of its own (killed
/// on drop); the master starts on the first connection, as the same process.
struct Activated {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Activated {
    fn start(activator: &str, listen: &[String], args: &[&str]) -> Activated {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(activator);
        for addr in listen {
            command.args(["-l", addr]);
        }
        command
            .arg("-E")
            .arg(format!("XDG_RUNTIME_DIR={}", dir.path().display()))
            .args(["-E", "RUST_LOG=info"])
            .arg(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let child = command.spawn().expect("start systemd-socket-activate");
        Activated { child, _dir: dir }
    }

    /// Waits (bounded) for the process to exit: its status and what it wrote.
    fn wait(mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                return (status.code(), err);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Still running: say what it wrote so far.
        // SAFETY: killing the process group this test created.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
        let mut err = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (None, err)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        common::kill_upgraded_masters(self._dir.path());
        // SAFETY: killing the process group this test created.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// GET until it answers (the first connection starts the master), bounded.
fn first_answer(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(addr) {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("no answer from {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn the_master_serves_on_the_sockets_systemd_passes_in_rr_and_none_mode() {
    let Some(activator) = activator() else { return };
    for policy in ["rr", "none"] {
        let addr = format!("127.0.0.1:{}", free_port());
        // The file's default `listen` (127.0.0.1:3000) is not what systemd bound: the socket
        // passed serves it, nothing binds port 3000.
        let master = Activated::start(
            activator,
            std::slice::from_ref(&addr),
            &["--workers", "2", "--sched-policy", policy],
        );
        let mut pids = std::collections::BTreeSet::new();
        pids.insert(pid_of(&first_answer(&addr)));
        for _ in 0..20 {
            pids.insert(pid_of(&http_get(&addr).expect("served")));
        }
        if policy == "rr" {
            assert_eq!(pids.len(), 2, "both workers serve in rr: {pids:?}");
        }
        // The master is the activator's process (it execs): SIGTERM stops it cleanly.
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(master.child.id() as i32, libc::SIGTERM) };
        let (code, err) = master.wait(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{policy}: {err}");
        assert!(err.contains("the socket systemd passed"), "{err}");
        // Another address than `listen` names is worth a warning (issue 26).
        let line = err
            .lines()
            .find(|l| l.contains("the socket systemd passed"))
            .unwrap();
        assert!(
            line.contains("WARN") && line.contains("is bound to"),
            "{line}"
        );
        assert!(err.contains(&format!("listening on {addr}")), "{err}");
        assert!(!err.contains("listening on 127.0.0.1:3000"), "{err}");
    }
}

#[test]
fn more_sockets_than_listen_entries_is_a_configuration_error() {
    let Some(activator) = activator() else { return };
    let (a, b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let master = Activated::start(activator, &[a.clone(), b], &["--workers", "1"]);
    // A connection starts it (once the activator listens); it refuses to run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&a).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, err) = master.wait(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("started with 2 listening socket(s)") && err.contains("`listen` names 1"),
        "{err}"
    );
}

/// The test's own `NOTIFY_SOCKET`: a datagram socket in a temp directory.
struct Notify {
    socket: std::os::unix::net::UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Notify {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// rrbalancer with this socket as its `NOTIFY_SOCKET`, `ready` workers ready.
    fn start(&self, config: &str, ready: usize) -> common::Rrb {
        common::Rrb::start_with(common::Start {
            config,
            env: &[("NOTIFY_SOCKET", &self.path)],
            ready,
            ..common::Start::default()
        })
    }

    /// The next notification (within 10 s, or the test fails).
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// A notification arriving within 200 ms, if one does.
    fn quiet(&self) -> Option<String> {
        self.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let got = self.socket.recv(&mut buf).ok();
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping_on_notify_socket() {
    let notify = Notify::new();
    let mut rrb = notify.start("workers = 2\n", 2);
    let next = || notify.next();
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=2/2 workers ready"),
        "{ready}"
    );
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let reloading = next();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    let done = next();
    assert!(done.contains("READY=1"), "{done}");
    assert!(done.contains(" connections handed"), "{done}");
    // Workers do not inherit NOTIFY_SOCKET: none could tell systemd anything in the master's
    // name (their own environment, as the kernel keeps it).
    let workers = rrb.wait_workers(2, Duration::from_secs(5));
    let mut looked = 0;
    for pid in workers {
        // (One of a reload's old workers may have exited since.)
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        looked += 1;
        let names: Vec<String> = (environ.split(|&b| b == 0))
            .map(|kv| String::from_utf8_lossy(kv).into_owned())
            .collect();
        assert!(
            names.iter().any(|kv| kv.starts_with("RRB_WORKER_ID=")),
            "a worker's environment: {names:?}"
        );
        assert!(
            !names.iter().any(|kv| kv.starts_with("NOTIFY_SOCKET=")),
            "worker {pid} has NOTIFY_SOCKET"
        );
    }
    assert!(looked > 0, "no worker to look at");
    rrb.signal(libc::SIGTERM);
    let stopping = next();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    // Workers do not inherit NOTIFY_SOCKET: nothing else arrived.
    assert_eq!(notify.quiet(), None, "only the master notifies");
}

/// A graceful stop with `[shutdown] drain` says so first (`STATUS=draining, then stopping`),
/// then `STOPPING=1` once the drain is over.
#[test]
fn systemd_is_told_of_a_drain_before_the_stop() {
    let notify = Notify::new();
    let mut rrb = notify.start("workers = 1\n[shutdown]\ndrain = \"1s\"\n", 1);
    assert!(notify.next().contains("READY=1"));
    rrb.signal(libc::SIGTERM);
    let draining = notify.next();
    assert_eq!(draining.trim_end(), "STATUS=draining, then stopping");
    let stopping = notify.next();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

/// README: `WATCHDOG=1` every half `WATCHDOG_USEC` (systemd's `WatchdogSec=`): never a gap
/// as long as the deadline.
#[test]
fn the_watchdog_is_fed_every_half_interval() {
    let notify = Notify::new();
    let rrb = common::Rrb::start_with(common::Start {
        config: "workers = 1\n",
        env: &[
            ("NOTIFY_SOCKET", &notify.path),
            ("WATCHDOG_USEC", "1000000"),
        ],
        ready: 1,
        ..common::Start::default()
    });
    let start = Instant::now();
    let mut fed = Vec::new();
    while start.elapsed() < Duration::from_millis(3200) {
        if notify.next().contains("WATCHDOG=1") {
            fed.push(start.elapsed());
        }
    }
    assert!(fed.len() >= 4, "fed {} times in 3.2 s: {fed:?}", fed.len());
    let gaps: Vec<Duration> = fed.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&g| g < Duration::from_secs(1)),
        "a gap as long as the 1 s deadline: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|&g| g > Duration::from_millis(200)),
        "fed far more often than every 500 ms: {gaps:?}"
    );
    drop(rrb);
}

#[test]
fn an_upgrade_moves_mainpid_to_the_new_master_which_then_says_ready() {
    let notify = Notify::new();
    let mut rrb = notify.start("workers = 2\n", 2);
    let next = || notify.next();
    assert!(next().contains("READY=1"));
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    let new = common::upgraded_pid(&out);
    // The old master names its successor; the successor, once in charge, says it is ready.
    let handing = next();
    assert!(handing.contains(&format!("MAINPID={new}")), "{handing}");
    let ready = next();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=2/2 workers ready"),
        "{ready}"
    );
    // The old master's stop is not the service's: it says nothing more.
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    // The new one's stop is.
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    let stopping = next();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(notify.quiet(), None, "nothing else was said");
}

#[test]
fn a_socket_activated_master_passes_systemds_sockets_to_its_upgrade() {
    let Some(activator) = activator() else { return };
    let addr = format!("127.0.0.1:{}", free_port());
    let master = Activated::start(activator, std::slice::from_ref(&addr), &["--workers", "2"]);
    let first = pid_of(&first_answer(&addr));
    let runtime = master._dir.path().to_owned();
    let upgrade = Command::new(BIN)
        .arg("upgrade")
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let (code, out, err) = common::outcome(upgrade);
    assert_eq!(code, 0, "{out}{err}");
    // The activator's process (the old master) exits; the new one serves on the same socket.
    // (Its stderr stays open in the new master: only the exit is waited for.)
    let mut master = master;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = master.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old master did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let after = pid_of(&http_get(&addr).expect("served after the upgrade"));
    assert_ne!(after, first, "a new worker answers");
    let stop = Command::new(BIN)
        .arg("stop")
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let (code, out, err) = common::outcome(stop);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        http_get(&addr).is_err(),
        "nobody serves the port after the stop"
    );
}
