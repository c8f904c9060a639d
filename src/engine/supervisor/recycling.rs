//! The supervisor's recycling decisions (`[recycle]`): which worker is due, starting its
//! successor, and what follows when it takes over, fails or is overtaken by a reload or a
//! scale-down. The plan's types and rules are in [`recycle`](super::super::recycle).

use std::time::Instant;

use log::{info, warn};
use nix::unistd::Pid;

use super::super::effect::Effect;
use super::super::fleet::State;
use super::super::ids::{Place, Role};
use super::super::ledger::{Conn, Ledger};
use super::super::limits::Limits;
use super::super::recycle::{RETRY_PAUSE, Reason, Recycling};
use super::Supervisor;

impl Supervisor {
    /// The first worker to recycle at `now`, if any may be now: a slot's current worker, ready,
    /// past one of its limits (`max_memory` against the resident size the shell last measured).
    pub fn recycle_due<C: Conn>(
        &self,
        ledger: &Ledger<C>,
        max_memory: Option<u64>,
        now: Instant,
    ) -> Option<(usize, Reason)> {
        if !self.may_recycle(now) {
            return None;
        }
        self.fleet.slots.iter().find_map(|slot| {
            let key = slot.current.filter(|_| slot.candidate.is_none())?;
            let worker = self.fleet.workers.get(key)?;
            if worker.state != State::Ready || worker.stuck {
                return None;
            }
            let handed = ledger.account(worker.account).map_or(0, |a| a.handed());
            let reason = match (worker.limits, max_memory, worker.rss) {
                (
                    Limits {
                        connections: Some(limit),
                        ..
                    },
                    _,
                    _,
                ) if handed >= limit => Reason::Connections { handed, limit },
                (_, Some(limit), Some(rss)) if rss > limit => Reason::Memory { rss, limit },
                (
                    Limits {
                        age: Some(limit), ..
                    },
                    _,
                    _,
                ) if worker.uptime(now) >= limit => Reason::Age {
                    age: worker.uptime(now),
                    limit,
                },
                _ => return None,
            };
            Some((key, reason))
        })
    }

    /// Whether a recycle may begin now: running, no reload, none under way, not paused.
    pub fn may_recycle(&self, now: Instant) -> bool {
        self.running()
            && self.reload.is_none()
            && self.recycling.is_none()
            && self.recycle_paused_until.is_none_or(|t| now >= t)
    }

    /// When a worker next reaches its `max_age`, or recycling may resume, for the master's
    /// poll timeout. Nothing while a recycle or reload is under way: their own events move on.
    pub fn next_recycle_check(&self, now: Instant) -> Option<Instant> {
        if !self.running() || self.reload.is_some() || self.recycling.is_some() {
            return None;
        }
        if let Some(t) = self.recycle_paused_until.filter(|&t| t > now) {
            return Some(t);
        }
        if !self.ages {
            return None; // no worker has a max_age: nothing to walk for
        }
        self.fleet
            .slots
            .iter()
            .filter_map(|s| self.fleet.workers.get(s.current?))
            .filter_map(|w| Some(w.started + w.limits.age?))
            .filter(|&t| t > now)
            .min()
    }

    /// Recycles the worker at `key` (see [`due`]): its successor starts now. `false` if it
    /// may not be now.
    pub fn recycle(&mut self, key: usize, reason: &Reason, now: Instant) -> bool {
        if !self.may_recycle(now) || self.fleet.role(key) != Role::Current {
            return false;
        }
        let worker = &self.fleet.workers[key];
        let (Place::Slot(slot), pid) = (worker.place, worker.pid) else {
            return false; // the agent serves nothing: it has no limits to reach
        };
        if self
            .fleet
            .slots
            .get(slot)
            .is_none_or(|s| s.candidate.is_some())
        {
            return false;
        }
        info!("recycling slot={slot} pid={pid} ({reason}); starting its successor");
        self.recycling = Some(Recycling {
            slot,
            pid,
            reason: reason.to_string(),
        });
        self.effects.push(Effect::Spawn {
            place: Place::Slot(slot),
            role: Role::Candidate,
        });
        true
    }

    /// The successor of a recycled slot took over (the old worker is draining).
    pub(super) fn recycled(&mut self, slot: usize, new_pid: Pid) {
        let Some(r) = self.recycling.take_if(|r| r.slot == slot) else {
            return;
        };
        info!(
            "recycled slot={slot}: pid={new_pid} took over from pid={} ({})",
            r.pid, r.reason
        );
        if let Some(s) = self.fleet.slots.get_mut(slot) {
            s.recycled += 1;
            s.last_recycle = Some(r.reason);
        }
    }

    /// The successor of a recycled slot failed: the old worker keeps serving; recycling pauses.
    pub(super) fn recycle_failed(&mut self, slot: usize, cause: &str, now: Instant) {
        let Some(r) = self.recycling.take_if(|r| r.slot == slot) else {
            return;
        };
        warn!(
            "recycling slot={slot} failed: the successor did not become ready ({cause}); pid={} \
             keeps serving; recycling again in {RETRY_PAUSE:?} at the earliest",
            r.pid
        );
        self.recycle_paused_until = Some(now + RETRY_PAUSE);
    }

    /// A reload begins, or the slot went away: a recycle under way is dropped (the reload
    /// replaces that worker too). Its successor, if started, is asked to stop (it has no
    /// connection yet).
    pub(super) fn abandon_recycle(&mut self, why: &str, now: Instant) {
        let Some(r) = self.recycling.take() else {
            return;
        };
        info!("recycling slot={} abandoned: {why}", r.slot);
        if let Some(candidate) = self.fleet.slots.get(r.slot).and_then(|s| s.candidate) {
            self.fleet.detach(candidate);
            self.drain(candidate, now);
        }
    }
}
