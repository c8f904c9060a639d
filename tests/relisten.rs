//! A reload that changes `listen` (issue 26, 4.): new addresses bound and served once the new
//! workers are in, removed ones closed after the clients already queued on them are handed to
//! workers; and what a reload cannot apply (the policy) named, with exit code 1.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{Rrb, close_load, free_addr, http_get, number_after};

fn write_listen(rrb: &Rrb, listen: &[&str], rest: &str) {
    let quoted: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!("listen = [{}]\n{rest}", quoted.join(", "));
    std::fs::write(rrb.config_path(), text).unwrap();
}

/// Served on `addr` within `within`.
fn wait_served(addr: &str, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        match http_get(addr) {
            Ok(body) if body.contains("handled by worker") => return Ok(body),
            other if Instant::now() > deadline => return Err(format!("{other:?}")),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn a_reload_adds_an_address_without_a_failed_request_and_removes_one() {
    let rrb = Rrb::start("workers = 2\n", 2);
    let a = rrb.addr.clone();
    let b = free_addr();
    // Add b while clients keep coming on a.
    let stop = Arc::new(AtomicBool::new(false));
    let load = close_load(a.clone(), 4, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    write_listen(&rrb, &[&a, &b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("reload complete: 2 worker(s) replaced"),
        "{out}"
    );
    assert!(out.contains(&format!("listening also on {b}")), "{out}");
    let body = wait_served(&b, Duration::from_secs(5)).expect("served on the new address");
    assert!(body.contains("handled by worker"), "{body}");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed, messages) = load.join().unwrap();
    assert!(ok > 0);
    assert_eq!(failed, 0, "on the address that stayed: {messages:?}");
    rrb.wait_for_log(
        &format!("serving {b}: every worker knows it"),
        Duration::from_secs(5),
    );
    // Remove a: refused from then on; b serves on.
    write_listen(&rrb, &[&b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("no longer on {a}")), "{out}");
    assert!(
        TcpStream::connect(&a).is_err(),
        "nothing listens on {a} any more"
    );
    wait_served(&b, Duration::from_secs(5)).expect("b serves on");
    let (code, out, _) = rrb.ctl(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&b) && !out.contains(&a), "{out}");
}

/// The clients the kernel had queued on an address a reload removes are accepted and served
/// by the new workers, not reset. Queued for real: the old workers are frozen (SIGSTOP), so the
/// master, with nobody free, stops accepting and the kernel queues the clients.
#[test]
fn clients_queued_on_a_removed_address_are_served_not_reset() {
    let rrb = Rrb::start("workers = 2\n", 2);
    let a = rrb.addr.clone();
    let b = free_addr();
    write_listen(&rrb, &[&a, &b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_served(&b, Duration::from_secs(5)).expect("b served");
    rrb.wait_for_log(
        &format!("serving {b}: every worker knows it"),
        Duration::from_secs(5),
    );
    let old = rrb.workers();
    for &pid in &old {
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    // 4 sockets fill each frozen worker's window; the rest wait in a's queue.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || http_get(&a))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    write_listen(&rrb, &[&b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload"]);
    for &pid in &old {
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    assert_eq!(code, 0, "{out}{err}");
    let said = rrb.wait_for_log(
        &format!("no longer listening on {a}"),
        Duration::from_secs(5),
    );
    let handed = number_after(&said, "(");
    assert!(
        handed >= 8,
        "the queued clients were accepted before closing: {said}"
    );
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 20 failed: {failed:?}",
        failed.len()
    );
    assert!(TcpStream::connect(&a).is_err(), "{a} is closed");
}

/// A reload that changes `listen` and the policy applies the first and keeps the second:
/// exit 1, naming only what was not applied and what would apply it.
#[test]
fn what_a_reload_cannot_apply_is_named_and_exits_1_while_listen_is_applied() {
    let rrb = Rrb::start("workers = 2\n", 2);
    let before = rrb.workers();
    let new_addr = free_addr();
    write_listen(&rrb, &[&new_addr], "workers = 2\nsched_policy = \"none\"\n");
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    for said in [
        "reload complete",
        "NOT applied",
        "`sched_policy` changed (rr → none)",
        "only a restart applies it",
        &format!("listening also on {new_addr}"),
        &format!("no longer on {}", rrb.addr),
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
    assert!(!err.contains("`listen` changed"), "{err}");
    let after = rrb.wait_workers(2, Duration::from_secs(5));
    assert!(
        after.iter().all(|w| !before.contains(w)),
        "replaced: {before:?} → {after:?}"
    );
    wait_served(&new_addr, Duration::from_secs(5)).expect("the new address serves, still rr");
    assert!(
        TcpStream::connect(&rrb.addr).is_err(),
        "the old address is closed"
    );
}

/// A worker knows the listeners it was started with (their order is its `listen` order), so
/// an added address is handed only to workers started after the reload: its first clients
/// wait in the kernel's queue while the old workers serve on, and are served by new ones.
#[test]
fn an_added_address_is_served_only_by_workers_started_after_it() {
    let rrb = Rrb::start("workers = 2\n", 2);
    let old = rrb.workers();
    let b = free_addr();
    // The new workers take a while to be ready: the old ones serve meanwhile.
    write_listen(
        &rrb,
        &[&rrb.addr, &b],
        "workers = 2\n[worker]\nargs = [\"--ready-delay\", \"700ms\"]\n",
    );
    let config = rrb.config_path();
    let reload = std::thread::spawn(move || {
        let dir = config.parent().unwrap().to_owned();
        let out = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&config)
            .arg("reload")
            .env("XDG_RUNTIME_DIR", &dir)
            .current_dir(&dir)
            .output()
            .unwrap();
        common::outcome(out)
    });
    rrb.wait_for_log(&format!("listening on {b}"), Duration::from_secs(5));
    let (_, status, _) = rrb.ctl(&["status"]);
    assert!(
        status.contains(&format!(
            "{b} (served once the reload has replaced every worker)"
        )),
        "{status}"
    );
    let asked = Instant::now();
    let on_b = http_get(&b).expect("served once the new workers are in");
    let waited = asked.elapsed();
    let on_a = http_get(&rrb.addr).expect("a serves on meanwhile");
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !old.contains(&common::pid_of(&on_b)),
        "an old worker was handed a connection of {b}: {on_b} (old {old:?})"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(on_a.contains("handled by worker"), "{on_a}");
}

/// In `none` mode the workers accept: each new worker inherits the new list; the old ones keep
/// theirs until they exit, and then the removed address is closed.
#[test]
fn in_none_mode_new_workers_inherit_the_new_listeners() {
    let rrb = Rrb::start_with(common::Start {
        config: "workers = 2\n",
        args: &["--sched-policy", "none"],
        ready: 2,
        ..common::Start::default()
    });
    let a = rrb.addr.clone();
    let b = free_addr();
    write_listen(&rrb, &[&a, &b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_served(&b, Duration::from_secs(5)).expect("served on b by the new workers");
    wait_served(&a, Duration::from_secs(5)).expect("a serves on");
    let worker = rrb.workers()[0];
    let env = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&env).contains("LISTEN_FDS=2\0"),
        "a new worker inherits both"
    );
    write_listen(&rrb, &[&b], "workers = 2\n");
    let (code, out, err) = rrb.ctl(&["reload", "--wait"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        TcpStream::connect(&a).is_err(),
        "{a} closed once its workers left"
    );
    wait_served(&b, Duration::from_secs(5)).expect("b serves on");
}

/// A reload that adds an address and fails (its new workers never become ready) closes the
/// new address again: its clients are refused, not left waiting for workers that never come,
/// and the old workers serve on where they did.
#[test]
fn a_failed_reload_closes_the_address_it_added_again() {
    let rrb = Rrb::start("workers = 2\n", 2);
    let b = free_addr();
    write_listen(
        &rrb,
        &[&rrb.addr, &b],
        "workers = 2\n[worker]\nargs = [\"--no-such-flag\"]\n",
    );
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("reload failed") && err.contains("closed again"),
        "{err}"
    );
    rrb.wait_for_log(&format!("closed {b} again"), Duration::from_secs(5));
    assert!(TcpStream::connect(&b).is_err(), "{b} refuses");
    wait_served(&rrb.addr, Duration::from_secs(5)).expect("the old workers serve on");
    let (_, out, _) = rrb.ctl(&["status"]);
    assert!(!out.contains(&b), "{out}");
}
