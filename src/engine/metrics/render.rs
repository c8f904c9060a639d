//! A scrape: the [`Snapshot`] of what the master knows, rendered in the Prometheus text
//! exposition format (0.0.4). One allocation per scrape, not per connection; one small
//! function per group of families, each family named from [`families`](super::families).

use std::fmt::{Arguments, Display, Write};

use super::super::stats::Served;
use super::counters::{Counters, EXIT_CAUSES, RELOAD_OUTCOMES, REROUTE_CAUSES, TURNED_AWAY};
use super::families::{self as f, Family};

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
    /// A graceful stop is draining (`[shutdown] drain`).
    pub draining: bool,
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
    let mut out = Text(String::with_capacity(2048 + 512 * s.slots.len()));
    build_info(&mut out, s);
    accepting(&mut out, s);
    connections_per_slot(&mut out, s);
    workers_per_slot(&mut out, s);
    exits_per_slot(&mut out, s);
    reloads_and_messages(&mut out, s);
    states(&mut out, s);
    doors(&mut out, s.counters);
    own_process(&mut out, &s.process);
    out.0
}

/// The text being written. Writing to a `String` cannot fail.
struct Text(String);

impl Text {
    /// A family's `# HELP` and `# TYPE` lines.
    fn head(&mut self, family: &Family) {
        let Family { name, kind, help } = family;
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
    }

    /// A sample of `family` (its name followed by `suffix`: a histogram's `_bucket`, …).
    fn sample(&mut self, family: &Family, suffix: &str, labels: Arguments, value: impl Display) {
        let _ = writeln!(self.0, "{}{suffix}{{{labels}}} {value}", family.name);
    }

    /// A family of one sample, with no label.
    fn single(&mut self, family: &Family, value: impl Display) {
        self.head(family);
        let _ = writeln!(self.0, "{} {value}", family.name);
    }

    /// A family with one sample per slot (`value` gets the slot's number and its snapshot),
    /// where the slot has one.
    fn per_slot<V: Display>(
        &mut self,
        family: &Family,
        slots: &[Slot],
        value: impl Fn(usize, &Slot) -> Option<V>,
    ) {
        self.head(family);
        for (slot, v) in slots.iter().enumerate() {
            if let Some(v) = value(slot, v) {
                self.sample(family, "", format_args!("slot=\"{slot}\""), v);
            }
        }
    }

    /// A family with one sample per slot and cause, from counts per slot in `causes` order (0
    /// where a slot has none counted yet).
    fn by_cause(&mut self, family: &Family, slots: usize, causes: &[&str; 3], counts: &[[u64; 3]]) {
        self.head(family);
        for slot in 0..slots {
            let counts = counts.get(slot).copied().unwrap_or_default();
            for (cause, n) in causes.iter().zip(counts) {
                self.sample(
                    family,
                    "",
                    format_args!("slot=\"{slot}\",cause=\"{cause}\""),
                    n,
                );
            }
        }
    }

    /// A family with one sample per state, 1 for `current` and 0 for the others; `slot` is
    /// a slot's label, none for the agent.
    fn states(&mut self, family: &Family, slot: Option<usize>, current: &str) {
        for state in STATES {
            let on = (current == state) as u8;
            match slot {
                Some(slot) => self.sample(
                    family,
                    "",
                    format_args!("slot=\"{slot}\",state=\"{state}\""),
                    on,
                ),
                None => self.sample(family, "", format_args!("state=\"{state}\""), on),
            }
        }
    }
}

fn build_info(out: &mut Text, s: &Snapshot<'_>) {
    out.head(&f::BUILD_INFO);
    let (version, policy) = (escape(s.version), escape(s.sched_policy));
    let labels = format_args!("version=\"{version}\",sched_policy=\"{policy}\"");
    out.sample(&f::BUILD_INFO, "", labels, 1);
}

/// The master's side: accepting, queueing, workers wanted and ready.
fn accepting(out: &mut Text, s: &Snapshot<'_>) {
    out.head(&f::ACCEPTED);
    for (i, name) in s.listeners.iter().enumerate() {
        let n = s.counters.accepted.get(i).copied().unwrap_or(0);
        out.sample(
            &f::ACCEPTED,
            "",
            format_args!("listener=\"{}\"", escape(name)),
            n,
        );
    }
    out.head(&f::ACCEPT_PAUSES);
    let pauses = [
        ("no_worker_free", s.counters.paused_no_worker),
        ("fd_exhausted", s.counters.fd_exhausted),
    ];
    for (cause, n) in pauses {
        out.sample(&f::ACCEPT_PAUSES, "", format_args!("cause=\"{cause}\""), n);
    }
    out.single(&f::QUEUED, s.queued);
    out.single(&f::WORKERS_WANTED, s.workers_wanted);
    out.single(&f::WORKERS_READY, s.workers_ready);
    out.single(&f::DRAINING, usize::from(s.draining));
}

/// Each slot's connections: handed, acknowledged, how long that took, and those not yet.
fn connections_per_slot(out: &mut Text, s: &Snapshot<'_>) {
    out.per_slot(&f::HANDED, &s.slots, |_, v| Some(v.served.handed));
    out.per_slot(&f::ACKED, &s.slots, |_, v| Some(v.served.acked));
    let family = &f::HANDOFF_LATENCY;
    out.head(family);
    for (slot, v) in s.slots.iter().enumerate() {
        let latency = &v.served.latency;
        for (le, n) in latency.cumulative() {
            let le = le.map_or("+Inf".to_owned(), |s| s.to_string());
            out.sample(
                family,
                "_bucket",
                format_args!("slot=\"{slot}\",le=\"{le}\""),
                n,
            );
        }
        let sum = format!("{:.6}", latency.sum_seconds());
        out.sample(family, "_sum", format_args!("slot=\"{slot}\""), sum);
        out.sample(
            family,
            "_count",
            format_args!("slot=\"{slot}\""),
            latency.count(),
        );
    }
    out.per_slot(&f::UNACKED, &s.slots, |_, v| Some(v.unacked));
    out.per_slot(&f::OLDEST_UNACKED, &s.slots, |_, v| {
        Some(format!("{:.3}", v.oldest_unacked_secs.unwrap_or(0.0)))
    });
}

/// Each slot's worker processes: started, given up, restarted, recycled, and the current one's
/// memory and CPU time where measured.
fn workers_per_slot(out: &mut Text, s: &Snapshot<'_>) {
    let starts = &s.counters.starts;
    out.per_slot(&f::WORKER_STARTS, &s.slots, |slot, _| {
        Some(starts.get(slot).copied().unwrap_or(0))
    });
    out.per_slot(&f::WORKER_GIVEUPS, &s.slots, |_, v| Some(v.giveups));
    out.per_slot(&f::WORKER_RESTARTS, &s.slots, |_, v| Some(v.restarts));
    out.per_slot(&f::WORKER_RECYCLES, &s.slots, |_, v| Some(v.recycles));
    out.per_slot(&f::WORKER_MEMORY, &s.slots, |_, v| v.rss_bytes);
    out.per_slot(&f::WORKER_CPU, &s.slots, |_, v| {
        v.cpu_seconds.map(|c| format!("{c:.3}"))
    });
}

/// Connections that went to another worker, and workers' exits, by cause.
fn exits_per_slot(out: &mut Text, s: &Snapshot<'_>) {
    let (slots, c) = (s.slots.len(), s.counters);
    out.by_cause(&f::REROUTED, slots, &REROUTE_CAUSES, &c.rerouted);
    out.by_cause(&f::WORKER_EXITS, slots, &EXIT_CAUSES, &c.exits);
}

fn reloads_and_messages(out: &mut Text, s: &Snapshot<'_>) {
    out.head(&f::RELOADS);
    for (outcome, n) in RELOAD_OUTCOMES.iter().zip(s.reloads) {
        out.sample(&f::RELOADS, "", format_args!("outcome=\"{outcome}\""), n);
    }
    out.single(&f::MESSAGES, s.counters.messages);
    out.single(&f::DELIVERIES, s.counters.deliveries);
    out.single(&f::RETAINED_KEYS, s.retained.0);
    out.single(&f::RETAINED_BYTES, s.retained.1);
}

/// Each slot's state, and the agent's with its starts and exits.
fn states(out: &mut Text, s: &Snapshot<'_>) {
    out.head(&f::WORKER_STATE);
    for (slot, v) in s.slots.iter().enumerate() {
        out.states(&f::WORKER_STATE, Some(slot), v.state);
    }
    let Some(agent) = s.agent else {
        return;
    };
    out.head(&f::AGENT_STATE);
    out.states(&f::AGENT_STATE, None, agent);
    out.single(&f::AGENT_STARTS, s.counters.agent_starts);
    out.head(&f::AGENT_EXITS);
    for (cause, n) in EXIT_CAUSES.iter().zip(s.counters.agent_exits) {
        out.sample(&f::AGENT_EXITS, "", format_args!("cause=\"{cause}\""), n);
    }
}

/// Clients of the master's own doors closed unserved.
fn doors(out: &mut Text, c: &Counters) {
    out.head(&f::TURNED_AWAY);
    for ((door, cause), n) in TURNED_AWAY.iter().zip(c.turned_away) {
        let labels = format_args!("door=\"{door}\",cause=\"{cause}\"");
        out.sample(&f::TURNED_AWAY, "", labels, n);
    }
}

fn own_process(out: &mut Text, p: &Process) {
    out.single(&f::PROCESS_MEMORY, p.rss_bytes);
    out.single(&f::PROCESS_CPU, format!("{:.3}", p.cpu_seconds));
    out.single(&f::PROCESS_FDS, p.open_fds);
}

/// A label value, escaped as the exposition format wants (`\`, `"`, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
