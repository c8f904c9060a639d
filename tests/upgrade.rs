//! In-place upgrade (`rrbalancer upgrade`, SIGUSR2): a new master takes the listening sockets
//! over from the running one, and no client is refused or fails meanwhile — or, when the new
//! master cannot serve, the old one serves on, unchanged, and `upgrade` says why.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Rrb, Start, alive, close_load, http_get};

/// `status --json` of whatever master answers on the control socket now.
fn status(rrb: &Rrb) -> serde_json::Value {
    let (code, out, err) = rrb.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn master_and_workers(rrb: &Rrb) -> (i32, Vec<i32>) {
    let s = status(rrb);
    let workers = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect();
    (s["pid"].as_i64().unwrap() as i32, workers)
}

/// The pid file the configuration names, as `check` prints it.
fn pid_file(rrb: &Rrb) -> std::path::PathBuf {
    let (code, out, err) = rrb.ctl(&["check"]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("pid_file = "))
        .expect("pid_file in check's output");
    line["pid_file = ".len()..].trim_matches('"').into()
}

/// Whether a live process's command line is `cmdline` (arguments joined by spaces).
fn processes_running(cmdline: &str) -> bool {
    (common::command_lines().into_iter()).any(|(pid, text)| text == cmdline && alive(pid))
}

fn wait_gone(pids: &[i32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "still running after {timeout:?}: {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three upgrades in a row under a full-speed `Connection: close` load, in `sched_policy`.
fn three_upgrades_under_load(config: &str) {
    let mut rrb = Rrb::start(config, 2);
    let pid_file = pid_file(&rrb);
    let stop = Arc::new(AtomicBool::new(false));
    let client = close_load(rrb.addr.clone(), 4, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let mut gone = Vec::new();
    for round in 0..3 {
        let (old, old_workers) = master_and_workers(&rrb);
        let (code, out, err) = rrb.ctl(&["upgrade"]);
        assert_eq!(code, 0, "upgrade {round}: {out}{err}");
        assert!(out.starts_with("upgraded: pid "), "{out}");
        let (new, new_workers) = master_and_workers(&rrb);
        assert_ne!(
            new, old,
            "round {round}: status answers from the new master"
        );
        assert!(out.contains(&format!("pid {new} serves")), "{out}");
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap().trim(),
            new.to_string(),
            "round {round}: the pid file names the new master"
        );
        assert_eq!(new_workers.len(), 2, "{new_workers:?}");
        assert!(new_workers.iter().all(|w| !old_workers.contains(w)));
        if round == 0 {
            // The first master is the test's child: reap it.
            assert_eq!(
                rrb.wait_exit(Duration::from_secs(10))
                    .and_then(|s| s.code()),
                Some(0),
                "the old master exits cleanly"
            );
        }
        gone.push(old);
        gone.extend(old_workers);
        wait_gone(&gone, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, messages) = client.join().unwrap();
    assert_eq!(failed, 0, "failed requests: {messages:?}");
    assert!(ok > 200, "the load really ran: {ok} requests");
    // The last master stops like any other, and leaves nothing behind.
    let (last, workers) = master_and_workers(&rrb);
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_gone(&[last], Duration::from_secs(10));
    wait_gone(&workers, Duration::from_secs(5));
    assert!(!pid_file.exists(), "the last master removed its pid file");
    assert!(http_get(&rrb.addr).is_err(), "nobody listens any more");
}

#[test]
fn three_upgrades_under_load_refuse_no_connection_rr() {
    three_upgrades_under_load("workers = 2\n[worker]\nargs = [\"--ready-delay\", \"150ms\"]\n");
}

#[test]
fn three_upgrades_under_load_refuse_no_connection_none() {
    three_upgrades_under_load(
        "workers = 2\nsched_policy = \"none\"\n[worker]\nargs = [\"--ready-delay\", \"150ms\"]\n",
    );
}

/// The old master keeps serving with the same pids and `upgrade` exits 1 saying why.
fn failed_upgrade(rrb: &Rrb, args: &[&str], why: &str) {
    let before = master_and_workers(rrb);
    let stop = Arc::new(AtomicBool::new(false));
    let client = close_load(rrb.addr.clone(), 2, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(100));
    let (code, out, err) = rrb.ctl(args);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, messages) = client.join().unwrap();
    assert_eq!(code, 1, "{args:?}: {out}{err}");
    assert!(err.contains(why), "{args:?}: {err}");
    assert!(
        err.contains(&format!("pid {} serves on", before.0)),
        "{err}"
    );
    assert_eq!(failed, 0, "failed requests: {messages:?}");
    assert!(ok > 0);
    assert_eq!(master_and_workers(rrb), before, "nothing changed");
}

#[test]
fn an_upgrade_that_cannot_serve_leaves_the_old_master_serving() {
    let rrb = Rrb::start("workers = 2\n", 2);
    // A binary that exits at once.
    failed_upgrade(
        &rrb,
        &["upgrade", "--binary", "/bin/false"],
        "exited before it was ready: exit code 1",
    );
    // Not a program at all.
    let text = rrb.dir.path().join("notes.txt");
    std::fs::write(&text, "not a program\n").unwrap();
    failed_upgrade(
        &rrb,
        &["upgrade", "--binary", text.to_str().unwrap()],
        "is not an executable file",
    );
    // The right binary, but the configuration's workers never become ready.
    let config = rrb.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{good}[worker]\nexec = \"sleep\"\nargs = [\"60\"]\nready = \"message\"\nready_timeout = \"1s\"\n"
        ),
    )
    .unwrap();
    failed_upgrade(&rrb, &["upgrade"], "not ready within 1s");
    // A configuration that does not load.
    std::fs::write(&config, format!("backlog = 0\n{good}")).unwrap();
    failed_upgrade(&rrb, &["upgrade"], "configuration does not load");
    failed_upgrade(&rrb, &["upgrade"], "key `backlog`: 0 is out of range");
    // A script that leaves a child behind and exits: the child goes too.
    let script = rrb.dir.path().join("leaves-a-child.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 61237 &\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&config, &good).unwrap();
    failed_upgrade(
        &rrb,
        &["upgrade", "--binary", script.to_str().unwrap()],
        "exited before it was ready: exit code 3",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_running("sleep 61237") {
        assert!(Instant::now() < deadline, "the script's child outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each failed new master has exited (its workers with it): nothing but ours is left.
    std::fs::write(&config, &good).unwrap();
    let (_, workers) = master_and_workers(&rrb);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rrb.workers().len() != workers.len() {
        assert!(
            Instant::now() < deadline,
            "{:?} vs {workers:?}",
            rrb.workers()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And a good upgrade still works after all that.
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// README: an upgrade that changes `sched_policy` between `rr` and `none` is refused (the
/// listening sockets, and their blocking mode, are shared with the old master while it serves),
/// and the old master serves on — both ways.
#[test]
fn an_upgrade_that_switches_rr_and_none_is_refused_and_the_old_master_serves_on() {
    for (from, to) in [("rr", "none"), ("none", "rr")] {
        let rrb = Rrb::start(&format!("workers = 2\nsched_policy = \"{from}\"\n"), 2);
        let config = rrb.config_path();
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace(
                &format!("sched_policy = \"{from}\""),
                &format!("sched_policy = \"{to}\""),
            ),
        )
        .unwrap();
        failed_upgrade(
            &rrb,
            &["upgrade"],
            "changes how the listening sockets are used",
        );
    }
}

#[test]
fn sigusr2_upgrades_and_a_unix_socket_listener_survives_the_old_master() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let config = format!("listen = [\"unix:{}\"]\nworkers = 1\n", path.display());
    let mut rrb = Rrb::start_with(Start {
        config: &config,
        ready: 1,
        ..Start::default()
    });
    let old = rrb.pid();
    rrb.signal(libc::SIGUSR2);
    rrb.wait_for_log("upgraded: pid", Duration::from_secs(20));
    assert_eq!(
        rrb.wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let (new, _) = master_and_workers(&rrb);
    assert_ne!(new, old);
    // The old master left the socket file to the new one, which serves on it.
    let mut conn =
        std::os::unix::net::UnixStream::connect(&path).expect("the socket file is there");
    use std::io::{Read, Write};
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("handled by worker"), "{answer}");
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_gone(&[new], Duration::from_secs(10));
    assert!(!path.exists(), "the last master removes the socket file");
}

#[test]
fn sockets_an_old_worker_never_took_go_to_the_new_master_not_closed() {
    // The old version's worker says `ready`, then never reads its channel again: every socket
    // sent to it waits there, un-acked (its window is 8). It keeps the channel open (`c` holds
    // it; a dropped socket object would close it, which the master treats as a failure).
    let stuck = "workers = 1\n[worker]\nmax_unacked = 8\nexec = \"python3\"\nargs = [\"-c\", \"import os,socket,time\\nc=socket.socket(fileno=int(os.environ['RRB_CHANNEL_FD']))\\nc.send(b'ready')\\ntime.sleep(60)\"]\n[shutdown]\nkill_timeout = \"1s\"\n";
    let rrb = Rrb::start(stuck, 1);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let addr = rrb.addr.clone();
            std::thread::spawn(move || http_get(&addr))
        })
        .collect();
    // Until all six wait, un-acked, in the old worker's channel.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&rrb)["workers"][0]["unacked"].as_u64() != Some(6) {
        assert!(Instant::now() < deadline, "{}", status(&rrb));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The new version works.
    std::fs::write(
        rrb.config_path(),
        "workers = 1\nlisten = [\"127.0.0.1:0\"]\n",
    )
    .unwrap();
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    // The old worker does not stop when asked; killed after kill_timeout, it gives back what it
    // never acked, and the old master — stopping — passes it to the new one.
    for client in clients {
        let body = client.join().unwrap().expect("every client is answered");
        assert!(body.contains("handled by worker"), "{body}");
    }
    let passed = rrb.wait_for_log("connection(s) to the new master", Duration::from_secs(5));
    assert!(passed.contains("upgrade: passed 6"), "{passed}");
    assert!(rrb.count_log("took 6 connection(s) the old master's workers could not") == 1);
    assert_eq!(rrb.count_log("no worker could take"), 0, "none closed");
}

#[test]
fn upgrade_wait_and_stop_return_only_once_the_old_master_is_gone() {
    let rrb = Rrb::start(
        "workers = 1\n[worker]\nargs = [\"--drain-grace\", \"1500ms\"]\n",
        1,
    );
    // An idle keep-alive client keeps the old worker (and so the old master) finishing for up
    // to its drain grace.
    let idle = || {
        let mut conn = std::net::TcpStream::connect(&rrb.addr).unwrap();
        use std::io::{Read, Write};
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("handled by worker"));
        conn
    };
    let _first = idle();
    let (old, _) = master_and_workers(&rrb);
    let (code, out, err) = rrb.ctl(&["upgrade", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("it has exited"), "{out}");
    assert!(
        !alive(old),
        "upgrade --wait returned with pid {old} still running"
    );

    // Without --wait it answers at the handover; the new master's status shows the old one
    // finishing, and a `stop` returns only once both are gone.
    let _second = idle();
    let (old, _) = master_and_workers(&rrb);
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pid {old} stops")), "{out}");
    let (new, _) = master_and_workers(&rrb);
    let upgrade = status(&rrb)["upgrade"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(upgrade.contains(&format!("from pid {old}")), "{upgrade}");
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !alive(old) && !alive(new),
        "stop returned before both masters were gone"
    );
    assert!(http_get(&rrb.addr).is_err(), "the port is free");
}

#[test]
fn reload_and_scale_are_refused_while_an_upgrade_is_under_way() {
    let rrb = Rrb::start("workers = 1\n", 1);
    // The new version's workers take a while to be ready.
    let config = rrb.config_path();
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{good}[worker]\nargs = [\"--ready-delay\", \"1500ms\"]\n"),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let dir = rrb.dir.path().to_owned();
    let upgrade = std::thread::spawn(move || {
        let out = std::process::Command::new(common::BIN)
            .args(["--config", &config_arg, "upgrade"])
            .env("XDG_RUNTIME_DIR", &dir)
            .output()
            .unwrap();
        common::outcome(out)
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&rrb)["upgrade"].is_null() {
        assert!(Instant::now() < deadline, "the upgrade did not begin");
        std::thread::sleep(Duration::from_millis(20));
    }
    for cmd in [&["reload"][..], &["scale", "3"]] {
        let (code, out, err) = rrb.ctl(cmd);
        assert_eq!(code, 1, "{cmd:?}: {out}{err}");
        assert!(err.contains("an upgrade is under way"), "{err}");
    }
    let (code, out, err) = upgrade.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("serves with 1 worker(s)"), "{out}");
}
