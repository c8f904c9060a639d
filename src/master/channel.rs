//! The master's end of one worker's channel: the socket, and the wire spoken on it — native
//! ([`super::native`]) or Node's IPC ([`super::node`]). Sending the sockets of the worker's
//! account and `stop`, reading what the worker says (acks and `idle` applied to its account,
//! the rest reported as [`Incoming`]).
//!
//! Which sockets are whose is the [`crate::engine::ledger`]'s: the master holds its copy of every socket
//! until the worker acks it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use std::rc::Rc;

use super::listeners::ListenerId;
use super::native::NativeWire;
use super::node::NodeWire;
use super::wire_shared::{Flush, Incoming, Sockets};
use crate::engine::relay::{Backlog, Message, Overflow, Retained};
use crate::sys;

/// The protocol a channel speaks.
#[derive(Debug)]
enum Wire {
    Native(NativeWire),
    /// `protocol = "node"`/`"node-cluster"`.
    Node(Box<NodeWire>),
}

#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
    wire: Wire,
    /// The listeners its worker was started with, in its `listen` order ([`Channel::knowing`]).
    listeners: Box<[ListenerId]>,
    /// The last read stopped for its budget, with messages perhaps still waiting.
    unread: bool,
    /// `stop` is to be sent once the outbox is empty.
    stop_pending: bool,
    /// Messages waiting to be sent, before any connection.
    backlog: Backlog,
    /// It takes messages: a Node process always (`process.on('message')`), a native one once
    /// it said `subscribe`.
    subscribed: bool,
    /// It has sent messages to relay: its channel is not read while a receiver's backlog is
    /// past the high-water mark (flow control, [`crate::engine::relay::HIGH_WATER`]).
    sender: bool,
}

impl Channel {
    /// A channel that speaks the native protocol over a seqpacket pair.
    pub fn native(socket: OwnedFd) -> io::Result<Channel> {
        Channel::new(socket, Wire::Native(NativeWire::default()))
    }

    /// Its worker was started with `listeners`, in this order (its `listen` order): how its
    /// connections' lines name their listener.
    pub fn knowing(mut self, listeners: Vec<ListenerId>) -> Channel {
        self.listeners = listeners.into();
        self
    }

    /// The worker was started knowing the listener `id`: it may be handed its connections.
    pub fn knows_listener(&self, id: ListenerId) -> bool {
        self.listeners.contains(&id)
    }

    /// A channel that speaks Node's IPC over a stream socket pair. Its account's window is
    /// Node's own rule: one connection at a time, until the worker has taken it.
    pub fn node(socket: OwnedFd, wire: NodeWire) -> io::Result<Channel> {
        Channel::new(socket, Wire::Node(Box::new(wire)))
    }

    /// Wraps the master's end of a fresh channel (made non-blocking here).
    fn new(socket: OwnedFd, wire: Wire) -> io::Result<Channel> {
        sys::set_nonblocking(socket.as_fd(), true)?;
        Ok(Channel {
            socket,
            listeners: Box::default(),
            unread: false,
            stop_pending: false,
            backlog: Backlog::default(),
            subscribed: matches!(wire, Wire::Node(_)),
            sender: false,
            wire,
        })
    }

    /// It takes messages.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }

    /// Queues `message` if this worker takes messages (`Ok(false)` if not); `Err` when its
    /// backlog overflowed (it does not keep up: replace it).
    pub fn send_message(&mut self, message: &Rc<Message>, now: Instant) -> Result<bool, Overflow> {
        if !self.subscribed {
            return Ok(false);
        }
        self.backlog.push(message, now).map(|()| true)
    }

    /// Bytes of messages waiting for this worker (overhead counted).
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.bytes()
    }

    /// When its backlog counts as stalled if it does not move before.
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.backlog.stall_deadline()
    }

    /// Drops what waits for it, and takes no more: it is being replaced for not reading.
    pub fn drop_backlog(&mut self) {
        self.backlog = Backlog::default();
        self.subscribed = false;
    }

    /// It sent a message to relay: flow control may hold its reads back from now on.
    pub fn mark_sender(&mut self) {
        self.sender = true;
    }

    pub fn is_sender(&self) -> bool {
        self.sender
    }

    /// Its next read waits for the flow-control pause to end (kept as unread meanwhile).
    pub fn defer_read(&mut self) {
        self.unread = true;
    }

    /// The worker takes messages from now on (a native `subscribe`, a Node process at its
    /// start): every retained value is queued for it first (then, native, `subscribed`).
    pub fn subscribe(&mut self, retained: &Retained, now: Instant) -> Result<(), Overflow> {
        self.subscribed = true;
        let before = self.backlog.len();
        for message in retained.values() {
            self.backlog.push(message, now)?;
        }
        if let Wire::Native(native) = &mut self.wire {
            native.subscribed_after(before + retained.len());
        }
        Ok(())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Queues `stop`, to go after every socket already assigned.
    pub fn queue_stop(&mut self) {
        self.stop_pending = true;
    }

    /// `stop` was asked and has not left yet.
    pub fn stop_pending(&self) -> bool {
        self.stop_pending
    }

    /// `stop` is the next thing to send: asked, with no socket of the account left to send
    /// before it (nor, for Node, a handle waiting for its ack).
    pub fn stop_is_next(&self, account: &Sockets) -> bool {
        self.stop_pending
            && account.outbox().is_empty()
            && match &self.wire {
                Wire::Native(_) => true,
                Wire::Node(node) => node.idle(),
            }
    }

    /// Whether anything waits to be sent.
    pub fn wants_flush(&self, account: &Sockets) -> bool {
        !account.outbox().is_empty()
            || self.stop_pending
            || !self.backlog.is_empty()
            || matches!(&self.wire, Wire::Native(native) if native.subscribed_pending())
            || matches!(&self.wire, Wire::Node(node) if node.wants_flush())
    }

    /// Sends the account's outbox, then `stop` if asked. Sent sockets move to the account's
    /// un-acked window, stamped `now`; what could not be sent stays in the outbox, for the
    /// ledger to give to someone else.
    pub fn flush(&mut self, account: &mut Sockets, now: Instant) -> Flush {
        let before = account.unacked_len();
        let socket = self.socket.as_fd();
        let stop = &mut self.stop_pending;
        let backlog = &mut self.backlog;
        let known = &self.listeners;
        let result = match &mut self.wire {
            Wire::Native(native) => native.flush(socket, account, backlog, stop, known, now),
            Wire::Node(node) => node.flush(socket, account, backlog, stop, known, now),
        };
        account.flushed(
            account.unacked_len() != before,
            matches!(result, Flush::Blocked),
        );
        result
    }

    /// Reads what waits on the channel, until `WouldBlock` or the wire's budget (then
    /// [`Channel::has_unread`] says to call again without waiting for an event), applying acks
    /// and `idle` to `account` (acks as of `now`) and reporting the rest into `out`. Stops at
    /// the first violation or at end of stream.
    pub fn read(&mut self, account: &mut Sockets, now: Instant, out: &mut Vec<Incoming>) {
        let socket = self.socket.as_fd();
        self.unread = match &mut self.wire {
            Wire::Native(native) => native.read(socket, account, now, out),
            Wire::Node(node) => node.read(socket, account, now, out),
        };
    }

    /// Whether the last [`Channel::read`] stopped for its budget (the channel is
    /// edge-triggered: no new event will say so).
    pub fn has_unread(&self) -> bool {
        self.unread
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

#[cfg(test)]
/// A channel with its worker's account in a ledger of its own.
pub(super) struct Pair {
    pub ch: Channel,
    pub ledger: crate::engine::ledger::Ledger<super::wire_shared::Handoff>,
    pub key: usize,
}

#[cfg(test)]
impl Pair {
    pub fn new(ch: Channel, window: usize) -> Pair {
        let mut ledger = crate::engine::ledger::Ledger::default();
        let key = ledger.open(window);
        Pair { ch, ledger, key }
    }
    pub fn account(&self) -> &Sockets {
        self.ledger.account(self.key).unwrap()
    }
    pub fn assign(&mut self, h: super::wire_shared::Handoff) {
        let key = self.key;
        assert!(
            self.ledger
                .admit(
                    h,
                    1,
                    |_| Some(key),
                    crate::engine::dispatch::Placement::default()
                )
                .is_some()
        );
    }
    pub fn flush(&mut self, now: Instant) -> Flush {
        let account = self.ledger.account_mut(self.key).unwrap();
        self.ch.flush(account, now)
    }
    pub fn read(&mut self, out: &mut Vec<Incoming>) {
        let account = self.ledger.account_mut(self.key).unwrap();
        self.ch.read(account, Instant::now(), out)
    }
    pub fn in_flight(&self) -> usize {
        self.account().in_flight()
    }
    pub fn has_room(&self) -> bool {
        self.account().has_room()
    }
    pub fn has_window_room(&self) -> bool {
        self.account().has_window_room()
    }
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.account().oldest_unacked()
    }
    pub fn unacked(&self) -> usize {
        self.account().unacked_len()
    }
    pub fn on_writable(&mut self) {
        self.ledger.account_mut(self.key).unwrap().on_writable()
    }
    pub fn wants_flush(&self) -> bool {
        self.ch.wants_flush(self.account())
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
