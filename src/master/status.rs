//! What every view shows of the running master — `rrbalancer status` (and `top`, and `status
//! --json` for scripts), `/metrics` (and `rrbalancer metrics`), `/healthz` and `/readyz` — read
//! through the one [`projection`] they all share, so no two can disagree on a slot's state.

use std::time::Instant;

use nix::unistd::getpid;

use log::debug;

use super::monitor::{Health, health};
use super::{Master, Phase, memory};
use crate::engine::fleet::State;
use crate::engine::ids::{self, Place, Role};
use crate::engine::metrics::{self, Snapshot};
use crate::engine::projection;
use crate::wire::control::{self, AgentStatus, SlotStatus, Status, WorkerStatus};

impl Master {
    /// What `rrbalancer status` shows.
    pub(super) fn status(&self) -> Status {
        let now = Instant::now();
        let stopping = self.core.phase() != Phase::Running;
        let workers = self
            .core
            .fleet()
            .workers
            .iter()
            .filter(|(_, w)| w.place != ids::Place::Agent)
            .map(|(key, w)| {
                let account = self.ledger.account(w.account);
                let stat = super::memory::cpu_and_resident(&w.pid.to_string());
                WorkerStatus {
                    slot: w.place.slot().unwrap_or_default(),
                    pid: w.pid.as_raw(),
                    state: match (w.state, self.core.fleet().role(key)) {
                        _ if w.stuck => "stuck (killed)",
                        (State::Starting, _) => "starting",
                        (State::Ready, Role::Candidate) => "ready (candidate)",
                        (State::Ready, _) => "ready",
                        (State::Draining, _) => "draining",
                    }
                    .to_owned(),
                    role: match self.core.fleet().role(key) {
                        Role::Current => "current",
                        Role::Candidate => "candidate",
                        Role::Detached => "retiring",
                    }
                    .to_owned(),
                    uptime_secs: w.uptime(now).as_secs_f64(),
                    restarts: self
                        .core
                        .fleet()
                        .place(w.place)
                        .map_or(0, |s| s.restart_count),
                    recycled: self.core.fleet().place(w.place).map_or(0, |s| s.recycled),
                    rss_bytes: w.rss.or(stat.map(|(_, rss)| rss)),
                    cpu_seconds: stat.map(|(cpu, _)| cpu),
                    conn_per_sec: account
                        .filter(|_| self.config.mode().master_accepts())
                        .and_then(|a| a.rate().per_second(w.started, now)),
                    handed: account.map_or(0, |a| a.handed()),
                    unacked: account.map_or(0, |a| a.in_flight()),
                    oldest_unacked_secs: account
                        .and_then(|a| a.oldest_unacked())
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                }
            })
            .collect();
        let slots = self
            .core
            .fleet()
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.current.is_none())
            .map(|(slot, s)| SlotStatus {
                slot,
                state: projection::of(self.core.fleet(), ids::Place::Slot(slot), stopping)
                    .map_or_else(String::new, |state| state.describe(now)),
                restarts: s.restart_count,
                last_causes: s.last_causes.iter().cloned().collect(),
            })
            .collect();
        Status {
            pid: getpid().as_raw(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            // The file; with none, the program the command line named (`-- node app.js`).
            config: self
                .config
                .source
                .as_ref()
                .map(|p| p.display().to_string())
                .or_else(|| {
                    let command = &self.config.worker.command;
                    (!command.is_demo()).then(|| {
                        let mut argv = vec![command.arg0.to_string_lossy().into_owned()];
                        argv.extend(command.args.iter().cloned());
                        format!("{}{}", control::PROGRAM, argv.join(" "))
                    })
                }),
            environment: self.config.environment.clone(),
            sched_policy: self.config.sched_policy.as_str().to_owned(),
            // A reload's new address, bound but not yet accepted on, says so.
            listeners: (self.accept.listeners.iter())
                .map(|l| match l.held {
                    true => format!(
                        "{} (served once the reload has replaced every worker)",
                        l.socket.local
                    ),
                    false => l.socket.local.clone(),
                })
                .collect(),
            workers_wanted: self.core.fleet().slots.len(),
            stopping,
            drain_left_ms: (self.ops.drain.left(now)).map(|d| d.as_millis() as u64),
            reload_in_progress: self.core.reloading(),
            recycling: self
                .core
                .recycling()
                .map(|r| format!("slot {} pid {}: {}", r.slot, r.pid, r.reason)),
            upgrade: self
                .upgrade
                .handover
                .as_ref()
                .filter(|u| u.in_progress() || u.stage == crate::engine::upgrade::Stage::HandedOver)
                .map(crate::engine::upgrade::Handover::describe)
                .or_else(|| self.predecessor_status()),
            workers,
            empty_slots: slots,
            agent: self.agent_status(stopping, now),
        }
    }

    /// The agent's part of the status (`stopping`: the master is).
    fn agent_status(&self, stopping: bool, now: Instant) -> Option<AgentStatus> {
        let fleet = &self.core.fleet();
        let place = fleet.agent.as_ref()?;
        let current = place.current.and_then(|k| fleet.workers.get(k));
        let stat = current.and_then(|w| super::memory::cpu_and_resident(&w.pid.to_string()));
        let state = projection::of(fleet, ids::Place::Agent, stopping)
            .map_or_else(String::new, |s| s.describe(now));
        Some(AgentStatus {
            state,
            pid: current.map(|w| w.pid.as_raw()),
            uptime_secs: current.map(|w| w.uptime(now).as_secs_f64()),
            restarts: place.restart_count,
            rss_bytes: current.and_then(|w| w.rss).or(stat.map(|(_, rss)| rss)),
            cpu_seconds: stat.map(|(cpu, _)| cpu),
            last_causes: place.last_causes.iter().cloned().collect(),
            others: (fleet.workers.iter())
                .filter(|&(k, w)| w.place == ids::Place::Agent && Some(k) != place.current)
                .map(|(_, w)| w.pid.as_raw())
                .collect(),
        })
    }

    /// What `/healthz` and `/readyz` say now: not ready while draining, as while stopping.
    pub(super) fn health(&self) -> Health {
        health(
            self.core.fleet().ready_count(),
            self.ops.started_serving,
            self.leaving(),
        )
    }

    /// The metrics text now (`/metrics`, `rrbalancer metrics`).
    pub(super) fn metrics_text(&self) -> String {
        let now = Instant::now();
        let fleet = &self.core.fleet();
        let stopping = self.core.phase() != Phase::Running;
        let slots = fleet
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                // Workers gone, and those alive (current, candidate, draining).
                let mut served = self
                    .ops
                    .counters
                    .retired
                    .get(i)
                    .cloned()
                    .unwrap_or_default();
                fleet
                    .workers
                    .iter()
                    .filter(|(_, w)| w.place == Place::Slot(i))
                    .filter_map(|(_, w)| self.ledger.account(w.account))
                    .for_each(|a| served.add(a.served()));
                let current = slot
                    .current
                    .and_then(|k| fleet.workers.get(k))
                    .filter(|_| slot.current.is_some_and(|k| fleet.role(k) == Role::Current));
                let account = current.and_then(|w| self.ledger.account(w.account));
                let stat = current.and_then(|w| memory::cpu_and_resident(&w.pid.to_string()));
                let state = projection::of(fleet, Place::Slot(i), stopping)
                    .map_or("starting", |s| s.label());
                metrics::Slot {
                    state,
                    served,
                    unacked: account.map_or(0, |a| a.in_flight()),
                    oldest_unacked_secs: account
                        .and_then(|a| a.oldest_unacked())
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    restarts: slot.restart_count,
                    recycles: slot.recycled,
                    giveups: slot.giveups,
                    // Its process group's memory where `[recycle]` measures it, else its own.
                    rss_bytes: current.and_then(|w| w.rss.or(stat.map(|(_, rss)| rss))),
                    cpu_seconds: stat.map(|(cpu, _)| cpu),
                }
            })
            .collect();
        debug!("metrics scraped");
        let listeners = self.listen_names();
        metrics::render(&Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            sched_policy: self.config.sched_policy.as_str(),
            listeners: &listeners,
            counters: &self.ops.counters,
            queued: self.ledger.queued(),
            workers_wanted: fleet.slots.len(),
            workers_ready: fleet.ready_count(),
            draining: self.ops.drain.active(),
            reloads: self.core.reloads(),
            retained: (self.ops.retained.len(), self.ops.retained.bytes()),
            slots,
            agent: projection::of(fleet, Place::Agent, stopping).map(|s| s.label()),
            process: memory::own_process(),
        })
    }
}
