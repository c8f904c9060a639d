//! Recycling: replacing a healthy worker before it has been handed too many connections, grown
//! too big or lived too long (`[recycle]`: PM2's `max_memory_restart`, gunicorn's
//! `max_requests` with its jitter, a maximum age).
//!
//! A recycle is a rolling replacement of that one slot, as a reload does it: its successor is
//! started, and only once it is ready does it take the slot and the old worker get asked to stop
//! (it finishes what it has, like any draining worker). One slot at a time; none while a reload
//! runs (a reload replaces every worker anyway), nor while stopping. A successor that fails to
//! become ready leaves the old worker serving, and recycling pauses for [`RETRY_PAUSE`]. Counted
//! per slot apart from restarts, shown by `status`, logged with its reason.
//!
//! Here: why a worker is recycled ([`Reason`]) and the recycle under way ([`Recycling`]); the
//! decisions are the supervisor's (`supervisor/recycling.rs`): the shell measures (memory) and
//! asks it which worker is due. Each worker's own limits: `limits.rs`.

use std::fmt;
use std::time::Duration;

use nix::unistd::Pid;

/// After a successor failed to become ready, recycling waits this long before it tries again.
pub const RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Why a worker is recycled.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Connections { handed: u64, limit: u64 },
    Memory { rss: u64, limit: u64 },
    Age { age: Duration, limit: Duration },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        let time = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
        match *self {
            Reason::Connections { handed, limit } => write!(
                f,
                "max_connections: {handed} connections handed (its limit {limit})"
            ),
            Reason::Memory { rss, limit } => write!(
                f,
                "max_memory: {} resident in its process group (limit {})",
                size(rss),
                size(limit)
            ),
            Reason::Age { age, limit } => {
                write!(f, "max_age: up {} (its limit {})", time(age), time(limit))
            }
        }
    }
}

/// A recycle under way.
#[derive(Debug, Clone)]
pub struct Recycling {
    pub slot: usize,
    /// The worker being replaced.
    pub pid: Pid,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_say_what_was_measured_against_what() {
        let r = Reason::Memory {
            rss: 70 << 20,
            limit: 64 << 20,
        };
        assert_eq!(
            r.to_string(),
            "max_memory: 70.0 MiB resident in its process group (limit 64.0 MiB)"
        );
        let r = Reason::Connections {
            handed: 1043,
            limit: 1021,
        };
        assert_eq!(
            r.to_string(),
            "max_connections: 1043 connections handed (its limit 1021)"
        );
    }
}
