//! How connections reach workers: strict rotation in `rr`, shared listeners in `none`, and
//! nothing but the intended fds crossing into a worker.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{Rrb, Start, http_get, http_get_from, pid_of, repo, worker_id_of};

/// Each answer came from the slot after the previous one's, among `n`.
fn assert_strict_rotation(ids: &[usize], n: usize) {
    for pair in ids.windows(2) {
        assert_eq!(pair[1], (pair[0] + 1) % n, "not a strict rotation: {ids:?}");
    }
}

#[test]
fn rr_with_3_workers_gives_each_exactly_10_of_30_in_strict_rotation() {
    let rrb = Rrb::start("workers = 3\nsched_policy = \"rr\"\n", 3);
    let ids: Vec<usize> = (0..30)
        .map(|_| worker_id_of(&rrb.get().expect("answer")))
        .collect();
    let mut counts = BTreeMap::new();
    for id in &ids {
        *counts.entry(*id).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([(0, 10), (1, 10), (2, 10)]),
        "{ids:?}"
    );
    assert_strict_rotation(&ids, 3);
}

#[test]
fn batching_keeps_the_rotation_for_one_client_at_a_time_and_serves_a_burst() {
    let rrb = Rrb::start("workers = 3\n[dispatch]\nbatch = true\n", 3);
    // One client at a time: one connection per loop turn, a batch of one, so the rotation is
    // as strict as without batching (a batch ends with its loop turn).
    let ids: Vec<usize> = (0..12)
        .map(|_| worker_id_of(&rrb.get().expect("answer")))
        .collect();
    assert_strict_rotation(&ids, 3);
    // A burst of 32 clients, 5 requests each: every one answered, by every worker.
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let addr = rrb.addr.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| http_get(&addr).map(|body| worker_id_of(&body)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut served = BTreeMap::new();
    for client in clients {
        for answer in client.join().unwrap() {
            *served.entry(answer.expect("served")).or_insert(0) += 1;
        }
    }
    assert_eq!(served.values().sum::<usize>(), 160, "{served:?}");
    assert_eq!(
        served.len(),
        3,
        "a worker served none of the burst: {served:?}"
    );
}

#[test]
fn rr_serves_several_listeners_tcp4_tcp6_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rrb.sock");
    let config = format!(
        "listen = [\"127.0.0.1:0\", \"[::1]:0\", \"unix:{}\"]\nworkers = 2\n",
        sock.display()
    );
    let rrb = Rrb::start(&config, 2);
    let line6 = rrb.wait_for_log("listening on [::1]:", Duration::from_secs(5));
    let addr6 = line6
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    assert!(worker_id_of(&rrb.get().unwrap()) < 2);
    assert!(worker_id_of(&http_get(&addr6).unwrap()) < 2);

    use std::io::{Read, Write};
    let mut unix = std::os::unix::net::UnixStream::connect(&sock).expect("unix listener");
    unix.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    unix.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    unix.read_to_string(&mut response).unwrap();
    assert!(response.contains("handled by worker"), "{response:?}");
}

#[test]
fn none_mode_lets_every_worker_accept_and_serve() {
    let rrb = Rrb::start("workers = 2\nsched_policy = \"none\"\n", 2);
    let mut seen = BTreeSet::new();
    // The kernel picks who accepts; keep-alive-free requests from many connections reach both
    // within a bounded number of tries.
    for _ in 0..400 {
        seen.insert(worker_id_of(&rrb.get().expect("answer")));
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from([0, 1]));
    assert!(
        rrb.log().iter().any(|l| l.contains("sched_policy=none")),
        "the effective policy is logged"
    );
}

#[test]
fn none_mode_runs_an_unmodified_socket_activation_server() {
    let config = format!(
        "workers = 2\nsched_policy = \"none\"\n[worker]\nexec = \"python3\"\nargs = [\"{}\"]\n[shutdown]\nkill_timeout = \"1s\"\n",
        repo().join("tests/support/socket_activated.py").display()
    );
    let rrb = Rrb::start(&config, 0);
    rrb.wait_workers(2, Duration::from_secs(10));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        match rrb.get() {
            Ok(body) => break body,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(body.starts_with("socket-activated pid "), "{body:?}");
    assert!(rrb.workers().contains(&pid_of(&body)));
}

/// The fd numbers open in a process, and what each is.
/// The worker's open fds once it has settled: `sleep` opens locale files for a moment while it
/// starts (seen on a loaded machine), so wait until `expected` fds are open, up to 3 s, and
/// return what is open then. A leaked fd stays open, so it still fails the test.
fn settled_fds(pid: i32, expected: usize) -> BTreeMap<i32, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let fds = open_fds(pid);
        if fds.len() == expected || std::time::Instant::now() > deadline {
            return fds;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn open_fds(pid: i32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

#[test]
fn a_worker_inherits_only_stdio_and_its_channel_in_rr_mode() {
    let rrb = Rrb::start(
        "workers = 1\n[worker]\nexec = \"sleep\"\nargs = [\"600\"]\n",
        0,
    );
    let worker = rrb.wait_workers(1, Duration::from_secs(10))[0];
    let fds = settled_fds(worker, 4);
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{fds:?}"
    );
    assert!(fds[&3].starts_with("socket:"), "{fds:?}");
    assert_eq!(fds[&0], "/dev/null");
    let env = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains("RRB_CHANNEL_FD=3\0"), "{env}");
    assert!(env.contains("RRB_WORKER_ID=0\0"), "{env}");
    assert!(env.contains("RRB_WORKERS=1\0"), "{env}");
    assert!(!env.contains("LISTEN_FDS"), "{env}");
}

#[test]
fn a_worker_inherits_only_stdio_listeners_and_channel_in_none_mode() {
    let rrb = Rrb::start_with(Start {
        config: "listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\nworkers = 1\n[worker]\nexec = \"sleep\"\nargs = [\"600\"]\n",
        args: &["--sched-policy", "none"],
        ..Start::default()
    });
    let worker = rrb.wait_workers(1, Duration::from_secs(10))[0];
    let fds = settled_fds(worker, 6);
    assert_eq!(
        fds.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5],
        "{fds:?}"
    );
    let env = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(env.contains("LISTEN_FDS=2\0"), "{env}");
    assert!(env.contains(&format!("LISTEN_PID={worker}\0")), "{env}");
    assert!(env.contains("LISTEN_FDNAMES=listen0:listen1\0"), "{env}");
    assert!(env.contains("RRB_CHANNEL_FD=5\0"), "{env}");
}

#[test]
fn policy_comes_from_flag_then_rrb_env_then_node_env_then_file() {
    // (The file's policy, the flags, the environment, what the master says it chose.)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (
            "rr",
            &["--sched-policy", "none"],
            &[("RRB_SCHED_POLICY", "rr")],
            "sched_policy=none (from --sched-policy)",
        ),
        (
            "rr",
            &[],
            &[
                ("RRB_SCHED_POLICY", "none"),
                ("NODE_CLUSTER_SCHED_POLICY", "rr"),
            ],
            "sched_policy=none (from RRB_SCHED_POLICY)",
        ),
        (
            "rr",
            &[],
            &[("NODE_CLUSTER_SCHED_POLICY", "none")],
            "sched_policy=none (from NODE_CLUSTER_SCHED_POLICY)",
        ),
        ("none", &[], &[], "sched_policy=none (from the config file)"),
        ("", &[], &[], "sched_policy=rr (from the default)"),
    ];
    for (file, args, env, expected) in cases {
        let config = match file {
            "" => "workers = 1\n".to_owned(),
            policy => format!("workers = 1\nsched_policy = \"{policy}\"\n"),
        };
        let rrb = Rrb::start_with(Start {
            config: &config,
            args,
            env,
            ready: 1,
            ..Start::default()
        });
        assert!(
            rrb.log().iter().any(|l| l.contains(expected)),
            "{expected:?} not in {:?}",
            rrb.log()
        );
    }
}

#[test]
fn the_example_rust_worker_serves_in_both_policies() {
    // cargo builds examples for `cargo test`, beside the binary.
    let example = std::path::Path::new(common::BIN)
        .parent()
        .unwrap()
        .join("examples/echo_worker");
    assert!(example.exists(), "{} not built", example.display());
    for policy in ["rr", "none"] {
        let config = format!(
            "workers = 2\nsched_policy = \"{policy}\"\n[worker]\nexec = \"{}\"\n[shutdown]\nkill_timeout = \"1s\"\n",
            example.display()
        );
        let rrb = Rrb::start(&config, 2);
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(&rrb.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("worker ") && line.ends_with(": hello\n"),
            "{policy}: {line:?}"
        );
    }
}

#[test]
fn affinity_sends_each_client_address_to_one_slot_and_back_after_a_restart() {
    let rrb = Rrb::start(
        "workers = 3\n[dispatch]\naffinity = \"client-ip\"\n[restart]\nbackoff_initial = \"1500ms\"\n",
        3,
    );
    let clients: Vec<Ipv4Addr> = (1..=8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
    let get = |ip: Ipv4Addr| {
        http_get_from(&rrb.addr, ip).unwrap_or_else(|e| panic!("request from {ip} failed: {e}"))
    };
    // Each address always lands on one slot.
    let mut home = BTreeMap::new();
    for &ip in &clients {
        let slots: BTreeSet<usize> = (0..20).map(|_| worker_id_of(&get(ip))).collect();
        assert_eq!(slots.len(), 1, "{ip} went to slots {slots:?}");
        home.insert(ip, *slots.first().unwrap());
    }
    let used: BTreeSet<usize> = home.values().copied().collect();
    assert!(used.len() >= 2, "8 addresses all hashed to {used:?}");
    // Take one address's slot down: its clients are served by the others meanwhile.
    let ip = clients[0];
    let slot = home[&ip];
    let victim = pid_of(&get(ip));
    // SAFETY: killing one of our test's workers.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    rrb.wait_for_log("killed by SIGKILL", Duration::from_secs(5));
    for _ in 0..10 {
        let body = get(ip);
        assert_ne!(worker_id_of(&body), slot, "slot {slot} is down: {body}");
    }
    // Once the slot's replacement is ready, its clients come back: the slot is the bucket.
    rrb.wait_ready(4);
    for _ in 0..10 {
        let body = get(ip);
        assert_eq!(worker_id_of(&body), slot, "{body}");
        assert_ne!(pid_of(&body), victim);
    }
    for (&ip, &slot) in &home {
        assert_eq!(worker_id_of(&get(ip)), slot, "{ip} moved");
    }
}

#[test]
fn a_busy_worker_is_routed_around_and_nobody_waits_behind_it() {
    // Slot 0's first incarnation holds its event loop for 2 s on its first request, then
    // leaves (its successor, like slot 1, answers at once).
    let mark = tempfile::tempdir().unwrap();
    let mark = mark.path().join("blocked-once");
    let script = format!(
        "if [ \"$RRB_WORKER_ID\" = 0 ] && [ ! -e '{m}' ]; then touch '{m}'; exec '{bin}' demo-worker --slow-every 1 --slow-ms 2000 --max-requests 1; else exec '{bin}' demo-worker; fi",
        m = mark.display(),
        bin = common::BIN
    );
    let config = format!("workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", {script:?}]\n");
    let rrb = Rrb::start(&config, 2);
    // Requests from one client until one lands on slot 0, which then blocks for 2 s. The
    // client tells when its current request started, so the test sees when one is held.
    let addr = rrb.addr.clone();
    let current = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let shared = std::sync::Arc::clone(&current);
    let blocker = std::thread::spawn(move || {
        loop {
            let t = Instant::now();
            *shared.lock().unwrap() = Some(t);
            let body = http_get(&addr).expect("served");
            if worker_id_of(&body) == 0 {
                return (t.elapsed(), Instant::now(), pid_of(&body));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no request was held by slot 0");
        let held_since = *current.lock().unwrap();
        if held_since.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
            break; // slot 0 is busy with it
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Meanwhile three clients, ten requests each: none waits behind the busy worker.
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let addr = rrb.addr.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| {
                        let body = http_get(&addr).expect("served");
                        (worker_id_of(&body), pid_of(&body), Instant::now())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let served: Vec<(usize, i32, Instant)> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let (took, block_ended, busy) = blocker.join().unwrap();
    assert!(
        took >= Duration::from_millis(1900),
        "slot 0 did not block: {took:?}"
    );
    let during: Vec<_> = served.iter().filter(|r| r.2 < block_ended).collect();
    assert!(!during.is_empty(), "no request was served during the block");
    assert!(
        during.iter().all(|r| r.0 == 1),
        "the busy slot 0 was given work: {during:?}"
    );
    // Nobody waited behind it: the busy worker (which leaves after that one request) served
    // none of theirs, during its block or after.
    let waited: Vec<_> = served.iter().filter(|r| r.1 == busy).collect();
    assert!(
        waited.is_empty(),
        "waited behind the busy worker: {waited:?}"
    );
}
