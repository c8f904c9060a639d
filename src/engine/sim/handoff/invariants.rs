//! The hand-off simulator's invariants, checked after every step, and how a run ends: the
//! clients gone, every connection served or closed by the stop.

use std::collections::BTreeMap;

use super::{Sim, State, Whereabouts};

impl Sim {
    /// The invariants that hold after every step.
    pub(super) fn check(&self) -> Result<(), String> {
        self.ledger.check_full_listed()?;
        let mut seen: BTreeMap<u64, String> = BTreeMap::new();
        let mut twice = None;
        let mut misplaced = None;
        self.ledger.each(|place, c| {
            if seen.insert(c.id, format!("{place:?}")).is_some() {
                twice.get_or_insert(c.id);
            }
            let owner = match place {
                Whereabouts::Queue => None,
                Whereabouts::Outbox(k)
                | Whereabouts::Unacked(k)
                | Whereabouts::Returned(k)
                | Whereabouts::Held(k) => Some(k),
            };
            if let Some(k) = owner {
                match self.workers.get(&k) {
                    None => _ = misplaced.get_or_insert(format!("conn {} with dead {k}", c.id)),
                    Some(w) if matches!(place, Whereabouts::Held(_)) && w.channel_open => {
                        _ = misplaced.get_or_insert(format!("conn {} held by open {k}", c.id))
                    }
                    Some(w) if !matches!(place, Whereabouts::Held(_)) && !w.channel_open => {
                        _ = misplaced.get_or_insert(format!("conn {} {place:?}, closed", c.id))
                    }
                    _ => {}
                }
            }
            if c.sent.is_some() != matches!(place, Whereabouts::Unacked(_)) {
                misplaced.get_or_insert(format!("conn {} at {place:?} marked {:?}", c.id, c.sent));
            }
        });
        if let Some(id) = twice {
            return Err(format!("conn {id} is in the ledger twice"));
        }
        if let Some(m) = misplaced {
            return Err(m);
        }
        for (&id, &key) in &self.outcome.served {
            if let Some(place) = seen.insert(id, format!("served by {key}")) {
                return Err(format!("conn {id} served by {key} and still at {place}"));
            }
        }
        for &id in &self.outcome.dropped {
            if let Some(place) = seen.insert(id, "closed at stop".into()) {
                return Err(format!("conn {id} closed at stop and still at {place}"));
            }
        }
        if seen.len() as u64 != self.accepted {
            let lost: Vec<u64> = (0..self.next_id)
                .filter(|i| !seen.contains_key(i))
                .collect();
            return Err(format!("lost: {lost:?}"));
        }
        // What `/metrics` counts: every ack once, each with its latency (account keys are
        // reused: the count is checked in all, not per key).
        let mut acks = self.outcome.retired_acks;
        for (&key, w) in &self.workers {
            let a = self
                .ledger
                .account(key)
                .ok_or(format!("worker {key} has no account"))?;
            let served = a.served();
            if served.latency.count() != served.acked {
                return Err(format!(
                    "worker {key} counted {} acks, {} timed",
                    served.acked,
                    served.latency.count()
                ));
            }
            acks += served.acked;
            // Beyond it only by the stop's hand-out (the stop's only: nothing is placed after).
            let bound = if self.stopping {
                self.handed_at_stop + self.window
            } else {
                self.window
            };
            if w.channel_open && a.outbox().len() + a.unacked_len() > bound {
                return Err(format!("worker {key} holds more than its window"));
            }
        }
        if acks != self.outcome.served.len() as u64 {
            return Err(format!(
                "{acks} acks counted, {} connections served",
                self.outcome.served.len()
            ));
        }
        Ok(())
    }

    /// Every worker with an open channel is sent what it was assigned and acks all of it.
    pub(super) fn serve_all(&mut self) -> Result<(), String> {
        let keys: Vec<usize> = self.workers.keys().copied().collect();
        for key in keys {
            if !self.workers[&key].channel_open {
                continue;
            }
            let n = self.ledger.account(key).expect("live").outbox().len();
            self.sending(key, n)?;
            let account = self.ledger.account_mut(key).expect("live");
            account.on_writable();
            account.mark_sent(n, self.now);
            account.flushed(n > 0, false);
            account.on_idle();
            // As every flush ends: what it gave back goes to the queue.
            self.ledger.requeue_unsent(key);
            let unacked = self.unacked_of(key);
            self.ledger
                .account_mut(key)
                .expect("live")
                .ack_oldest(unacked.len(), self.now)
                .map_err(|e| format!("settle: {e}"))?;
            for id in unacked {
                self.served(id, key)?;
            }
        }
        Ok(())
    }

    /// Stopping: the workers finish what they were sent and exit; what comes back from those
    /// whose channel had broken finds nobody, and is closed as the master exits.
    pub(super) fn finish_stop(&mut self) -> Result<(), String> {
        self.serve_all()?;
        let keys: Vec<usize> = self.workers.keys().copied().collect();
        for key in keys {
            self.exit(key)?;
        }
        self.dispatch()?;
        self.check()?;
        let (served, closed) = (self.outcome.served.len(), self.outcome.dropped.len());
        if (served + closed) as u64 != self.accepted {
            return Err(format!(
                "stopped with {served} served + {closed} closed of {}",
                self.accepted
            ));
        }
        Ok(())
    }

    /// The clients are gone: workers become ready and ack everything. Every connection not
    /// closed by the stop must end up served.
    pub(super) fn settle(&mut self) -> Result<(), String> {
        if self.stopping {
            return self.finish_stop();
        }
        // Dead workers' connections come back; detached ones exit.
        let gone: Vec<usize> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == State::Draining || !w.channel_open)
            .map(|(&k, _)| k)
            .collect();
        for key in gone {
            self.exit(key)?;
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_none() {
                self.spawn(slot);
            }
        }
        for w in self.workers.values_mut() {
            w.state = State::Ready;
        }
        for _ in 0..10_000 {
            self.dispatch()?;
            self.serve_all()?;
            self.check()?;
            let empty = self.ledger.queued() == 0
                && self
                    .workers
                    .keys()
                    .all(|&k| self.ledger.account(k).is_some_and(|a| a.in_flight() == 0));
            if empty {
                let closed = self.outcome.dropped.len() as u64;
                let served = self.outcome.served.len() as u64;
                return if served + closed == self.accepted {
                    Ok(())
                } else {
                    Err(format!(
                        "settled with {served} served + {closed} closed of {}",
                        self.accepted
                    ))
                };
            }
        }
        Err("never settled: ready workers could not take the queue".into())
    }
}
