//! The master's end of one worker's channel, native or Node ([`super::node`]): sending the
//! sockets of the worker's [`Account`] and `stop`, and reading what the worker says — acks and
//! `idle` are applied to its account here, the rest reported as [`Incoming`].
//!
//! Which sockets are whose is the [`super::ledger`]'s: the master holds its copy of every socket
//! until the worker acks it.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

use super::ledger::{Account, Conn};
use super::node::NodeWire;
use crate::protocol::{
    self, ConnBatch, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_LEN, Peer, ProtocolError, WorkerMessage,
};
use crate::sys;

/// Messages read from one worker per loop turn: a worker that writes as fast as we read cannot
/// keep the master from everything else.
const READ_BUDGET: usize = 256;

/// An accepted connection on its way to a worker.
#[derive(Debug)]
pub struct Handoff {
    pub socket: OwnedFd,
    pub listener: usize,
    pub peer: Peer,
    /// When it was sent to the worker that holds it now; `None` while it is not out.
    pub sent: Option<Instant>,
}

impl Conn for Handoff {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn sent(&self) -> Option<Instant> {
        self.sent
    }

    fn set_sent(&mut self, at: Option<Instant>) {
        self.sent = at;
    }
}

/// A worker's account of real sockets.
pub type Sockets = Account<Handoff>;

/// What reading the channel produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Message(WorkerMessage),
    /// Something worth a log line, nothing to act on.
    Note(String),
    /// A message of a Node worker's own, logged as `{what}: {value}` — formatted only when the
    /// line is written, as a worker may send millions.
    Said {
        what: &'static str,
        value: serde_json::Value,
    },
    /// The worker closed its end (or died).
    Closed,
    /// Garbage: the worker is to be replaced.
    Violation(String),
}

/// How a flush went.
#[derive(Debug)]
pub enum Flush {
    /// Everything queued was sent.
    Done,
    /// The channel's buffer is full; wait for it to be writable.
    Blocked,
    /// The channel is broken (the worker is gone).
    Broken(io::Error),
}

#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
    /// The last read stopped for its budget, with messages perhaps still waiting.
    unread: bool,
    /// `ready` and `leaving` are said once; a second one breaks the protocol.
    said_ready: bool,
    said_leaving: bool,
    /// `stop` is to be sent once the outbox is empty.
    stop_pending: bool,
    /// Scratch space reused by every send and receive.
    batch: ConnBatch,
    cmsg: Vec<u8>,
    recv_buf: Box<[u8]>,
    recv_cmsg: Vec<u8>,
    stray_fds: Vec<OwnedFd>,
    /// Node's IPC instead of the native protocol (`protocol = "node"`/`"node-cluster"`).
    node: Option<Box<NodeWire>>,
}

impl Channel {
    /// A channel that speaks Node's IPC over a stream socket pair. Its account's window is
    /// Node's own rule: one connection at a time, until the worker has taken it.
    pub fn node(socket: OwnedFd, wire: NodeWire) -> io::Result<Channel> {
        let mut channel = Channel::new(socket)?;
        channel.node = Some(Box::new(wire));
        Ok(channel)
    }

    /// Wraps the master's end of a fresh channel (made non-blocking here).
    pub fn new(socket: OwnedFd) -> io::Result<Channel> {
        sys::set_nonblocking(socket.as_fd(), true)?;
        Ok(Channel {
            socket,
            said_ready: false,
            said_leaving: false,
            unread: false,
            stop_pending: false,
            batch: ConnBatch::default(),
            cmsg: Vec::with_capacity(sys::cmsg_space(MAX_FDS_PER_MESSAGE)),
            recv_buf: vec![0; MAX_MESSAGE_LEN].into_boxed_slice(),
            recv_cmsg: vec![0; sys::cmsg_space(4)],
            stray_fds: Vec::new(),
            node: None,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Queues `stop`, to go after every socket already assigned.
    pub fn queue_stop(&mut self) {
        self.stop_pending = true;
    }

    /// Whether anything waits to be sent.
    pub fn wants_flush(&self, account: &Sockets) -> bool {
        !account.outbox().is_empty()
            || self.stop_pending
            || self.node.as_ref().is_some_and(|n| n.wants_flush())
    }

    /// Sends the account's outbox: sockets in batches of up to [`MAX_FDS_PER_MESSAGE`] per
    /// message, then `stop` if asked. Sent sockets move to the account's un-acked window,
    /// stamped `now`; what could not be sent stays in the outbox, for the ledger to give to
    /// someone else.
    pub fn flush(&mut self, account: &mut Sockets, now: Instant) -> Flush {
        let before = account.unacked_len();
        let result = self.send_queued(account, now);
        account.flushed(
            account.unacked_len() != before,
            matches!(result, Flush::Blocked),
        );
        result
    }

    fn send_queued(&mut self, account: &mut Sockets, now: Instant) -> Flush {
        if let Some(node) = &mut self.node {
            return node.flush(self.socket.as_fd(), account, &mut self.stop_pending, now);
        }
        while !account.outbox().is_empty() {
            let outbox = account.outbox();
            let n = outbox.len().min(MAX_FDS_PER_MESSAGE);
            self.batch.clear();
            for handoff in outbox.iter().take(n) {
                self.batch.push(handoff.listener, handoff.peer);
            }
            let fds = outbox.iter().take(n).map(|h| h.socket.as_fd());
            let (header, body) = self.batch.parts();
            let parts = [IoSlice::new(header), IoSlice::new(body)];
            match sys::send_with_fds(self.socket.as_fd(), &parts, fds, &mut self.cmsg) {
                Ok(_) => account.mark_sent(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Flush::Broken(e),
            }
        }
        if self.stop_pending {
            match sys::send_with_fds(
                self.socket.as_fd(),
                &[IoSlice::new(protocol::STOP)],
                [],
                &mut self.cmsg,
            ) {
                Ok(_) => self.stop_pending = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) => return Flush::Broken(e),
            }
        }
        Flush::Done
    }

    /// Reads the messages waiting on the channel, until `WouldBlock` or at most
    /// [`READ_BUDGET`] of them (then [`Channel::has_unread`] says to call again without
    /// waiting for an event), applying acks and `idle` here and reporting the rest into `out`.
    /// Stops at the first violation or at end of stream.
    pub fn read(&mut self, account: &mut Sockets, out: &mut Vec<Incoming>) {
        self.unread = match &mut self.node {
            Some(node) => node.read(self.socket.as_fd(), account, out),
            None => self.read_native(account, out),
        };
    }

    /// Whether the last [`Channel::read`] stopped for its budget (the channel is
    /// edge-triggered: no new event will say so).
    pub fn has_unread(&self) -> bool {
        self.unread
    }

    fn read_native(&mut self, account: &mut Sockets, out: &mut Vec<Incoming>) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(received) = receive(
                self.socket.as_fd(),
                &mut self.recv_buf,
                &mut self.stray_fds,
                &mut self.recv_cmsg,
                out,
            ) else {
                return false;
            };
            if received.data_truncated {
                out.push(Incoming::Violation(format!(
                    "sent a message longer than {MAX_MESSAGE_LEN} bytes"
                )));
                return false;
            }
            match protocol::parse_worker_message(&self.recv_buf[..received.len]) {
                Ok(WorkerMessage::Ack(n)) => {
                    if let Err(sent) = account.ack_oldest(n) {
                        out.push(Incoming::Violation(format!(
                            "acked {n} sockets but only {sent} were sent"
                        )));
                        return false;
                    }
                    out.push(Incoming::Message(WorkerMessage::Ack(n)));
                }
                Ok(WorkerMessage::Idle) => account.on_idle(),
                Ok(message @ WorkerMessage::Ready)
                    if !std::mem::replace(&mut self.said_ready, true) =>
                {
                    out.push(Incoming::Message(message))
                }
                Ok(message @ WorkerMessage::Leaving)
                    if !std::mem::replace(&mut self.said_leaving, true) =>
                {
                    out.push(Incoming::Message(message))
                }
                Ok(message) => {
                    out.push(Incoming::Violation(format!(
                        "protocol violation: said `{}` a second time",
                        protocol::verb_name(&message)
                    )));
                    return false;
                }
                Err(e) => {
                    out.push(Incoming::Violation(describe(&e)));
                    return false;
                }
            }
        }
        true
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// Receives once from a worker's channel, retrying on `EINTR`: the bytes, or `None` when there
/// is nothing more to read now — nothing waits, or the channel is done (closed, broken, or the
/// worker sent fds, which are closed: it has no business sending any), reported into `out`.
pub(super) fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    stray_fds: &mut Vec<OwnedFd>,
    cmsg: &mut [u8],
    out: &mut Vec<Incoming>,
) -> Option<sys::Received> {
    let mut resets = 0;
    loop {
        let received = match sys::recv_with_fds(socket, buf, stray_fds, cmsg, true) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A worker that exits with messages of ours unread makes the kernel report
            // ECONNRESET once, *before* the messages it sent last (its `leaving`, its acks).
            // Those decide what happens next: read on.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && resets == 0 => {
                resets += 1;
                continue;
            }
            Err(_) => {
                out.push(Incoming::Closed);
                return None;
            }
        };
        if !stray_fds.is_empty() || received.fds_truncated {
            stray_fds.clear(); // closes them
            out.push(Incoming::Violation(
                "sent file descriptors to the master".into(),
            ));
            return None;
        }
        if received.len == 0 {
            out.push(Incoming::Closed);
            return None;
        }
        return Some(received);
    }
}

fn describe(e: &ProtocolError) -> String {
    format!("protocol violation: {e}")
}

#[cfg(test)]
/// A channel with its worker's account in a ledger of its own.
pub(super) struct Pair {
    pub ch: Channel,
    pub ledger: super::ledger::Ledger<Handoff>,
    pub key: usize,
}

#[cfg(test)]
impl Pair {
    pub fn new(ch: Channel, window: usize) -> Pair {
        let mut ledger = super::ledger::Ledger::default();
        let key = ledger.open(window);
        Pair { ch, ledger, key }
    }
    pub fn account(&self) -> &Sockets {
        self.ledger.account(self.key).unwrap()
    }
    pub fn assign(&mut self, h: Handoff) {
        let key = self.key;
        assert!(self.ledger.place(h, 1, |_| Some(key), false).is_ok());
    }
    pub fn flush(&mut self, now: Instant) -> Flush {
        let account = self.ledger.account_mut(self.key).unwrap();
        self.ch.flush(account, now)
    }
    pub fn read(&mut self, out: &mut Vec<Incoming>) {
        let account = self.ledger.account_mut(self.key).unwrap();
        self.ch.read(account, out)
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
    use super::*;

    fn handoff() -> (Handoff, OwnedFd) {
        let (a, b) = sys::stream_pair().unwrap();
        (
            Handoff {
                socket: a,
                listener: 0,
                peer: Peer::Unix,
                sent: None,
            },
            b,
        )
    }

    fn pair(window: usize) -> (Pair, OwnedFd) {
        let (master, worker) = sys::seqpacket_pair().unwrap();
        (Pair::new(Channel::new(master).unwrap(), window), worker)
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
