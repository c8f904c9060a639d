//! HAProxy's agent-check (`[metrics] haproxy_agent`, issue 28, part 3): one line per
//! connection in HAProxy's grammar — `up ready N%` with N the share of the workers free,
//! `drain` while a stop drains or runs, `down` with no worker ready — and nothing a client does
//! holds the listener.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Rrb, free_addr, http_get};

/// A master with the agent on a free port (and `extra` config): it and the agent's address.
fn with_agent(workers: usize, ready: usize, extra: &str) -> (Rrb, String) {
    let agent = free_addr();
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = {workers}\n{extra}\n[metrics]\n\
         listen = \"127.0.0.1:0\"\nhaproxy_agent = \"{agent}\"\n"
    );
    let rrb = Rrb::start(&config, ready);
    rrb.wait_for_log("haproxy agent-check on", Duration::from_secs(10));
    (rrb, agent)
}

/// One check, as HAProxy makes it (with an `agent-send` string): the line answered.
fn check(agent: &str) -> String {
    agent_line(agent).unwrap()
}

/// The N of an `up ready N%` line; 0 for any other answer.
fn weight(line: &str) -> u32 {
    (line.strip_prefix("up ready "))
        .and_then(|r| r.trim_end().strip_suffix('%'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The weight said, waiting up to `within` for `until` to hold.
fn weight_until(agent: &str, within: Duration, until: impl Fn(u32) -> bool) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let line = check(agent);
        assert!(line.starts_with("up ready "), "{line:?}");
        let n = weight(&line);
        if until(n) || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_weight_follows_how_many_workers_are_free_and_a_drain_says_drain() {
    let (mut rrb, agent) = with_agent(2, 2, "[shutdown]\ndrain = \"3s\"\nkill_timeout = \"20s\"");
    let idle = weight_until(&agent, Duration::from_secs(5), |n| n >= 95);
    assert!(idle >= 95, "idle workers: {idle}%");
    // Both workers busy: frozen, each holding a client.
    let workers = rrb.workers();
    for &pid in &workers {
        // SAFETY: signals to the test's own grandchildren.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let addr = rrb.addr.clone();
            std::thread::spawn(move || http_get(&addr))
        })
        .collect();
    let busy = weight_until(&agent, Duration::from_secs(5), |n| n <= 5);
    assert!(
        (1..=5).contains(&busy),
        "busy workers: {busy}% (never 0 while serving)"
    );
    for &pid in &workers {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    for c in clients {
        c.join().unwrap().expect("served once thawed");
    }
    let again = weight_until(&agent, Duration::from_secs(5), |n| n >= 95);
    assert!(again >= 95, "free again: {again}%");
    rrb.signal(libc::SIGTERM);
    rrb.wait_for_log("draining for 3s", Duration::from_secs(5));
    assert_eq!(check(&agent), "drain\n");
    rrb.wait_exit(Duration::from_secs(15)).expect("exits");
}

#[test]
fn no_worker_ready_is_down() {
    let extra =
        "[worker]\nexec = \"sleep\"\nargs = [\"30\"]\nready = \"message\"\nready_timeout = \"60s\"";
    let (rrb, agent) = with_agent(1, 0, extra);
    assert_eq!(check(&agent), "down\n");
    drop(rrb);
}

/// 500 connections left open and garbage do not stop the checks: each is answered and closed
/// at once, and the master's memory does not grow with them.
#[test]
fn idle_clients_and_garbage_hold_nothing() {
    let (rrb, agent) = with_agent(1, 1, "");
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", rrb.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = rss();
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(&agent).unwrap())
        .collect();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&agent).unwrap();
        let _ = s.write_all(&[0xff; 16 * 1024]);
    }
    let began = Instant::now();
    assert!(check(&agent).starts_with("up ready "));
    assert!(
        began.elapsed() < Duration::from_millis(250),
        "{:?}",
        began.elapsed()
    );
    // Every idle one was answered and closed by the master already.
    for mut s in idle.into_iter().take(50) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut line = String::new();
        let _ = s.read_to_string(&mut line);
        assert!(line.starts_with("up ready "), "{line:?}");
    }
    let grown = rss().saturating_sub(before);
    assert!(grown < 2048, "master RSS grew {grown} KiB");
}

/// After an upgrade's handover the new master answers for the host: the old one, still
/// finishing a held connection, no longer takes health checks — where it did, about half of
/// them (the kernel spreads them over both listeners) said `stopping` and `drain`, and a
/// balancer with `fall 2` could take the host out in the middle of a clean upgrade.
#[test]
fn after_an_upgrade_only_the_new_master_answers_the_balancers_checks() {
    let (metrics, agent) = (free_addr(), free_addr());
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 1\n[worker]\nargs = [\"--drain-grace\", \"3s\"]\n\
         [metrics]\nlisten = \"{metrics}\"\nhaproxy_agent = \"{agent}\"\n"
    );
    let rrb = Rrb::start(&config, 1);
    // An idle keep-alive client keeps the old worker, and so the old master, finishing.
    let mut held = TcpStream::connect(&rrb.addr).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("handled by worker"));
    let old = rrb.pid();
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pid {old} stops")), "{out}");
    let mut wrong = Vec::new();
    for _ in 0..40 {
        match common::http_get_path(&metrics, "/readyz") {
            Ok(answer) if answer == "ready\n" => {}
            other => wrong.push(format!("/readyz: {other:?}")),
        }
        let line = check(&agent);
        if !line.starts_with("up ready ") {
            wrong.push(format!("agent: {line:?}"));
        }
    }
    assert!(
        common::alive(old),
        "the old master had already exited: the checks proved nothing"
    );
    assert_eq!(
        wrong,
        Vec::<String>::new(),
        "checks answered by the old master"
    );
    drop(held);
}

/// Balancers check all through an upgrade (a fleet of HAProxies, each every 2 s): every check
/// hears the host ready, at its full weight. The old master answers them until it hands over
/// and the new one from then on, from the same sockets (passed over the upgrade's channel):
/// none is answered by the new master while its workers start (`503`, `down`), none is reset
/// when the old master closes its copies, and the new master's weight is its idle workers'
/// from its first answer (not `up ready 1%`, averaged with its start).
#[test]
fn balancers_checking_all_through_an_upgrade_hear_the_host_ready_at_every_check() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (metrics, agent) = (free_addr(), free_addr());
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[worker]\nargs = [\"--ready-delay\", \"1s\"]\n\
         [metrics]\nlisten = \"{metrics}\"\nhaproxy_agent = \"{agent}\"\n"
    );
    let rrb = Rrb::start(&config, 2);
    let old = rrb.pid();
    let done = Arc::new(AtomicBool::new(false));
    let checkers: Vec<_> = (0..3)
        .map(|_| {
            let (metrics, agent, done) = (metrics.clone(), agent.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut checks, mut wrong) = (0, Vec::new());
                while !done.load(Ordering::Relaxed) && checks < 20_000 {
                    match common::http_get_path(&metrics, "/readyz") {
                        Ok(answer) if answer == "ready\n" => {}
                        other => wrong.push(format!("/readyz: {other:?}")),
                    }
                    // Nobody loads the workers: every one is free, whichever master answers.
                    match agent_line(&agent) {
                        Ok(line) if weight(&line) >= 90 => {}
                        other => wrong.push(format!("agent: {other:?}")),
                    }
                    checks += 1;
                }
                (checks, wrong)
            })
        })
        .collect();
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("pid {old} stops")), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let (mut checks, mut wrong) = (0, Vec::new());
    for checker in checkers {
        let (n, w) = checker.join().unwrap();
        checks += n;
        wrong.extend(w);
    }
    // The new master's workers took a second to be ready: the checks spanned its start.
    assert!(checks >= 30, "only {checks} checks");
    wrong.truncate(10);
    assert_eq!(wrong, Vec::<String>::new(), "of {checks} checks");
    for addr in [&metrics, &agent] {
        let line = format!("{addr}: the socket passed by pid {old}");
        assert_eq!(rrb.count_log(&line), 1, "{:#?}", rrb.log());
    }
}

/// One check (see [`check`]), its failures returned.
fn agent_line(agent: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(agent).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"backend/srv1\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    s.read_to_string(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(line)
}
