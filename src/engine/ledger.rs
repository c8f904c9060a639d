//! Who owns every accepted connection, from `accept` to a worker's `ack`: the master's queue,
//! or one worker's account (assigned, sent, refused, or held after its channel closed). Pure —
//! no system call, no clock read — so the promise "no connection lost, none served twice" is
//! checked here by a seeded simulator ([`super::sim`]) and not only through real processes.
//!
//! A connection moves only by these rules:
//!
//! - accepted → given to the worker whose turn it is among those free now (with batching, to
//!   the one filling its batch in this turn first), else queued ([`Ledger::admit`], in
//!   `placement.rs`); queued ones go first ([`Ledger::dispatch`]);
//! - assigned → sent ([`Account::mark_sent`], by the wire) → acked: the master's copy is closed,
//!   the worker serves it;
//! - not sent (the channel was full) or refused by the worker (Node's `accepted: false`, a
//!   native worker's `full N`) → the front of the queue, for whoever is free next
//!   ([`Ledger::requeue_unsent`], [`Ledger::requeue_returned`]);
//! - sent, and the worker's channel closed before its ack → *held* while the worker may still
//!   be alive ([`Ledger::close`]), back to the front of the queue once it is dead
//!   ([`Ledger::remove`]): it may have read it, so nobody else gets it before;
//! - when the master stops, what is still queued is closed ([`Ledger::drop_queue`]).
//!
//! Connections are generic ([`Conn`]): real ones carry the socket, the simulator's an id.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use slab::Slab;

use super::dispatch::RoundRobin;
use super::stats::{Rate, Served};
use crate::wire::protocol::Peer;

/// How long a worker that said `full` gets nothing unless it says `idle` or acks first.
pub const FULL_RETRY: Duration = Duration::from_secs(1);

/// What the ledger needs of a connection.
pub trait Conn {
    /// The client, for affinity.
    fn peer(&self) -> &Peer;
    /// When the master accepted it (for the hand-off latency).
    fn accepted(&self) -> Instant;
    /// When it was sent to the worker that holds it un-acked; `None` while it is not out.
    fn sent(&self) -> Option<Instant>;
    fn set_sent(&mut self, at: Option<Instant>);
}

/// A worker's account: the connections that are its, and whether it can take more.
#[derive(Debug)]
pub struct Account<C> {
    /// The most connections it may hold un-acked (assigned and sent).
    window: usize,
    /// Assigned, not yet sent.
    outbox: VecDeque<C>,
    /// Sent, waiting for the worker's ack.
    unacked: VecDeque<C>,
    /// Given back by the worker (a Node cluster worker's `accepted: false`).
    returned: Vec<C>,
    /// Sent and never acked, kept after its channel closed until the worker is dead.
    held: Vec<C>,
    /// Its channel is open: it can be given connections, and ack them.
    open: bool,
    /// The last send found the channel full: nothing more goes to it until it is writable.
    blocked: bool,
    /// The worker says `idle` (it is pulled): it takes connections only while idle.
    pulled: bool,
    idle: bool,
    /// It said `full` (out of file descriptors): nothing goes to it until its next `idle` or
    /// `ack`, or until this time (then one connection, as a probe: a worker that never says
    /// `idle`, a Node worker, is not left out for good).
    full_until: Option<Instant>,
    /// It is in the ledger's `changed` list (it may be `full`).
    listed: bool,
    /// How many it may be sent un-acked now: its window, but after a `full` one, then doubled
    /// by each `ack` (a worker just short of descriptors is not sent a whole window again).
    cap: usize,
    /// Connections it may be handed before its recycle is due (`[recycle] max_connections`,
    /// its jittered share): past it, it is passed over while another worker is free.
    limit: Option<u64>,
    /// Connections assigned to it in all (those it could not be sent excepted), acked, and
    /// how long each took from accept to ack.
    served: Served,
    /// Connections sent to it, per second lately.
    rate: Rate,
}

impl<C: Conn> Account<C> {
    fn new(window: usize) -> Account<C> {
        Account {
            window: window.max(1),
            outbox: VecDeque::with_capacity(window),
            unacked: VecDeque::with_capacity(window),
            returned: Vec::new(),
            held: Vec::new(),
            open: true,
            blocked: false,
            pulled: false,
            idle: false,
            full_until: None,
            listed: false,
            cap: window.max(1),
            limit: None,
            served: Served::default(),
            rate: Rate::default(),
        }
    }

    /// Assigned or sent, and not yet acked (held ones included).
    pub fn in_flight(&self) -> usize {
        self.outbox.len() + self.unacked.len() + self.held.len()
    }

    /// Whether a connection given now would reach a worker free to serve it: the channel is
    /// open and takes writes, the window has room, and a pulled worker has said `idle`.
    pub fn has_room(&self) -> bool {
        self.has_window_room() && (!self.pulled || self.idle)
    }

    /// Free and not busy (the agent-check weighs a host by these): room, and idle for a worker
    /// that says `idle` (`has_room`), nothing in hand for one that does not.
    pub fn is_free(&self) -> bool {
        self.has_room() && (self.pulled || self.in_flight() == 0)
    }

    /// Whether the window has room, busy or not (client affinity waits for its own worker).
    pub fn has_window_room(&self) -> bool {
        self.open
            && !self.blocked
            && self.full_until.is_none()
            && self.outbox.len() + self.unacked.len() < self.cap.min(self.window)
    }

    pub fn handed(&self) -> u64 {
        self.served.handed
    }

    /// Sets its recycle limit ([`Account::spent`]).
    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// Handed its recycle limit: due to be replaced, it takes only what no other can.
    pub fn spent(&self) -> bool {
        self.limit.is_some_and(|l| self.served.handed >= l)
    }

    pub fn served(&self) -> &Served {
        &self.served
    }

    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// When the oldest connection still un-acked was sent.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.unacked.front().and_then(C::sent)
    }

    /// The channel takes writes again.
    pub fn on_writable(&mut self) {
        self.blocked = false;
    }

    /// The worker said `idle`: idempotent and O(1), a flood of them costs nothing.
    pub fn on_idle(&mut self) {
        self.pulled = true;
        self.idle = true;
        self.full_until = None;
    }

    /// The worker said `full n`: its `n` oldest un-acked connections come back unread (they go
    /// to someone else with [`Ledger::requeue_returned`]), and it gets nothing until its next
    /// `idle` or `ack`, then one at a time at first. `Err` with how many it had if it gave back
    /// more than that (nothing is changed then).
    pub fn on_full(&mut self, n: usize, now: Instant) -> Result<(), usize> {
        if n > self.unacked.len() {
            return Err(self.unacked.len());
        }
        for mut c in self.unacked.drain(..n) {
            c.set_sent(None);
            self.returned.push(c);
        }
        self.mark_full(now);
        Ok(())
    }

    /// The newest un-acked connection did not reach the worker for want of a descriptor (a
    /// Node worker NACKs it again and again): it comes back as [`Account::on_full`]'s do.
    pub fn newest_full(&mut self, now: Instant) -> bool {
        let Some(i) = self.unacked.len().checked_sub(1) else {
            return false;
        };
        self.refuse_at(i);
        self.mark_full(now);
        true
    }

    fn mark_full(&mut self, now: Instant) {
        self.full_until = Some(now + FULL_RETRY);
        self.idle = false;
        self.cap = 1;
    }

    /// Whether it said `full` and has not said `idle` or acked since, nor been retried.
    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.full_until.is_some()
    }

    /// After a flush: the channel was found full or not, and something was sent or not (a
    /// worker sent connections is busy with them until it says `idle` again).
    pub fn flushed(&mut self, sent_any: bool, blocked: bool) {
        if sent_any {
            self.idle = false;
        }
        self.blocked = blocked;
    }

    /// Connections waiting to be sent, oldest first.
    pub fn outbox(&self) -> &VecDeque<C> {
        &self.outbox
    }

    /// The wire sent the first `n` of the outbox at `now`: they wait for their ack.
    pub fn mark_sent(&mut self, n: usize, now: Instant) {
        let n = n.min(self.outbox.len());
        self.rate.add(now, n as u64);
        self.unacked.extend(self.outbox.drain(..n).map(|mut c| {
            c.set_sent(Some(now));
            c
        }));
    }

    /// The newest connection sent and not acked (a Node wire sends it again on NACK).
    pub fn newest_unacked(&self) -> Option<&C> {
        self.unacked.back()
    }

    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// The worker acked its `n` oldest un-acked connections at `now`; `Err` with how many it
    /// had if it acked more than that (nothing is changed then).
    pub fn ack_oldest(&mut self, n: usize, now: Instant) -> Result<(), usize> {
        if n > self.unacked.len() {
            return Err(self.unacked.len());
        }
        // Dropping them closes the master's copies; the worker holds its own.
        for c in self.unacked.drain(..n) {
            self.served.acked(c.accepted(), now);
        }
        self.full_until = None;
        self.cap = self.cap.saturating_mul(2).min(self.window);
        Ok(())
    }

    /// The worker took the `i`-th oldest un-acked connection at `now` (Node: in any order).
    pub fn ack_at(&mut self, i: usize, now: Instant) -> bool {
        let Some(c) = self.unacked.remove(i) else {
            return false;
        };
        self.served.acked(c.accepted(), now);
        true
    }

    /// The worker refused the `i`-th oldest un-acked connection: it goes to someone else.
    pub fn refuse_at(&mut self, i: usize) -> bool {
        match self.unacked.remove(i) {
            Some(mut c) => {
                c.set_sent(None);
                self.returned.push(c);
                true
            }
            None => false,
        }
    }

    /// The newest un-acked connection was acked at `now` (Node's child_process rule: one in
    /// flight).
    pub fn ack_newest(&mut self, now: Instant) -> bool {
        let Some(c) = self.unacked.pop_back() else {
            return false;
        };
        self.served.acked(c.accepted(), now);
        true
    }

    fn assign(&mut self, c: C) {
        self.served.handed += 1;
        self.outbox.push_back(c);
    }
}

/// Every connection the master holds, and the rotation among workers.
#[derive(Debug)]
pub struct Ledger<C> {
    /// Accepted (or given back) and waiting for a worker, oldest first.
    queue: VecDeque<C>,
    accounts: Slab<Account<C>>,
    rr: RoundRobin,
    /// Hand-offs to workers whose accounts are gone.
    retired_handed: u64,
    /// The slot and account that took the last connection placed: with [`Placement::batch`],
    /// the next stays with it while it still serves that slot, has room and has not been
    /// flushed since (its outbox is not empty).
    last: Option<(usize, usize)>,
    /// Accounts given something to send since the shell last took them ([`Ledger::take_touched`]):
    /// each when its outbox stops being empty.
    touched: Vec<usize>,
    /// Accounts handed out mutably since [`Ledger::retry_full`] last looked (and those still
    /// `full` then): only these can have become `full`, so it looks at these and not at all.
    changed: Vec<usize>,
}

impl<C> Default for Ledger<C> {
    fn default() -> Self {
        Ledger {
            queue: VecDeque::new(),
            accounts: Slab::new(),
            rr: RoundRobin::default(),
            retired_handed: 0,
            last: None,
            touched: Vec::new(),
            changed: Vec::new(),
        }
    }
}

impl<C: Conn> Ledger<C> {
    /// The accounts whose outbox stopped being empty since the last call, into `out` (emptied
    /// first): the shell flushes those, and keeps looking at any it could not empty.
    pub fn take_touched(&mut self, out: &mut Vec<usize>) {
        out.clear();
        std::mem::swap(&mut self.touched, out);
    }

    /// An account for a new worker, with its window; its key.
    pub fn open(&mut self, window: usize) -> usize {
        self.accounts.insert(Account::new(window))
    }

    pub fn account(&self, key: usize) -> Option<&Account<C>> {
        self.accounts.get(key)
    }

    /// The account of `key`, to change: listed for [`Ledger::retry_full`], since what the
    /// shell tells it may be a `full`.
    pub fn account_mut(&mut self, key: usize) -> Option<&mut Account<C>> {
        let account = self.accounts.get_mut(key)?;
        if !std::mem::replace(&mut account.listed, true) {
            self.changed.push(key);
        }
        Some(account)
    }

    /// Hand-offs to workers so far, over the master's life (what `status` shows per worker,
    /// summed, with the workers gone).
    pub fn handed_total(&self) -> u64 {
        self.retired_handed + self.accounts.iter().map(|(_, a)| a.handed()).sum::<u64>()
    }

    /// The channel of `key` is gone: what it never got goes to someone else now; what it was
    /// sent and had not acked is held until it is dead.
    pub fn close(&mut self, key: usize) {
        self.requeue_unsent(key);
        if let Some(account) = self.accounts.get_mut(key) {
            account.open = false;
            let unacked = account.unacked.drain(..).map(|mut c| {
                c.set_sent(None);
                c
            });
            account.held.extend(unacked);
        }
    }

    /// The worker of `key` is dead: what it held goes to the front of the queue, and its
    /// account is closed. How many it held.
    pub fn remove(&mut self, key: usize) -> usize {
        self.retire(key).0
    }

    /// [`Ledger::remove`], also saying what the account served in all.
    pub fn retire(&mut self, key: usize) -> (usize, Served) {
        self.close(key);
        let Some(account) = self.accounts.try_remove(key) else {
            return (0, Served::default());
        };
        self.retired_handed += account.handed();
        let n = account.held.len();
        for c in account.held.into_iter().rev() {
            self.queue.push_front(c);
        }
        (n, account.served)
    }

    /// Workers full since [`FULL_RETRY`] before `now` may be sent one connection again.
    /// Only the accounts changed since it last looked can be `full`; those still full stay
    /// listed.
    pub fn retry_full(&mut self, now: Instant) {
        let accounts = &mut self.accounts;
        self.changed.retain(|&key| {
            let Some(a) = accounts.get_mut(key) else {
                return false; // removed (a reused key lists itself again)
            };
            if a.full_until.is_some_and(|t| t <= now) {
                a.full_until = None;
            }
            a.listed = a.full_until.is_some();
            a.listed
        });
    }

    /// When [`Ledger::retry_full`] has something to do next.
    pub fn next_full_retry(&self) -> Option<Instant> {
        (self.changed.iter())
            .filter_map(|&key| self.accounts.get(key)?.full_until)
            .min()
    }

    /// Every connection in the ledger, with where it is: for the simulator's invariants.
    #[cfg(test)]
    pub(super) fn each(&self, mut f: impl FnMut(Whereabouts, &C)) {
        self.queue.iter().for_each(|c| f(Whereabouts::Queue, c));
        for (key, a) in &self.accounts {
            a.outbox.iter().for_each(|c| f(Whereabouts::Outbox(key), c));
            a.unacked
                .iter()
                .for_each(|c| f(Whereabouts::Unacked(key), c));
            a.returned
                .iter()
                .for_each(|c| f(Whereabouts::Returned(key), c));
            a.held.iter().for_each(|c| f(Whereabouts::Held(key), c));
        }
    }
}

/// Where a connection is (the simulator's view).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whereabouts {
    Queue,
    Outbox(usize),
    Unacked(usize),
    Returned(usize),
    Held(usize),
}

mod placement;
mod queue;

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
