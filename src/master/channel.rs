//! The master's end of one worker's channel: the sockets assigned to that worker, the ones sent
//! but not yet acked, and the reading of what the worker says.
//!
//! The promise kept here: **the master holds its copy of every socket until the worker acks it.**
//! If the worker dies or the channel breaks first, [`Channel::take_unacked`] gives every such
//! socket back, still unread, to be handed to someone else.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Instant;

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
    /// The most sockets this worker may hold un-acked (assigned and sent).
    window: usize,
    /// The last send found the channel full: nothing more goes to it until it is writable.
    blocked: bool,
    /// The worker says `idle` (it is pulled): it takes connections only while `idle`.
    pulled: bool,
    idle: bool,
    /// The last read stopped for its budget, with messages perhaps still waiting.
    unread: bool,
    /// `ready` and `leaving` are said once; a second one breaks the protocol.
    said_ready: bool,
    said_leaving: bool,
    /// Assigned to this worker, not yet sent.
    outbox: VecDeque<Handoff>,
    /// Sent, waiting for the worker's `ack`.
    unacked: VecDeque<Handoff>,
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
    /// Connections the worker gave back (a Node cluster worker's `accepted: false`).
    returned: Vec<Handoff>,
}

impl Channel {
    /// A channel that speaks Node's IPC over a stream socket pair. Its window is Node's own
    /// rule: one connection at a time, until the worker has taken it.
    pub fn node(socket: OwnedFd, wire: NodeWire) -> io::Result<Channel> {
        let mut channel = Channel::new(socket, 1)?;
        channel.node = Some(Box::new(wire));
        Ok(channel)
    }

    /// Connections the worker refused, for someone else.
    pub fn take_returned(&mut self) -> std::vec::Drain<'_, Handoff> {
        self.returned.drain(..)
    }

    /// Wraps the master's end of a fresh channel (made non-blocking here).
    pub fn new(socket: OwnedFd, window: usize) -> io::Result<Channel> {
        sys::set_nonblocking(socket.as_fd(), true)?;
        Ok(Channel {
            socket,
            window: window.max(1),
            blocked: false,
            pulled: false,
            idle: false,
            said_ready: false,
            said_leaving: false,
            unread: false,
            outbox: VecDeque::with_capacity(window),
            unacked: VecDeque::with_capacity(window),
            stop_pending: false,
            batch: ConnBatch::default(),
            cmsg: Vec::with_capacity(sys::cmsg_space(MAX_FDS_PER_MESSAGE)),
            recv_buf: vec![0; MAX_MESSAGE_LEN].into_boxed_slice(),
            recv_cmsg: vec![0; sys::cmsg_space(4)],
            stray_fds: Vec::new(),
            node: None,
            returned: Vec::new(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Sockets assigned or sent and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.outbox.len() + self.unacked.len()
    }

    /// Whether a connection given now would reach a worker free to serve it: the channel
    /// takes writes, the window has room, and a pulled worker has said `idle`.
    pub fn has_room(&self) -> bool {
        self.has_window_room() && (!self.pulled || self.idle)
    }

    /// Whether the window has room, busy or not (client affinity waits for its own worker).
    pub fn has_window_room(&self) -> bool {
        !self.blocked && self.in_flight() < self.window
    }

    /// When the oldest socket still un-acked was sent.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.unacked.front().and_then(|h| h.sent)
    }

    /// The channel can take writes again.
    pub fn on_writable(&mut self) {
        self.blocked = false;
    }

    /// Queues a socket for this worker; [`Channel::flush`] sends it.
    pub fn assign(&mut self, handoff: Handoff) {
        self.outbox.push_back(handoff);
    }

    /// Queues `stop`, to go after every socket already assigned.
    pub fn queue_stop(&mut self) {
        self.stop_pending = true;
    }

    /// Whether anything waits to be sent.
    pub fn wants_flush(&self) -> bool {
        !self.outbox.is_empty()
            || self.stop_pending
            || self.node.as_ref().is_some_and(|n| n.wants_flush())
    }

    /// Sends what is queued: sockets in batches of up to [`MAX_FDS_PER_MESSAGE`] per message,
    /// then `stop` if asked. Sent sockets move to the un-acked window, stamped `now`. What
    /// could not be sent stays in the outbox, for the caller to give to someone else.
    pub fn flush(&mut self, now: Instant) -> Flush {
        let before = self.unacked.len();
        let result = self.send_queued(now);
        if self.unacked.len() != before {
            self.idle = false; // busy with what it got, until it says `idle` again
        }
        self.blocked = matches!(result, Flush::Blocked);
        result
    }

    fn send_queued(&mut self, now: Instant) -> Flush {
        if let Some(node) = &mut self.node {
            return node.flush(
                self.socket.as_fd(),
                &mut self.outbox,
                &mut self.unacked,
                &mut self.stop_pending,
                now,
            );
        }
        while !self.outbox.is_empty() {
            let n = self.outbox.len().min(MAX_FDS_PER_MESSAGE);
            self.batch.clear();
            for handoff in self.outbox.iter().take(n) {
                self.batch.push(handoff.listener, handoff.peer);
            }
            let fds = self.outbox.iter().take(n).map(|h| h.socket.as_fd());
            let (header, body) = self.batch.parts();
            let parts = [IoSlice::new(header), IoSlice::new(body)];
            match sys::send_with_fds(self.socket.as_fd(), &parts, fds, &mut self.cmsg) {
                Ok(_) => self.unacked.extend(self.outbox.drain(..n).map(|mut h| {
                    h.sent = Some(now);
                    h
                })),
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
    pub fn read(&mut self, out: &mut Vec<Incoming>) {
        self.unread = match &mut self.node {
            Some(node) => node.read(
                self.socket.as_fd(),
                &mut self.unacked,
                &mut self.returned,
                out,
            ),
            None => self.read_native(out),
        };
    }

    /// Whether the last [`Channel::read`] stopped for its budget (the channel is
    /// edge-triggered: no new event will say so).
    pub fn has_unread(&self) -> bool {
        self.unread
    }

    fn read_native(&mut self, out: &mut Vec<Incoming>) -> bool {
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
                    if n > self.unacked.len() {
                        out.push(Incoming::Violation(format!(
                            "acked {n} sockets but only {} were sent",
                            self.unacked.len()
                        )));
                        return false;
                    }
                    // Dropping them closes the master's copies; the worker holds its own.
                    self.unacked.drain(..n);
                    out.push(Incoming::Message(WorkerMessage::Ack(n)));
                }
                Ok(WorkerMessage::Idle) => {
                    // Idempotent and O(1): a flood of these costs nothing but the reads.
                    self.pulled = true;
                    self.idle = true;
                }
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

    /// Sockets this worker never got, or gave back (a Node cluster worker's `accepted:
    /// false`), oldest first: someone else may serve them at once.
    pub fn take_unsent(&mut self) -> impl DoubleEndedIterator<Item = Handoff> + '_ {
        self.returned
            .drain(..)
            .chain(self.outbox.drain(..))
            .map(unsent)
    }

    /// Sockets sent and not acked, oldest first. The worker may hold copies of them until it
    /// is dead: only then may someone else serve them.
    pub fn take_unacked(&mut self) -> impl DoubleEndedIterator<Item = Handoff> + '_ {
        self.unacked.drain(..).map(unsent)
    }
}

fn unsent(mut handoff: Handoff) -> Handoff {
    handoff.sent = None;
    handoff
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

    fn pair(window: usize) -> (Channel, OwnedFd) {
        let (master, worker) = sys::seqpacket_pair().unwrap();
        (Channel::new(master, window).unwrap(), worker)
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
        assert_eq!(
            ch.take_unacked().count(),
            1,
            "the unread one goes to another"
        );
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
        let sent = ch.take_unacked().collect::<Vec<_>>();
        assert_eq!(sent.len(), 1, "the sent one");
        assert!(sent[0].sent.is_none(), "stamped again when sent again");
        assert_eq!(ch.take_unsent().count(), 1, "and the queued one");
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
        assert!(ch.has_unread(), "stopped at the budget, more waits");
        ch.read(&mut out);
        assert!(!ch.has_unread(), "drained");
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_full_channel_blocks_and_keeps_what_it_could_not_send() {
        let (mut ch, _worker) = pair(1 << 16);
        // A small send buffer fills after a few messages the worker does not read.
        nix::sys::socket::setsockopt(&ch.as_fd(), nix::sys::socket::sockopt::SndBuf, &4096)
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
            ch.take_unsent().count() > 0,
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
        ch.queue_stop();
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
