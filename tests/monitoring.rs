//! Monitoring: `[metrics] listen` serves `/metrics` (checked with a real Prometheus parser, the
//! `prometheus-client` Python package), `/healthz` and `/readyz`; `rrbalancer metrics` prints
//! the same text over the control socket.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::prometheus::parsed;
use common::{Rrb, http_get};

/// Starts rrbalancer with `[metrics] listen` on a free port; the address it serves on.
fn start(config: &str, ready: usize) -> (Rrb, String) {
    let rrb = Rrb::start(
        &format!("listen = [\"127.0.0.1:0\"]\n{config}[metrics]\nlisten = \"127.0.0.1:0\"\n"),
        ready,
    );
    let addr = rrb.metrics_addr();
    (rrb, addr)
}

/// `GET path` on the metrics listener: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (code, body)
}

/// The sum of the samples named `name`.
fn sum(samples: &[String], name: &str) -> f64 {
    sum_with(samples, name, "")
}

/// The sum of the samples named `name` with `label` among their labels, as the parser prints
/// one: `('cause', 'stopped')`.
fn sum_with(samples: &[String], name: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|l| l.split(' ').next() == Some(name) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_parse_and_count_every_connection_handed_exactly() {
    let (rrb, addr) = start("workers = 3\n", 3);
    const N: usize = 300;
    for _ in 0..N {
        assert!(http_get(&rrb.addr).unwrap().contains("handled by worker"));
    }
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let mut samples = parsed(&text);
    assert_eq!(
        sum(&samples, "rrbalancer_connections_handed_total"),
        N as f64,
        "{text}"
    );
    // Every one acked, each with its hand-off time (an ack may still wait in a channel when
    // the response reached the client: the master reads it at its next turn).
    let deadline = Instant::now() + Duration::from_secs(5);
    while sum(&samples, "rrbalancer_connections_acked_total") < N as f64 {
        assert!(Instant::now() < deadline, "{samples:#?}");
        std::thread::sleep(Duration::from_millis(20));
        samples = parsed(&get(&addr, "/metrics").1);
    }
    assert_eq!(
        sum(&samples, "rrbalancer_connections_acked_total"),
        N as f64
    );
    assert_eq!(
        sum(&samples, "rrbalancer_handoff_latency_seconds_count"),
        N as f64
    );
    let bucket = "rrbalancer_handoff_latency_seconds_bucket";
    let infinite = sum_with(&samples, bucket, "('le', '+Inf')");
    assert_eq!(infinite, N as f64);
    let latency = sum(&samples, "rrbalancer_handoff_latency_seconds_sum") / N as f64;
    assert!(
        latency > 0.0 && latency < 1.0,
        "mean hand-off {latency} s on an idle fleet"
    );
    assert_eq!(sum(&samples, "rrbalancer_worker_starts_total"), 3.0);
    assert_eq!(
        sum(&samples, "rrbalancer_connections_accepted_total"),
        N as f64
    );
    assert_eq!(sum(&samples, "rrbalancer_workers_ready"), 3.0);
    assert_eq!(
        sum(&samples, "rrbalancer_worker_state"),
        3.0,
        "one state per slot"
    );
    assert!(sum(&samples, "process_resident_memory_bytes") > 1e6);
    // Each worker's memory and CPU, without [recycle] measuring anything.
    assert_eq!(
        samples
            .iter()
            .filter(|l| l.starts_with("rrbalancer_worker_resident_memory_bytes "))
            .count(),
        3
    );
    assert!(sum(&samples, "rrbalancer_worker_resident_memory_bytes") > 3e5);
    // (CPU time counts in clock ticks: a few idle workers may not have used one yet.)
    assert_eq!(
        samples
            .iter()
            .filter(|l| l.starts_with("rrbalancer_worker_cpu_seconds_total "))
            .count(),
        3
    );
    // The same text over the control socket (`rrbalancer metrics`).
    let (code, out, err) = rrb.ctl(&["metrics"]);
    assert_eq!(code, 0, "{err}");
    let samples = parsed(&out);
    assert_eq!(
        sum(&samples, "rrbalancer_connections_handed_total"),
        N as f64
    );
    // Counts survive a worker's replacement (a reload): the slot keeps them.
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let samples = parsed(&get(&addr, "/metrics").1);
    assert_eq!(
        sum(&samples, "rrbalancer_connections_handed_total"),
        N as f64
    );
    assert_eq!(
        sum(&samples, "rrbalancer_connections_acked_total"),
        N as f64
    );
    let reloads = |samples: &[String], outcome: &str| {
        let label = format!("('outcome', '{outcome}')");
        sum_with(samples, "rrbalancer_reloads_total", &label)
    };
    assert_eq!(reloads(&samples, "completed"), 1.0);
    assert_eq!(reloads(&samples, "failed"), 0.0);
    assert_eq!(
        sum(&samples, "rrbalancer_worker_starts_total"),
        6.0,
        "3 candidates"
    );
    // The reload's old workers exit as asked; a worker killed outright counts as killed.
    let exits = |cause: &str| {
        let samples = parsed(&get(&addr, "/metrics").1);
        let label = format!("('cause', '{cause}')");
        sum_with(&samples, "rrbalancer_worker_exits_total", &label)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while exits("stopped") < 3.0 {
        assert!(Instant::now() < deadline, "{}", get(&addr, "/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, status, _) = rrb.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let victim = status["workers"][0]["pid"].as_i64().unwrap() as i32;
    // SAFETY: a worker this test's master started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    while exits("killed") < 1.0 {
        assert!(Instant::now() < deadline, "{}", get(&addr, "/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(exits("stopped"), 3.0);
}

fn wait_for(addr: &str, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = get(addr, path);
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got} {body}, not {code}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn healthz_and_readyz_follow_start_reload_and_stop() {
    let (mut rrb, addr) = start(
        "workers = 2\n[worker]\nargs = [\"--ready-delay\", \"1s\", \"--drain-grace\", \"1500ms\"]\n",
        0,
    );
    // Before the workers are ready.
    assert_eq!(get(&addr, "/healthz"), (503, "no worker is ready\n".into()));
    assert_eq!(get(&addr, "/readyz"), (503, "not ready\n".into()));
    rrb.wait_ready(2);
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".into()));
    // During a reload the old workers serve: both stay 200 throughout.
    let config = rrb.config_path().display().to_string();
    let dir = rrb.dir.path().to_owned();
    let reload = std::thread::spawn(move || {
        std::process::Command::new(common::BIN)
            .args(["--config", &config, "reload"])
            .env("XDG_RUNTIME_DIR", &dir)
            .output()
            .unwrap()
    });
    while !reload.is_finished() {
        assert_eq!(get(&addr, "/healthz").0, 200);
        assert_eq!(get(&addr, "/readyz").0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reload.join().unwrap().status.success());
    // An idle keep-alive client keeps a worker draining: the stop takes a moment, during which
    // /readyz says so while the listener still answers.
    let mut idle = TcpStream::connect(&rrb.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).unwrap();
    rrb.signal(libc::SIGTERM);
    assert_eq!(wait_for(&addr, "/readyz", 503), "stopping\n");
    assert!(rrb.wait_exit(Duration::from_secs(10)).is_some());
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the listener is gone with the master"
    );
}

/// `GET path`: its status code, or `None` if nothing answers (the master is gone).
fn try_get(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

#[test]
fn health_with_a_slot_given_up_and_once_every_slot_gave_up() {
    // Slot 1 never starts; slot 0 serves until the test breaks it too.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let worker = common::repo().join("scripts/python_worker.py");
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 1 ] || [ -e '{}' ]; then exit 7; fi; exec python3 '{}'",
        broken.display(),
        worker.display()
    );
    let (mut rrb, addr) = start(
        &format!(
            "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\n\
             [restart]\nmax_restarts = 2\nwindow = \"60s\"\nbackoff_initial = \"10ms\"\n"
        ),
        0,
    );
    rrb.wait_for_log("giveup slot=1", Duration::from_secs(10));
    rrb.wait_ready(1);
    // One slot serves: healthy, and ready (waiting for slot 1 would be waiting forever).
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(wait_for(&addr, "/readyz", 200), "ready\n");
    let samples = parsed(&get(&addr, "/metrics").1);
    let one = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")) && l.contains(labels))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(
        one("rrbalancer_worker_giveups_total", "[('slot', '1')]"),
        Some(1.0)
    );
    assert_eq!(
        one("rrbalancer_worker_giveups_total", "[('slot', '0')]"),
        Some(0.0)
    );
    assert_eq!(
        one(
            "rrbalancer_worker_state",
            "[('slot', '1'), ('state', 'given_up')]"
        ),
        Some(1.0)
    );
    assert_eq!(
        one("rrbalancer_worker_starts_total", "[('slot', '1')]"),
        Some(3.0),
        "1 start + max_restarts"
    );
    // Slot 0 fails for good as well: no worker serves. The master stays up (on_all_given_up
    // = "wait", the default) to try them again after retry_after (60 s), and both probes say
    // 503 from then on.
    std::fs::write(&broken, "").unwrap();
    let (_, status, _) = rrb.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let pid = status["workers"][0]["pid"].as_i64().unwrap() as i32;
    // SAFETY: the worker of slot 0, started by this test's master.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    loop {
        let code = try_get(&addr, "/healthz").expect("the master stays up");
        answers.push(code);
        if code != 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{answers:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(answers.last(), Some(&503), "{answers:?}");
    rrb.wait_for_log(
        "every slot gave up: no worker serves now",
        Duration::from_secs(5),
    );
    assert_eq!(get(&addr, "/healthz").0, 503);
    assert_eq!(get(&addr, "/readyz").0, 503);
    assert!(
        rrb.wait_exit(Duration::from_millis(300)).is_none(),
        "still up"
    );
    rrb.signal(libc::SIGTERM);
    let exit = rrb.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_bad_metrics_address_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.toml"),
        "[metrics]\nlisten = \"localhost\"\n",
    )
    .unwrap();
    let (code, err) = common::run_to_exit(&["--config", "m.toml", "check"], dir.path(), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("m.toml:2:10: key `metrics.listen`"), "{err}");
}

#[test]
fn json_logs_are_one_object_per_line_through_starts_a_crash_a_reload_and_a_stop() {
    let mut rrb = Rrb::start("workers = 2\n[log]\nformat = \"json\"\n", 2);
    let (_, status, _) = rrb.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let victim = status["workers"][0]["pid"].as_i64().unwrap() as i32;
    // SAFETY: a worker this test's master started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    rrb.wait_for_log("restarting slot=", Duration::from_secs(10));
    rrb.wait_ready(3);
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(http_get(&rrb.addr).unwrap().contains("handled by worker"));
    rrb.signal(libc::SIGTERM);
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let lines = rrb.log();
    let mut events = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["time", "level", "process", "target", "event", "message"] {
            assert!(!v[key].is_null(), "{key} missing: {line}");
        }
        events.push(v);
    }
    let has = |event: &str, key: &str| {
        events
            .iter()
            .any(|v| v["event"] == event && (key.is_empty() || v[key].is_i64()))
    };
    assert!(has("worker started", "slot"), "{lines:#?}");
    assert!(has("worker exited unasked", "pid"), "the crash");
    assert!(has("restarting", "slot"));
    assert!(has("reload complete", ""));
    assert!(has("all workers have exited", ""), "the stop");
}

/// Issue 26: with `format = "json"`, the workers' captured output is JSON too — one object a
/// line naming slot, pid and stream — and a worker's own JSON line stays an object (the demo
/// worker logs JSON when the master does). Before: `[slot 0 pid N] {…}`, not JSON.
#[test]
fn captured_worker_output_is_json_with_the_workers_own_objects_kept() {
    let mut rrb = Rrb::start(
        "workers = 2\n[log]\nformat = \"json\"\nstderr = \"workers.log\"\n",
        2,
    );
    assert!(http_get(&rrb.addr).unwrap().contains("handled by worker"));
    rrb.signal(libc::SIGTERM);
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    let text = std::fs::read_to_string(rrb.dir.path().join("workers.log")).unwrap();
    let mut slots = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["stream"], "stderr", "{line}");
        assert!(v["pid"].is_i64() && v["time"].is_string(), "{line}");
        assert!(
            v["line"].is_object(),
            "the worker's own JSON stays an object: {line}"
        );
        assert!(v["line"]["message"].is_string(), "{line}");
        slots.insert(v["slot"].as_i64().unwrap());
    }
    assert_eq!(slots.len(), 2, "both workers' lines: {text}");
}

/// `tmux -L NAME ARGS…` on a private server; its output.
fn tmux(server: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .arg("-L")
        .arg(server)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() && args[0] == "new-session" {
        panic!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn top_under_tmux_shows_every_slot_serving_and_quits_restoring_the_terminal() {
    if std::process::Command::new("tmux")
        .arg("-V")
        .output()
        .is_err()
    {
        common::skip("tmux is absent (apt-get install tmux)");
        return;
    }
    let rrb = Rrb::start("workers = 2\n", 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = common::close_load(rrb.addr.clone(), 2, usize::MAX, stop.clone());
    let dir = rrb.dir.path();
    // A tmux server of its own for each key (a server being killed is not reused), killed
    // however the test ends.
    struct Server(String);
    impl Drop for Server {
        fn drop(&mut self) {
            tmux(&self.0, &["kill-server"]);
        }
    }
    for key in ["q", "C-c"] {
        let server = format!("rrb-top-{}-{}", std::process::id(), key.len());
        let _server = Server(server.clone());
        let marker = dir.join(format!("tty-{key}"));
        // The terminal's settings before and after; the same if top restored them.
        let command = format!(
            "stty -g > {m}.before; env XDG_RUNTIME_DIR={x} {bin} --config {c} top; echo EXIT=$?; \
             stty -g > {m}.after; cmp -s {m}.before {m}.after && echo TTY=same; sleep 30",
            m = marker.display(),
            x = dir.display(),
            bin = common::BIN,
            c = rrb.config_path().display()
        );
        tmux(
            &server,
            &[
                "new-session",
                "-d",
                "-s",
                "top",
                "-x",
                "120",
                "-y",
                "30",
                &command,
            ],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let screen = loop {
            let screen = tmux(&server, &["capture-pane", "-p", "-t", "top"]);
            let serving = screen
                .lines()
                .filter(|l| l.starts_with('0') || l.starts_with('1'))
                .filter(|l| l.split_whitespace().nth(4).is_some_and(|r| r != "0"))
                .count();
            if serving == 2 {
                break screen;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: top never showed both slots serving:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            screen.contains("CONN/S") && screen.contains("total"),
            "{screen}"
        );
        tmux(&server, &["send-keys", "-t", "top", key]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let screen = tmux(&server, &["capture-pane", "-p", "-t", "top"]);
            if screen.contains("TTY=same") {
                assert!(screen.contains("EXIT=0"), "{screen}");
                assert!(
                    !screen.contains("CONN/S"),
                    "the alternate screen is left: {screen}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{key} did not quit cleanly:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (_, failed, messages) = load.join().unwrap();
    assert_eq!(failed, 0, "{messages:?}");
    // Not on a terminal: a plain table per refresh, and -n stops it.
    let (code, out, err) = rrb.ctl(&["top", "-n", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("CONN/S").count(), 2, "{out}");
    assert!(!out.contains('\x1b'), "no escape sequences off a terminal");
}

/// What a client reads before the master closes (or `timeout` passes), even if the connection
/// then ends with a reset.
fn read_all(stream: &mut TcpStream, timeout: Duration) -> String {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn fifty_clients_closing_mid_request_or_sending_garbage_leave_no_fd_behind() {
    let (rrb, addr) = start("workers = 1\n", 1);
    let baseline = rrb.open_fds();
    assert_eq!(get(&addr, "/metrics").0, 200);
    let mut garbage = Vec::new();
    for i in 0..50 {
        let mut s = TcpStream::connect(&addr).unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /metr").unwrap(); // and gone
        } else {
            s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n")
                .unwrap();
            garbage.push(s);
        }
    }
    for mut s in garbage {
        let answer = read_all(&mut s, Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    }
    let after = Instant::now();
    let fds = rrb.wait_open_fds_at_most(baseline, Duration::from_secs(2));
    assert_eq!(fds, baseline, "the master holds no fd for the 50 clients");
    eprintln!(
        "master fds: {baseline} before, {fds} {:?} after the 50 clients",
        after.elapsed()
    );
    // Slowloris: a head that never ends is answered 408 at the deadline, and closed while
    // the clients still hold their side.
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let sent = Instant::now();
    let held = rrb.wait_open_fds_at_least(baseline + 20, Duration::from_secs(2));
    assert!(held >= baseline + 20, "accepted: {held}");
    let fds = rrb.wait_open_fds_at_most(baseline, Duration::from_secs(8));
    assert_eq!(
        fds, baseline,
        "slow heads are dropped at the header deadline"
    );
    eprintln!(
        "20 slow heads: master fds back to {fds} after {:?}",
        sent.elapsed()
    );
    for mut s in slow {
        let answer = read_all(&mut s, Duration::from_secs(1));
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    }
    let (_, text) = get(&addr, "/metrics");
    for (cause, n) in [("bad_request", 25), ("timeout", 20)] {
        let sample = format!(
            "rrbalancer_clients_turned_away_total{{door=\"metrics\",cause=\"{cause}\"}} {n}\n"
        );
        assert!(text.contains(&sample), "{sample}{text}");
    }
}

#[test]
fn metrics_allow_closes_other_clients_at_once_and_a_public_listener_is_warned_about() {
    let rrb = Rrb::start(
        "listen = [\"127.0.0.1:0\"]\nworkers = 1\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         allow = [\"10.0.0.0/8\", \"::1\"]\n",
        1,
    );
    let line = rrb.wait_for_log("metrics on http://", Duration::from_secs(10));
    assert!(
        line.contains("clients only from 10.0.0.0/8, ::1/128"),
        "{line}"
    );
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    for _ in 0..11 {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(
            read_all(&mut s, Duration::from_secs(5)),
            "",
            "closed unanswered"
        );
    }
    // Logged once, then counted.
    rrb.wait_for_log(
        "refused a client from 127.0.0.1: not in metrics.allow",
        Duration::from_secs(5),
    );
    let end = rrb.wait_for_log(
        "from outside metrics.allow refused",
        Duration::from_secs(15),
    );
    assert!(end.contains(" 11 client(s) "), "{end}");
    assert_eq!(rrb.count_log("not in metrics.allow"), 1);
    let (code, text, _) = rrb.ctl(&["metrics"]);
    assert_eq!(code, 0);
    let sample = "rrbalancer_clients_turned_away_total{door=\"metrics\",cause=\"not_allowed\"} 11";
    assert!(text.contains(sample), "{text}");

    // A reload changes who may connect: a client in the new list is served.
    let config = std::fs::read_to_string(rrb.config_path()).unwrap();
    let config = config.replace("\"10.0.0.0/8\", \"::1\"", "\"127.0.0.0/8\"");
    std::fs::write(rrb.config_path(), config).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_for_log(
        "metrics clients allowed from now on: 127.0.0.0/8",
        Duration::from_secs(5),
    );
    assert_eq!(get(addr, "/healthz").0, 200);

    // `check` warns of a listener beyond loopback with no `allow`, naming the key, and
    // refuses a bad entry naming file, line and key.
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &str| {
        std::fs::write(dir.path().join("m.toml"), config).unwrap();
        common::run_to_exit(&["--config", "m.toml", "check"], dir.path(), &[])
    };
    let (code, said) = check("[metrics]\nlisten = \"0.0.0.0:9100\"\n");
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("key `metrics.listen`") && said.contains("`metrics.allow` is unset"),
        "{said}"
    );
    let (code, said) = check("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.0.0.0/8\"]\n");
    assert_eq!(code, 0, "{said}");
    assert!(!said.contains("metrics.allow` is unset"), "{said}");
    assert!(
        said.contains("allow = [\"10.0.0.0/8\"]"),
        "check prints it: {said}"
    );
    let (code, said) =
        check("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.0.0.0/8\", \"10.0.0.300\"]\n");
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("m.toml:3:24: key `metrics.allow`"), "{said}");
}

/// Issue 26: `rrbalancer logs` shows the workers' recent captured output (`--slot`, `-n`),
/// `-f` follows it, and without capture it says why there is nothing.
#[test]
fn logs_shows_and_follows_the_workers_captured_output() {
    let rrb = Rrb::start(
        "workers = 2\n[log]\nstdout = \"out.log\"\nstderr = \"err.log\"\n",
        2,
    );
    let (code, out, err) = rrb.ctl(&["logs"]);
    assert_eq!(code, 0, "{out}{err}");
    for slot in [0, 1] {
        assert!(out.contains(&format!("[slot {slot} pid ")), "{out}");
    }
    assert!(out.contains(" stderr] "), "{out}");
    let (code, out, err) = rrb.ctl(&["logs", "--slot", "1", "-n", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("[slot 1 pid "), "{out}");
    // Followed: the new workers of a reload show up.
    let mut follow = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(rrb.config_path())
        .args(["logs", "-f", "-n", "0"])
        .env("XDG_RUNTIME_DIR", rrb.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let before = rrb.workers();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let after: Vec<i32> = rrb.wait_workers(2, Duration::from_secs(5));
    let new_pid = *after
        .iter()
        .find(|p| !before.contains(p))
        .expect("a new worker");
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let hit = line.contains(&format!(" pid {new_pid} "));
            seen.push(line);
            if hit {
                break;
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.iter().any(|l| l.contains(&format!(" pid {new_pid} "))),
        "{seen:#?}"
    );
    // `-n 0`: only what came after it started, none of the lines of the workers before.
    assert!(
        !seen.iter().any(|l| before
            .iter()
            .any(|p| l.contains(&format!(" pid {p} ")) && l.contains("serving"))),
        "{seen:#?}"
    );
    // A slot that is not there, and no agent: said, not an empty answer.
    let (code, _, err) = rrb.ctl(&["logs", "--slot", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("no slot 5: this master runs 2"), "{err}");
    let (code, _, err) = rrb.ctl(&["logs", "--agent"]);
    assert_eq!(code, 1);
    assert!(err.contains("no [agent]"), "{err}");
    // Not captured: nothing to show, and why.
    let plain = Rrb::start("workers = 1\n", 1);
    let (code, out, err) = plain.ctl(&["logs"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("not captured"), "{err}");
}
