//! What the master counts for its whole life, and the label values of each count's causes.
//!
//! Counting is a `u64` increment in a vector indexed by listener or slot, never an allocation
//! per connection (a vector grows only when a listener or slot is new).

use super::super::stats::Served;

/// Counters the master keeps for its whole life.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted, per listener.
    pub accepted: Vec<u64>,
    /// What workers gone served, per slot (that of live workers is in their ledger accounts).
    pub retired: Vec<Served>,
    /// Times accepting paused because no worker had room.
    pub paused_no_worker: u64,
    /// `accept` failures for lack of file descriptors.
    pub fd_exhausted: u64,
    /// Connections handed again to another worker, per slot they left, by [`REROUTE_CAUSES`].
    pub rerouted: Vec<[u64; 3]>,
    /// Worker exits per slot, by [`EXIT_CAUSES`] (same order).
    pub exits: Vec<[u64; 3]>,
    /// Worker processes started per slot (first starts, restarts, reload candidates, recycles).
    pub starts: Vec<u64>,
    /// Messages relayed (`send`, `process.send`, `rrbalancer send`), and copies queued for
    /// their receivers.
    pub messages: u64,
    pub deliveries: u64,
    /// The agent's processes started, and its exits by [`EXIT_CAUSES`].
    pub agent_starts: u64,
    pub agent_exits: [u64; 3],
    /// Clients of the master's own doors closed unserved, by [`TurnedAway`].
    pub turned_away: [u64; TURNED_AWAY.len()],
}

/// Why a client of the master's own doors (the control socket, the metrics listener) was
/// closed unserved; its index in [`TURNED_AWAY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnedAway {
    /// Every place was taken: it gave way to a newcomer, or was refused as one.
    ControlCrowded,
    /// No whole request in time, or its answer not read in time.
    ControlTimeout,
    /// A request longer than the limit.
    ControlTooLong,
    /// A client of another user.
    ControlOtherUser,
    /// Its address is not in `[metrics] allow`.
    MetricsNotAllowed,
    /// No request head in time (slowloris), or its answer not read in time.
    MetricsTimeout,
    /// Not an HTTP request for `GET`/`HEAD` (answered 400).
    MetricsBadRequest,
    /// Every place was taken: the oldest connection made room for a newcomer.
    MetricsCrowded,
}

/// The `door` and `cause` labels of each [`TurnedAway`], in its order.
pub const TURNED_AWAY: [(&str, &str); 8] = [
    ("control", "crowded"),
    ("control", "timeout"),
    ("control", "too_long"),
    ("control", "other_user"),
    ("metrics", "not_allowed"),
    ("metrics", "timeout"),
    ("metrics", "bad_request"),
    ("metrics", "crowded"),
];

/// Why a connection went to another worker than the one it was handed to: that worker died
/// holding it un-acked, was killed for holding it past `ack_timeout`, or refused it (a Node
/// cluster worker's `accepted: false`).
pub const REROUTE_CAUSES: [&str; 3] = ["worker_exited", "ack_timeout", "refused"];

/// The index in [`REROUTE_CAUSES`] of a dead worker's un-acked connections: `stuck` if it was
/// killed at `ack_timeout`.
pub fn reroute_cause(stuck: bool) -> usize {
    if stuck { 1 } else { 0 }
}

/// A refused connection's index in [`REROUTE_CAUSES`].
pub const REFUSED: usize = 2;

/// How a reload ended: every slot replaced, a candidate failed (the old workers serve on), or
/// the master began to stop first.
pub const RELOAD_OUTCOMES: [&str; 3] = ["completed", "failed", "aborted"];

/// Why a worker exited: asked to (a stop, reload, scale, recycle), or not — then its own exit
/// status, or a signal.
pub const EXIT_CAUSES: [&str; 3] = ["stopped", "exited", "killed"];

/// The index in [`EXIT_CAUSES`] of an exit: `asked` (it was draining), else by its `cause` text
/// (`exit code 3`, `killed by SIGSEGV`).
pub fn exit_cause(asked: bool, cause: &str) -> usize {
    if asked {
        0
    } else if cause.starts_with("killed") {
        2
    } else {
        1
    }
}

impl Counters {
    pub fn turn_away(&mut self, why: TurnedAway) {
        self.turned_away[why as usize] += 1;
    }

    pub fn count_exit(&mut self, slot: usize, cause: usize) {
        Counters::at(&mut self.exits, slot)[cause] += 1;
    }

    pub fn count_rerouted(&mut self, slot: usize, cause: usize, n: u64) {
        Counters::at(&mut self.rerouted, slot)[cause] += n;
    }

    /// What a worker of `slot` served, now that it is gone.
    pub fn retire(&mut self, slot: usize, served: &Served) {
        Counters::at(&mut self.retired, slot).add(served);
    }

    /// `v[i]`, growing `v` if `i` is new (a slot count changes rarely).
    fn at<T: Default + Clone>(v: &mut Vec<T>, i: usize) -> &mut T {
        if v.len() <= i {
            v.resize(i + 1, T::default());
        }
        &mut v[i]
    }

    /// `v[i] += n`, growing `v` if `i` is new (a listener or slot count changes rarely).
    pub fn add(v: &mut Vec<u64>, i: usize, n: u64) {
        *Counters::at(v, i) += n;
    }
}
