//! Client load alone never takes the balancer down: workers at their open-file limit give
//! connections back (`full`) instead of exiting, idle clients are closed after the workers'
//! idle timeout, and the master serves a fresh client as soon as the load is gone.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Rrb, Start, alive};

/// The reproduction of issue 23 (`ulimit -n 128`, keep-alive clients beyond what the workers
/// may hold): the workers hit their limit and say `full`, nothing exits, nothing is given up,
/// and once the clients leave a new one is served at once.
#[test]
fn keep_alive_clients_beyond_the_workers_file_limit_never_stop_the_service() {
    let rrb = Rrb::start_with(Start {
        config: "workers = 2\n",
        ready: 2,
        nofile: Some(128),
        ..Start::default()
    });
    let workers = rrb.workers();
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::keep_alive_load(rrb.addr.clone(), 400, "handled by worker", stop.clone());
    rrb.wait_for_log("at the open-file limit", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(alive(rrb.pid()), "the master is alive");
    let took = rrb.served_within("handled by worker", Duration::from_secs(5));
    for (restarts, state) in rrb.slot_states() {
        assert_eq!((restarts, state.as_str()), (0, "ready"));
    }
    assert_eq!(rrb.workers(), workers, "the same workers serve");
    assert_eq!(rrb.count_log("giveup"), 0);
    assert!(seen.ok > 1000, "{} answers", seen.ok);
    eprintln!(
        "400 keep-alive clients at 128 fds: {} answers, {} errors (first: {:?}); a new client \
         served {took:?} after",
        seen.ok,
        seen.errors.len(),
        seen.errors.first()
    );
}

/// Idle keep-alive clients (one request each, then silence) beyond the workers' file limit:
/// the workers close them after their idle timeout, and new clients are served.
#[test]
fn idle_clients_cannot_pin_the_workers_file_descriptors() {
    let rrb = Rrb::start_with(Start {
        config: "workers = 2\n[worker]\nargs = [\"--idle-timeout\", \"1s\"]\n",
        ready: 2,
        nofile: Some(128),
        ..Start::default()
    });
    // Twice what the two workers may hold, each served once and then left open, idle.
    let mut idle = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect(&rrb.addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        idle.push(s);
    }
    rrb.wait_for_log("at the open-file limit", Duration::from_secs(10));
    // Every one of them is answered in turn as the idle ones before it are closed, and is then
    // closed itself: a read of its answer ends with the end of the stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .unwrap();
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            read.is_ok() && answer.contains("handled by worker"),
            "client {i}: {read:?} {answer:?}"
        );
    }
    rrb.served_within("handled by worker", Duration::from_secs(5));
    for (restarts, state) in rrb.slot_states() {
        assert_eq!((restarts, state.as_str()), (0, "ready"));
    }
}

/// Clients that trickle their request heads (a header line every second, slowloris) beyond the
/// workers' file limit: each is answered 408 once its request has taken `--request-timeout`,
/// and a new client is served meanwhile.
#[test]
fn clients_trickling_their_requests_are_answered_408_and_cannot_pin_the_workers() {
    let rrb = Rrb::start_with(Start {
        config: "workers = 2\n[worker]\nargs = [\"--request-timeout\", \"2s\"]\n",
        ready: 2,
        nofile: Some(128),
        ..Start::default()
    });
    let mut tricklers: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&rrb.addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_secs(1));
                for s in &mut tricklers {
                    let _ = s.write_all(b"X-Trickle: 1\r\n");
                }
            }
            tricklers
        })
    };
    let took = rrb.served_within("handled by worker", Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let tricklers = trickle.join().unwrap();
    let timed_out = tricklers
        .into_iter()
        .filter(|s| {
            let mut s = s;
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).contains(" 408 ")
        })
        .count();
    assert!(timed_out >= 200, "{timed_out} of 300 answered 408");
    for (restarts, state) in rrb.slot_states() {
        assert_eq!((restarts, state.as_str()), (0, "ready"));
    }
    eprintln!("300 tricklers at 128 fds: a new client served after {took:?}; {timed_out} got 408");
}

/// The "Max open files" limits of `pid` (soft, hard), from /proc.
fn nofile_of(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// README: the master raises its open-file soft limit to the hard limit at start (so do the
/// workers, through the library), whatever soft limit it was started with.
#[test]
fn the_master_and_its_workers_raise_their_soft_file_limit_to_the_hard_one() {
    let (_, hard) = nofile_of("self");
    assert_ne!(hard, "256", "the test needs a hard limit above 256");
    let rrb = Rrb::start_with(Start {
        config: "workers = 1\n",
        ready: 1,
        soft_nofile: Some(256),
        ..Start::default()
    });
    rrb.wait_for_log(&format!("open file limit: {hard}"), Duration::from_secs(5));
    let master = rrb.pid().to_string();
    assert_eq!(nofile_of(&master), (hard.clone(), hard.clone()));
    for worker in rrb.workers() {
        assert_eq!(nofile_of(&worker.to_string()), (hard.clone(), hard.clone()));
    }
}
