//! `[agent]`: the seeds' notification process, supervised by the master. It starts before the
//! workers and stops after them; what it sends reaches every worker in order; what it retains
//! is every worker's from its first request; it is restarted, reloaded and shown like a worker.
//! The agent is `scripts/agent.py`, the workers `scripts/python_worker.py`, both written from
//! docs/PROTOCOL.md alone.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rrb, alive, http_get_path, repo};

/// Workers that take messages (`--subscribe`) and log them to `log-<slot>-<pid>`, and an agent
/// watching `state` (retained as `config`) that sends `count` messages once `go` exists.
fn config(workers: usize, dir: &Path, count: usize) -> String {
    let script = |name: &str| repo().join("scripts").join(name).display().to_string();
    format!(
        "workers = {workers}\n\
         [worker]\nexec = \"python3\"\n\
         args = [{w:?}, \"--subscribe\", \"--messages-log\", {log:?}]\n\
         [agent]\nexec = \"python3\"\n\
         args = [{a:?}, \"--watch\", {state:?}, \"--interval\", \"50\", \"--count\", \"{count}\", \
                 \"--go\", {go:?}, \"--messages-log\", {agent_log:?}]\n\
         [restart]\nbackoff_initial = \"10ms\"\n",
        w = script("python_worker.py"),
        a = script("agent.py"),
        log = dir.join("log").display().to_string(),
        state = dir.join("state.json").display().to_string(),
        go = dir.join("go").display().to_string(),
        agent_log = dir.join("agent-log").display().to_string(),
    )
}

/// Each worker process's logged messages, by `<slot>-<pid>`.
fn logged(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            let id = file.strip_prefix("log-")?.to_owned();
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((id, text.lines().map(str::to_owned).collect()))
        })
        .collect();
    out.sort();
    out
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(rrb: &Rrb) -> serde_json::Value {
    let (code, json, err) = rrb.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&json).unwrap()
}

fn agent_pid(rrb: &Rrb) -> Option<i64> {
    status(rrb)["agent"]["pid"].as_i64()
}

/// `/state` of whichever worker answers: its pid and retained values.
fn state(rrb: &Rrb) -> (i64, serde_json::Value) {
    let answer = http_get_path(&rrb.addr, "/state").expect("a worker answers");
    let v: serde_json::Value = serde_json::from_str(answer.trim()).unwrap();
    (v["pid"].as_i64().unwrap(), v["state"].clone())
}

#[test]
fn the_agent_starts_first_its_broadcasts_arrive_in_order_and_it_stops_last() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), r#"{"v": 1}"#).unwrap();
    let mut rrb = Rrb::start(&config(4, dir.path(), 1000), 1 + 4);
    let log = rrb.log();
    let at = |needle: &str| log.iter().position(|l| l.contains(needle)).unwrap();
    let agent_ready = at("worker ready agent pid=");
    assert!(
        agent_ready < at("worker started slot="),
        "the workers start once the agent is ready:\n{}",
        log.join("\n")
    );
    // Its value was retained before any worker started: every worker has it from the first.
    for _ in 0..8 {
        assert_eq!(state(&rrb).1, serde_json::json!({"config": {"v": 1}}));
    }
    let agent = status(&rrb)["agent"].clone();
    assert_eq!(agent["state"], "ready", "{agent}");
    let (code, text, _) = rrb.ctl(&["status"]);
    assert!(
        code == 0
            && text
                .lines()
                .any(|l| l.starts_with("agent ") && l.contains("ready")),
        "{text}"
    );

    // 1,000 messages from the agent (no target named: to every worker), complete and in order.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let want: Vec<String> = (0..1000)
        .map(|i| format!("agent - {{\"seq\":{i}}}"))
        .collect();
    wait_until(
        "1,000 messages at each of 4 workers",
        Duration::from_secs(30),
        || {
            let logs = logged(dir.path());
            logs.len() == 4 && logs.iter().all(|(_, l)| l.len() > 1000)
        },
    );
    for (id, lines) in logged(dir.path()) {
        assert_eq!(
            lines[0], "agent config {\"v\":1}",
            "worker {id}: the retained value first"
        );
        assert_eq!(lines[1..], want[..], "worker {id}");
    }
    // The file changes: every worker has the new value within the agent's poll.
    std::fs::write(dir.path().join("state.json"), r#"{"v": 2}"#).unwrap();
    wait_until("the new value everywhere", Duration::from_secs(5), || {
        (0..8).all(|_| state(&rrb).1 == serde_json::json!({"config": {"v": 2}}))
    });
    // `rrbalancer send --agent` reaches the agent.
    let (code, out, err) = rrb.ctl(&["send", "--agent", r#"{"hello":"agent"}"#]);
    assert_eq!((code, out.trim()), (0, "sent to 1 receiver(s)"), "{err}");
    wait_until("the agent's log", Duration::from_secs(5), || {
        std::fs::read_to_string(dir.path().join("agent-log"))
            .is_ok_and(|t| t.contains("message control {\"hello\":\"agent\"}\n"))
    });

    // A graceful stop: every worker exits, then the agent.
    rrb.signal(libc::SIGTERM);
    assert!(
        rrb.wait_exit(Duration::from_secs(15))
            .is_some_and(|s| s.success())
    );
    let log = rrb.log();
    let agent_exit = at_in(&log, "worker exited agent pid=");
    let last_worker_exit = (log.iter())
        .rposition(|l| l.contains("worker exited slot="))
        .unwrap();
    assert!(
        last_worker_exit < agent_exit,
        "the agent exits after the workers:\n{}",
        log.join("\n")
    );
}

fn at_in(log: &[String], needle: &str) -> usize {
    log.iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", log.join("\n")))
}

#[test]
fn a_killed_agent_is_restarted_and_a_reload_replaces_it_first_while_workers_serve() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), r#""one""#).unwrap();
    let rrb = Rrb::start(&config(2, dir.path(), 0), 1 + 2);
    let first = agent_pid(&rrb).expect("the agent runs");
    // SAFETY: a process this test's master started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    rrb.wait_for_log("worker exited unasked agent", Duration::from_secs(5));
    wait_until("a new agent", Duration::from_secs(10), || {
        status(&rrb)["agent"]["state"] == "ready" && agent_pid(&rrb).is_some_and(|p| p != first)
    });
    let agent = status(&rrb)["agent"].clone();
    assert_eq!(agent["restarts"], 1, "{agent}");
    assert!(!alive(first as i32));
    // The workers served on meanwhile; the new agent's value is theirs.
    std::fs::write(dir.path().join("state.json"), r#""two""#).unwrap();
    wait_until("the new agent's value", Duration::from_secs(5), || {
        (0..4).all(|_| state(&rrb).1 == serde_json::json!({"config": "two"}))
    });

    // A reload: the agent is replaced first, then each worker.
    let second = agent_pid(&rrb).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 worker(s) and the agent replaced"), "{out}");
    let third = agent_pid(&rrb).unwrap();
    assert_ne!(second, third, "a new agent");
    let log = rrb.log();
    let agent_replaced = at_in(&log, &format!("reload: agent pid={third} replaces"));
    let worker_replaced = at_in(&log, "reload: slot=0 pid=");
    assert!(agent_replaced < worker_replaced, "{}", log.join("\n"));
    for _ in 0..4 {
        assert_eq!(state(&rrb).1, serde_json::json!({"config": "two"}));
    }
}

#[test]
fn an_agent_that_never_becomes_ready_stops_the_master_before_any_worker_starts() {
    let dir = tempfile::tempdir().unwrap();
    let paged = dir.path().join("paged");
    let config = format!(
        "workers = 2\n[agent]\nexec = \"sh\"\nargs = [\"-c\", \"exit 3\"]\n\
         [restart]\nmax_restarts = 1\nbackoff_initial = \"10ms\"\n\
         on_giveup = \"echo $RRB_GIVEUP_SLOT > '{}'\"\n",
        paged.display()
    );
    let mut rrb = Rrb::start(&config, 0);
    let status = rrb
        .wait_exit(Duration::from_secs(10))
        .expect("the master exits");
    assert_eq!(status.code(), Some(1));
    let log = rrb.log().join("\n");
    assert!(log.contains("giveup agent:"), "{log}");
    assert!(
        log.contains("gave up: the agent never became ready, so no worker was started"),
        "{log}"
    );
    assert!(!log.contains("worker started slot="), "{log}");
    // Someone was paged, told it was the agent.
    wait_until("on_giveup", Duration::from_secs(5), || {
        std::fs::read_to_string(&paged).is_ok_and(|t| t == "agent\n")
    });
}

/// A `redis-server` from the distribution's package on a free loopback port, killed (with its
/// process group) when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    /// Started, or `None` (said on stderr) where it cannot be: installed from the
    /// distribution's package first if missing and this is a root Debian-like machine.
    fn start() -> Option<Redis> {
        use std::process::{Command, Stdio};
        let found = |_: ()| {
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found(()) && nix_is_root() {
            eprintln!("installing redis-server (apt-get install -y redis-server)");
            let _ = Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "redis-server"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .output();
        }
        if !found(()) {
            common::skip("no redis-server here (apt-get install -y redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            0,
        )
        .spawn()
        .ok()?;
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// `SET key value`, in the protocol's own framing.
    fn set(&self, key: &str, value: &str) {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut command = String::from("*3\r\n$3\r\nSET\r\n");
        for arg in [key, value] {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        conn.write_all(command.as_bytes()).unwrap();
        let mut reply = [0u8; 5];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"+OK\r\n");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a child this test started.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// examples/node-redis with its `redis` client installed from the npm registry, or `None`
/// (said on stderr).
fn node_redis_example() -> Option<std::path::PathBuf> {
    let dir = repo().join("examples/node-redis");
    if !dir.join("node_modules/redis/package.json").exists() {
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                common::install_failed(&format!("`npm ci` in {}", dir.display()), &out);
                return None;
            }
            Err(e) => {
                common::skip(&format!("cannot run npm: {e}"));
                return None;
            }
        }
    }
    Some(dir)
}

#[test]
fn the_redis_example_serves_a_changed_value_from_every_worker_within_a_poll_interval() {
    let (Some(redis), Some(example)) = (Redis::start(), node_redis_example()) else {
        return;
    };
    const POLL_MS: u64 = 500;
    const WORKERS: usize = 4;
    redis.set("rrb:value", "first");
    // The example's own file, pointed at this Redis and a free port.
    let config = std::fs::read_to_string(example.join("rrbalancer.toml"))
        .unwrap()
        .replace(
            "listen = [\"127.0.0.1:3000\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace("workers = 2", &format!("workers = {WORKERS}"))
        .replace(
            "cwd = \".\"",
            &format!("cwd = {:?}", example.display().to_string()),
        )
        .replace("127.0.0.1:6379", &format!("127.0.0.1:{}", redis.port))
        .replace("POLL_MS = \"500\"", &format!("POLL_MS = \"{POLL_MS}\""));
    let rrb = Rrb::start(&config, 1 + WORKERS);
    // `WORKERS` requests in a row: one from each worker (strict rotation); their values.
    let round = || -> Vec<serde_json::Value> {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..WORKERS {
            let body = http_get_path(&rrb.addr, "/").expect("a worker answers");
            let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
            seen.insert(v["pid"].as_i64().unwrap(), v["value"].clone());
        }
        assert_eq!(seen.len(), WORKERS, "one answer from each worker: {seen:?}");
        seen.into_values().collect()
    };
    assert!(
        round().iter().all(|v| v == "first"),
        "the value from the start"
    );
    let mut worst = Duration::ZERO;
    for value in ["second", "third", "fourth"] {
        redis.set("rrb:value", value);
        let changed = Instant::now();
        wait_until(
            "every worker serving the new value",
            Duration::from_secs(10),
            || round().iter().all(|v| v == value),
        );
        worst = worst.max(changed.elapsed());
    }
    eprintln!(
        "a Redis change served by all {WORKERS} workers within {worst:?} (poll {POLL_MS} ms)"
    );
    // The figure is printed above; the bound leaves room for a loaded machine (the agent's
    // poll plus relaying should take one interval, not three).
    assert!(
        worst <= Duration::from_millis(3 * POLL_MS),
        "{worst:?} > three poll intervals"
    );
}

#[test]
fn a_node_agents_plain_process_send_reaches_every_cluster_workers_message_event() {
    let dir = tempfile::tempdir().unwrap();
    // The agent: ready at once; one plain message once the workers run (not retained: only the
    // workers running then get it).
    std::fs::write(
        dir.path().join("agent.js"),
        "process.send('ready');\n\
         setTimeout(() => process.send({ plain: [1, 'two'] }), 1000);\n\
         setInterval(() => {}, 1000);\n\
         process.on('disconnect', () => process.exit(0));\n",
    )
    .unwrap();
    // A cluster app answering with every message it got.
    std::fs::write(
        dir.path().join("app.js"),
        "const http = require('http'); const got = [];\n\
         process.on('message', (m) => got.push(m));\n\
         const s = http.createServer((q, r) => r.end(JSON.stringify(got) + '\\n')).listen(3000);\n\
         process.on('SIGTERM', () => s.close(() => process.exit(0)));\n",
    )
    .unwrap();
    let cwd = format!("{:?}", dir.path().display().to_string());
    let config = format!(
        "workers = 2\n[worker]\nexec = \"node\"\nargs = [\"app.js\"]\ncwd = {cwd}\n\
         protocol = \"node-cluster\"\n\
         [agent]\nexec = \"node\"\nargs = [\"agent.js\"]\ncwd = {cwd}\nprotocol = \"node\"\n\
         ready = \"message\"\n"
    );
    let rrb = Rrb::start(&config, 1 + 2);
    wait_until(
        "the agent's message at both workers",
        Duration::from_secs(10),
        || {
            (0..2).all(|_| {
                http_get_path(&rrb.addr, "/").is_ok_and(|b| b.trim() == r#"[{"plain":[1,"two"]}]"#)
            })
        },
    );
}

#[test]
fn an_upgrade_starts_the_new_masters_agent_first_and_the_old_master_stops_its_agent_last() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), r#""kept""#).unwrap();
    let rrb = Rrb::start(&config(2, dir.path(), 0), 1 + 2);
    let before = status(&rrb);
    let (old_master, old_agent) = (before["pid"].as_i64().unwrap(), agent_pid(&rrb).unwrap());
    let (code, out, err) = rrb.ctl(&["upgrade", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("its 2 worker(s) finish what they hold, then its agent"),
        "{out}"
    );
    assert!(
        !alive(old_agent as i32),
        "the old agent is gone with its master"
    );
    let after = status(&rrb);
    assert_ne!(after["pid"], before["pid"]);
    assert_eq!(after["agent"]["state"], "ready", "{after}");
    for _ in 0..4 {
        assert_eq!(state(&rrb).1, serde_json::json!({"config": "kept"}));
    }
    // The old master's own lines: its workers exited, then its agent.
    let log = rrb.log();
    let mine: Vec<String> = (log.into_iter())
        .filter(|l| l.contains(&format!(" {old_master} rrbalancer")))
        .collect();
    let agent_exit = at_in(&mine, &format!("worker exited agent pid={old_agent}"));
    let last_worker_exit = mine
        .iter()
        .rposition(|l| l.contains("worker exited slot="))
        .expect("its workers exited");
    assert!(last_worker_exit < agent_exit, "{}", mine.join("\n"));
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_reload_starts_an_agent_the_file_now_has_and_stops_one_it_no_longer_has() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), r#""added""#).unwrap();
    let with = config(2, dir.path(), 0);
    let (head, rest) = with.split_once("[agent]").unwrap();
    let (agent, tail) = rest.split_once("[restart]").unwrap();
    let without = format!("{head}[restart]{tail}");
    let rrb = Rrb::start(&without, 2);
    assert!(status(&rrb)["agent"].is_null());
    let path = rrb.config_path();
    let file = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{file}\n[agent]{agent}")).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the added agent ready", Duration::from_secs(10), || {
        status(&rrb)["agent"]["state"] == "ready"
    });
    // The workers running took its retained value as it came.
    wait_until("its value at the workers", Duration::from_secs(5), || {
        (0..4).all(|_| state(&rrb).1 == serde_json::json!({"config": "added"}))
    });
    let agent = agent_pid(&rrb).unwrap();
    std::fs::write(&path, file).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_for_log(
        "reload: [agent] removed; stopping it",
        Duration::from_secs(5),
    );
    assert!(status(&rrb)["agent"].is_null());
    wait_until("the removed agent gone", Duration::from_secs(10), || {
        !alive(agent as i32)
    });
}

/// CPU time (user + system) a process has used, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after "pid (comm) ".
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_master_waits_for_its_agent_without_spinning_and_restarts_it_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), "1").unwrap();
    // The agent takes 4 s to get ready: the master waits, asleep, before starting workers (the
    // 1 s measured below falls inside the wait however slowly the machine starts it).
    let config = config(2, dir.path(), 0).replacen(
        "[agent]\nexec = \"python3\"\nargs = [",
        "[agent]\nexec = \"sh\"\nargs = [\"-c\", \"sleep 4; exec python3 \\\"$@\\\"\", \"sh\", ",
        1,
    );
    assert!(config.contains("sleep 4"), "{config}");
    let rrb = Rrb::start(&config, 0);
    let before = cpu_ticks(rrb.pid());
    std::thread::sleep(Duration::from_millis(1000));
    let spent = cpu_ticks(rrb.pid()) - before;
    // A loop that does not sleep burns ~100 ticks a second.
    assert!(
        spent < 20,
        "the master used {spent} ticks in 1 s while waiting"
    );
    let (_, text, _) = rrb.ctl(&["status"]);
    assert!(text.contains("waiting for the agent"), "{text}");
    rrb.wait_ready(1 + 2);

    // Killed, the agent is back without anything else waking the master (no request, no
    // status): its restart has a deadline of its own.
    let agent = agent_pid(&rrb).unwrap() as i32;
    let workers = 2;
    // SAFETY: a process this test's master started.
    unsafe { libc::kill(agent, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(2500)); // 1.5 s of it the new agent's own start
    let children = common::children_of(rrb.pid());
    assert_eq!(children.len(), workers + 1, "{children:?}");
    assert!(!children.contains(&agent));
}
