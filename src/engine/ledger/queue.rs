//! The master's queue: connections nobody could take yet, those given back to it, and what
//! an upgrade passes on or a stop closes.

use super::{Conn, Ledger};

impl<C: Conn> Ledger<C> {
    /// Connections waiting in the master's queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
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

    /// The master is stopping: what is still queued is closed. How many.
    pub fn drop_queue(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        n
    }
}
