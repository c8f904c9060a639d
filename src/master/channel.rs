//! The master's end of one worker's channel: the sockets assigned to that worker, the ones sent
//! but not yet acked, and the reading of what the worker says.
//!
//! The promise kept here: **the master holds its copy of every socket until the worker acks it.**
//! If the worker dies or the channel breaks first, [`Channel::take_unacked`] gives every such
//! socket back, still unread, to be handed to someone else.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::node::NodeWire;
use crate::protocol::{
    self, ConnBatch, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_LEN, Peer, ProtocolError, WorkerMessage,
};
use crate::sys;

/// An accepted connection on its way to a worker.
#[derive(Debug)]
pub struct Handoff {
    pub socket: OwnedFd,
    pub listener: usize,
    pub peer: Peer,
}

/// What reading the channel produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Message(WorkerMessage),
    /// Something worth a log line, nothing to act on (a Node worker's own messages).
    Note(String),
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
    /// A channel that speaks Node's IPC over a stream socket pair.
    pub fn node(socket: OwnedFd, window: usize, wire: NodeWire) -> io::Result<Channel> {
        let mut channel = Channel::new(socket, window)?;
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
    /// then `stop` if asked. Sent sockets move to the un-acked window.
    pub fn flush(&mut self) -> Flush {
        if let Some(node) = &mut self.node {
            return node.flush(
                self.socket.as_fd(),
                &mut self.outbox,
                &mut self.unacked,
                &mut self.stop_pending,
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
                Ok(_) => self.unacked.extend(self.outbox.drain(..n)),
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

    /// Reads every message waiting on the channel (until `WouldBlock`), applying acks here and
    /// reporting the rest into `out`. Stops at the first violation or at end of stream.
    pub fn read(&mut self, out: &mut Vec<Incoming>) {
        if let Some(node) = &mut self.node {
            return node.read(
                self.socket.as_fd(),
                &mut self.unacked,
                &mut self.returned,
                out,
            );
        }
        loop {
            let Some(received) = receive(
                self.socket.as_fd(),
                &mut self.recv_buf,
                &mut self.stray_fds,
                &mut self.recv_cmsg,
                out,
            ) else {
                return;
            };
            if received.data_truncated {
                out.push(Incoming::Violation(format!(
                    "sent a message longer than {MAX_MESSAGE_LEN} bytes"
                )));
                return;
            }
            match protocol::parse_worker_message(&self.recv_buf[..received.len]) {
                Ok(WorkerMessage::Ack(n)) => {
                    if n > self.unacked.len() {
                        out.push(Incoming::Violation(format!(
                            "acked {n} sockets but only {} were sent",
                            self.unacked.len()
                        )));
                        return;
                    }
                    // Dropping them closes the master's copies; the worker holds its own.
                    self.unacked.drain(..n);
                    out.push(Incoming::Message(WorkerMessage::Ack(n)));
                }
                Ok(message) => out.push(Incoming::Message(message)),
                Err(e) => {
                    out.push(Incoming::Violation(describe(&e)));
                    return;
                }
            }
        }
    }

    /// Sockets assigned but not yet sent, for someone else to serve.
    pub fn take_outbox(&mut self) -> impl Iterator<Item = Handoff> + '_ {
        self.outbox.drain(..)
    }

    /// Every socket this worker had not acked, oldest first, for someone else to serve.
    pub fn take_unacked(&mut self) -> impl Iterator<Item = Handoff> + '_ {
        self.returned
            .drain(..)
            .chain(self.unacked.drain(..))
            .chain(self.outbox.drain(..))
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
mod tests {
    use super::*;

    fn handoff() -> (Handoff, OwnedFd) {
        let (a, b) = sys::stream_pair().unwrap();
        (
            Handoff {
                socket: a,
                listener: 0,
                peer: Peer::Unix,
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
        assert!(matches!(ch.flush(), Flush::Done));
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
        assert!(matches!(ch.flush(), Flush::Done));
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
        assert!(matches!(ch.flush(), Flush::Done));
        ch.assign(h2);
        drop(worker);
        let mut out = Vec::new();
        ch.read(&mut out);
        assert_eq!(out, [Incoming::Closed]);
        assert_eq!(
            ch.take_unacked().count(),
            2,
            "the sent one and the queued one"
        );
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
        assert!(matches!(ch.flush(), Flush::Done));
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
        assert!(matches!(ch.flush(), Flush::Done));
        assert_eq!(recv(&worker).1, MAX_FDS_PER_MESSAGE);
        assert_eq!(recv(&worker).1, 5);
    }
}
