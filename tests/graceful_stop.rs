//! A graceful stop loses no client (issue 28, 2.): what the kernel had queued on the listeners
//! when the stop began is accepted and handed to the workers before the listeners close, and
//! the workers serve it before they exit.

mod common;

use std::time::{Duration, Instant};

use common::{Rrb, http_get, number_after};

/// Queued for real: the workers are frozen (SIGSTOP), so the master, with nobody free, stops
/// accepting and the kernel queues the clients — more than the workers' windows hold.
#[test]
fn a_graceful_stop_serves_every_client_the_kernel_had_queued() {
    let mut rrb = Rrb::start("workers = 2\n[shutdown]\nkill_timeout = \"20s\"\n", 2);
    let workers = rrb.workers();
    for &pid in &workers {
        // SAFETY: signals to the test's own grandchildren.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    // 4 sockets fill each frozen worker's window; the other 32 wait in the kernel's queue.
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let addr = rrb.addr.clone();
            std::thread::spawn(move || http_get(&addr))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    rrb.signal(libc::SIGTERM);
    rrb.wait_for_log("stopping gracefully", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    for &pid in &workers {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 40 failed: {failed:?}",
        failed.len()
    );
    let status = rrb
        .wait_exit(Duration::from_secs(20))
        .expect("the master exits");
    assert!(status.success(), "{status:?}");
    let said = rrb.wait_for_log("before closing the listeners", Duration::from_secs(1));
    let accepted = number_after(&said, "accepted the ");
    assert!(
        accepted >= 30,
        "queued in the kernel, then accepted: {said}"
    );
}

/// A master with `[shutdown] drain = drain` and a metrics listener: it and that listener's
/// address.
fn draining_master(drain: &str) -> (Rrb, String) {
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[shutdown]\ndrain = \"{drain}\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    );
    let rrb = Rrb::start(&config, 2);
    let metrics = rrb.metrics_addr();
    (rrb, metrics)
}

/// `GET path` on `addr`: the status line and the body.
fn get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A graceful stop with `[shutdown] drain` first serves on for that long while `/readyz`,
/// `status` and `/metrics` say it is draining, then stops as ever.
#[test]
fn a_drain_serves_on_reported_not_ready_then_the_stop_follows() {
    let (mut rrb, metrics) = draining_master("2s");
    assert_eq!(get(&metrics, "/readyz").1, "ready\n");
    let began = Instant::now();
    rrb.signal(libc::SIGTERM);
    rrb.wait_for_log("draining for 2s before stopping", Duration::from_secs(5));
    let (line, body) = get(&metrics, "/readyz");
    assert!(
        line.contains(" 503 ") && body == "draining\n",
        "{line} {body:?}"
    );
    assert!(
        get(&metrics, "/metrics")
            .1
            .contains("\nrrbalancer_draining 1\n")
    );
    let (code, out, err) = rrb.ctl(&["status", "--ready"]);
    let said = format!("{out}{err}");
    assert!(
        code != 0 && said.contains("draining before it stops"),
        "{said}"
    );
    // With --json, the JSON on stdout as ever (the exit says not ready).
    let (code, out, _) = rrb.ctl(&["status", "--ready", "--json"]);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        code != 0 && json["drain_left_ms"].as_u64().is_some(),
        "{out}"
    );
    // Serving on: every request answered, by both workers, while it drains.
    let mut served = 0;
    while began.elapsed() < Duration::from_millis(1500) {
        let body = http_get(&rrb.addr).unwrap_or_else(|e| panic!("request {served}: {e}"));
        assert!(body.contains("handled by worker"), "{body:?}");
        served += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served >= 20, "{served} served while draining");
    assert_eq!(rrb.count_log("stopping gracefully"), 0, "still draining");
    let status = rrb
        .wait_exit(Duration::from_secs(15))
        .expect("the master exits once the drain is over");
    assert!(status.success(), "{status:?}");
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    rrb.wait_for_log("drain over: stopping gracefully", Duration::from_secs(1));
}

/// A second stop signal, or `stop --now`, skips what is left of a drain.
#[test]
fn a_second_stop_signal_or_stop_now_skips_the_rest_of_the_drain() {
    let (mut rrb, _) = draining_master("60s");
    let began = Instant::now();
    rrb.signal(libc::SIGINT);
    rrb.wait_for_log("draining for 60s", Duration::from_secs(5));
    rrb.signal(libc::SIGTERM);
    rrb.wait_exit(Duration::from_secs(15)).expect("exits");
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    rrb.wait_for_log("skipping the rest of the drain", Duration::from_secs(1));

    let (mut rrb, metrics) = draining_master("60s");
    let (code, out, err) = rrb.ctl(&["stop", "--now"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("stopping pid") && out.contains("stopped"),
        "{out}"
    );
    rrb.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(rrb.count_log("draining for"), 0, "no drain at all");
    assert!(std::net::TcpStream::connect(&metrics).is_err(), "gone");
}

/// `stop` waits as long as the running master says its stop takes — its drain, from the file
/// it read, since edited — and says at once that it drains.
#[test]
fn stop_waits_for_the_drain_the_running_master_has_not_the_edited_file() {
    let (mut rrb, _) = draining_master("12s");
    let edited = "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[shutdown]\nkill_timeout = \"1s\"\n";
    std::fs::write(rrb.config_path(), edited).unwrap();
    let began = Instant::now();
    // From the file alone it would wait 1 s + 10 s, and give up while the master drains.
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        began.elapsed() >= Duration::from_secs(12),
        "{:?}",
        began.elapsed()
    );
    assert!(
        out.contains("draining for 12s") && out.contains("stopped"),
        "{out}"
    );
    assert!(
        err.contains("stop --now` skips the rest of the drain"),
        "{err}"
    );
    rrb.wait_exit(Duration::from_secs(5)).expect("gone");
}
