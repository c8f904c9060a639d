//! Where a connection goes: its home slot (affinity), the batch being filled in this loop turn,
//! or the worker whose turn it is among those free now — else the master's queue.

use super::{Account, Conn, Ledger};
use crate::engine::dispatch::{self, Placement};

impl<C: Conn> Ledger<C> {
    /// The slot whose turn it is among those free to take a connection now, without taking the
    /// turn; a worker past its recycle limit ([`Account::spent`]) only when no other is free, so
    /// that it waits for its turn to be recycled without taking more than its share. `serving
    /// (slot)` is the account of the worker serving `slot`, if one is ready.
    pub fn free_slot(
        &self,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        let passed_over = std::cell::Cell::new(false);
        let free = |s: usize, spent_too: bool| {
            (serving(s).and_then(|k| self.accounts.get(k))).is_some_and(|a| {
                let room = a.has_room();
                passed_over.set(passed_over.get() || (room && !spent_too && a.spent()));
                room && (spent_too || !a.spent())
            })
        };
        // A second look only when a spent worker with room was passed over.
        (self.rr.peek(slots, |s| free(s, false))).or_else(|| {
            passed_over
                .get()
                .then(|| self.rr.peek(slots, |s| free(s, true)))?
        })
    }

    /// A connection just accepted: given to the worker of its home slot if `affinity` is on
    /// and that worker's window has room, else (with `batch`) to the worker that took the last
    /// one in this turn if it still has room, else to the one whose turn it is among those free
    /// now, else queued, last in line. The account it went to; `None` if queued. Once admitted,
    /// it leaves the ledger only acked (to the worker that acked it) or closed.
    pub fn admit(
        &mut self,
        c: C,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
        rules: Placement,
    ) -> Option<usize> {
        match self.place(c, slots, serving, rules) {
            Ok(key) => Some(key),
            Err(c) => {
                self.queue.push_back(c);
                None
            }
        }
    }

    /// Gives `c` to its home slot's worker or to the one whose turn it is (as
    /// [`Ledger::admit`]); `Err` gives it back when nobody can take it.
    fn place(
        &mut self,
        c: C,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
        rules: Placement,
    ) -> Result<usize, C> {
        let home = rules
            .affinity
            .then(|| dispatch::home_slot(c.peer(), slots))
            .flatten()
            .and_then(&serving)
            .filter(|&k| self.accounts.get(k).is_some_and(Account::has_window_room));
        let (slot, key) = match home.or_else(|| self.batching(rules, &serving)) {
            Some(key) => (None, key),
            None => {
                let Some(slot) = self.free_slot(slots, &serving) else {
                    return Err(c);
                };
                self.rr.take(slot, slots);
                match serving(slot) {
                    Some(key) => (Some(slot), key),
                    None => return Err(c),
                }
            }
        };
        self.give(key, c)?;
        // A batch continues with the worker whose turn it was (not with a client's home,
        // which took it out of turn).
        if let Some(slot) = slot {
            self.last = Some((slot, key));
        }
        Ok(key)
    }

    /// Puts `c` in the outbox of the account of `key`, listed as touched for the shell when
    /// its outbox stops being empty; `Err` gives it back if there is no such account.
    fn give(&mut self, key: usize, c: C) -> Result<(), C> {
        let Some(account) = self.accounts.get_mut(key) else {
            return Err(c);
        };
        if account.outbox.is_empty() {
            self.touched.push(key);
        }
        account.assign(c);
        Ok(())
    }

    /// With `batch`, the account that took the last connection in its turn, if it still serves
    /// that slot, is still filling its batch (given something not yet flushed) and has room.
    pub fn batching(
        &self,
        rules: Placement,
        serving: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        let (slot, key) = self.last.filter(|_| rules.batch)?;
        let account = self.accounts.get(key)?;
        let filling = serving(slot) == Some(key) && !account.outbox.is_empty();
        (filling && account.has_room()).then_some(key)
    }

    /// Hands queued connections out, oldest first, while someone can take them. `true` if the
    /// queue is empty.
    pub fn dispatch(
        &mut self,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
        rules: Placement,
    ) -> bool {
        while let Some(c) = self.queue.pop_front() {
            if let Err(c) = self.place(c, slots, &serving, rules) {
                self.queue.push_front(c);
                return false;
            }
        }
        true
    }

    /// Stopping: every queued connection goes to a serving worker in rotation, its window and
    /// `idle` notwithstanding (it is told to finish all it has before its `stop`), rather than
    /// be closed; not to one out of descriptors (`full`). How many are left (nobody serves).
    pub fn hand_out_all(
        &mut self,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
    ) -> usize {
        while !self.queue.is_empty() {
            let Some(slot) = self.rr.peek(slots, |s| self.takes_at_stop(serving(s))) else {
                break;
            };
            self.rr.take(slot, slots);
            // The peek found its worker's account: the connection goes to it, or back in front.
            let Some(key) = serving(slot) else { break };
            let c = self.queue.pop_front().expect("not empty");
            if let Err(c) = self.give(key, c) {
                self.queue.push_front(c);
                break;
            }
        }
        self.queue.len()
    }

    /// Whether [`Ledger::hand_out_all`] would find a worker: one serves, its channel open, not
    /// `full`. Without one, what a stop accepts would only be closed.
    pub fn can_hand_out(&self, slots: usize, serving: impl Fn(usize) -> Option<usize>) -> bool {
        (0..slots).any(|s| self.takes_at_stop(serving(s)))
    }

    fn takes_at_stop(&self, key: Option<usize>) -> bool {
        key.and_then(|k| self.accounts.get(k))
            .is_some_and(|a| a.open && a.full_until.is_none())
    }
}
