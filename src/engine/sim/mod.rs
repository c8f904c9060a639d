//! Deterministic simulators of the master's pure core, in tests only: the real decision code
//! (no copy of it) driven by a seeded random interleaving of everything that can happen, on a
//! virtual clock, with the invariants checked after every step.
//!
//! - [`handoff`]: the [`Ledger`](super::ledger::Ledger) — who owns each connection from
//!   `accept` to a worker's `ack`: none lost, none served twice;
//! - [`supervision`]: the [`Supervisor`](super::supervisor::Supervisor) — restarts, giving up,
//!   reloads, scaling and stops over workers that misbehave in every way — with clients going
//!   through the real ledger to the workers it counts as serving.
//!
//! `SIM_SEED=<n>` replays one seed exactly; `SIM_SEEDS=<count>` runs that many (default
//! 2,000). A failure names its seed and prints the last steps.

mod handoff;
mod supervision;

use std::collections::VecDeque;
use std::time::Instant;

use super::ledger::Conn;
use crate::wire::protocol::Peer;

/// A simulated connection: an id where the master has a socket.
#[derive(Debug)]
struct SimConn {
    id: u64,
    peer: Peer,
    accepted: Instant,
    sent: Option<Instant>,
}

impl Conn for SimConn {
    fn peer(&self) -> &Peer {
        &self.peer
    }
    fn accepted(&self) -> Instant {
        self.accepted
    }
    fn sent(&self) -> Option<Instant> {
        self.sent
    }
    fn set_sent(&mut self, at: Option<Instant>) {
        self.sent = at;
    }
}

/// The last steps of a run, for a failure's report.
#[derive(Debug, Default)]
struct Trace(VecDeque<String>);

impl Trace {
    const KEPT: usize = 40;

    fn push(&mut self, step: String) {
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(step);
    }

    fn report(&self) -> String {
        let steps: Vec<&str> = self.0.iter().map(String::as_str).collect();
        format!("last steps:\n  {}", steps.join("\n  "))
    }
}

/// The seeds to run: `SIM_SEED` alone, else the first `SIM_SEEDS` (default 2,000).
fn seeds() -> Vec<u64> {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(2_000)).collect(),
    }
}
