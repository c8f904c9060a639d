//! Large worker counts end to end (issue 27, 4.): 1,024 workers start, serve under load, reload
//! (rolling), scale down to 2 and back, and stop — with no failed request, no warning about
//! file descriptors, and no process left. Bounds here are hang checks, not speed targets (those
//! are `scripts/bench.sh --workers`'s).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Rrb, children_of, close_load};

const WORKERS: usize = 1024;

#[test]
fn a_thousand_workers_start_serve_reload_scale_and_stop() {
    let mut rrb = Rrb::start(
        &format!("workers = {WORKERS}\n[shutdown]\nkill_timeout = \"5s\"\n"),
        WORKERS,
    );
    assert_eq!(rrb.workers().len(), WORKERS);
    let stop = Arc::new(AtomicBool::new(false));
    let load = close_load(rrb.addr.clone(), 4, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    // `status` of every worker, under load.
    let (code, json, err) = rrb.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let current = (status["workers"].as_array().unwrap().iter())
        .filter(|w| w["role"] == "current" && w["state"] == "ready")
        .count();
    assert_eq!(current, WORKERS);
    // A rolling reload of all of them.
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("{WORKERS} worker(s) replaced")),
        "{out}"
    );
    // Down to 2, and back.
    let (code, out, err) = rrb.ctl(&["scale", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_workers(2, Duration::from_secs(30));
    let (code, out, err) = rrb.ctl(&["scale", &WORKERS.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_workers(WORKERS, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, messages) = load.join().unwrap();
    assert!(ok > 0);
    assert_eq!(failed, 0, "{messages:?}");
    let warned: Vec<String> = (rrb.log().into_iter())
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warned.is_empty(), "{warned:#?}");
    // Stop: within kill_timeout and a few seconds, nothing left.
    let master = rrb.pid();
    let asked = Instant::now();
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    rrb.wait_exit(Duration::from_secs(10))
        .expect("the master exits");
    assert!(
        asked.elapsed() < Duration::from_secs(5 + 5),
        "{:?}",
        asked.elapsed()
    );
    assert!(children_of(master).is_empty(), "no worker left");
}
