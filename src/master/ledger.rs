//! Who owns every accepted connection, from `accept` to a worker's `ack`: the master's queue,
//! or one worker's account (assigned, sent, refused, or held after its channel closed). Pure —
//! no system call, no clock read — so the promise "no connection lost, none served twice" is
//! checked here by a seeded simulator ([`super::sim`]) and not only through real processes.
//!
//! A connection moves only by these rules:
//!
//! - accepted → given to the worker whose turn it is among those free now, else queued
//!   ([`Ledger::admit`]); queued ones go first ([`Ledger::dispatch`]);
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

use super::dispatch::{self, RoundRobin};
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
    /// How many it may be sent un-acked now: its window, but after a `full` one, then doubled
    /// by each `ack` (a worker just short of descriptors is not sent a whole window again).
    cap: usize,
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
            cap: window.max(1),
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
}

impl<C> Default for Ledger<C> {
    fn default() -> Self {
        Ledger {
            queue: VecDeque::new(),
            accounts: Slab::new(),
            rr: RoundRobin::default(),
            retired_handed: 0,
        }
    }
}

impl<C: Conn> Ledger<C> {
    /// An account for a new worker, with its window; its key.
    pub fn open(&mut self, window: usize) -> usize {
        self.accounts.insert(Account::new(window))
    }

    pub fn account(&self, key: usize) -> Option<&Account<C>> {
        self.accounts.get(key)
    }

    pub fn account_mut(&mut self, key: usize) -> Option<&mut Account<C>> {
        self.accounts.get_mut(key)
    }

    /// Hand-offs to workers so far, over the master's life (what `status` shows per worker,
    /// summed, with the workers gone).
    pub fn handed_total(&self) -> u64 {
        self.retired_handed + self.accounts.iter().map(|(_, a)| a.handed()).sum::<u64>()
    }

    /// Connections waiting in the master's queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The slot whose turn it is among those free to take a connection now, without taking the
    /// turn. `serving(slot)` is the account of the worker serving `slot`, if one is ready.
    pub fn free_slot(
        &self,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        self.rr.peek(slots, |s| {
            serving(s)
                .and_then(|k| self.accounts.get(k))
                .is_some_and(Account::has_room)
        })
    }

    /// A connection just accepted: given to the worker of its home slot if `affinity` is on
    /// and that worker's window has room, else to the one whose turn it is among those free
    /// now, else queued, last in line. The account it went to; `None` if queued. Once admitted,
    /// it leaves the ledger only acked (to the worker that acked it) or closed.
    pub fn admit(
        &mut self,
        c: C,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
        affinity: bool,
    ) -> Option<usize> {
        match self.place(c, slots, serving, affinity) {
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
        affinity: bool,
    ) -> Result<usize, C> {
        let home = affinity
            .then(|| dispatch::home_slot(c.peer(), slots))
            .flatten()
            .and_then(&serving)
            .filter(|&k| self.accounts.get(k).is_some_and(Account::has_window_room));
        let key = match home {
            Some(key) => key,
            None => {
                let Some(slot) = self.free_slot(slots, &serving) else {
                    return Err(c);
                };
                self.rr.take(slot, slots);
                match serving(slot) {
                    Some(key) => key,
                    None => return Err(c),
                }
            }
        };
        match self.accounts.get_mut(key) {
            Some(account) => {
                account.assign(c);
                Ok(key)
            }
            None => Err(c),
        }
    }

    /// Hands queued connections out, oldest first, while someone can take them. `true` if the
    /// queue is empty.
    pub fn dispatch(
        &mut self,
        slots: usize,
        serving: impl Fn(usize) -> Option<usize>,
        affinity: bool,
    ) -> bool {
        while let Some(c) = self.queue.pop_front() {
            if let Err(c) = self.place(c, slots, &serving, affinity) {
                self.queue.push_front(c);
                return false;
            }
        }
        true
    }

    /// A connection nobody could take now waits, last in line.
    #[cfg(test)]
    pub fn enqueue(&mut self, c: C) {
        self.queue.push_back(c);
    }

    /// What `key` was assigned and never got, or gave back, goes to the front of the queue,
    /// in its order: older than anything still to be accepted. How many.
    pub fn requeue_unsent(&mut self, key: usize) -> usize {
        let Some(account) = self.accounts.get_mut(key) else {
            return 0;
        };
        let n = account.returned.len() + account.outbox.len();
        account.served.handed -= account.outbox.len() as u64;
        let unsent = account.returned.drain(..).chain(account.outbox.drain(..));
        for mut c in unsent.rev() {
            c.set_sent(None);
            self.queue.push_front(c);
        }
        n
    }

    /// The worker of `key` gave back connections (refused them): they go first to another.
    pub fn requeue_returned(&mut self, key: usize) -> usize {
        let Some(account) = self.accounts.get_mut(key) else {
            return 0;
        };
        let n = account.returned.len();
        for c in account.returned.drain(..).rev() {
            self.queue.push_front(c);
        }
        n
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

    /// Up to `max` connections from the front of the queue, to pass to another master (an
    /// upgrade's new one): they leave the ledger.
    pub fn take_queued(&mut self, max: usize) -> Vec<C> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// Connections [`Ledger::take_queued`] took that could not be passed: back to the front,
    /// in their order.
    pub fn return_queued(&mut self, back: Vec<C>) {
        for c in back.into_iter().rev() {
            self.queue.push_front(c);
        }
    }

    /// Workers full since [`FULL_RETRY`] before `now` may be sent one connection again.
    pub fn retry_full(&mut self, now: Instant) {
        for (_, a) in &mut self.accounts {
            if a.full_until.is_some_and(|t| t <= now) {
                a.full_until = None;
            }
        }
    }

    /// When [`Ledger::retry_full`] has something to do next.
    pub fn next_full_retry(&self) -> Option<Instant> {
        self.accounts.iter().filter_map(|(_, a)| a.full_until).min()
    }

    /// The master is stopping: what is still queued is closed. How many.
    pub fn drop_queue(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }

    /// Every connection in the ledger, with where it is: for the simulator's invariants.
    #[cfg(test)]
    pub(super) fn each(&self, mut f: impl FnMut(Place, &C)) {
        self.queue.iter().for_each(|c| f(Place::Queue, c));
        for (key, a) in &self.accounts {
            a.outbox.iter().for_each(|c| f(Place::Outbox(key), c));
            a.unacked.iter().for_each(|c| f(Place::Unacked(key), c));
            a.returned.iter().for_each(|c| f(Place::Returned(key), c));
            a.held.iter().for_each(|c| f(Place::Held(key), c));
        }
    }
}

/// Where a connection is (the simulator's view).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Queue,
    Outbox(usize),
    Unacked(usize),
    Returned(usize),
    Held(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Id(u32, Option<Instant>);

    /// The moment every test connection was accepted.
    fn accepted_at() -> Instant {
        static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *AT.get_or_init(Instant::now)
    }

    impl Conn for Id {
        fn peer(&self) -> &Peer {
            &Peer::Unix
        }
        fn accepted(&self) -> Instant {
            accepted_at()
        }
        fn sent(&self) -> Option<Instant> {
            self.1
        }
        fn set_sent(&mut self, at: Option<Instant>) {
            self.1 = at;
        }
    }

    fn ids(q: &VecDeque<Id>) -> Vec<u32> {
        q.iter().map(|c| c.0).collect()
    }

    #[test]
    fn rotation_among_free_workers_and_the_window() {
        let mut ledger = Ledger::default();
        let a = ledger.open(2);
        let b = ledger.open(2);
        let serving = |s: usize| [Some(a), Some(b)][s];
        let placed: Vec<usize> = (0..4)
            .map(|i| ledger.admit(Id(i, None), 2, serving, false).unwrap())
            .collect();
        assert_eq!(placed, [a, b, a, b]);
        // Both windows are full: the fifth waits in the queue.
        assert_eq!(ledger.admit(Id(4, None), 2, serving, false), None);
        assert_eq!(ledger.queued(), 1);
        let now = Instant::now();
        ledger.account_mut(a).unwrap().mark_sent(2, now);
        ledger.account_mut(a).unwrap().ack_oldest(1, now).unwrap();
        assert!(ledger.dispatch(2, serving, false), "a has room again");
        assert_eq!(ledger.queued(), 0);
        assert_eq!(ledger.account(a).unwrap().handed(), 3);
        assert_eq!(ledger.handed_total(), 5);
        // A worker gone keeps its count in the total, less what it was never sent. Both come
        // back to the queue (the one sent, un-acked, from a dead worker), to be handed again.
        ledger.account_mut(b).unwrap().mark_sent(1, now);
        ledger.remove(b);
        assert_eq!(ledger.queued(), 2);
        assert_eq!(ledger.handed_total(), 4);
    }

    #[test]
    fn the_queue_passed_to_another_master_leaves_in_order_and_what_fails_comes_back_first() {
        let mut ledger: Ledger<Id> = Ledger::default();
        for i in 0..5 {
            ledger.enqueue(Id(i, None));
        }
        let batch = ledger.take_queued(3);
        assert_eq!(batch.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(ledger.queued(), 2);
        // The send failed: they go back ahead of the rest, in their order.
        ledger.return_queued(batch);
        assert_eq!(ids(&ledger.queue), [0, 1, 2, 3, 4]);
        assert_eq!(ledger.take_queued(99).len(), 5);
        assert_eq!(ledger.queued(), 0);
    }

    #[test]
    fn a_closed_channel_holds_what_was_sent_until_the_worker_is_dead() {
        let mut ledger = Ledger::default();
        let a = ledger.open(4);
        for i in 0..3 {
            ledger.admit(Id(i, None), 1, |_| Some(a), false).unwrap();
        }
        ledger.account_mut(a).unwrap().mark_sent(2, Instant::now());
        ledger.enqueue(Id(9, None));
        ledger.close(a);
        // The unsent one is first in line; the two sent ones wait for the worker's death.
        assert_eq!(ids(&ledger.queue), [2, 9]);
        assert_eq!(ledger.account(a).unwrap().in_flight(), 2);
        assert!(
            !ledger.account(a).unwrap().has_room(),
            "closed: gets nothing"
        );
        assert_eq!(ledger.remove(a), 2);
        assert_eq!(ids(&ledger.queue), [0, 1, 2, 9]);
        assert!(
            ledger.queue.iter().all(|c| c.1.is_none()),
            "none is marked sent"
        );
    }

    #[test]
    fn acking_more_than_was_sent_changes_nothing() {
        let mut ledger = Ledger::default();
        let a = ledger.open(4);
        ledger.admit(Id(0, None), 1, |_| Some(a), false).unwrap();
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(1, Instant::now());
        assert_eq!(account.ack_oldest(2, Instant::now()), Err(1));
        assert_eq!(account.unacked_len(), 1);
        assert_eq!(account.served().acked, 0);
    }

    #[test]
    fn every_ack_is_counted_with_its_time_from_accept_and_retiring_gives_the_tally() {
        use std::time::Duration;
        let t0 = accepted_at();
        let mut ledger = Ledger::default();
        let a = ledger.open(8);
        for i in 0..5 {
            ledger.admit(Id(i, None), 1, |_| Some(a), false).unwrap();
        }
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(5, t0);
        // Native: the two oldest; Node: one by position, the newest; one refused.
        account
            .ack_oldest(2, t0 + Duration::from_micros(50))
            .unwrap();
        assert!(account.ack_at(1, t0 + Duration::from_millis(3)));
        assert!(account.ack_newest(t0 + Duration::from_secs(20)));
        assert!(account.refuse_at(0));
        let served = account.served();
        assert_eq!(
            (served.handed, served.acked, served.latency.count()),
            (5, 4, 4)
        );
        let buckets: Vec<(Option<f64>, u64)> = served.latency.cumulative().collect();
        assert_eq!(buckets[0], (Some(0.0001), 2), "50 µs twice");
        assert_eq!(buckets[5], (Some(0.005), 3), "and 3 ms");
        assert_eq!(buckets[15], (Some(10.0), 3));
        assert_eq!(buckets[16], (None, 4), "+Inf: 20 s too");
        assert!((served.latency.sum_seconds() - 20.0031).abs() < 1e-9);
        // The five sent in second 0 make the account's rate over its first whole second.
        let rate = account.rate().per_second(t0, t0 + Duration::from_secs(1));
        assert_eq!(rate, Some(5.0), "what status shows as CONN/S");
        let (held, tally) = ledger.retire(a);
        assert_eq!((held, tally.acked, tally.handed), (0, 4, 5));
        assert_eq!(ledger.handed_total(), 5);
    }

    #[test]
    fn refused_and_unsent_go_first_in_their_order() {
        let mut ledger = Ledger::default();
        let a = ledger.open(4);
        for i in 0..3 {
            ledger.admit(Id(i, None), 1, |_| Some(a), false).unwrap();
        }
        ledger.enqueue(Id(7, None));
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(1, Instant::now());
        assert!(account.refuse_at(0));
        assert_eq!(ledger.requeue_unsent(a), 3);
        assert_eq!(ids(&ledger.queue), [0, 1, 2, 7]);
        assert_eq!(
            ledger.account(a).unwrap().handed(),
            1,
            "the one it was sent"
        );
    }

    #[test]
    fn a_pulled_worker_takes_connections_only_while_idle() {
        let mut ledger = Ledger::default();
        let a = ledger.open(4);
        ledger.account_mut(a).unwrap().on_idle();
        assert!(ledger.admit(Id(0, None), 1, |_| Some(a), false).is_some());
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(1, Instant::now());
        account.flushed(true, false);
        assert!(!account.has_room(), "busy until it says idle");
        assert!(account.has_window_room(), "affinity may still queue on it");
        account.on_idle();
        assert!(account.has_room());
    }

    #[test]
    fn a_full_worker_gives_back_its_oldest_and_gets_nothing_until_idle_then_one_at_a_time() {
        let mut ledger = Ledger::default();
        let a = ledger.open(8);
        let b = ledger.open(8);
        for i in 0..4 {
            ledger.admit(Id(i, None), 1, |_| Some(a), false).unwrap();
        }
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(4, Instant::now());
        assert_eq!(
            account.on_full(5, Instant::now()),
            Err(4),
            "more than it was sent"
        );
        assert_eq!(account.unacked_len(), 4, "nothing changed");
        account.on_full(3, Instant::now()).unwrap();
        assert!(account.is_full() && !account.has_room() && !account.has_window_room());
        assert_eq!(account.unacked_len(), 1, "the newest is still its own");
        assert_eq!(ledger.requeue_returned(a), 3);
        assert_eq!(ids(&ledger.queue), [0, 1, 2]);
        // Nobody free but the full one: they wait; another worker takes them.
        assert!(!ledger.dispatch(1, |_| Some(a), false));
        assert!(ledger.dispatch(1, |_| Some(b), false));
        assert_eq!(ids(ledger.account(b).unwrap().outbox()), [0, 1, 2]);
        // Then the last one too; `idle` again: room for one, then twice as many after each
        // ack, up to the window.
        let account = ledger.account_mut(a).unwrap();
        account.on_full(1, Instant::now()).unwrap();
        assert_eq!(ledger.requeue_returned(a), 1);
        assert!(!ledger.dispatch(1, |_| Some(a), false), "full: it waits");
        ledger.account_mut(a).unwrap().on_idle();
        assert!(ledger.dispatch(1, |_| Some(a), false));
        ledger.admit(Id(10, None), 1, |_| Some(a), false);
        assert_eq!(ids(ledger.account(a).unwrap().outbox()), [3]);
        assert_eq!(ids(&ledger.queue), [10], "a cap of 1");
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(1, Instant::now());
        account.ack_oldest(1, Instant::now()).unwrap();
        assert!(ledger.dispatch(1, |_| Some(a), false));
        for i in 20..24 {
            ledger.admit(Id(i, None), 1, |_| Some(a), false);
        }
        assert_eq!(
            ids(ledger.account(a).unwrap().outbox()),
            [10, 20],
            "a cap of 2"
        );
    }

    #[test]
    fn a_full_worker_that_never_says_idle_is_tried_again_with_one_after_a_while() {
        let t0 = accepted_at();
        let mut ledger = Ledger::default();
        let a = ledger.open(4);
        ledger.admit(Id(0, None), 1, |_| Some(a), false).unwrap();
        let account = ledger.account_mut(a).unwrap();
        account.mark_sent(1, t0);
        assert!(account.newest_full(t0));
        assert!(!account.newest_full(t0), "nothing left to give back");
        assert_eq!(ledger.requeue_returned(a), 1);
        assert_eq!(ledger.next_full_retry(), Some(t0 + FULL_RETRY));
        ledger.retry_full(t0 + FULL_RETRY - Duration::from_millis(1));
        assert!(!ledger.dispatch(1, |_| Some(a), false), "not yet");
        ledger.retry_full(t0 + FULL_RETRY);
        assert_eq!(ledger.next_full_retry(), None);
        ledger.enqueue(Id(1, None));
        assert!(!ledger.dispatch(1, |_| Some(a), false), "one, as a probe");
        assert_eq!(ids(ledger.account(a).unwrap().outbox()), [0]);
    }
}
