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
        let result = match &mut self.wire {
            Wire::Native(native) => native.flush(socket, account, backlog, stop, now),
            Wire::Node(node) => node.flush(socket, account, backlog, stop, now),
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
        assert!(self.ledger.admit(h, 1, |_| Some(key), false).is_some());
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
mod tests {
    use std::io::IoSlice;

    use super::*;
    use crate::master::native::READ_BUDGET;
    use crate::master::wire_shared::Handoff;
    use crate::wire::protocol::{MAX_FDS_PER_MESSAGE, Peer, WorkerMessage};

    fn handoff() -> (Handoff, OwnedFd) {
        let (a, b) = sys::stream_pair().unwrap();
        (
            Handoff {
                socket: a,
                listener: 0,
                peer: Peer::Unix,
                accepted: Instant::now(),
                sent: None,
            },
            b,
        )
    }

    fn pair(window: usize) -> (Pair, OwnedFd) {
        let (master, worker) = sys::seqpacket_pair().unwrap();
        (Pair::new(Channel::native(master).unwrap(), window), worker)
    }

    fn send(worker: &OwnedFd, text: &str) {
        sys::send_with_fds(
            worker.as_fd(),
            &[IoSlice::new(text.as_bytes())],
            [],
            &mut Vec::new(),
        )
        .unwrap();
    }

    fn recv(worker: &OwnedFd) -> (String, usize) {
        let mut buf = [0u8; 4096];
        let mut fds = Vec::new();
        let mut cmsg = vec![0; sys::cmsg_space(MAX_FDS_PER_MESSAGE)];
        let got = sys::recv_with_fds(worker.as_fd(), &mut buf, &mut fds, &mut cmsg, true).unwrap();
        (
            String::from_utf8_lossy(&buf[..got.len]).into_owned(),
            fds.len(),
        )
    }

    #[test]
    fn a_batch_goes_as_one_message_and_waits_for_its_ack() {
        let (mut ch, worker) = pair(8);
        let mut peers = Vec::new();
        for _ in 0..3 {
            let (h, p) = handoff();
            ch.assign(h);
            peers.push(p);
        }
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        assert_eq!(
            recv(&worker),
            ("conn 3\n0 unix\n0 unix\n0 unix\n".into(), 3)
        );
        assert_eq!(ch.in_flight(), 3);
        send(&worker, "ack 2\n");
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(out, [Incoming::Message(WorkerMessage::Ack(2))]);
        assert_eq!(ch.in_flight(), 1);
    }

    #[test]
    fn last_words_are_read_even_when_the_worker_died_with_our_messages_unread() {
        // The kernel reports ECONNRESET first in this case; `leaving` must still come through.
        let (mut ch, worker) = pair(8);
        let (h, _p) = handoff();
        ch.assign(h);
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        send(&worker, "leaving\n");
        drop(worker); // exits with our `conn` unread
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(
            out,
            [Incoming::Message(WorkerMessage::Leaving), Incoming::Closed]
        );
        assert_eq!(ch.unacked(), 1, "the unread one goes to another");
    }

    #[test]
    fn a_dead_worker_gives_back_what_it_had_not_acked() {
        let (mut ch, worker) = pair(8);
        let (h1, _p1) = handoff();
        let (h2, _p2) = handoff();
        ch.assign(h1);
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        ch.assign(h2);
        drop(worker);
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(out, [Incoming::Closed]);
        assert_eq!((ch.unacked(), ch.account().outbox().len()), (1, 1));
        // The queued one goes to another at once, the sent one once the worker is dead.
        ch.ledger.close(ch.key);
        assert_eq!(ch.ledger.queued(), 1);
        assert_eq!(ch.ledger.remove(ch.key), 1);
        assert_eq!(ch.ledger.queued(), 2);
    }

    #[test]
    fn room_is_the_window_and_for_a_pulled_worker_being_idle() {
        let (mut ch, worker) = pair(2);
        assert!(
            ch.has_room(),
            "a worker that never said idle has its window"
        );
        let (h1, _p1) = handoff();
        ch.assign(h1);
        let t0 = Instant::now();
        assert!(matches!(ch.flush(t0), Flush::Done));
        assert_eq!(ch.oldest_unacked(), Some(t0));
        assert!(ch.has_room());
        let (h2, _p2) = handoff();
        ch.assign(h2);
        assert!(
            !ch.has_room() && !ch.has_window_room(),
            "window of 2 is full"
        );
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        send(&worker, "ack 2\n");
        send(&worker, "idle\n");
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(out, [Incoming::Message(WorkerMessage::Ack(2))]);
        assert_eq!(ch.oldest_unacked(), None);
        assert!(ch.has_room(), "idle");
        // Once given something, a pulled worker is busy until it says idle again, even with
        // room in its window; affinity may still queue on it.
        let (h3, _p3) = handoff();
        ch.assign(h3);
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        assert!(!ch.has_room() && ch.has_window_room());
        send(&worker, "ack 1");
        send(&worker, "idle");
        ch.read(&mut out);
        assert!(ch.has_room());
    }

    #[test]
    fn ready_and_leaving_twice_are_violations_idle_any_number_of_times_is_not() {
        let (mut ch, worker) = pair(8);
        for m in ["ready", "idle", "idle", "leaving", "idle"] {
            send(&worker, m);
        }
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(
            out,
            [
                Incoming::Message(WorkerMessage::Ready),
                Incoming::Message(WorkerMessage::Leaving)
            ]
        );
        for again in ["ready", "leaving"] {
            send(&worker, again);
            out.clear();
            ch.read(&mut out);
            assert!(
                matches!(&out[..], [Incoming::Violation(v)] if v.contains(again)),
                "{again}: {out:?}"
            );
        }
    }

    #[test]
    fn a_flood_is_read_one_budget_per_turn() {
        let (mut ch, worker) = pair(8);
        for _ in 0..READ_BUDGET + 10 {
            send(&worker, "idle");
        }
        let mut out = Vec::new();
        ch.read(&mut out);
        assert!(ch.ch.has_unread(), "stopped at the budget, more waits");
        ch.read(&mut out);
        assert!(!ch.ch.has_unread(), "drained");
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_full_channel_blocks_and_keeps_what_it_could_not_send() {
        let (mut ch, _worker) = pair(1 << 16);
        // A small send buffer fills after a few messages the worker does not read.
        nix::sys::socket::setsockopt(&ch.ch.as_fd(), nix::sys::socket::sockopt::SndBuf, &4096)
            .unwrap();
        let mut keep = Vec::new();
        let result = loop {
            for _ in 0..MAX_FDS_PER_MESSAGE {
                let (h, p) = handoff();
                ch.assign(h);
                keep.push(p);
            }
            match ch.flush(Instant::now()) {
                Flush::Done if keep.len() < 2_000 => continue,
                other => break other,
            }
        };
        assert!(matches!(result, Flush::Blocked), "{result:?}");
        assert!(!ch.has_window_room(), "nothing more for a blocked channel");
        assert!(
            ch.ledger.requeue_unsent(ch.key) > 0,
            "the unsent ones, for another worker"
        );
        ch.on_writable();
        assert!(ch.has_window_room());
    }

    #[test]
    fn over_acking_and_garbage_are_violations() {
        let (mut ch, worker) = pair(8);
        send(&worker, "ack 1");
        let mut out = Vec::new();
        ch.read(&mut out);
        assert!(matches!(out[0], Incoming::Violation(_)), "{out:?}");

        let (mut ch, worker) = pair(8);
        send(&worker, "\u{0}\u{1}hello");
        let mut out = Vec::new();
        ch.read(&mut out);
        assert!(matches!(out[0], Incoming::Violation(_)), "{out:?}");
    }

    #[test]
    fn stop_follows_the_sockets_already_assigned() {
        let (mut ch, worker) = pair(8);
        let (h, _p) = handoff();
        ch.assign(h);
        ch.ch.queue_stop();
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        assert_eq!(recv(&worker).0, "conn 1\n0 unix\n");
        assert_eq!(recv(&worker).0, "stop\n");
        assert!(!ch.wants_flush());
    }

    #[test]
    fn more_than_a_message_holds_is_split_into_batches() {
        let (mut ch, worker) = pair(256);
        let mut keep = Vec::new();
        for _ in 0..(MAX_FDS_PER_MESSAGE + 5) {
            let (h, p) = handoff();
            ch.assign(h);
            keep.push(p);
        }
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        assert_eq!(recv(&worker).1, MAX_FDS_PER_MESSAGE);
        assert_eq!(recv(&worker).1, 5);
    }
}
