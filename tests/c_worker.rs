//! A worker in C written from docs/PROTOCOL.md alone (examples/c/worker.c), compiled with the
//! machine's C compiler: it serves in rotation, and at its open-file limit gives cut `conn`
//! messages back (`full N`) without losing a client or being replaced.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Rrb, pid_of, repo};

/// Compiles the example into `dir`.
fn compile(dir: &Path) -> PathBuf {
    let out = dir.join("c-worker");
    let status = Command::new("cc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(repo().join("examples/c/worker.c"))
        .status()
        .expect("cc (gcc) is on every supported machine");
    assert!(status.success(), "examples/c/worker.c does not compile");
    out
}

#[test]
fn a_c_worker_from_the_protocol_alone_takes_turns() {
    let dir = tempfile::tempdir().unwrap();
    let worker = compile(dir.path());
    let config = format!("workers = 2\n[worker]\nexec = \"{}\"\n", worker.display());
    let rrb = Rrb::start(&config, 2);
    let pids: Vec<i32> = (0..6)
        .map(|_| pid_of(&rrb.get().expect("served")))
        .collect();
    assert!(rrb.get().unwrap().contains("(c)"));
    assert_ne!(pids[0], pids[1]);
    assert_eq!(pids[0], pids[2], "turns: {pids:?}");
    assert_eq!(pids[1], pids[3], "turns: {pids:?}");
}

/// Each C worker may open 8 files (3 for stdio, 1 for its channel): a window of 16 sockets
/// cannot reach it whole. It says `full`, is sent fewer, and every client is served.
#[test]
fn a_c_worker_at_its_file_limit_gives_connections_back_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let worker = compile(dir.path());
    let config = format!(
        "workers = 2\n[worker]\nexec = \"sh\"\nargs = [\"-c\", \"ulimit -n 8 && exec {}\"]\n\
         max_unacked = 16\n",
        worker.display()
    );
    let rrb = Rrb::start(&config, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::close_load(rrb.addr.clone(), 32, 20_000, stop.clone());
    rrb.wait_for_log("out of file descriptors", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, messages) = load.join().unwrap();
    assert_eq!(failed, 0, "{messages:?}");
    assert!(ok > 100, "{ok} served");
    for (restarts, state) in rrb.slot_states() {
        assert_eq!((restarts, state.as_str()), (0, "ready"));
    }
    assert_eq!(rrb.count_log("misbehaved"), 0);
}
