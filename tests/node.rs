//! Node.js workers, unchanged, on real Node (`node` on PATH; CI also runs these on Node 18
//! and 22): child_process handle passing (`protocol = "node"`) and the cluster primary
//! (`protocol = "node-cluster"`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Rrb, Start, alive, http_get_path, pid_of, repo, worker_id_of};

fn script(name: &str) -> String {
    repo().join("scripts/node").join(name).display().to_string()
}

fn child_config(workers: usize, policy: &str, extra_env: &str) -> String {
    format!(
        "workers = {workers}\nsched_policy = \"{policy}\"\n[worker]\nexec = \"node\"\nargs = [\"{}\"]\nprotocol = \"node\"\nenv = {{ {extra_env} }}\n[shutdown]\nkill_timeout = \"3s\"\n[restart]\nbackoff_initial = \"10ms\"\n",
        script("worker.js")
    )
}

fn cluster_config(workers: usize, policy: &str) -> String {
    format!(
        "workers = {workers}\nsched_policy = \"{policy}\"\n[worker]\nexec = \"node\"\nargs = [\"{}\"]\nprotocol = \"node-cluster\"\n[shutdown]\nkill_timeout = \"3s\"\n[restart]\nbackoff_initial = \"10ms\"\n",
        script("cluster_app.js")
    )
}

/// 30 sequential requests: which worker (by pid) served each.
fn thirty(rrb: &Rrb) -> Vec<i32> {
    (0..30)
        .map(|i| pid_of(&rrb.get().unwrap_or_else(|e| panic!("request {i}: {e}"))))
        .collect()
}

fn assert_strict_rotation(pids: &[i32], workers: usize) {
    let mut counts = BTreeMap::new();
    for p in pids {
        *counts.entry(*p).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), workers, "{counts:?}");
    assert!(
        counts.values().all(|&c| c == pids.len() / workers),
        "{counts:?}"
    );
    for (i, p) in pids.iter().enumerate().skip(workers) {
        assert_eq!(*p, pids[i - workers], "strict rotation: {pids:?}");
    }
}

#[test]
fn child_process_workers_take_turns_exactly() {
    let rrb = Rrb::start(&child_config(3, "rr", ""), 3);
    assert_strict_rotation(&thirty(&rrb), 3);
}

#[test]
fn cluster_app_workers_take_turns_exactly() {
    let rrb = Rrb::start(&cluster_config(3, "rr"), 3);
    let pids = thirty(&rrb);
    assert_strict_rotation(&pids, 3);
    // `cluster.worker.id` is the slot + 1, as Node numbers its workers.
    let body = rrb.get().unwrap();
    assert!((1..=3).contains(&worker_id_of(&body)), "{body}");
}

#[test]
fn none_mode_every_node_worker_accepts_itself() {
    for config in [child_config(2, "none", ""), cluster_config(2, "none")] {
        let rrb = Rrb::start(&config, 2);
        if config.contains("worker.js") {
            // child_process workers count as ready when started (`ready = "start"`): wait until
            // each has taken the listening socket (it acks the handle), or a slow start (CI, Node
            // 18 after the fuzzers: seen once) leaves the first worker serving alone.
            rrb.wait_for_log_count("took the listening socket", 2, Duration::from_secs(10));
        }
        // The kernel decides who accepts, and may favour one process for a while: ask from
        // several threads until both have answered (at most 4 × 100 requests).
        let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if seen.lock().unwrap().len() == 2 {
                            return;
                        }
                        let pid = pid_of(&rrb.get().expect("answer"));
                        seen.lock().unwrap().insert(pid);
                    }
                });
            }
        });
        let pids = seen.into_inner().unwrap();
        assert_eq!(pids.len(), 2, "both serve: {pids:?}");
    }
}

#[test]
fn the_seeds_crash_test_a_worker_leaving_after_each_request_loses_nothing() {
    // Seed 003: a worker sends {act: 'suicide'} and exits after every request.
    let rrb = Rrb::start(&child_config(2, "rr", "MAX_REQUESTS = \"1\""), 2);
    for i in 0..300 {
        let body = rrb
            .get()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert!(body.contains("handled by worker"), "{body}");
    }
    assert!(rrb.count_log("worker leaving") >= 290, "they really left");
    assert_eq!(rrb.count_log("exited unasked"), 0, "leaving is not a crash");
}

#[test]
fn a_node_worker_killed_with_sigkill_is_replaced() {
    for config in [child_config(2, "rr", ""), cluster_config(2, "rr")] {
        let rrb = Rrb::start(&config, 2);
        let victim = rrb.wait_workers(2, Duration::from_secs(5))[0];
        // SAFETY: killing one of this test's workers.
        unsafe { libc::kill(victim, libc::SIGKILL) };
        for _ in 0..20 {
            assert_ne!(pid_of(&rrb.get().expect("answer")), victim);
        }
        rrb.wait_for_log("killed by SIGKILL", Duration::from_secs(5));
        rrb.wait_ready(3);
        let after = rrb.wait_workers(2, Duration::from_secs(5));
        assert!(!after.contains(&victim));
    }
}

#[test]
fn graceful_stop_lets_node_workers_exit_0() {
    for config in [
        child_config(2, "rr", ""),
        child_config(2, "none", ""),
        cluster_config(2, "rr"),
        cluster_config(2, "none"),
    ] {
        let mut rrb = Rrb::start(&config, 2);
        let workers = rrb.wait_workers(2, Duration::from_secs(5));
        rrb.get().unwrap();
        rrb.signal(libc::SIGTERM);
        let status = rrb.wait_exit(Duration::from_secs(5)).expect("stopped");
        assert_eq!(status.code(), Some(0));
        assert_eq!(rrb.count_log("exit code 0"), 2, "{config}\n{:?}", rrb.log());
        for pid in workers {
            assert!(!alive(pid));
        }
    }
}

/// Slot 0's first incarnation runs tests/support/node/bad_worker.js with BAD=`bad`; every other
/// worker is scripts/node/worker.js (`protocol = "node"`) or cluster_app.js (`"node-cluster"`).
fn bad_once(bad: &str, protocol: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran");
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 0 ] && [ ! -e '{m}' ]; then touch '{m}'; BAD={bad} exec node '{b}'; else exec node '{w}'; fi",
        m = mark.display(),
        b = repo().join("tests/support/node/bad_worker.js").display(),
        w = script(if protocol == "node" {
            "worker.js"
        } else {
            "cluster_app.js"
        }),
    );
    let config = format!(
        "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\nprotocol = \"{protocol}\"\n[shutdown]\nkill_timeout = \"1s\"\n[restart]\nbackoff_initial = \"10ms\"\n"
    );
    (dir, config)
}

#[test]
fn malformed_json_a_handle_without_fd_or_one_sent_to_us_gets_the_worker_replaced() {
    for protocol in ["node", "node-cluster"] {
        for (bad, what) in [
            ("json", "malformed JSON"),
            ("handle", "NODE_HANDLE"),
            ("send-fd", "sent file descriptors to the master"),
        ] {
            let (_mark, config) = bad_once(bad, protocol);
            let rrb = Rrb::start(&config, 2);
            let line = rrb.wait_for_log("misbehaved", Duration::from_secs(10));
            assert!(line.contains(what), "{protocol}, {bad}: {line}");
            assert!(alive(rrb.pid()), "the master survives");
            rrb.wait_ready(3);
            for i in 0..10 {
                rrb.get()
                    .unwrap_or_else(|e| panic!("{protocol}, {bad}: request {i}: {e}"));
            }
        }
    }
}

#[test]
fn a_cluster_server_beyond_our_listeners_fails_its_listen_and_the_worker_is_replaced() {
    // Node's primary would open port 4000 too; we serve only `listen`. The app's listen()
    // fails as Node reports an address it cannot have (EADDRNOTAVAIL) instead of waiting
    // forever for connections that never come; this app does not handle the error and exits.
    let (_mark, config) = bad_once("listen2", "node-cluster");
    let rrb = Rrb::start(&config, 2);
    let line = rrb.wait_for_log("refused its server on port 4000", Duration::from_secs(10));
    assert!(line.contains("add an address to `listen`"), "{line}");
    rrb.wait_for_log("EADDRNOTAVAIL", Duration::from_secs(10));
    rrb.wait_ready(3);
    for i in 0..10 {
        rrb.get().unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    assert!(alive(rrb.pid()));
}

#[test]
fn a_cluster_worker_refusing_connections_has_them_served_elsewhere() {
    // Node's primary re-dispatches on `accepted: false`; so do we.
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 0 ]; then BAD=refuse exec node '{}'; else exec node '{}'; fi",
        repo().join("tests/support/node/bad_worker.js").display(),
        script("cluster_app.js")
    );
    let config = format!(
        "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\nprotocol = \"node-cluster\"\n"
    );
    let rrb = Rrb::start(&config, 2);
    let refusing = rrb.wait_workers(2, Duration::from_secs(5));
    // The first connection goes to slot 0, which holds it: its one connection is taken.
    let _held = std::net::TcpStream::connect(&rrb.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..20 {
        let body = rrb.get().unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(worker_id_of(&body), 2, "served by slot 1: {body}");
    }
    assert!(
        rrb.count_log("refused 1 connection(s)") >= 10,
        "slot 0 said no"
    );
    assert!(rrb.count_log("re-dispatching") == 0, "refused, not lost");
    assert!(refusing.iter().all(|&p| alive(p)));
}

#[test]
fn a_blocked_cluster_worker_is_routed_around_by_nodes_own_rule() {
    let config = format!(
        "workers = 2\n[worker]\nexec = \"node\"\nargs = [\"{}\"]\nprotocol = \"node-cluster\"\n",
        repo().join("tests/support/node/block_app.js").display()
    );
    let rrb = Rrb::start(&config, 2);
    // Hold one worker's event loop for 2 s.
    let addr = rrb.addr.clone();
    let start = Instant::now();
    let blocker = std::thread::spawn(move || {
        let body = http_get_path(&addr, "/block").expect("the blocking request is served");
        (pid_of(&body), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // The other worker serves what arrives meanwhile. Node's rule lets a worker take its next
    // connection as soon as it has accepted the previous one, before it runs the request: so
    // one connection, handed to the blocked worker before its block could be seen, may wait.
    // One that waited behind the 2 s block waited more than 1.5 s (the requests begin 0.3 s
    // into it); 1 s tells it from an ordinary request on a loaded machine.
    let mut slow = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let body = rrb
            .get()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        if t.elapsed() > Duration::from_secs(1) {
            slow.push((i, pid_of(&body), t.elapsed()));
        }
    }
    let (blocked, took) = blocker.join().unwrap();
    assert!(took >= Duration::from_millis(1900), "no block: {took:?}");
    assert!(
        slow.len() <= 1,
        "more than one waited behind the block: {slow:?}"
    );
    assert!(slow.iter().all(|&(_, pid, _)| pid == blocked), "{slow:?}");
}

#[test]
fn a_worker_flooding_messages_leaves_the_master_responsive_and_its_log_bounded() {
    for protocol in ["node", "node-cluster"] {
        flood(protocol);
    }
}

fn flood(protocol: &str) {
    let (_mark, config) = bad_once("flood", protocol);
    // The flooder's own NODE_HANDLE_ACK waits behind its flood: the connection it holds is
    // served elsewhere once ack_timeout kills it.
    let config = config.replace("[shutdown]", "ack_timeout = \"1s\"\n[shutdown]");
    // At info level, as in production: the tests' usual debug level would log every message.
    let rrb = Rrb::start_with(Start {
        config: &config,
        ready: 2,
        env: &[("RUST_LOG", "info")],
        ..Start::default()
    });
    rrb.wait_for_log("further messages of this worker", Duration::from_secs(10));
    // Two million messages are on their way; clients are served meanwhile, none held much
    // longer than the flooder's ack_timeout (1 s; a wide margin: the flood keeps both CPUs
    // busy, and the machine may be loaded besides).
    for i in 0..20 {
        let t = std::time::Instant::now();
        rrb.get()
            .unwrap_or_else(|e| panic!("{protocol}: request {i} during the flood: {e}"));
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{protocol}: request {i} took {:?}",
            t.elapsed()
        );
    }
    let chatter = rrb
        .log()
        .iter()
        .filter(|l| l.contains("chatter") && l.contains("INFO"))
        .count();
    assert!(chatter <= 21, "{protocol}: {chatter} info lines of chatter");
    assert!(alive(rrb.pid()));
}

#[test]
fn a_node_worker_that_never_had_a_connection_still_gets_its_stop_signal() {
    // Two child_process workers, one request: one worker has spoken (it acked a handle), the
    // other has said nothing at all. Both must get SIGTERM — the idle one once it has handled
    // the `disconnect` — and exit 0 well before kill_timeout.
    let app = repo().join("tests/support/node/interval_child.js");
    let config = format!(
        "workers = 2\n[worker]\nexec = \"node\"\nargs = [{:?}]\nprotocol = \"node\"\n[shutdown]\nkill_timeout = \"10s\"\n",
        app.display().to_string()
    );
    let mut rrb = Rrb::start(&config, 2);
    rrb.wait_workers(2, Duration::from_secs(5));
    rrb.get().unwrap();
    let asked = Instant::now();
    rrb.signal(libc::SIGTERM);
    let status = rrb.wait_exit(Duration::from_secs(15)).expect("stopped");
    assert_eq!(status.code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(rrb.count_log("exit code 0"), 2, "{:?}", rrb.log());
    assert_eq!(rrb.count_log("SIGKILL"), 0, "{:?}", rrb.log());
}

/// Node workers at their open-file limit: Node NACKs a connection whose fd the kernel dropped,
/// four times; the master then hands it to another worker and sends that one nothing for a
/// while. No worker is replaced, none given up, and a new client is served once the load goes.
#[test]
fn node_workers_at_their_file_limit_are_routed_around_not_replaced() {
    for config in [child_config(2, "rr", ""), cluster_config(2, "rr")] {
        let rrb = Rrb::start_with(common::Start {
            config: &config,
            ready: 2,
            nofile: Some(128),
            ..common::Start::default()
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load =
            common::keep_alive_load(rrb.addr.clone(), 300, "handled by worker", stop.clone());
        rrb.wait_for_log("out of file descriptors", Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = load.join().unwrap();
        rrb.served_within("handled by worker", Duration::from_secs(5));
        for (restarts, state) in rrb.slot_states() {
            assert_eq!((restarts, state.as_str()), (0, "ready"), "{config}");
        }
        assert_eq!(rrb.count_log("misbehaved"), 0, "{config}");
        assert!(seen.ok > 100, "{config}: {} answers", seen.ok);
    }
}

/// A shipped config (`config/<name>`), runnable from a test's directory: on a free port, its
/// `cwd` the repository.
fn shipped(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("config").join(name)).unwrap();
    let text = text.replace(
        "listen = [\"127.0.0.1:3000\"]",
        "listen = [\"127.0.0.1:0\"]",
    );
    let text = text.replace(
        "cwd = \"..\"",
        &format!("cwd = {:?}", repo().display().to_string()),
    );
    assert!(
        text.contains("127.0.0.1:0") && !text.contains("cwd = \"..\""),
        "{text}"
    );
    text
}

/// Issue 26: the shipped Node examples (README's recipe: the answer after the stop signal
/// closes its connection; idle ones are closed only after a grace) lose no keep-alive request
/// across reloads. Before, 87 and 64 failed requests over 2 reloads under wrk.
#[test]
fn the_shipped_node_examples_lose_no_keep_alive_request_across_reloads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for name in ["node-cluster.toml", "node-child.toml"] {
        let rrb = Rrb::start(&shipped(name), 2);
        let stop = Arc::new(AtomicBool::new(false));
        let load = common::keep_alive_load(rrb.addr.clone(), 16, "handled by worker", stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        for round in 0..3 {
            let (code, out, err) = rrb.ctl(&["reload"]);
            assert_eq!(code, 0, "{name}: reload {round}: {out}{err}");
            std::thread::sleep(Duration::from_millis(300));
        }
        stop.store(true, Ordering::Relaxed);
        let seen = load.join().unwrap();
        assert_eq!(
            seen.errors.len(),
            0,
            "{name}: {} errors in {} requests: {:?}",
            seen.errors.len(),
            seen.ok,
            &seen.errors[..seen.errors.len().min(5)]
        );
        assert!(seen.ok > 300, "{name}: the load really ran: {seen:?}");
    }
}

/// Issue 26: no file needed — `rrbalancer -w 2 -- node app.js` runs an unchanged cluster app
/// clustered on the embedded defaults (the protocol picked from the program), a bare `status`
/// finds it, and `check` prints the file it would take.
#[test]
fn a_node_app_named_on_the_command_line_runs_clustered_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let app = script("cluster_app.js");
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let mut command = std::process::Command::new(common::BIN);
    command.args(["-w", "2", "--listen", &addr, "--", "node", &app]);
    let mut master = common::spawn_in(&mut command, dir.path());
    let pid = master.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pids = std::collections::BTreeSet::new();
    while pids.len() < 2 && Instant::now() < deadline {
        match common::http_get(&addr) {
            Ok(body) => {
                assert!(body.contains("handled by worker"), "{body}");
                pids.insert(pid_of(&body));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let bare = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .env("XDG_RUNTIME_DIR", dir.path())
            .current_dir("/")
            .output()
            .unwrap();
        common::outcome(out)
    };
    let (code, out, err) = bare(&["status"]);
    let (check_code, toml, _) = bare(&["check", "--", "node", &app]);
    // SAFETY: the master this test started, and its process group.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = master.wait().unwrap();
    unsafe { libc::killpg(pid, libc::SIGKILL) };
    assert_eq!(pids.len(), 2, "both workers serve, in turn");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("pid {pid}")) && out.contains("cluster_app"),
        "{out}"
    );
    assert_eq!(check_code, 0);
    assert!(
        toml.contains("protocol = \"node-cluster\"") && toml.contains("cluster_app.js"),
        "{toml}"
    );
    assert_eq!(status.code(), Some(0));
}
