//! Supervision: replacing dead and misbehaving workers without losing connections, stopping
//! cleanly, and never leaving a process behind.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Rrb, alive, children_of, pid_of, repo, worker_id_of};

/// A two-worker config of `scripts/python_worker.py` where slot 0's first incarnation runs
/// with `flag` and every other incarnation (and slot 1) runs plainly. `extra` is appended.
/// The returned directory holds the "already ran once" mark; keep it alive for the test.
fn once_then(flag: &str, extra: &str) -> (tempfile::TempDir, String) {
    once_then_with(flag, "", extra)
}

/// [`once_then`] with more `[worker]` keys.
fn once_then_with(flag: &str, worker_keys: &str, extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran-once");
    let worker = repo().join("scripts/python_worker.py");
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 0 ] && [ ! -e '{mark}' ]; then touch '{mark}'; exec python3 '{w}' {flag}; else exec python3 '{w}'; fi",
        mark = mark.display(),
        w = worker.display()
    );
    let config = format!(
        "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\n{worker_keys}\n[restart]\nbackoff_initial = \"10ms\"\n{extra}"
    );
    (dir, config)
}

#[test]
fn a_worker_killed_with_sigkill_is_replaced_and_service_continues() {
    let rrb = Rrb::start("workers = 3\n[restart]\nbackoff_initial = \"10ms\"\n", 3);
    let before = rrb.wait_workers(3, Duration::from_secs(5));
    let victim = before[1];
    // SAFETY: killing one of our test's workers.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    // Service never stops answering while the slot is refilled.
    for _ in 0..30 {
        let body = rrb.get().expect("answer while a worker is replaced");
        assert_ne!(pid_of(&body), victim);
    }
    rrb.wait_for_log("killed by SIGKILL", Duration::from_secs(5));
    rrb.wait_ready(4);
    let after = rrb.wait_workers(3, Duration::from_secs(5));
    assert!(!after.contains(&victim));
    // The replacement has the victim's slot and takes its turns again.
    let ids: std::collections::BTreeSet<usize> =
        (0..6).map(|_| worker_id_of(&rrb.get().unwrap())).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[test]
fn a_worker_that_dies_before_acking_loses_no_connection() {
    // Slot 0's first incarnation takes one connection and exits without acking it; every
    // other worker is well-behaved.
    let (_mark, config) = once_then("--no-ack-die", "");
    let rrb = Rrb::start(&config, 2);
    // The first connection goes to slot 0, which dies holding it un-acked.
    for i in 0..10 {
        let body = rrb
            .get()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert!(body.contains("handled by worker"), "{body:?}");
    }
    rrb.wait_for_log("exit code 3", Duration::from_secs(5));
    assert!(
        rrb.count_log("re-dispatching 1 connection(s)") >= 1,
        "{:?}",
        rrb.log()
    );
}

#[test]
fn a_worker_writing_garbage_is_replaced_and_the_master_keeps_serving() {
    // Slot 0's first incarnation says `ready`, then writes something that is not the protocol.
    let (_mark, config) = once_then("--garbage", "[shutdown]\nkill_timeout = \"1s\"\n");
    let rrb = Rrb::start(&config, 2);
    let line = rrb.wait_for_log("misbehaved", Duration::from_secs(10));
    assert!(line.contains("slot=0"), "{line}");
    let bad = line
        .split("pid=")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.parse::<i32>().ok())
        .expect("pid in the log line");
    assert!(alive(rrb.pid()), "the master survives garbage");
    // The replacement takes slot 0 again and the service answers throughout.
    rrb.wait_ready(3);
    let after = rrb.wait_workers(2, Duration::from_secs(5));
    assert!(!after.contains(&bad), "{after:?} still holds {bad}");
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..20 {
        let body = rrb
            .get()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_ne!(pid_of(&body), bad);
        ids.insert(worker_id_of(&body));
    }
    assert_eq!(ids.len(), 2, "both slots serve again: {ids:?}");
    assert!(alive(rrb.pid()));
}

#[test]
fn sigterm_stops_every_process_within_kill_timeout_and_exits_0() {
    let mut rrb = Rrb::start("workers = 3\n[shutdown]\nkill_timeout = \"1s\"\n", 3);
    let workers = rrb.wait_workers(3, Duration::from_secs(5));
    let start = Instant::now();
    rrb.signal(libc::SIGTERM);
    let status = rrb.wait_exit(Duration::from_secs(2)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(2));
    for pid in workers {
        assert!(!alive(pid), "worker {pid} survived");
    }
}

#[test]
fn sigterm_kills_a_worker_that_ignores_it_once_kill_timeout_passes() {
    // A worker that speaks no protocol and ignores SIGTERM, with a child of its own.
    let config = "workers = 2\nsched_policy = \"none\"\n[worker]\nexec = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 600 & wait\"]\n[shutdown]\nkill_timeout = \"1s\"\n";
    let mut rrb = Rrb::start(config, 0);
    let workers = rrb.wait_workers(2, Duration::from_secs(5));
    let grandchildren: Vec<i32> = workers.iter().flat_map(|&w| children_of(w)).collect();
    let start = Instant::now();
    rrb.signal(libc::SIGTERM);
    let status = rrb.wait_exit(Duration::from_secs(3)).expect("exited");
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "waited for kill_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "kill_timeout + 1 s: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(100));
    for pid in workers.iter().chain(&grandchildren) {
        assert!(!alive(*pid), "process {pid} survived");
    }
}

/// Workers that ignore SIGTERM, with a child each, and a minute to finish: what a stop has to
/// cut short. The master, its workers and their children.
fn stubborn_fleet() -> (Rrb, Vec<i32>) {
    let config = "workers = 2\nsched_policy = \"none\"\n[worker]\nexec = \"sh\"\nargs = [\"-c\", \"trap '' TERM; sleep 600 & wait\"]\n[shutdown]\nkill_timeout = \"60s\"\n";
    let rrb = Rrb::start(config, 0);
    let workers = rrb.wait_workers(2, Duration::from_secs(5));
    let mut all: Vec<i32> = workers.iter().flat_map(|&w| children_of(w)).collect();
    all.extend(workers);
    (rrb, all)
}

/// README: `QUIT` is a quick stop — workers are killed now, not after `kill_timeout`.
#[test]
fn sigquit_kills_the_workers_at_once_and_exits() {
    let (mut rrb, processes) = stubborn_fleet();
    rrb.signal(libc::SIGQUIT);
    let status = rrb
        .wait_exit(Duration::from_secs(10))
        .expect("a quick stop does not wait for kill_timeout (60 s)");
    assert!(status.code().is_some(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    for pid in processes {
        assert!(!alive(pid), "process {pid} survived");
    }
}

/// README: a second `TERM`/`INT` during a graceful stop skips what is left of it.
#[test]
fn a_second_sigterm_cuts_a_graceful_stop_short() {
    for second in [libc::SIGTERM, libc::SIGINT] {
        let (mut rrb, processes) = stubborn_fleet();
        rrb.signal(libc::SIGTERM);
        rrb.wait_for_log("stopping gracefully", Duration::from_secs(5));
        assert!(
            rrb.wait_exit(Duration::from_millis(500)).is_none(),
            "the first one waits for the workers"
        );
        rrb.signal(second);
        let status = rrb
            .wait_exit(Duration::from_secs(10))
            .expect("the second one does not wait for kill_timeout (60 s)");
        assert!(status.code().is_some(), "{status:?}");
        std::thread::sleep(Duration::from_millis(100));
        for pid in processes {
            assert!(!alive(pid), "process {pid} survived");
        }
    }
}

#[test]
fn sigkill_to_the_master_takes_the_workers_down_within_a_second() {
    let mut rrb = Rrb::start("workers = 3\n", 3);
    let workers = rrb.wait_workers(3, Duration::from_secs(5));
    rrb.signal(libc::SIGKILL);
    rrb.wait_exit(Duration::from_secs(2)).expect("master died");
    let deadline = Instant::now() + Duration::from_secs(1);
    while workers.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived the master");
    }
}

#[test]
fn sigint_as_from_ctrl_c_stops_gracefully() {
    let mut rrb = Rrb::start("workers = 2\n", 2);
    let workers = rrb.wait_workers(2, Duration::from_secs(5));
    rrb.signal(libc::SIGINT);
    let status = rrb.wait_exit(Duration::from_secs(6)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(rrb.count_log("exit code 0") >= 2, "{:?}", rrb.log());
    for pid in workers {
        assert!(!alive(pid));
    }
}

#[test]
fn a_worker_that_says_leaving_is_replaced_before_it_exits_and_no_request_fails() {
    let rrb = Rrb::start(
        "workers = 2\n[worker]\nargs = [\"--max-requests\", \"5\"]\n",
        2,
    );
    for i in 0..60 {
        rrb.get()
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
    }
    assert!(rrb.count_log("worker leaving") >= 10, "{:?}", rrb.log());
    assert_eq!(rrb.count_log("exited unasked"), 0, "leaving is not a crash");
    // Each one's successor was started before it exited.
    rrb.wait_for_log_count("worker exited", 10, Duration::from_secs(10));
    let log = rrb.log();
    let position = |needle: &str, from: usize| {
        (log.iter().enumerate().skip(from))
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i)
    };
    let mut checked = 0;
    for (i, line) in log.iter().enumerate() {
        let Some(rest) = line.split("worker leaving ").nth(1) else {
            continue;
        };
        let (place, pid) = rest.split_once(' ').unwrap();
        let pid = pid.split(';').next().unwrap();
        let Some(exited) = position(&format!("worker exited {place} {pid}:"), i) else {
            continue; // still finishing when the test ended
        };
        let started = position(&format!("worker started {place} "), i);
        assert!(
            started.is_some_and(|s| s < exited),
            "{place} {pid}: its successor started at line {started:?}, it exited at {exited}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "{checked} leavings seen to the end");
}

/// By default an outage is not the master's reaction to workers that cannot run: with every
/// slot given up it keeps its port (clients wait in the backlog), and tries each slot again
/// after `retry_after`; the first client is served once a worker can run again.
#[test]
fn by_default_a_master_whose_every_slot_gave_up_stays_and_tries_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    std::fs::write(&broken, "").unwrap();
    let script = common::failing_while(&broken, "");
    let config = format!(
        "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\nready = \"message\"\n\
         [restart]\nmax_restarts = 1\nwindow = \"10s\"\nbackoff_initial = \"10ms\"\n\
         retry_after = \"2s\"\n"
    );
    let mut rrb = Rrb::start(&config, 0);
    rrb.wait_for_log(
        "every slot gave up: no worker serves now",
        Duration::from_secs(10),
    );
    let (code, table, _) = rrb.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(table.contains("given up, retried in"), "{table}");
    rrb.wait_for_log(
        "trying it again in 2s (restart.retry_after)",
        Duration::from_secs(1),
    );
    // A client arrives meanwhile: it waits in the backlog, not refused.
    let addr = rrb.addr.clone();
    let client = std::thread::spawn(move || common::http_get(&addr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rrb.wait_exit(Duration::from_millis(200)).is_none(),
        "still up"
    );
    std::fs::remove_file(&broken).unwrap();
    rrb.wait_for_log("trying it again", Duration::from_secs(5));
    let body = client.join().unwrap().expect("served once a worker runs");
    assert!(body.contains("handled by worker"), "{body}");
    rrb.wait_ready(2);
    rrb.signal(libc::SIGTERM);
    let status = rrb.wait_exit(Duration::from_secs(10)).expect("stopped");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_restart_storm_gives_up_and_the_master_exits_1() {
    let config = "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", \"exit 7\"]\n[restart]\nmax_restarts = 3\nwindow = \"10s\"\nbackoff_initial = \"10ms\"\nbackoff_max = \"20ms\"\non_all_given_up = \"exit\"\n";
    let mut rrb = Rrb::start(config, 0);
    let status = rrb.wait_exit(Duration::from_secs(10)).expect("gave up");
    assert_eq!(status.code(), Some(1));
    let giveup = rrb.wait_for_log("giveup slot=", Duration::from_secs(1));
    assert!(
        giveup.contains("ERROR") && giveup.contains("exit code 7"),
        "{giveup}"
    );
}

#[test]
fn a_worker_that_never_acks_is_killed_at_ack_timeout_and_every_client_is_served() {
    // Slot 0's first incarnation says `ready`, then never reads its channel.
    let (_mark, config) = once_then_with("--never-ack", "ack_timeout = \"1s\"", "");
    let rrb = Rrb::start(&config, 2);
    let start = Instant::now();
    let addr = rrb.addr.clone();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (common::http_get(&addr), t.elapsed())
            })
        })
        .collect();
    // While it holds them, `status` shows how long the oldest has waited.
    let mut seen = String::new();
    // (Until the worker is found stuck: then its sockets are no longer un-acked.)
    while !seen.contains("oldest")
        && rrb.count_log("worker stuck") == 0
        && start.elapsed() < Duration::from_secs(5)
    {
        seen = rrb.ctl(&["status"]).1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.contains("(oldest "),
        "status never showed an un-acked age:\n{seen}"
    );
    for client in clients {
        let (body, took) = client.join().unwrap();
        let body = body.expect("every client is served");
        assert!(body.contains("handled by worker"), "{body:?}");
        assert!(
            took < Duration::from_secs(6),
            "served after {took:?} (ack_timeout 1 s, and a wide margin for a loaded machine)"
        );
    }
    let line = rrb.wait_for_log("worker stuck slot=0", Duration::from_secs(3));
    assert!(line.contains("un-acked"), "{line}");
    // Its sockets went elsewhere only after it was reaped, and its slot was refilled.
    rrb.wait_for_log("re-dispatching", Duration::from_secs(3));
    // `/metrics` counts them as re-routed for the ack deadline, apart from crashes.
    let (code, metrics, err) = rrb.ctl(&["metrics"]);
    assert_eq!(code, 0, "{err}");
    let rerouted = |cause: &str| {
        let series =
            format!("rrbalancer_connections_rerouted_total{{slot=\"0\",cause=\"{cause}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map(|n| n.parse::<u64>().unwrap())
    };
    assert!(rerouted("ack_timeout").unwrap() > 0, "{metrics}");
    assert_eq!(rerouted("worker_exited"), Some(0));
    rrb.wait_ready(3);
    let ids: std::collections::BTreeSet<usize> =
        (0..6).map(|_| worker_id_of(&rrb.get().unwrap())).collect();
    assert_eq!(ids.len(), 2, "both slots serve again: {ids:?}");
}

/// A worker that says `message` over and over after `ready` is replaced on the second one, and
/// no client request fails meanwhile.
fn repeated(message: &str) {
    let (_mark, config) = once_then(&format!("--flood {message}"), "");
    let rrb = Rrb::start(&config, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = 0;
    while rrb.count_log("a second time") == 0 || served < 20 {
        assert!(
            Instant::now() < deadline,
            "no violation seen: {:?}",
            rrb.log()
        );
        let body = rrb
            .get()
            .unwrap_or_else(|e| panic!("request {served} failed: {e}"));
        assert!(body.contains("handled by worker"), "{body:?}");
        served += 1;
    }
    let line = rrb.wait_for_log("misbehaved", Duration::from_secs(5));
    assert!(
        line.contains("slot=0") && line.contains(&format!("said `{message}` a second time")),
        "{line}"
    );
    rrb.wait_ready(3);
    for i in 0..10 {
        rrb.get()
            .unwrap_or_else(|e| panic!("request {i} after the replacement failed: {e}"));
    }
    assert!(alive(rrb.pid()));
}

#[test]
fn a_worker_flooding_ready_is_replaced_and_no_request_fails() {
    repeated("ready");
}

#[test]
fn a_worker_saying_leaving_twice_is_replaced_and_no_request_fails() {
    repeated("leaving");
}

/// [`once_then`] in `none` mode: the hostile worker accepts on the shared listener too.
#[test]
fn in_none_mode_garbage_or_a_ready_flood_gets_the_worker_replaced_and_the_service_goes_on() {
    for (flag, seen) in [
        ("--garbage", "unknown message"),
        ("--flood ready", "a second time"),
    ] {
        let (_mark, config) = once_then(flag, "");
        let config = format!("sched_policy = \"none\"\n{config}");
        let rrb = Rrb::start(&config, 2);
        let line = rrb.wait_for_log("misbehaved", Duration::from_secs(10));
        assert!(
            line.contains("slot=0") && line.contains(seen),
            "{flag}: {line}"
        );
        rrb.wait_ready(3);
        for i in 0..10 {
            rrb.get()
                .unwrap_or_else(|e| panic!("{flag}: request {i} failed: {e}"));
        }
        assert!(alive(rrb.pid()), "{flag}: the master survives");
    }
}

/// `[recycle]` log lines: (reason text) of each "recycled slot=" line.
fn recycled(rrb: &Rrb) -> Vec<String> {
    rrb.log()
        .into_iter()
        .filter(|l| l.contains("recycled slot="))
        .collect()
}

#[test]
fn a_leaking_worker_is_recycled_by_memory_before_100_mib_and_no_request_fails() {
    let worker = repo().join("scripts/python_worker.py");
    let config = format!(
        "workers = 1\n[worker]\nexec = \"python3\"\nargs = [{:?}, \"--leak-mb-per-sec\", \"5\"]\n[recycle]\nmax_memory = \"64MiB\"\n",
        worker.display().to_string()
    );
    let rrb = Rrb::start(&config, 1);
    let first = rrb.wait_workers(1, Duration::from_secs(5))[0];
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::keep_alive_load(rrb.addr.clone(), 4, "handled by worker", stop.clone());
    // 64 MiB at 5 MB/s from Python's own ~10 MiB: about 12 s.
    let line = rrb.wait_for_log("recycled slot=0", Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(
        line.contains(&format!("took over from pid={first}")),
        "{line}"
    );
    // "max_memory: 65.3 MiB resident in its process group (limit 64.0 MiB)"
    let mib: f64 = line
        .split("max_memory: ")
        .nth(1)
        .and_then(|r| r.split(" MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((64.0..100.0).contains(&mib), "{line}");
    assert_eq!(seen.errors.len(), 0, "{:?}", seen.errors);
    assert!(seen.ok > 100, "{seen:?}");
    let (_, status, _) = rrb.ctl(&["status"]);
    let row = status.lines().find(|l| l.starts_with("0 ")).expect(&status);
    assert!(
        row.split_whitespace().nth(5) == Some("1"),
        "RECYCLED 1, RESTARTS 0: {status}"
    );
    assert_eq!(rrb.count_log("exited unasked"), 0);
}

#[test]
fn max_connections_recycles_each_worker_within_its_jitter_and_no_request_fails() {
    let rrb = Rrb::start(
        "workers = 2\n[recycle]\nmax_connections = 1000\njitter = 0.1\n",
        2,
    );
    let mut ok = 0;
    let started = Instant::now();
    while recycled(&rrb).len() < 2 && started.elapsed() < Duration::from_secs(30) {
        // New connections: max_connections counts connections, not requests.
        common::http_get(&rrb.addr).expect("no request fails");
        ok += 1;
    }
    let lines = recycled(&rrb);
    assert_eq!(lines.len(), 2, "after {ok} requests: {lines:?}");
    for line in &lines {
        // "max_connections: 1043 connections handed (its limit 1043)"
        let limit: u64 = line
            .split("(its limit ")
            .nth(1)
            .and_then(|r| r.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((900..=1100).contains(&limit), "{line}");
        // When: once it had handed its limit, and not long after (requests come one at a time:
        // a few at most may be on their way when the limit is seen).
        let handed: u64 = line
            .split("max_connections: ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!((limit..=limit + 4).contains(&handed), "{line}");
    }
    assert!(ok < 2 * 1100 + 100, "{ok} requests");
}

/// README: a worker that has lived `max_age` is recycled (its successor first), with no failed
/// request; if a successor fails to become ready, the old worker serves on and recycling pauses
/// (30 s: nothing more is tried here meanwhile).
#[test]
fn max_age_recycles_each_worker_and_a_failing_successor_pauses_recycling() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken");
    let script = common::failing_while(&broken, "");
    let rrb = Rrb::start(
        &format!(
            "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\n\
             [recycle]\nmax_age = \"1s\"\njitter = 0\n"
        ),
        2,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = common::close_load(rrb.addr.clone(), 2, usize::MAX, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while recycled(&rrb).len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", recycled(&rrb));
        std::thread::sleep(Duration::from_millis(50));
    }
    for line in recycled(&rrb) {
        assert!(line.contains("(max_age: "), "{line}");
    }
    // From now on a successor cannot start: the next recycle fails, the old worker serves on.
    std::fs::write(&broken, "").unwrap();
    let failed = rrb.wait_for_log(
        "the successor did not become ready",
        Duration::from_secs(10),
    );
    assert!(
        failed.contains("recycling again in 30s at the earliest"),
        "{failed}"
    );
    let serving = rrb.wait_workers(2, Duration::from_secs(5));
    let recycles = recycled(&rrb).len();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed_requests, messages) = load.join().unwrap();
    assert_eq!(failed_requests, 0, "{messages:?}");
    assert!(ok > 100, "{ok} served");
    assert_eq!(
        recycled(&rrb).len(),
        recycles,
        "paused: nothing recycled since"
    );
    assert_eq!(
        rrb.count_log("the successor did not become ready"),
        1,
        "paused: no other attempt"
    );
    assert_eq!(rrb.wait_workers(2, Duration::from_secs(1)), serving);
}

/// A worker that says more in one go than the master reads in a turn (its read budget: 256
/// messages) and then falls silent is read to the end without another event: its `ready`,
/// last in the burst, is heard. The burst is made to wait whole in the channel while the
/// master is frozen, so that it comes with one event.
#[test]
fn a_burst_longer_than_one_read_is_read_to_the_end_without_another_event() {
    let dir = tempfile::tempdir().unwrap();
    let (go, sent) = (dir.path().join("go"), dir.path().join("sent"));
    let worker = format!(
        "import os, socket, time\n\
         ch = socket.socket(fileno=int(os.environ['RRB_CHANNEL_FD']))\n\
         while not os.path.exists({go:?}): time.sleep(0.01)\n\
         for _ in range(270): ch.send(b'idle\\n')\n\
         ch.send(b'ready\\n')\n\
         open({sent:?}, 'w').close()\n\
         time.sleep(60)\n"
    );
    let config = format!(
        "workers = 1\n[worker]\nexec = \"python3\"\nargs = [\"-c\", {worker:?}]\n\
         ready_timeout = \"60s\"\n"
    );
    let rrb = Rrb::start(&config, 0);
    rrb.wait_for_log("pid=", Duration::from_secs(10));
    rrb.signal(libc::SIGSTOP);
    std::fs::write(&go, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sent.exists() {
        if Instant::now() > deadline {
            rrb.signal(libc::SIGCONT);
            panic!("the channel did not take a burst of 271 messages");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rrb.signal(libc::SIGCONT);
    rrb.wait_for_log("worker ready", Duration::from_secs(5));
    assert_eq!(rrb.count_log("misbehaved"), 0, "{:?}", rrb.log());
}
