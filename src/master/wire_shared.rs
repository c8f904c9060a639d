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

/// A channel's receiving end: the buffers every read reuses.
#[derive(Debug)]
pub struct Receiver {
    buf: Box<[u8]>,
    cmsg: Vec<u8>,
    /// Fds a worker attached (it has no business sending any): closed as soon as seen.
    stray_fds: Vec<OwnedFd>,
}

impl Receiver {
    /// Reads of up to `size` bytes.
    pub fn new(size: usize) -> Receiver {
        Receiver {
            buf: vec![0; size].into_boxed_slice(),
            cmsg: vec![0; sys::cmsg_space(4)],
            stray_fds: Vec::new(),
        }
    }

    /// Receives once from a worker's channel, retrying on `EINTR`: the bytes, or `None` when
    /// there is nothing more to read now — nothing waits, or the channel is done (closed,
    /// broken, or the worker sent fds, which are closed), reported into `out`. The flag says
    /// the message was longer than the buffer (cut).
    pub fn receive(
        &mut self,
        socket: BorrowedFd<'_>,
        out: &mut Vec<Incoming>,
    ) -> Option<(&[u8], bool)> {
        let received = receive(
            socket,
            &mut self.buf,
            &mut self.stray_fds,
            &mut self.cmsg,
            out,
        )?;
        Some((&self.buf[..received.len], received.data_truncated))
    }
}

/// Receives once from a worker's channel, retrying on `EINTR`: the bytes, or `None` when there
/// is nothing more to read now — nothing waits, or the channel is done (closed, broken, or the
/// worker sent fds, which are closed: it has no business sending any), reported into `out`.
fn receive(
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
