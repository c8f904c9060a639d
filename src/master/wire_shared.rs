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

/// Messages asked of the kernel per call: a worker's `ack` and `idle` often wait together.
const BATCH: usize = 4;

/// A channel's receiving end: the buffers every read reuses. Each call to the kernel asks for
/// up to [`BATCH`] messages (`recvmmsg`); when fewer come, nothing more was waiting, and the
/// read ends without a call that would only say `EAGAIN`.
#[derive(Debug)]
pub struct Receiver {
    /// `BATCH` slots, one per message of a call. (Untouched pages cost no memory.)
    buf: Box<[u8]>,
    /// `BATCH` slots too.
    cmsg: Box<[u8]>,
    /// What each message of the last call was: its length, [`CUT`] set if it was cut.
    got: [u32; BATCH],
    /// The next of them to return, and how many came.
    next: u8,
    count: u8,
    /// Fewer than `BATCH` came, and all have been returned: nothing more was waiting then.
    drained: bool,
}

/// Set in [`Receiver::got`]: the message was longer than its slot.
const CUT: u32 = 1 << 31;

impl Receiver {
    /// Reads of up to `size` bytes.
    pub fn new(size: usize) -> Receiver {
        Receiver {
            buf: vec![0; BATCH * size].into_boxed_slice(),
            cmsg: vec![0; BATCH * sys::cmsg_space(4)].into_boxed_slice(),
            got: [0; BATCH],
            next: 0,
            count: 0,
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
        if self.next == self.count {
            if self.drained {
                return None;
            }
            self.fill(socket, out)?;
        }
        let i = usize::from(self.next);
        self.next += 1;
        if self.next == self.count && usize::from(self.count) < BATCH {
            self.drained = true;
        }
        let (len, cut) = ((self.got[i] & !CUT) as usize, self.got[i] & CUT != 0);
        if len == 0 {
            out.push(Incoming::Closed);
            self.next = self.count; // nothing after the end
            return None;
        }
        let size = self.buf.len() / BATCH;
        Some((&self.buf[i * size..i * size + len], cut))
    }

    /// Asks the kernel for the next messages: `None` when none came (said into `out` if the
    /// channel is done).
    fn fill(&mut self, socket: BorrowedFd<'_>, out: &mut Vec<Incoming>) -> Option<()> {
        let mut stray_fds = Vec::new();
        let (got, n) = receive(socket, &mut self.buf, &mut self.cmsg, &mut stray_fds, out)?;
        if !stray_fds.is_empty() || got[..n].iter().any(|r| r.fds_truncated) {
            drop(stray_fds); // closes them
            out.push(Incoming::Violation(
                "sent file descriptors to the master".into(),
            ));
            return None;
        }
        for (slot, r) in self.got.iter_mut().zip(&got[..n]) {
            *slot = r.len as u32 | if r.data_truncated { CUT } else { 0 };
        }
        (self.next, self.count) = (0, n as u8);
        Some(())
    }
}

/// `buf` as `BATCH` equal slots.
fn slots(buf: &mut [u8]) -> [&mut [u8]; BATCH] {
    let mut chunks = buf.chunks_exact_mut(buf.len() / BATCH);
    std::array::from_fn(|_| chunks.next().expect("BATCH slots"))
}

/// Asks the kernel for up to [`BATCH`] messages of a worker's channel (one per slot of `buf`
/// and `cmsg`), retrying on `EINTR`:
/// `None` when there is nothing more to read now — nothing waits, or the channel is broken,
/// reported into `out`.
fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut [u8],
    stray_fds: &mut Vec<OwnedFd>,
    out: &mut Vec<Incoming>,
) -> Option<([sys::Received; BATCH], usize)> {
    let mut resets = 0;
    loop {
        match sys::recv_many(socket, slots(buf), slots(cmsg), stray_fds) {
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
