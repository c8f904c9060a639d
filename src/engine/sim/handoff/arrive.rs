//! A client arrives: where the ledger places it, checked against the rules (home slot, the
//! batch being filled, the turn) computed here on their own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Sim, SimConn};
use crate::wire::protocol::Peer;

impl Sim {
    /// A client arrives; it is accepted only while some worker is free, as the master watches
    /// its listeners only then.
    pub(super) fn arrive(&mut self) -> Result<(), String> {
        // As the master's dispatch: the queue first; it accepts only once the queue is
        // empty and while someone is free.
        self.dispatch()?;
        let free = self.ledger.free_slot(self.slots.len(), self.serving());
        if free.is_none() || self.ledger.queued() > 0 {
            self.log("arrive: not accepted yet, it waits in the kernel".into());
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.accepted += 1;
        let ip = Ipv4Addr::new(10, 0, 0, self.rng.u8(..6));
        let peer = Peer::Inet(SocketAddr::new(IpAddr::V4(ip), 40000));
        let conn = SimConn {
            id,
            peer,
            accepted: self.now,
            sent: None,
        };
        let before = self.idle_outboxes();
        let serving = self.serving();
        // With affinity, a client whose home slot's worker has room in its window goes
        // there; otherwise to the worker whose turn it is among those free.
        let home = self
            .rules
            .affinity
            .then(|| crate::engine::dispatch::home_slot(&conn.peer, self.slots.len()))
            .flatten()
            .and_then(self.serving())
            .filter(|&k| self.ledger.account(k).is_some_and(|a| a.has_window_room()));
        let turn = self
            .ledger
            .free_slot(self.slots.len(), self.serving())
            .and_then(self.serving());
        let batch = self.check_batching()?;
        let expected = home.or(batch).or(turn);
        match self
            .ledger
            .admit(conn, self.slots.len(), serving, self.rules)
        {
            Some(key) if Some(key) != expected => {
                return Err(format!(
                    "conn {id} went to {key}, not {expected:?} (home {home:?}, batch \
                     {batch:?}, turn {turn:?})"
                ));
            }
            Some(key) => {
                // A client's home takes it out of turn: the batch is not its.
                if Some(key) != home {
                    self.last = Some(key);
                }
                self.log(format!("arrive: conn {id} → worker {key}"))
            }
            None => self.log(format!("arrive: conn {id} queued")),
        }
        for (key, len) in before {
            let now = self.ledger.account(key).map_or(0, |a| a.outbox().len());
            if now > len {
                return Err(format!("worker {key}, not serving, was given conn {id}"));
            }
        }
        Ok(())
    }

    /// The worker the ledger would keep batching with, checked: only with batching on, only a
    /// serving worker with room that was given something not yet flushed, and — when the sim
    /// knows who took the last connection — that one.
    fn check_batching(&self) -> Result<Option<usize>, String> {
        let Some(key) = self.ledger.batching(self.rules, self.serving()) else {
            return Ok(None);
        };
        let account = self.ledger.account(key);
        let serving = (0..self.slots.len()).any(|s| self.serving()(s) == Some(key));
        if !self.rules.batch
            || !serving
            || !account.is_some_and(|a| a.has_room() && !a.outbox().is_empty())
            || self.last.is_some_and(|last| last != key)
        {
            return Err(format!(
                "batching with worker {key} (batch {}, serving {serving}, last {:?})",
                self.rules.batch, self.last
            ));
        }
        Ok(Some(key))
    }
}
