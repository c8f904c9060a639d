//! What the master counts, and its rendering in the Prometheus text exposition format (0.0.4):
//! served on `[metrics] listen` at `/metrics` and printed by `rrbalancer metrics`.
//!
//! Counting is a `u64` increment in a vector indexed by listener or slot, never an allocation
//! per connection; a scrape builds a [`Snapshot`] (one allocation per scrape, not per
//! connection) and [`render`]s it. Names follow Prometheus conventions: `rrbalancer_` prefix,
//! `_total` for counters, base units (seconds, bytes), a `slot` label (stable across restarts),
//! never a pid label. The master's own process metrics use the standard `process_` names.

use std::fmt::Write;

/// Counters the master keeps for its whole life.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted, per listener.
    pub accepted: Vec<u64>,
    /// Hand-offs to workers gone, per slot (those of live workers are in the ledger).
    pub handed_retired: Vec<u64>,
    /// Times accepting paused because no worker had room.
    pub paused_no_worker: u64,
    /// `accept` failures for lack of file descriptors.
    pub fd_exhausted: u64,
    /// Connections a worker died holding un-acked, handed again, per slot.
    pub rerouted: Vec<u64>,
    /// Worker exits per slot, by [`EXIT_CAUSES`] (same order).
    pub exits: Vec<[u64; 3]>,
}

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
    pub fn count_exit(&mut self, slot: usize, cause: usize) {
        if self.exits.len() <= slot {
            self.exits.resize(slot + 1, [0; 3]);
        }
        self.exits[slot][cause] += 1;
    }

    /// `v[i] += n`, growing `v` if `i` is new (a listener or slot count changes rarely).
    pub fn add(v: &mut Vec<u64>, i: usize, n: u64) {
        if v.len() <= i {
            v.resize(i + 1, 0);
        }
        v[i] += n;
    }
}

/// One slot at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// `starting`, `ready`, `restarting`, `given_up`, `stopping`.
    pub state: &'static str,
    pub handed: u64,
    pub unacked: usize,
    pub oldest_unacked_secs: Option<f64>,
    pub restarts: u64,
    pub recycles: u64,
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
    pub slots: Vec<Slot>,
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

    head(
        &mut out,
        "rrbalancer_connections_queued",
        "gauge",
        "Accepted connections waiting in the master for a worker with room.",
    );
    let _ = writeln!(out, "rrbalancer_connections_queued {}", s.queued);

    head(
        &mut out,
        "rrbalancer_workers_wanted",
        "gauge",
        "Worker slots configured (or scaled to).",
    );
    let _ = writeln!(out, "rrbalancer_workers_wanted {}", s.workers_wanted);
    head(
        &mut out,
        "rrbalancer_workers_ready",
        "gauge",
        "Workers ready to serve.",
    );
    let _ = writeln!(out, "rrbalancer_workers_ready {}", s.workers_ready);

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
        Some(v.handed.to_string())
    });
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
        "Resident memory of the slot's worker process group, when measured ([recycle] max_memory).",
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
        "Connections a worker of the slot died holding un-acknowledged, handed to another worker.",
    );
    per_slot(
        &mut out,
        "rrbalancer_connections_rerouted_total",
        &|slot, _| {
            Some(
                s.counters
                    .rerouted
                    .get(slot)
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            )
        },
    );
    head(
        &mut out,
        "rrbalancer_worker_exits_total",
        "counter",
        "Worker exits by cause: stopped (asked to), exited (on its own), killed (by a signal it was not asked for).",
    );
    for slot in 0..s.slots.len() {
        let counts = s.counters.exits.get(slot).copied().unwrap_or_default();
        for (cause, n) in EXIT_CAUSES.iter().zip(counts) {
            let _ = writeln!(
                out,
                "rrbalancer_worker_exits_total{{slot=\"{slot}\",cause=\"{cause}\"}} {n}"
            );
        }
    }

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

    head(
        &mut out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the master process.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {}", s.process.rss_bytes);
    head(
        &mut out,
        "process_cpu_seconds_total",
        "counter",
        "CPU time of the master process (user and system).",
    );
    let _ = writeln!(
        out,
        "process_cpu_seconds_total {:.3}",
        s.process.cpu_seconds
    );
    head(
        &mut out,
        "process_open_fds",
        "gauge",
        "File descriptors the master holds open.",
    );
    let _ = writeln!(out, "process_open_fds {}", s.process.open_fds);
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
    use super::*;

    fn slot(state: &'static str, handed: u64) -> Slot {
        Slot {
            state,
            handed,
            unacked: 1,
            oldest_unacked_secs: Some(0.25),
            restarts: 2,
            recycles: 0,
            rss_bytes: None,
            cpu_seconds: None,
        }
    }

    #[test]
    fn the_text_has_a_help_and_type_per_family_and_a_series_per_slot() {
        let counters = Counters {
            accepted: vec![7],
            handed_retired: vec![],
            paused_no_worker: 1,
            fd_exhausted: 0,
            rerouted: vec![0, 4],
            exits: vec![[1, 0, 2]],
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
            slots: vec![slot("ready", 4), slot("restarting", 3)],
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
        assert!(text.contains("rrbalancer_connections_rerouted_total{slot=\"1\"} 4\n"));
        assert!(text.contains("rrbalancer_worker_exits_total{slot=\"0\",cause=\"killed\"} 2\n"));
        assert!(text.contains("rrbalancer_worker_exits_total{slot=\"1\",cause=\"stopped\"} 0\n"));
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
                assert!(declared.contains(name), "{line}");
            }
        }
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
