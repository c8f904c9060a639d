//! What both wires share — the native protocol ([`super::native`]) and Node's IPC
//! ([`super::node`]): the socket on its way to a worker, what reading a channel produces, how a
//! flush went, and the one careful `recvmsg` loop.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Instant;

use super::listeners::ListenerId;
use crate::engine::ledger::{Account, Conn};
use crate::sys;
use crate::wire::protocol::{Peer, WorkerMessage};

/// An accepted connection on its way to a worker.
#[derive(Debug)]
pub struct Handoff {
    pub socket: OwnedFd,
    /// The listener that accepted it.
    pub listener: ListenerId,
    pub peer: Peer,
    /// When the master accepted it (or was passed it by another master).
    pub accepted: Instant,
    /// When it was sent to the worker that holds it now; `None` while it is not out.
    pub sent: Option<Instant>,
}

impl Conn for Handoff {
    fn peer(&self) -> &Peer {
        &self.peer
    }

    fn accepted(&self) -> Instant {
        self.accepted
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
    /// Something the operator must see (logged at WARN, as far as the worker's note budget
    /// goes): a request we refused.
    Warning(String),
    /// A message of a Node worker's own, logged as `{what}: {value}` — formatted only when the
    /// line is written, as a worker may send millions.
    Said {
        what: &'static str,
        value: serde_json::Value,
    },
    /// A message to relay (`send`; a Node process's `process.send`).
    Relay(crate::engine::relay::Outgoing),
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

/// A channel's receiving end: the buffers every read reuses. Each call to the kernel asks for
/// two messages (`recvmmsg`): a worker's `ack` and `idle` often wait together, and when only
/// one waits, the read can end without a second call that would only say `EAGAIN`
/// ([`Receiver::drained`]).
#[derive(Debug)]
pub struct Receiver {
    /// Two halves: the first message, and the second the same call brought. (Untouched
    /// pages cost no memory.)
    buf: Box<[u8]>,
    /// Two halves too, one per message.
    cmsg: Box<[u8]>,
    /// Fds a worker attached (it has no business sending any): closed as soon as seen.
    stray_fds: Vec<OwnedFd>,
    /// The second message of the last call, not yet returned: its length, and whether it was
    /// cut.
    pending: Option<(u32, bool)>,
    /// The last call brought one message only, and it has been returned: nothing more was
    /// waiting then.
    drained: bool,
}

impl Receiver {
    /// Reads of up to `size` bytes.
    pub fn new(size: usize) -> Receiver {
        Receiver {
            buf: vec![0; 2 * size].into_boxed_slice(),
            cmsg: vec![0; 2 * sys::cmsg_space(4)].into_boxed_slice(),
            stray_fds: Vec::new(),
            pending: None,
            drained: false,
        }
    }

    /// Starts a read (woken by the poll, or going on after a budget): every read calls it
    /// first, or [`Receiver::receive`] may say nothing waits without asking the kernel.
    pub fn begin(&mut self) {
        self.drained = false;
    }

    /// Receives one message from a worker's channel, retrying on `EINTR`: the bytes, or `None`
    /// when there is nothing more to read now — nothing waits (or nothing did when the kernel
    /// was last asked in this read: a message arriving since wakes the poll again), or the
    /// channel is done (closed, broken, or the worker sent fds, which are closed), reported
    /// into `out`. The flag says the message was longer than the buffer (cut).
    pub fn receive(
        &mut self,
        socket: BorrowedFd<'_>,
        out: &mut Vec<Incoming>,
    ) -> Option<(&[u8], bool)> {
        if self.drained {
            return None;
        }
        let size = self.buf.len() / 2;
        if let Some((len, truncated)) = self.pending.take() {
            // Two came: more may wait, so the next call asks the kernel again.
            if len == 0 {
                out.push(Incoming::Closed);
                return None;
            }
            return Some((&self.buf[size..size + len as usize], truncated));
        }
        let half = self.cmsg.len() / 2;
        let (c0, c1) = self.cmsg.split_at_mut(half);
        let (b0, b1) = self.buf.split_at_mut(size);
        let (first, second) = receive(socket, [b0, b1], &mut self.stray_fds, [c0, c1], out)?;
        // Fds with either message end the channel, at the first.
        let fds_cut = second.as_ref().is_some_and(|s| s.fds_truncated);
        let first = judge(first, fds_cut, &mut self.stray_fds, out)?;
        self.drained = second.is_none();
        self.pending = second.map(|s| (s.len as u32, s.data_truncated));
        Some((&self.buf[..first.len], first.data_truncated))
    }
}

/// A message received, or `None` (said into `out`) when it ends the channel: fds attached (a
/// violation; closed), or the end of the stream.
fn judge(
    received: sys::Received,
    fds_cut: bool,
    stray_fds: &mut Vec<OwnedFd>,
    out: &mut Vec<Incoming>,
) -> Option<sys::Received> {
    if !stray_fds.is_empty() || received.fds_truncated || fds_cut {
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
    Some(received)
}

/// Asks the kernel for up to two messages of a worker's channel, retrying on `EINTR`: `None`
/// when there is nothing more to read now — nothing waits (`drained`), or the channel is
/// broken, reported into `out`.
fn receive(
    socket: BorrowedFd<'_>,
    [b0, b1]: [&mut [u8]; 2],
    stray_fds: &mut Vec<OwnedFd>,
    [c0, c1]: [&mut [u8]; 2],
    out: &mut Vec<Incoming>,
) -> Option<(sys::Received, Option<sys::Received>)> {
    let mut resets = 0;
    loop {
        let (bufs, cmsgs) = ([&mut *b0, &mut *b1], [&mut *c0, &mut *c1]);
        match sys::recv_two(socket, bufs, stray_fds, cmsgs) {
            Ok(got) => return Some(got),
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
        }
    }
}
