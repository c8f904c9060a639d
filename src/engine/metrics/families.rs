//! Every metric family `/metrics` shows: its name, type and help, each written once here and
//! named by the renderer. Names follow Prometheus conventions: the `rrbalancer_` prefix,
//! `_total` for counters, base units (seconds, bytes), a `slot` label (stable across restarts),
//! never a pid label; the master's own process figures use the standard `process_` names.

/// A family's type, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

pub const BUILD_INFO: Family = family(
    "rrbalancer_build_info",
    Gauge,
    "Version and policy of the running master (always 1).",
);
pub const ACCEPTED: Family = family(
    "rrbalancer_connections_accepted_total",
    Counter,
    "Connections the master accepted, per listener (rr mode).",
);
pub const ACCEPT_PAUSES: Family = family(
    "rrbalancer_accept_pauses_total",
    Counter,
    "Times the master stopped accepting, by cause: no worker had room (clients wait in the \
     kernel's backlog), or no file descriptor was left.",
);
pub const QUEUED: Family = family(
    "rrbalancer_connections_queued",
    Gauge,
    "Accepted connections waiting in the master for a worker with room.",
);
pub const WORKERS_WANTED: Family = family(
    "rrbalancer_workers_wanted",
    Gauge,
    "Worker slots configured (or scaled to).",
);
pub const WORKERS_READY: Family =
    family("rrbalancer_workers_ready", Gauge, "Workers ready to serve.");
pub const DRAINING: Family = family(
    "rrbalancer_draining",
    Gauge,
    "1 while a graceful stop drains ([shutdown] drain): still serving, reported not ready.",
);
pub const HANDED: Family = family(
    "rrbalancer_connections_handed_total",
    Counter,
    "Connections handed to the workers of each slot.",
);
pub const ACKED: Family = family(
    "rrbalancer_connections_acked_total",
    Counter,
    "Connections the workers of each slot acknowledged (took for good).",
);
pub const HANDOFF_LATENCY: Family = family(
    "rrbalancer_handoff_latency_seconds",
    Histogram,
    "Time from accept to the worker's acknowledgement, queueing in the master included.",
);
pub const UNACKED: Family = family(
    "rrbalancer_connections_unacked",
    Gauge,
    "Connections sent to the slot's worker and not yet acknowledged.",
);
pub const OLDEST_UNACKED: Family = family(
    "rrbalancer_connections_oldest_unacked_seconds",
    Gauge,
    "How long the oldest un-acknowledged connection of the slot has waited (0 with none).",
);
pub const WORKER_STARTS: Family = family(
    "rrbalancer_worker_starts_total",
    Counter,
    "Worker processes started for the slot: the first, restarts, reload candidates, recycles.",
);
pub const WORKER_GIVEUPS: Family = family(
    "rrbalancer_worker_giveups_total",
    Counter,
    "Times the slot was given up after too many failures in [restart] window.",
);
pub const WORKER_RESTARTS: Family = family(
    "rrbalancer_worker_restarts_total",
    Counter,
    "Restarts of the slot's worker after a failure.",
);
pub const WORKER_RECYCLES: Family = family(
    "rrbalancer_worker_recycles_total",
    Counter,
    "Workers of the slot replaced by [recycle] limits.",
);
pub const WORKER_MEMORY: Family = family(
    "rrbalancer_worker_resident_memory_bytes",
    Gauge,
    "Resident memory of the slot's worker: its process group's where [recycle] max_memory \
     measures it, else its own process's.",
);
pub const WORKER_CPU: Family = family(
    "rrbalancer_worker_cpu_seconds_total",
    Counter,
    "CPU time of the slot's current worker process (resets when it is replaced).",
);
pub const REROUTED: Family = family(
    "rrbalancer_connections_rerouted_total",
    Counter,
    "Connections handed to the slot's worker that went to another, by cause: it exited \
     holding them un-acknowledged, was killed at ack_timeout, or refused them.",
);
pub const WORKER_EXITS: Family = family(
    "rrbalancer_worker_exits_total",
    Counter,
    "Worker exits by cause: stopped (asked to), exited (on its own), killed (by a signal it \
     was not asked for).",
);
pub const RELOADS: Family = family(
    "rrbalancer_reloads_total",
    Counter,
    "Rolling reloads by outcome: completed, failed (a candidate failed; the old workers serve \
     on), aborted (the master began to stop).",
);
pub const MESSAGES: Family = family(
    "rrbalancer_messages_relayed_total",
    Counter,
    "Messages relayed between the workers and rrbalancer send.",
);
pub const DELIVERIES: Family = family(
    "rrbalancer_message_deliveries_total",
    Counter,
    "Copies of relayed messages queued for a receiver.",
);
pub const RETAINED_KEYS: Family = family(
    "rrbalancer_retained_keys",
    Gauge,
    "Message keys whose latest value the master keeps for workers that start later.",
);
pub const RETAINED_BYTES: Family = family(
    "rrbalancer_retained_bytes",
    Gauge,
    "Bytes of the retained values.",
);
pub const WORKER_STATE: Family = family(
    "rrbalancer_worker_state",
    Gauge,
    "The state of each slot: 1 for its state, 0 for the others.",
);
pub const AGENT_STATE: Family = family(
    "rrbalancer_agent_state",
    Gauge,
    "The state of the agent ([agent]): 1 for its state, 0 for the others.",
);
pub const AGENT_STARTS: Family = family(
    "rrbalancer_agent_starts_total",
    Counter,
    "Agent processes started: the first, restarts, reload candidates.",
);
pub const AGENT_EXITS: Family = family(
    "rrbalancer_agent_exits_total",
    Counter,
    "Agent process exits by cause, as rrbalancer_worker_exits_total.",
);
pub const TURNED_AWAY: Family = family(
    "rrbalancer_clients_turned_away_total",
    Counter,
    "Clients of the master's control socket and metrics listener closed unserved, by door \
     and cause.",
);
pub const PROCESS_MEMORY: Family = family(
    "process_resident_memory_bytes",
    Gauge,
    "Resident memory of the master process.",
);
pub const PROCESS_CPU: Family = family(
    "process_cpu_seconds_total",
    Counter,
    "CPU time of the master process (user and system).",
);
pub const PROCESS_FDS: Family = family(
    "process_open_fds",
    Gauge,
    "File descriptors the master holds open.",
);

/// Every family, in the order a scrape shows them (the agent's only with an `[agent]`): the
/// tests check a scrape against it.
#[cfg(test)]
pub const ALL: [&Family; 33] = [
    &BUILD_INFO,
    &ACCEPTED,
    &ACCEPT_PAUSES,
    &QUEUED,
    &WORKERS_WANTED,
    &WORKERS_READY,
    &DRAINING,
    &HANDED,
    &ACKED,
    &HANDOFF_LATENCY,
    &UNACKED,
    &OLDEST_UNACKED,
    &WORKER_STARTS,
    &WORKER_GIVEUPS,
    &WORKER_RESTARTS,
    &WORKER_RECYCLES,
    &WORKER_MEMORY,
    &WORKER_CPU,
    &REROUTED,
    &WORKER_EXITS,
    &RELOADS,
    &MESSAGES,
    &DELIVERIES,
    &RETAINED_KEYS,
    &RETAINED_BYTES,
    &WORKER_STATE,
    &AGENT_STATE,
    &AGENT_STARTS,
    &AGENT_EXITS,
    &TURNED_AWAY,
    &PROCESS_MEMORY,
    &PROCESS_CPU,
    &PROCESS_FDS,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_counters_end_in_total() {
        let mut seen = HashSet::new();
        for f in ALL {
            assert!(seen.insert(f.name), "{} twice", f.name);
            assert!(
                f.name.starts_with("rrbalancer_") || f.name.starts_with("process_"),
                "{}",
                f.name
            );
            assert_eq!(f.kind == Counter, f.name.ends_with("_total"), "{}", f.name);
            assert!(
                f.help.ends_with('.') && !f.help.contains('\n'),
                "{}",
                f.name
            );
        }
    }
}
