//! What the master counts, and its rendering in the Prometheus text exposition format (0.0.4):
//! served on `[metrics] listen` at `/metrics` and printed by `rrbalancer metrics`.
//!
//! Counting is a `u64` increment in a vector indexed by listener or slot, never an allocation
//! per connection; a scrape builds a [`Snapshot`] (one allocation per scrape, not per
//! connection) and [`render`]s it. Names follow Prometheus conventions: `rrbalancer_` prefix,
//! `_total` for counters, base units (seconds, bytes), a `slot` label (stable across restarts),
//! never a pid label. The master's own process metrics use the standard `process_` names.

use std::fmt::{Display, Write};

use super::stats::Served;

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

/// One slot at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// `starting`, `ready`, `restarting`, `given_up`, `stopping`.
    pub state: &'static str,
    /// By every worker the slot had, the current one included.
    pub served: Served,
    pub unacked: usize,
    pub oldest_unacked_secs: Option<f64>,
    pub restarts: u64,
    pub recycles: u64,
    /// Times the slot was given up (a restart storm).
    pub giveups: u64,
    pub rss_bytes: Option<u64>,
    /// CPU time of the slot's current worker process so far.
    pub cpu_seconds: Option<f64>,
}

/// The master process itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
}

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub sched_policy: &'a str,
    pub listeners: &'a [String],
    pub counters: &'a Counters,
    pub queued: usize,
    pub workers_wanted: usize,
    pub workers_ready: usize,
    /// Reloads ended, by [`RELOAD_OUTCOMES`].
    pub reloads: [u64; 3],
    /// Retained message keys, and their bodies' bytes.
    pub retained: (usize, usize),
    pub slots: Vec<Slot>,
    /// The agent's state (one of [`STATES`]), if an `[agent]` is configured.
    pub agent: Option<&'a str>,
    pub process: Process,
}

/// Every state a slot can be in: each has its series (1 for the current one, 0 for the others),
/// so that a state's count can be summed without gaps.
pub const STATES: [&str; 5] = ["starting", "ready", "restarting", "given_up", "stopping"];

/// The exposition text.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(2048 + 512 * s.slots.len());
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // A family of one sample, with no label.
    let single = |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Display| {
        head(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };

    head(
        &mut out,
        "rrbalancer_build_info",
        "gauge",
        "Version and policy of the running master (always 1).",
    );
    let _ = writeln!(
        out,
        "rrbalancer_build_info{{version=\"{}\",sched_policy=\"{}\"}} 1",
        escape(s.version),
        escape(s.sched_policy)
    );

    head(
        &mut out,
        "rrbalancer_connections_accepted_total",
        "counter",
        "Connections the master accepted, per listener (rr mode).",
    );
    for (i, name) in s.listeners.iter().enumerate() {
        let n = s.counters.accepted.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "rrbalancer_connections_accepted_total{{listener=\"{}\"}} {n}",
            escape(name)
        );
    }

    head(
        &mut out,
        "rrbalancer_accept_pauses_total",
        "counter",
        "Times the master stopped accepting, by cause: no worker had room (clients wait in the kernel's backlog), or no file descriptor was left.",
    );
    let _ = writeln!(
        out,
        "rrbalancer_accept_pauses_total{{cause=\"no_worker_free\"}} {}",
        s.counters.paused_no_worker
    );
    let _ = writeln!(
        out,
        "rrbalancer_accept_pauses_total{{cause=\"fd_exhausted\"}} {}",
        s.counters.fd_exhausted
    );

    single(
        &mut out,
        "rrbalancer_connections_queued",
        "gauge",
        "Accepted connections waiting in the master for a worker with room.",
        &s.queued,
    );

    single(
        &mut out,
        "rrbalancer_workers_wanted",
        "gauge",
        "Worker slots configured (or scaled to).",
        &s.workers_wanted,
    );
    single(
        &mut out,
        "rrbalancer_workers_ready",
        "gauge",
        "Workers ready to serve.",
        &s.workers_ready,
    );

    // One sample per slot and cause, from counts per slot in `causes` order (0 where a slot
    // has none counted yet).
    let by_cause = |out: &mut String, name: &str, causes: &[&str; 3], counts: &[[u64; 3]]| {
        for slot in 0..s.slots.len() {
            let counts = counts.get(slot).copied().unwrap_or_default();
            for (cause, n) in causes.iter().zip(counts) {
                let _ = writeln!(out, "{name}{{slot=\"{slot}\",cause=\"{cause}\"}} {n}");
            }
        }
    };
    // One sample per slot (`value` gets the slot's number and its snapshot), where it has one.
    let per_slot =
        |out: &mut String, name: &str, value: &dyn Fn(usize, &Slot) -> Option<String>| {
            for (slot, v) in s.slots.iter().enumerate() {
                if let Some(v) = value(slot, v) {
                    let _ = writeln!(out, "{name}{{slot=\"{slot}\"}} {v}");
                }
            }
        };
    head(
        &mut out,
        "rrbalancer_connections_handed_total",
        "counter",
        "Connections handed to the workers of each slot.",
    );
    per_slot(&mut out, "rrbalancer_connections_handed_total", &|_, v| {
        Some(v.served.handed.to_string())
    });
    head(
        &mut out,
        "rrbalancer_connections_acked_total",
        "counter",
        "Connections the workers of each slot acknowledged (took for good).",
    );
    per_slot(&mut out, "rrbalancer_connections_acked_total", &|_, v| {
        Some(v.served.acked.to_string())
    });
    head(
        &mut out,
        "rrbalancer_handoff_latency_seconds",
        "histogram",
        "Time from accept to the worker's acknowledgement, queueing in the master included.",
    );
    for (slot, v) in s.slots.iter().enumerate() {
        let name = "rrbalancer_handoff_latency_seconds";
        for (le, n) in v.served.latency.cumulative() {
            let le = le.map_or("+Inf".to_owned(), |s| s.to_string());
            let _ = writeln!(out, "{name}_bucket{{slot=\"{slot}\",le=\"{le}\"}} {n}");
        }
        let latency = &v.served.latency;
        let _ = writeln!(
            out,
            "{name}_sum{{slot=\"{slot}\"}} {:.6}\n{name}_count{{slot=\"{slot}\"}} {}",
            latency.sum_seconds(),
            latency.count()
        );
    }
    head(
        &mut out,
        "rrbalancer_connections_unacked",
        "gauge",
        "Connections sent to the slot's worker and not yet acknowledged.",
    );
    per_slot(&mut out, "rrbalancer_connections_unacked", &|_, v| {
        Some(v.unacked.to_string())
    });
    head(
        &mut out,
        "rrbalancer_connections_oldest_unacked_seconds",
        "gauge",
        "How long the oldest un-acknowledged connection of the slot has waited (0 with none).",
    );
    per_slot(
        &mut out,
        "rrbalancer_connections_oldest_unacked_seconds",
        &|_, v| Some(format!("{:.3}", v.oldest_unacked_secs.unwrap_or(0.0))),
    );
    head(
        &mut out,
        "rrbalancer_worker_starts_total",
        "counter",
        "Worker processes started for the slot: the first, restarts, reload candidates, recycles.",
    );
    per_slot(&mut out, "rrbalancer_worker_starts_total", &|slot, _| {
        Some(
            s.counters
                .starts
                .get(slot)
                .copied()
                .unwrap_or(0)
                .to_string(),
        )
    });
    head(
        &mut out,
        "rrbalancer_worker_giveups_total",
        "counter",
        "Times the slot was given up after too many failures in [restart] window.",
    );
    per_slot(&mut out, "rrbalancer_worker_giveups_total", &|_, v| {
        Some(v.giveups.to_string())
    });
    head(
        &mut out,
        "rrbalancer_worker_restarts_total",
        "counter",
        "Restarts of the slot's worker after a failure.",
    );
    per_slot(&mut out, "rrbalancer_worker_restarts_total", &|_, v| {
        Some(v.restarts.to_string())
    });
    head(
        &mut out,
        "rrbalancer_worker_recycles_total",
        "counter",
        "Workers of the slot replaced by [recycle] limits.",
    );
    per_slot(&mut out, "rrbalancer_worker_recycles_total", &|_, v| {
        Some(v.recycles.to_string())
    });
    head(
        &mut out,
        "rrbalancer_worker_resident_memory_bytes",
        "gauge",
        "Resident memory of the slot's worker: its process group's where [recycle] max_memory measures it, else its own process's.",
    );
    per_slot(
        &mut out,
        "rrbalancer_worker_resident_memory_bytes",
        &|_, v| v.rss_bytes.map(|b| b.to_string()),
    );

    head(
        &mut out,
        "rrbalancer_worker_cpu_seconds_total",
        "counter",
        "CPU time of the slot's current worker process (resets when it is replaced).",
    );
    per_slot(&mut out, "rrbalancer_worker_cpu_seconds_total", &|_, v| {
        v.cpu_seconds.map(|c| format!("{c:.3}"))
    });
    head(
        &mut out,
        "rrbalancer_connections_rerouted_total",
        "counter",
        "Connections handed to the slot's worker that went to another, by cause: it exited holding them un-acknowledged, was killed at ack_timeout, or refused them.",
    );
    by_cause(
        &mut out,
        "rrbalancer_connections_rerouted_total",
        &REROUTE_CAUSES,
        &s.counters.rerouted,
    );
    head(
        &mut out,
        "rrbalancer_worker_exits_total",
        "counter",
        "Worker exits by cause: stopped (asked to), exited (on its own), killed (by a signal it was not asked for).",
    );
    by_cause(
        &mut out,
        "rrbalancer_worker_exits_total",
        &EXIT_CAUSES,
        &s.counters.exits,
    );

    head(
        &mut out,
        "rrbalancer_reloads_total",
        "counter",
        "Rolling reloads by outcome: completed, failed (a candidate failed; the old workers serve on), aborted (the master began to stop).",
    );
    for (outcome, n) in RELOAD_OUTCOMES.iter().zip(s.reloads) {
        let _ = writeln!(out, "rrbalancer_reloads_total{{outcome=\"{outcome}\"}} {n}");
    }

    single(
        &mut out,
        "rrbalancer_messages_relayed_total",
        "counter",
        "Messages relayed between the workers and rrbalancer send.",
        &s.counters.messages,
    );
    single(
        &mut out,
        "rrbalancer_message_deliveries_total",
        "counter",
        "Copies of relayed messages queued for a receiver.",
        &s.counters.deliveries,
    );
    single(
        &mut out,
        "rrbalancer_retained_keys",
        "gauge",
        "Message keys whose latest value the master keeps for workers that start later.",
        &s.retained.0,
    );
    single(
        &mut out,
        "rrbalancer_retained_bytes",
        "gauge",
        "Bytes of the retained values.",
        &s.retained.1,
    );

    head(
        &mut out,
        "rrbalancer_worker_state",
        "gauge",
        "The state of each slot: 1 for its state, 0 for the others.",
    );
    for (slot, v) in s.slots.iter().enumerate() {
        for state in STATES {
            let on = (v.state == state) as u8;
            let _ = writeln!(
                out,
                "rrbalancer_worker_state{{slot=\"{slot}\",state=\"{state}\"}} {on}"
            );
        }
    }

    if let Some(agent) = s.agent {
        head(
            &mut out,
            "rrbalancer_agent_state",
            "gauge",
            "The state of the agent ([agent]): 1 for its state, 0 for the others.",
        );
        for state in STATES {
            let on = (agent == state) as u8;
            let _ = writeln!(out, "rrbalancer_agent_state{{state=\"{state}\"}} {on}");
        }
        single(
            &mut out,
            "rrbalancer_agent_starts_total",
            "counter",
            "Agent processes started: the first, restarts, reload candidates.",
            &s.counters.agent_starts,
        );
        head(
            &mut out,
            "rrbalancer_agent_exits_total",
            "counter",
            "Agent process exits by cause, as rrbalancer_worker_exits_total.",
        );
        for (cause, n) in EXIT_CAUSES.iter().zip(s.counters.agent_exits) {
            let _ = writeln!(out, "rrbalancer_agent_exits_total{{cause=\"{cause}\"}} {n}");
        }
    }

    head(
        &mut out,
        "rrbalancer_clients_turned_away_total",
        "counter",
        "Clients of the master's control socket and metrics listener closed unserved, by door and cause.",
    );
    for ((door, cause), n) in TURNED_AWAY.iter().zip(s.counters.turned_away) {
        let _ = writeln!(
            out,
            "rrbalancer_clients_turned_away_total{{door=\"{door}\",cause=\"{cause}\"}} {n}"
        );
    }

    single(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the master process.",
        &s.process.rss_bytes,
    );
    single(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "CPU time of the master process (user and system).",
        &format!("{:.3}", s.process.cpu_seconds),
    );
    single(
        &mut out,
        "process_open_fds",
        "gauge",
        "File descriptors the master holds open.",
        &s.process.open_fds,
    );
    out
}

/// A label value, escaped as the exposition format wants (`\`, `"`, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The master's own memory, CPU and open fds, from `/proc/self` (zeros where unreadable).
pub fn own_process() -> Process {
    let (cpu_seconds, rss_bytes) = super::memory::cpu_and_resident("self").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Process {
        rss_bytes,
        cpu_seconds,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn slot(state: &'static str, handed: u64) -> Slot {
        let mut served = Served {
            handed,
            ..Served::default()
        };
        let t0 = Instant::now();
        served.acked(t0, t0 + Duration::from_micros(300));
        Slot {
            state,
            served,
            unacked: 1,
            oldest_unacked_secs: Some(0.25),
            restarts: 2,
            recycles: 0,
            giveups: 1,
            rss_bytes: None,
            cpu_seconds: None,
        }
    }

    #[test]
    fn the_text_has_a_help_and_type_per_family_and_a_series_per_slot() {
        let counters = Counters {
            accepted: vec![7],
            retired: vec![],
            paused_no_worker: 1,
            fd_exhausted: 0,
            rerouted: vec![[0; 3], [4, 0, 1]],
            exits: vec![[1, 0, 2]],
            starts: vec![3],
            messages: 5,
            deliveries: 15,
            agent_starts: 2,
            agent_exits: [0, 1, 0],
            turned_away: [0, 0, 0, 0, 3, 0, 0, 0],
        };
        let listeners = [
            "127.0.0.1:3000".to_owned(),
            "unix:/run/a\"b.sock".to_owned(),
        ];
        let text = render(&Snapshot {
            version: "0.1.0",
            sched_policy: "rr",
            listeners: &listeners,
            counters: &counters,
            queued: 0,
            workers_wanted: 2,
            workers_ready: 1,
            reloads: [2, 1, 0],
            retained: (1, 12),
            slots: vec![slot("ready", 4), slot("restarting", 3)],
            agent: Some("ready"),
            process: Process::default(),
        });
        assert!(
            text.contains("rrbalancer_connections_accepted_total{listener=\"127.0.0.1:3000\"} 7\n")
        );
        // A listener never seen yet counts 0; quotes in a label are escaped.
        assert!(
            text.contains("{listener=\"unix:/run/a\\\"b.sock\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("rrbalancer_connections_handed_total{slot=\"1\"} 3\n"));
        assert!(text.contains("rrbalancer_worker_state{slot=\"1\",state=\"restarting\"} 1\n"));
        assert!(text.contains("rrbalancer_worker_state{slot=\"1\",state=\"ready\"} 0\n"));
        assert!(
            !text.contains("rrbalancer_worker_resident_memory_bytes{"),
            "not measured"
        );
        assert!(text.contains(
            "rrbalancer_connections_rerouted_total{slot=\"1\",cause=\"worker_exited\"} 4\n"
        ));
        assert!(
            text.contains(
                "rrbalancer_connections_rerouted_total{slot=\"1\",cause=\"refused\"} 1\n"
            )
        );
        assert!(text.contains("rrbalancer_connections_acked_total{slot=\"0\"} 1\n"));
        // 300 µs: above the 250 µs bucket, in the 500 µs one and every one after.
        let bucket = "rrbalancer_handoff_latency_seconds_bucket{slot=\"1\"";
        assert!(
            text.contains(&format!("{bucket},le=\"0.00025\"}} 0\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{bucket},le=\"0.0005\"}} 1\n")));
        assert!(text.contains(&format!("{bucket},le=\"+Inf\"}} 1\n")));
        assert!(text.contains("rrbalancer_handoff_latency_seconds_sum{slot=\"1\"} 0.000300\n"));
        assert!(text.contains("rrbalancer_handoff_latency_seconds_count{slot=\"1\"} 1\n"));
        assert!(text.contains("rrbalancer_worker_starts_total{slot=\"0\"} 3\n"));
        assert!(text.contains("rrbalancer_worker_starts_total{slot=\"1\"} 0\n"));
        assert!(text.contains("rrbalancer_worker_giveups_total{slot=\"1\"} 1\n"));
        assert!(text.contains("rrbalancer_reloads_total{outcome=\"completed\"} 2\n"));
        assert!(text.contains("rrbalancer_reloads_total{outcome=\"aborted\"} 0\n"));
        assert!(text.contains("rrbalancer_message_deliveries_total 15\n"));
        assert!(text.contains("rrbalancer_retained_bytes 12\n"));
        assert!(text.contains("rrbalancer_agent_state{state=\"ready\"} 1\n"));
        assert!(text.contains("rrbalancer_agent_state{state=\"given_up\"} 0\n"));
        assert!(text.contains("rrbalancer_agent_starts_total 2\n"));
        assert!(text.contains("rrbalancer_agent_exits_total{cause=\"exited\"} 1\n"));
        assert!(text.contains("rrbalancer_worker_exits_total{slot=\"0\",cause=\"killed\"} 2\n"));
        assert!(text.contains("rrbalancer_worker_exits_total{slot=\"1\",cause=\"stopped\"} 0\n"));
        assert!(text.contains(
            "rrbalancer_clients_turned_away_total{door=\"metrics\",cause=\"not_allowed\"} 3\n"
        ));
        assert!(text.contains(
            "rrbalancer_clients_turned_away_total{door=\"control\",cause=\"crowded\"} 0\n"
        ));
        // Every sample belongs to a family declared before it, once.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                assert!(
                    declared.insert(rest.split(' ').next().unwrap().to_owned()),
                    "{line}"
                );
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|f| declared.contains(*f))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{line}");
            }
        }
    }

    #[test]
    fn each_reason_to_turn_a_client_away_has_its_labels() {
        use TurnedAway::*;
        let mut counters = Counters::default();
        for (why, labels) in [
            (ControlCrowded, ("control", "crowded")),
            (ControlTimeout, ("control", "timeout")),
            (ControlTooLong, ("control", "too_long")),
            (ControlOtherUser, ("control", "other_user")),
            (MetricsNotAllowed, ("metrics", "not_allowed")),
            (MetricsTimeout, ("metrics", "timeout")),
            (MetricsBadRequest, ("metrics", "bad_request")),
            (MetricsCrowded, ("metrics", "crowded")),
        ] {
            assert_eq!(TURNED_AWAY[why as usize], labels);
            counters.turn_away(why);
        }
        assert_eq!(counters.turned_away, [1; TURNED_AWAY.len()]);
    }

    #[test]
    fn exits_are_stopped_when_asked_else_by_their_status() {
        assert_eq!(
            EXIT_CAUSES[exit_cause(true, "killed by SIGKILL")],
            "stopped"
        );
        assert_eq!(EXIT_CAUSES[exit_cause(false, "exit code 3")], "exited");
        assert_eq!(
            EXIT_CAUSES[exit_cause(false, "killed by SIGSEGV (core dumped)")],
            "killed"
        );
    }

    #[test]
    fn counters_grow_to_a_new_index() {
        let mut v = Vec::new();
        Counters::add(&mut v, 2, 5);
        Counters::add(&mut v, 2, 1);
        assert_eq!(v, [0, 0, 6]);
    }

    #[test]
    fn our_own_process_is_measured() {
        let p = own_process();
        assert!(p.rss_bytes > 1 << 20 && p.open_fds >= 3, "{p:?}");
    }
}
