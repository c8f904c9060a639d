//! The native wire (docs/PROTOCOL.md) on the master's side: sockets go in batches of up to
//! [`MAX_FDS_PER_MESSAGE`] per `conn` message, then `stop`; `ack` and `idle` are applied to the
//! worker's account as they are read, `ready` and `leaving` reported once each, anything else a
//! violation.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::wire::{Flush, Incoming, Receiver, Sockets};
use crate::protocol::{
    self, ConnBatch, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_LEN, ProtocolError, WorkerMessage,
};
use crate::sys;

/// Messages read from one worker per loop turn: a worker that writes as fast as we read cannot
/// keep the master from everything else.
pub const READ_BUDGET: usize = 256;

#[derive(Debug)]
pub struct NativeWire {
    /// `ready` and `leaving` are said once; a second one breaks the protocol.
    said_ready: bool,
    said_leaving: bool,
    /// Scratch space reused by every send and receive.
    batch: ConnBatch,
    cmsg: Vec<u8>,
    receiver: Receiver,
}

impl Default for NativeWire {
    fn default() -> Self {
        NativeWire {
            said_ready: false,
            said_leaving: false,
            batch: ConnBatch::default(),
            cmsg: Vec::with_capacity(sys::cmsg_space(MAX_FDS_PER_MESSAGE)),
            receiver: Receiver::new(MAX_MESSAGE_LEN),
        }
    }
}

impl NativeWire {
    /// Sends the account's outbox, then `stop` if pending.
    pub fn flush(
        &mut self,
        socket: BorrowedFd<'_>,
        account: &mut Sockets,
        stop_pending: &mut bool,
        now: Instant,
    ) -> Flush {
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
            match sys::send_with_fds(socket, &parts, fds, &mut self.cmsg) {
                Ok(_) => account.mark_sent(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Flush::Broken(e),
            }
        }
        if *stop_pending {
            match sys::send_with_fds(socket, &[IoSlice::new(protocol::STOP)], [], &mut self.cmsg) {
                Ok(_) => *stop_pending = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) => return Flush::Broken(e),
            }
        }
        Flush::Done
    }

    /// Reads at most [`READ_BUDGET`] messages; `true` if it stopped for the budget.
    pub fn read(
        &mut self,
        socket: BorrowedFd<'_>,
        account: &mut Sockets,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) -> bool {
        for _ in 0..READ_BUDGET {
            let Some((message, truncated)) = self.receiver.receive(socket, out) else {
                return false;
            };
            if truncated {
                out.push(Incoming::Violation(format!(
                    "sent a message longer than {MAX_MESSAGE_LEN} bytes"
                )));
                return false;
            }
            match protocol::parse_worker_message(message) {
                Ok(WorkerMessage::Ack(n)) => {
                    if let Err(sent) = account.ack_oldest(n, now) {
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

fn describe(e: &ProtocolError) -> String {
    format!("protocol violation: {e}")
}
