//! A graceful stop loses no client (issue 28, 2.): what the kernel had queued on the listeners
//! when the stop began is accepted and handed to the workers before the listeners close, and
//! the workers serve it before they exit.

mod common;

use std::time::Duration;

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
