//! The native wire (docs/PROTOCOL.md) on the master's side: sockets go in batches of up to
//! [`MAX_FDS_PER_MESSAGE`] per `conn` message, then `stop`; `ack`, `full` and `idle` are applied
//! to the worker's account as they are read, `ready` and `leaving` reported once each, anything else a
//! violation.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use super::listeners::{self, ListenerId};
use super::wire_shared::{Flush, Incoming, Receiver, Sockets};
use crate::engine::relay::{self, Backlog, Outgoing, Target};
use crate::sys;
use crate::wire::protocol::{
    self, ConnBatch, MAX_FDS_PER_MESSAGE, MAX_RELAY_MESSAGE_LEN, ProtocolError, WorkerMessage,
};

/// Messages read from one worker per loop turn: a worker that writes as fast as we read cannot
/// keep the master from everything else.
pub const READ_BUDGET: usize = 256;
/// Bytes of messages to relay read from one worker per loop turn: flow control
/// ([`relay::HIGH_WATER`]) looks between turns, so one turn brings at most this much past it.
const RELAY_READ_BUDGET: usize = 64 * 1024;

#[derive(Debug)]
pub struct NativeWire {
    /// `ready` and `leaving` are said once; a second one breaks the protocol.
    said_ready: bool,
    said_leaving: bool,
    /// Scratch space reused by every send and receive.
    batch: ConnBatch,
    cmsg: Vec<u8>,
    receiver: Receiver,
    /// The first line of a `message` being sent.
    header: Vec<u8>,
    /// `subscribed` is due once this many more messages of the backlog have been sent.
    subscribed_after: Option<usize>,
}

impl Default for NativeWire {
    fn default() -> Self {
        NativeWire {
            said_ready: false,
            said_leaving: false,
            batch: ConnBatch::default(),
            cmsg: Vec::with_capacity(sys::cmsg_space(MAX_FDS_PER_MESSAGE)),
            // Untouched pages of it cost no memory: most messages are a few bytes.
            receiver: Receiver::new(MAX_RELAY_MESSAGE_LEN),
            header: Vec::new(),
            subscribed_after: None,
        }
    }
}

impl NativeWire {
    /// `subscribed` goes once the `n` messages queued now (the retained values) have left.
    pub fn subscribed_after(&mut self, n: usize) {
        self.subscribed_after = Some(n);
    }

    pub fn subscribed_pending(&self) -> bool {
        self.subscribed_after.is_some()
    }

    /// Sends the backlog of messages, then the account's outbox (no connection overtakes a
    /// message: a retained value queued for a new worker precedes its first connection), then
    /// `stop` if pending.
    pub fn flush(
        &mut self,
        socket: BorrowedFd<'_>,
        account: &mut Sockets,
        backlog: &mut Backlog,
        stop_pending: &mut bool,
        listeners: &[ListenerId],
        now: Instant,
    ) -> Flush {
        loop {
            if self.subscribed_after == Some(0) {
                match send(
                    socket,
                    &[IoSlice::new(protocol::SUBSCRIBED)],
                    &mut self.cmsg,
                ) {
                    Ok(()) => self.subscribed_after = None,
                    Err(flush) => return flush,
                }
            }
            let Some(message) = backlog.front() else {
                break;
            };
            protocol::message_header(&message.from, message.retain.as_deref(), &mut self.header);
            let parts = [
                IoSlice::new(&self.header),
                IoSlice::new(message.body.as_bytes()),
            ];
            match send(socket, &parts, &mut self.cmsg) {
                Ok(()) => {
                    backlog.pop(now);
                    if let Some(n) = &mut self.subscribed_after {
                        *n = n.saturating_sub(1);
                    }
                }
                Err(flush) => return flush,
            }
        }
        while !account.outbox().is_empty() {
            let outbox = account.outbox();
            let n = outbox.len().min(MAX_FDS_PER_MESSAGE);
            self.batch.clear();
            for handoff in outbox.iter().take(n) {
                self.batch.push(
                    listeners::place_of(listeners.iter().copied(), handoff.listener),
                    handoff.peer,
                );
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
        let mut relay_bytes = 0;
        self.receiver.begin();
        for _ in 0..READ_BUDGET {
            if relay_bytes >= RELAY_READ_BUDGET {
                return true;
            }
            let Some((message, truncated)) = self.receiver.receive(socket, out) else {
                return false;
            };
            if truncated {
                out.push(Incoming::Violation(format!(
                    "sent a message longer than {MAX_RELAY_MESSAGE_LEN} bytes"
                )));
                return false;
            }
            match protocol::parse_send(message) {
                Ok(None) => {}
                Ok(Some(send)) => match relayed(&send) {
                    Ok(outgoing) => {
                        relay_bytes += outgoing.body.len() + relay::MESSAGE_OVERHEAD;
                        out.push(Incoming::Relay(outgoing));
                        continue;
                    }
                    Err(detail) => {
                        out.push(Incoming::Violation(format!("protocol violation: {detail}")));
                        return false;
                    }
                },
                Err(e) => {
                    out.push(Incoming::Violation(describe(&e)));
                    return false;
                }
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
                Ok(WorkerMessage::Full(n)) => {
                    if let Err(sent) = account.on_full(n, now) {
                        out.push(Incoming::Violation(format!(
                            "gave back {n} sockets (`full {n}`) but only {sent} were sent"
                        )));
                        return false;
                    }
                    out.push(Incoming::Message(WorkerMessage::Full(n)));
                }
                Ok(message @ WorkerMessage::Subscribe) => out.push(Incoming::Message(message)),
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

/// What a worker's `send` asks for, checked: a known target, a valid key, JSON within bounds.
fn relayed(send: &protocol::SendRequest<'_>) -> Result<Outgoing, String> {
    let to = Target::parse(send.to)
        .ok_or_else(|| format!("send to {:?}: not all, agent or a slot number", send.to))?;
    if let Some(key) = send.retain {
        relay::check_key(key)?;
    }
    Ok(Outgoing {
        to: Some(to),
        retain: send.retain.map(str::to_owned),
        body: relay::body_from_text(send.body).map_err(|e| format!("send: {e}"))?,
    })
}

/// One `sendmsg` of `parts` without fds, retried on `EINTR`; the flush's end otherwise.
fn send(socket: BorrowedFd<'_>, parts: &[IoSlice<'_>], cmsg: &mut Vec<u8>) -> Result<(), Flush> {
    loop {
        match sys::send_with_fds(socket, parts, [], cmsg) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(Flush::Blocked),
            Err(e) => return Err(Flush::Broken(e)),
        }
    }
}

fn describe(e: &ProtocolError) -> String {
    format!("protocol violation: {e}")
}
