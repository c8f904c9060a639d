//! The supervision simulator's invariants, checked after every step, and how a run ends: a
//! stop that ends in bounded virtual time, every worker reaped, every client served or closed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Sim;
use crate::config::AllGivenUp;
use crate::engine::fleet::State;
use crate::engine::ids::Place as Seat;
use crate::engine::lifecycle::{Phase, StopStep};

impl Sim {
    /// Right after a turn, no live worker holds a client un-acked past `ack_timeout` without
    /// having been killed for it.
    pub(super) fn check_ack_bound(&self) -> Result<(), String> {
        match self.overdue().first() {
            Some(key) => Err(format!(
                "worker {key} holds a client past ack_timeout, alive"
            )),
            None => Ok(()),
        }
    }

    /// Workers holding a client un-acked past `ack_timeout`, not yet killed for it, found by a
    /// walk (the shell asks [`Supervisor::overdue`](crate::engine::supervisor::Supervisor),
    /// which walks only when its floor says one may be due).
    fn overdue(&self) -> Vec<usize> {
        let (ledger, timeout) = (&self.ledger, self.policy.ack_timeout);
        crate::engine::supervisor::overdue(&self.sup.fleet, ledger, timeout, self.now)
    }

    /// Outbox sizes of the accounts of workers the supervisor does not count as serving.
    pub(super) fn not_serving_outboxes(&self) -> Vec<(usize, usize)> {
        let serving: BTreeSet<usize> = (0..self.sup.fleet.slots.len())
            .filter_map(self.serving())
            .collect();
        self.sup
            .fleet
            .workers
            .iter()
            .filter(|(k, w)| !serving.contains(&w.account) || self.stopping.contains(k))
            .map(|(_, w)| w.account)
            .map(|a| (a, self.ledger.account(a).map_or(0, |x| x.outbox().len())))
            .collect()
    }

    pub(super) fn check_not_serving(&self, before: Vec<(usize, usize)>) -> Result<(), String> {
        for (account, len) in before {
            let now = self.ledger.account(account).map_or(0, |a| a.outbox().len());
            if now > len {
                return Err(format!(
                    "account {account}, not serving (or told to stop), was given a client"
                ));
            }
        }
        Ok(())
    }

    /// Each client accepted is in exactly one place: the ledger, served, or closed by the stop.
    pub(super) fn check_clients(&self) -> Result<(), String> {
        let mut seen = BTreeMap::new();
        let mut twice = None;
        self.ledger.each(|place, c| {
            if seen.insert(c.id, place).is_some() {
                twice = Some(c.id);
            }
        });
        if let Some(id) = twice {
            return Err(format!("client {id} is in the ledger twice"));
        }
        for id in self.served.keys().chain(self.dropped.iter()) {
            if let Some(place) = seen.get(id) {
                return Err(format!("client {id} is done and still at {place:?}"));
            }
        }
        let total = seen.len() + self.served.len() + self.dropped.len();
        if total as u64 != self.accepted {
            return Err(format!(
                "{total} clients accounted for of {}",
                self.accepted
            ));
        }
        Ok(())
    }

    /// By the first tick at `kill_timeout` after the stop began, every worker left is killed.
    pub(super) fn check_stop_bound(&self) -> Result<(), String> {
        let Some(began) = self.stop_began else {
            return Ok(());
        };
        if self.now < began + self.policy.kill_timeout {
            return Ok(());
        }
        for (key, _) in self.sup.fleet.workers.iter() {
            if !self.killed.contains(&key) {
                return Err(format!(
                    "worker {key} not killed {:?} after the stop began (kill_timeout {:?})",
                    self.now - began,
                    self.policy.kill_timeout
                ));
            }
        }
        Ok(())
    }

    /// Whether the agent has been ready (the slots may start): remembered once seen.
    pub(super) fn agent_ready(&mut self) -> bool {
        let fleet = &self.sup.fleet;
        self.agent_was_ready |=
            (fleet.workers.iter()).any(|(_, w)| w.place == Seat::Agent && w.state == State::Ready);
        self.agent_was_ready
    }

    /// A graceful stop asks the agent to stop only once no worker is left (it sends to them to
    /// the end), unless it failed on its own.
    pub(super) fn check_agent_stops_last(&self, key: usize) -> Result<(), String> {
        let fleet = &self.sup.fleet;
        let Some(w) = fleet.workers.get(key) else {
            return Ok(());
        };
        let stopping = self.sup.phase != Phase::Running;
        if w.place != Seat::Agent || !stopping || self.faulted.contains(&key) {
            return Ok(());
        }
        let workers: Vec<usize> = (fleet.workers.iter())
            .filter(|(_, w)| w.place != Seat::Agent)
            .map(|(k, _)| k)
            .collect();
        if !workers.is_empty() {
            return Err(format!(
                "agent {key} told to stop before workers {workers:?} exited"
            ));
        }
        Ok(())
    }

    /// Right after a tick, no start the master would wake for is already due: it would wake
    /// at once, again and again, for a start the tick did not make (a spinning loop).
    pub(super) fn check_no_start_overdue(&self) -> Result<(), String> {
        match self.sup.fleet.next_start() {
            Some(t) if t <= self.now && self.sup.phase == Phase::Running => {
                let fleet = &self.sup.fleet;
                let places: Vec<String> = (fleet.slots.iter().enumerate())
                    .map(|(i, s)| (format!("slot {i}"), s))
                    .chain(fleet.agent.iter().map(|a| ("agent".to_owned(), a)))
                    .filter(|(_, s)| s.start_at.is_some_and(|a| a <= self.now))
                    .map(|(p, s)| {
                        format!("{p} (current {:?}, candidate {:?})", s.current, s.candidate)
                    })
                    .collect();
                Err(format!(
                    "a start due {:?} ago was not made by the tick: {places:?}",
                    self.now - t
                ))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn check(&mut self) -> Result<(), String> {
        self.sup.fleet.check()?;
        self.sup.check_timers(&self.ledger)?;
        self.agent_ready();
        self.check_given_up()?;
        for (key, w) in &self.sup.fleet.workers {
            let held = self.ledger.account(w.account).map_or(0, |a| a.handed());
            if w.place == Seat::Agent && held > 0 {
                return Err(format!("agent {key} was handed {held} client(s)"));
            }
        }
        self.check_clients()?;
        for (slot, s) in self.sup.fleet.slots.iter().enumerate() {
            if let Some(key) = s.current {
                let w = &self.sup.fleet.workers[key];
                // A worker that was a candidate and is current now was promoted: ready.
                if w.state == State::Starting && self.candidates.contains(&key) {
                    return Err(format!("slot {slot}: candidate {key} took over, not ready"));
                }
            }
        }
        // A reload rolls one slot at a time: at most one candidate in the whole fleet, so it
        // never has fewer serving workers than the target minus the one being replaced.
        let candidates = self
            .sup
            .fleet
            .slots
            .iter()
            .filter(|s| s.candidate.is_some())
            .count();
        if candidates > 1 {
            return Err(format!("{candidates} candidates at once"));
        }
        // A recycle replaces its one slot, alone: no reload, no stop, no candidate elsewhere.
        if let Some(r) = &self.sup.recycling {
            let elsewhere = self
                .sup
                .fleet
                .slots
                .iter()
                .enumerate()
                .any(|(slot, s)| s.candidate.is_some() && slot != r.slot);
            if self.sup.reload.is_some() || !self.sup.running() || elsewhere {
                return Err(format!("recycling slot {} beside other work", r.slot));
            }
            if r.slot >= self.sup.fleet.slots.len() {
                return Err(format!("recycling slot {}, which is gone", r.slot));
            }
        }
        if self.sup.gave_up && self.sup.phase == Phase::Running {
            return Err("gave up but still running".into());
        }
        if self.sup.phase != Phase::Running && self.stop_began.is_none() {
            // The supervisor stopped on its own (every slot given up).
            self.stop_began = Some(self.now);
        }
        Ok(())
    }

    /// Ends the run: a stop (if none began), ticks on the virtual clock until every worker is
    /// reaped; it must end within `kill_timeout` plus a tick and the reaping.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        if self.stop_began.is_none() {
            self.begin_stop(false)?;
            self.reap()?;
        }
        let began = self.stop_began.expect("set above");
        let tick = Duration::from_millis(50);
        let bound = began + self.policy.kill_timeout + 2 * tick;
        while !self.sup.fleet.workers.is_empty() {
            if self.now > bound {
                return Err(format!(
                    "{} worker(s) left {:?} after the stop began",
                    self.sup.fleet.workers.len(),
                    self.now - began
                ));
            }
            self.now += tick;
            self.sup.tick(self.now, 0);
            self.apply(None)?;
            self.check_stop_bound()?;
            self.reap()?;
            self.check()?;
        }
        match self.sup.phase.stop_step(self.now, 0) {
            Some(StopStep::Exit) => {}
            other => return Err(format!("all reaped, yet the stop says {other:?}")),
        }
        // The master exits: the ledger holds nothing any more (every account is gone with its
        // worker, the queue was closed), so every client was served or closed by the stop.
        self.dispatch()?;
        self.check_clients()?;
        if self.served.len() + self.dropped.len() != self.accepted as usize {
            return Err("clients left in the ledger at exit".into());
        }
        Ok(())
    }

    /// Slots given up are remembered with when (for the spawn check: not before
    /// `retry_after`); and with `on_all_given_up = "wait"` the master never stops because
    /// slots gave up, only because an agent never became ready.
    fn check_given_up(&mut self) -> Result<(), String> {
        let now = self.now;
        let fleet = &self.sup.fleet;
        let places = (fleet.slots.iter().enumerate())
            .map(|(i, s)| (Seat::Slot(i), s))
            .chain(fleet.agent.iter().map(|a| (Seat::Agent, a)));
        for (place, s) in places {
            if s.given_up {
                self.given_up_at.entry(place).or_insert(now);
            } else {
                self.given_up_at.remove(&place);
            }
        }
        if self.sup.gave_up
            && self.policy.restart.on_all_given_up == AllGivenUp::Wait
            && self.agent_was_ready
        {
            return Err("gave up (every slot) although on_all_given_up = \"wait\"".into());
        }
        Ok(())
    }
}
