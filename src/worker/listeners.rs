//! `none` mode's listeners (`LISTEN_FDS`, systemd's convention) and what the environment says
//! of this worker: its slot, whether it is the agent.

use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;
use crate::wire::env;

static LISTENERS_TAKEN: AtomicBool = AtomicBool::new(false);

/// A listener inherited in `none` mode.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// The listeners passed by socket activation (`LISTEN_FDS` at fd 3…, checked against
/// `LISTEN_PID`), in `listen` order. Empty when there are none (e.g. in `rr` mode). Taken once
/// per process.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let pid_matches = std::env::var(env::LISTEN_PID)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let count: i32 = std::env::var(env::LISTEN_FDS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !pid_matches || count <= 0 || LISTENERS_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    (0..count)
        .map(|i| {
            let fd = sys::take_inherited_fd(sys::FIRST_INHERITED_FD + i)?;
            let domain = socket2::SockRef::from(&fd).domain()?;
            Ok(if domain == socket2::Domain::UNIX {
                Listener::Unix(UnixListener::from(fd))
            } else {
                Listener::Tcp(TcpListener::from(fd))
            })
        })
        .collect()
}

/// Whether this process is the agent (`[agent]`: `RRB_AGENT=1`), which serves no connection.
pub fn is_agent() -> bool {
    std::env::var_os(env::AGENT).is_some_and(|v| v == "1")
}

/// This worker's slot number (`RRB_WORKER_ID`), 0 when not under rrbalancer.
pub fn worker_id() -> usize {
    std::env::var(env::WORKER_ID)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
