//! Messages relayed by the master (docs/PROTOCOL.md `send`, `subscribe`, `message`;
//! `rrbalancer send`): broadcast order, retained values for workers that start later, and a
//! receiver that never reads. The workers are `scripts/python_worker.py`, written from the
//! protocol document alone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rrb, http_get_path, repo};

/// A config whose workers run `sh -c script` (`$W` is the Python worker).
fn config(workers: usize, script: &str, extra: &str) -> String {
    let script = format!(
        "W='{}'; {script}",
        repo().join("scripts/python_worker.py").display()
    );
    format!(
        "workers = {workers}\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\n\
         [restart]\nbackoff_initial = \"10ms\"\n{extra}"
    )
}

/// The messages each worker logged (`--messages-log PREFIX`): by worker id, the lines of each
/// of its processes.
fn logged(prefix: &Path) -> Vec<(String, Vec<String>)> {
    let dir = prefix.parent().unwrap();
    let name = prefix.file_name().unwrap().to_str().unwrap().to_owned();
    let mut out: Vec<(String, Vec<String>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let id = file.strip_prefix(&format!("{name}-"))?.to_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((id, text.lines().map(str::to_owned).collect()))
        })
        .collect();
    out.sort();
    out
}

/// Waits until `done(logs)` or panics with the logs after `timeout`.
fn wait_logs(prefix: &Path, timeout: Duration, done: impl Fn(&[(String, Vec<String>)]) -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        let logs = logged(prefix);
        if done(&logs) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            logs.iter()
                .map(|(id, lines)| (id, lines.len(), lines.last()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn seq_lines(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("0 - {{\"seq\":{i}}}")).collect()
}

#[test]
fn a_broadcast_reaches_every_other_worker_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let rrb = Rrb::start(
        &config(
            4,
            &format!(
                "exec python3 \"$W\" --subscribe --messages-log '{}' --send-all 1000 --go '{}'",
                log.display(),
                go.display()
            ),
            "",
        ),
        4,
    );
    // Every worker subscribed before it said ready: slot 0 sends once all are.
    std::fs::write(&go, "").unwrap();
    wait_logs(&log, Duration::from_secs(30), |logs| {
        logs.len() == 4 && logs.iter().skip(1).all(|(_, l)| l.len() >= 1000)
    });
    let logs = logged(&log);
    let ids: Vec<&str> = logs.iter().map(|(id, _)| &id[..1]).collect();
    assert_eq!(ids, ["0", "1", "2", "3"], "one process per slot");
    assert!(logs[0].1.is_empty(), "the sender gets none of its own");
    for (id, lines) in &logs[1..] {
        assert_eq!(lines, &seq_lines(1000), "worker {id}");
    }
    // The same from `rrbalancer send`, to all four, in order.
    for i in 0..20 {
        let (code, out, err) = rrb.ctl(&["send", &format!("{{\"n\":{i}}}")]);
        assert_eq!((code, out.trim()), (0, "sent to 4 receiver(s)"), "{err}");
    }
    wait_logs(&log, Duration::from_secs(10), |logs| {
        logs.len() == 4
            && logs
                .iter()
                .all(|(id, l)| l.len() >= 20 + 1000 * (id[..1] != *"0") as usize)
    });
    for (id, lines) in logged(&log) {
        let tail: Vec<String> = (0..20)
            .map(|i| format!("control - {{\"n\":{i}}}"))
            .collect();
        assert_eq!(lines[lines.len() - 20..], tail[..], "worker {id}");
    }
}

/// `send --slot N` reaches the worker of slot N and no other; `send --text` sends its text as a
/// JSON string.
#[test]
fn send_to_a_slot_reaches_that_worker_only_and_text_goes_as_a_json_string() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "exec python3 \"$W\" --subscribe --messages-log '{}'",
        log.display()
    );
    let rrb = Rrb::start(&config(3, &script, ""), 3);
    let (code, out, err) = rrb.ctl(&["send", "--slot", "2", r#"{"only":2}"#]);
    assert_eq!((code, out.trim()), (0, "sent to 1 receiver(s)"), "{err}");
    let (code, out, err) = rrb.ctl(&["send", "--text", "hello there"]);
    assert_eq!((code, out.trim()), (0, "sent to 3 receiver(s)"), "{err}");
    let wanted = |id: &str| 1 + usize::from(id.starts_with('2'));
    wait_logs(&log, Duration::from_secs(10), |logs| {
        logs.len() == 3 && logs.iter().all(|(id, l)| l.len() >= wanted(id))
    });
    for (id, lines) in logged(&log) {
        let mut expected = vec![r#"control - "hello there""#.to_owned()];
        if id.starts_with('2') {
            expected.insert(0, r#"control - {"only":2}"#.to_owned());
        }
        assert_eq!(lines, expected, "worker {id}");
    }
}

/// Requests `/state` over and over from a thread until told to stop: every answer, or the
/// first failure.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Vec<String>, String>>>,
}

impl Load {
    fn start(addr: &str) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, addr) = (stop.clone(), addr.to_owned());
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                answers.push(http_get_path(&addr, "/state")?);
            }
            Ok(answers)
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Result<Vec<String>, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// The pid and state of a `/state` answer.
fn state(answer: &str) -> (i64, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    (v["pid"].as_i64().unwrap(), v["state"].clone())
}

fn workers(rrb: &Rrb) -> Vec<i32> {
    let (_, json, _) = rrb.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect()
}

#[test]
fn a_retained_value_reaches_workers_started_later_before_their_first_request() {
    let rrb = Rrb::start(&config(2, "exec python3 \"$W\" --subscribe", ""), 2);
    for v in 1..=2 {
        let (code, out, err) = rrb.ctl(&["send", "--retain", "config", &format!("{{\"v\":{v}}}")]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let current = serde_json::json!({"config": {"v": 2}});
    for _ in 0..4 {
        assert_eq!(
            state(&http_get_path(&rrb.addr, "/state").unwrap()).1,
            current
        );
    }
    let first = workers(&rrb);
    let load = Load::start(&rrb.addr);
    // A worker killed outright: its replacement starts with the current value.
    // SAFETY: a worker this test's master started.
    unsafe { libc::kill(first[0], libc::SIGKILL) };
    rrb.wait_ready(3);
    // A reload replaces both; scaling adds two more.
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = rrb.ctl(&["scale", "4"]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_ready(3 + 2 + 2);
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish().expect("no request failed");
    let pids: std::collections::BTreeSet<i64> = answers.iter().map(|a| state(a).0).collect();
    let now = workers(&rrb);
    for pid in &now {
        assert!(
            !first.contains(pid),
            "every worker was replaced or added: {first:?} → {now:?}"
        );
    }
    assert!(
        now.iter().any(|p| pids.contains(&i64::from(*p))),
        "the new workers answered: {pids:?} {now:?}"
    );
    for answer in &answers {
        assert_eq!(state(answer).1, current, "a worker answered with {answer}");
    }
    // And each of the four serving now has it: each one answers (in turn), with it.
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (pid, value) = state(&http_get_path(&rrb.addr, "/state").unwrap());
        assert_eq!(value, current, "worker {pid}");
        answered.insert(pid);
        if answered.len() == 4 {
            break;
        }
    }
    let (_, json, _) = rrb.ctl(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let serving: std::collections::BTreeSet<i64> = (status["workers"].as_array().unwrap().iter())
        .filter(|w| w["role"] == "current")
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(serving.len(), 4, "{json}");
    assert_eq!(answered, serving, "every worker serving now answered");
    // What cannot be retained is refused, with why.
    let (code, _, err) = rrb.ctl(&["send", "--retain", "a b", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("retained key"), "{err}");
}

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[test]
fn a_worker_that_never_reads_is_replaced_and_the_master_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let (log, go, mark) = (
        dir.path().join("log"),
        dir.path().join("go"),
        dir.path().join("slow-once"),
    );
    // Slot 1's first process subscribes and says ready, then never reads its channel.
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 1 ] && [ ! -e '{m}' ]; then touch '{m}'; exec python3 \"$W\" --never-read; fi; \
         exec python3 \"$W\" --subscribe --messages-log '{l}' --send-all 100000 --go '{g}'",
        m = mark.display(),
        l = log.display(),
        g = go.display()
    );
    let rrb = Rrb::start(&config(3, &script, ""), 3);
    let before = rss_kib(rrb.pid());
    std::fs::write(&go, "").unwrap();
    wait_logs(&log, Duration::from_secs(120), |logs| {
        logs.iter()
            .filter(|(id, l)| id.starts_with('2') && l.len() >= 100_000)
            .count()
            == 1
    });
    let after = rss_kib(rrb.pid());
    let line = rrb.wait_for_log(
        "worker not reading its messages slot=1",
        Duration::from_secs(10),
    );
    assert!(line.contains("replacing it"), "{line}");
    let logs = logged(&log);
    let slot2: Vec<&Vec<String>> = logs
        .iter()
        .filter(|(id, _)| id.starts_with('2'))
        .map(|(_, l)| l)
        .collect();
    assert_eq!(slot2, [&seq_lines(100_000)], "every message, in order");
    assert!(
        after < before + 1024,
        "master RSS {before} KiB → {after} KiB over 100,000 broadcasts"
    );
    // Its successor serves and takes messages.
    rrb.wait_ready(4);
    let (code, out, _) = rrb.ctl(&["send", "1"]);
    assert_eq!((code, out.trim()), (0, "sent to 3 receiver(s)"));
}

/// Issue 26: a message nobody takes is an error, not a silent success (unless retained for
/// workers started later), and one over the 64 KiB bound is refused by the command, naming it.
#[test]
fn a_message_nobody_takes_or_too_long_is_refused_saying_why() {
    // The demo worker takes no messages.
    let rrb = Rrb::start("workers = 2\n", 2);
    let (code, out, err) = rrb.ctl(&["send", r#"{"to":"nobody"}"#]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nobody took it"), "{err}");
    let (code, out, err) = rrb.ctl(&["send", "--retain", "later", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept as \"later\""), "{out}");
    let long = "x".repeat(70_000);
    let (code, out, err) = rrb.ctl(&["send", "--text", &long]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("70002 bytes") && err.contains("64 KiB"),
        "{err}"
    );
}
