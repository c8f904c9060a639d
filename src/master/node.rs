//! The master's side of Node's IPC (`protocol = "node"` and `"node-cluster"`): what goes
//! where on a worker's channel. The codec is [`crate::wire::node_ipc`]; which sockets are the worker's
//! (outbox, un-acked window) is its [`Account`](crate::engine::ledger::Account)'s, in the ledger.
//!
//! Ownership of a connection passes on `NODE_HANDLE_ACK` for child_process workers, and on the
//! cluster's `accepted: true` for cluster workers (a worker that answers `accepted: false` gives
//! it back, and it goes to another worker). Until then the master keeps its copy, so a Node
//! worker's death loses nothing it had not taken — the same promise as the native protocol.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use serde_json::json;

use super::listeners::{self, ListenerId};
use super::node_servers::{Answer, Servers, SharedListener};
use super::wire_shared::{Flush, Incoming, Receiver, Sockets};
use crate::config::NodeMessages;
use crate::engine::relay::{self, Backlog, Outgoing, Target};
use crate::sys;
use crate::wire::node_ipc::{self, FromWorker, HandleType, LineReader};
use crate::wire::protocol::WorkerMessage;

/// NACKs of one handle before the worker is called broken (Node gives up after 3 too).
const MAX_NACKS: u32 = 3;
/// Bytes read per `recvmsg`.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks read from one worker per loop turn (256 KiB, some 10,000 short messages): a worker
/// that writes as fast as we read cannot keep the master from everything else for long.
const READ_BUDGET: usize = 4;
/// Which handle waits for its `NODE_HANDLE_ACK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InFlight {
    /// The newest connection in the un-acked window.
    Conn,
    /// Listener `i`.
    Listener(usize),
}

/// A line to send, with the listener whose fd rides along, if any.
#[derive(Debug)]
struct Line {
    bytes: Vec<u8>,
    listener: Option<usize>,
}

#[derive(Debug)]
pub struct NodeWire {
    cluster: bool,
    /// `none` mode: workers get the listeners themselves.
    shared: bool,
    messages: NodeMessages,
    listeners: Vec<SharedListener>,
    reader: LineReader,
    parsed: Vec<FromWorker>,
    receiver: Receiver,
    cmsg: Vec<u8>,
    /// Our `seq` counter for cluster messages.
    seq: u64,
    /// Lines waiting to be sent (replies; listener handles).
    queue: VecDeque<Line>,
    /// The unsent tail of a line already started.
    partial: Vec<u8>,
    in_flight: Option<InFlight>,
    /// The line of the handle in flight, to send again on NACK.
    in_flight_line: Vec<u8>,
    nacks: u32,
    /// The connection in flight was NACKed: send its line again with the newest un-acked fd.
    resend_conn: bool,
    /// Cluster: the `seq` of each `newconn` in the un-acked window, in the same order.
    awaiting: VecDeque<u64>,
    /// Cluster: the worker's servers, each bound to one of our listeners for its life.
    servers: Servers,
    stop_sent: bool,
    /// `protocol = "node"`: the line every connection rides with (always the same).
    socket_line: Vec<u8>,
    /// Ready and leaving are reported once each: a cluster app says `listening` once per
    /// server, and closing its last server and exiting after `disconnect` both mean leaving.
    said_ready: bool,
    said_leaving: bool,
}

impl NodeWire {
    pub fn new(
        cluster: bool,
        shared: bool,
        messages: NodeMessages,
        listeners: Vec<SharedListener>,
    ) -> NodeWire {
        let servers = Servers::new(listeners.iter().map(|l| l.addr).collect());
        let mut wire = NodeWire {
            cluster,
            shared,
            messages,
            listeners,
            reader: LineReader::default(),
            parsed: Vec::new(),
            receiver: Receiver::new(READ_CHUNK),
            cmsg: Vec::with_capacity(sys::cmsg_space(1)),
            seq: 0,
            queue: VecDeque::new(),
            partial: Vec::new(),
            in_flight: None,
            in_flight_line: Vec::new(),
            nacks: 0,
            resend_conn: false,
            awaiting: VecDeque::new(),
            servers,
            stop_sent: false,
            socket_line: Vec::new(),
            said_ready: false,
            said_leaving: false,
        };
        wire.socket_line = node_ipc::handle(HandleType::Socket, &wire.messages.socket);
        if shared && !cluster {
            // A child_process worker gets each listener once, as a net.Server (seed 001).
            for i in 0..wire.listeners.len() {
                let bytes = node_ipc::handle(HandleType::Server, &wire.messages.server);
                wire.queue.push_back(Line {
                    bytes,
                    listener: Some(i),
                });
            }
        }
        wire
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// No handle waits for its ack, and nothing is half sent.
    pub fn idle(&self) -> bool {
        self.in_flight.is_none() && self.partial.is_empty() && !self.resend_conn
    }

    pub fn wants_flush(&self) -> bool {
        !self.queue.is_empty() || !self.partial.is_empty() || self.resend_conn
    }

    /// Sends what waits: the unsent tail, queued lines, then — one handle at a time — the
    /// next connection; `stop` last.
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
            if !self.partial.is_empty() {
                match send(socket, &self.partial, None, &mut self.cmsg) {
                    Ok(n) => {
                        self.partial.drain(..n);
                        continue;
                    }
                    Err(e) => return blocked_or_broken(e),
                }
            }
            if self.resend_conn {
                let Some(handoff) = account.newest_unacked() else {
                    self.resend_conn = false;
                    continue;
                };
                let fd = Some(handoff.socket.as_fd());
                match send(socket, &self.in_flight_line, fd, &mut self.cmsg) {
                    Ok(n) => {
                        self.resend_conn = false;
                        self.partial.extend_from_slice(&self.in_flight_line[n..]);
                        continue;
                    }
                    Err(e) => return blocked_or_broken(e),
                }
            }
            // Plain lines go at any time; a handle only when none is in flight.
            let ready_line = matches!(
                self.queue.front(),
                Some(line) if line.listener.is_none() || self.in_flight.is_none()
            );
            if ready_line {
                let line = self.queue.pop_front().expect("checked");
                let fd = line
                    .listener
                    .and_then(|i| self.listeners[i].fd.as_ref())
                    .map(|fd| fd.as_fd());
                match send(socket, &line.bytes, fd, &mut self.cmsg) {
                    Ok(n) => {
                        if let Some(i) = line.listener {
                            self.in_flight = Some(InFlight::Listener(i));
                            self.in_flight_line.clone_from(&line.bytes);
                            self.nacks = 0;
                        }
                        self.partial.extend_from_slice(&line.bytes[n..]);
                        continue;
                    }
                    Err(e) => {
                        self.queue.push_front(line);
                        return blocked_or_broken(e);
                    }
                }
            }
            // A relayed message: one JSON line, as `worker.send()` writes it (before any
            // connection still to go: a new worker's retained values precede its first one).
            if let Some(message) = backlog.front() {
                self.partial.extend_from_slice(message.body.as_bytes());
                self.partial.push(b'\n');
                backlog.pop(now);
                continue;
            }
            if let (None, Some(next)) = (self.in_flight, account.outbox().front()) {
                let index = listeners::place_of(listeners.iter().copied(), next.listener);
                let Some(bytes) = self.conn_line(index) else {
                    return Flush::Done; // cluster worker with no server yet: hold it
                };
                match send(socket, &bytes, Some(next.socket.as_fd()), &mut self.cmsg) {
                    Ok(n) => {
                        self.in_flight = Some(InFlight::Conn);
                        self.partial.extend_from_slice(&bytes[n..]);
                        self.in_flight_line = bytes;
                        self.nacks = 0;
                        account.mark_sent(1, now);
                        continue;
                    }
                    Err(e) => {
                        if self.cluster {
                            self.awaiting.pop_back();
                            self.seq -= 1;
                        }
                        return blocked_or_broken(e);
                    }
                }
            }
            if *stop_pending
                && account.outbox().is_empty()
                && self.in_flight.is_none()
                && !self.stop_sent
            {
                self.stop_sent = true;
                *stop_pending = false;
                if self.cluster {
                    let seq = self.next_seq();
                    let bytes = node_ipc::encode(&node_ipc::disconnect(seq));
                    self.queue.push_back(Line {
                        bytes,
                        listener: None,
                    });
                    continue;
                }
                // child_process: what `subprocess.disconnect()` does — the worker sees its
                // channel end and exits once its work is done. We keep reading its acks.
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    nix::sys::socket::Shutdown::Write,
                );
            }
            return Flush::Done;
        }
    }

    /// The line that carries a connection from listener `listener`, or `None` when a cluster
    /// worker has no server to give it to yet.
    fn conn_line(&mut self, listener: usize) -> Option<Vec<u8>> {
        if !self.cluster {
            return Some(self.socket_line.clone());
        }
        let key_json = self.servers.key_json(listener)?;
        let seq = self.seq;
        let mut line = Vec::with_capacity(128);
        node_ipc::newconn_line(key_json, seq, &mut line);
        self.seq += 1;
        self.awaiting.push_back(seq);
        Some(line)
    }

    /// Reads what the worker said, at most [`READ_BUDGET`] chunks, applying acks and refusals
    /// to `account`. `true` if it stopped for the budget with more perhaps waiting.
    pub fn read(
        &mut self,
        socket: BorrowedFd<'_>,
        account: &mut Sockets,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) -> bool {
        self.receiver.begin();
        for _ in 0..READ_BUDGET {
            let Some((bytes, _)) = self.receiver.receive(socket, out) else {
                return false;
            };
            let mut parsed = std::mem::take(&mut self.parsed);
            let fed = self.reader.feed(bytes, &mut parsed);
            let mut violation = None;
            for message in parsed.drain(..) {
                if violation.is_none() {
                    violation = self.on_message(message, account, now, out).err();
                }
            }
            self.parsed = parsed;
            if let Some(violation) = violation {
                out.push(Incoming::Violation(violation));
                return false;
            }
            if let Err(e) = fed {
                out.push(Incoming::Violation(format!("not Node IPC: {e}")));
                return false;
            }
        }
        true
    }

    fn on_message(
        &mut self,
        message: FromWorker,
        account: &mut Sockets,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) -> Result<(), String> {
        match message {
            FromWorker::HandleAck => match self.in_flight.take() {
                Some(InFlight::Conn) if !self.cluster => {
                    // Dropping it closes the master's copy; the worker holds its own.
                    account.ack_newest(now);
                    out.push(Incoming::Message(WorkerMessage::Ack(1)));
                }
                Some(InFlight::Listener(i)) => {
                    let addr = self.listeners[i]
                        .addr
                        .map_or("unix".into(), |a| a.to_string());
                    out.push(Incoming::Note(format!("took the listening socket {addr}")));
                }
                Some(InFlight::Conn) => {} // a cluster worker answers `accepted` next
                None => return Err("NODE_HANDLE_ACK with no handle in flight".into()),
            },
            FromWorker::HandleNack => {
                if self.in_flight.is_none() {
                    return Err("NODE_HANDLE_NACK with no handle in flight".into());
                }
                self.nacks += 1;
                if self.nacks > MAX_NACKS {
                    if self.in_flight != Some(InFlight::Conn) {
                        return Err(format!("refused the same handle {} times", self.nacks));
                    }
                    // Node NACKs a message whose handle it could not receive: the kernel
                    // dropped the fd, as the worker is at its open-file limit. Load, not a
                    // fault: the connection goes to another worker, this one gets nothing for
                    // a while (as a native worker's `full 1`).
                    self.in_flight = None;
                    self.nacks = 0;
                    self.resend_conn = false;
                    if self.cluster {
                        self.awaiting.pop_back();
                    }
                    if !account.newest_full(now) {
                        return Err("NODE_HANDLE_NACK bookkeeping out of step".into());
                    }
                    out.push(Incoming::Message(WorkerMessage::Full(1)));
                    return Ok(());
                }
                self.resend();
            }
            FromWorker::Handle => return Err("sent a NODE_HANDLE to the master".into()),
            FromWorker::OtherInternal(cmd) => {
                out.push(Incoming::Note(format!("internal message {cmd} ignored")))
            }
            FromWorker::Online => {}
            FromWorker::QueryServer(query) => {
                if !self.cluster {
                    return Err("sent a cluster queryServer, but protocol is \"node\"".into());
                }
                self.on_query_server(query, out);
            }
            FromWorker::Listening => self.say(WorkerMessage::Ready, out),
            FromWorker::Close { key } => {
                if self.servers.close(&key) && !self.shared {
                    // It closed its server: whatever we send now it would refuse.
                    self.say(WorkerMessage::Leaving, out);
                }
            }
            FromWorker::ExitedAfterDisconnect { seq } => {
                let ack = node_ipc::ack(seq, self.next_seq());
                self.queue.push_back(Line {
                    bytes: node_ipc::encode(&ack),
                    listener: None,
                });
                self.say(WorkerMessage::Leaving, out);
            }
            FromWorker::Accepted { ack, accepted } => {
                let Some(i) = self.awaiting.iter().position(|&s| s == ack) else {
                    return Err(format!("answered newconn {ack}, which it was not sent"));
                };
                self.awaiting.remove(i);
                if accepted {
                    if !account.ack_at(i, now) {
                        return Err("newconn bookkeeping out of step".into());
                    }
                    out.push(Incoming::Message(WorkerMessage::Ack(1)));
                } else if !account.refuse_at(i) {
                    // Node's primary does the same: give it to another worker.
                    return Err("newconn bookkeeping out of step".into());
                }
            }
            FromWorker::OtherCluster(v) => out.push(Incoming::Said {
                what: "cluster message ignored",
                value: v,
            }),
            FromWorker::User(v) => {
                if v == self.messages.leaving {
                    self.say(WorkerMessage::Leaving, out);
                } else if v == json!("ready") {
                    self.say(WorkerMessage::Ready, out);
                } else {
                    match relayed(v) {
                        Ok(outgoing) => out.push(Incoming::Relay(outgoing)),
                        Err(why) => out.push(Incoming::Warning(why)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reports `ready` or `leaving` the first time only.
    fn say(&mut self, message: WorkerMessage, out: &mut Vec<Incoming>) {
        let said = match message {
            WorkerMessage::Ready => &mut self.said_ready,
            WorkerMessage::Leaving => &mut self.said_leaving,
            _ => return out.push(Incoming::Message(message)),
        };
        if !std::mem::replace(said, true) {
            out.push(Incoming::Message(message));
        }
    }

    /// NACK: the fd did not arrive; send the same line with the same fd again.
    fn resend(&mut self) {
        // Put it back at the front: `flush` sends it as a handle line. For a connection, the
        // fd is the newest un-acked socket.
        let bytes = std::mem::take(&mut self.in_flight_line);
        if let Some(InFlight::Listener(i)) = self.in_flight {
            self.in_flight = None;
            self.queue.push_front(Line {
                bytes,
                listener: Some(i),
            });
        } else {
            self.in_flight_line = bytes;
            self.resend_conn = true;
        }
    }

    fn on_query_server(&mut self, query: node_ipc::QueryServer, out: &mut Vec<Incoming>) {
        let reply_seq = self.next_seq();
        let (bytes, listener) = match self.servers.answer(&query, self.shared, reply_seq) {
            Answer::Granted { line, handle } => (line, handle),
            Answer::Refused { line, why } => {
                out.push(Incoming::Warning(why));
                (line, None)
            }
        };
        self.queue.push_back(Line { bytes, listener });
    }
}

/// What a Node process's own message asks to relay: `{"cmd": "rrbalancer:send", "to":
/// "all" | "agent" | N, "retain": KEY, "data": VALUE}` sends `data` as asked; any other message
/// goes, whole, where the sender's messages go by default.
fn relayed(v: serde_json::Value) -> Result<Outgoing, String> {
    if v.get("cmd").and_then(|c| c.as_str()) != Some(RELAY_CMD) {
        return Ok(Outgoing {
            to: None,
            retain: None,
            body: relay::body_of(&v).map_err(|e| format!("message not relayed: {e}"))?,
        });
    }
    let bad = |why: String| format!("{RELAY_CMD} not relayed: {why}");
    let to = match v.get("to") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(
            Target::parse(s).ok_or_else(|| bad(format!("\"to\": {s:?} is not all or agent")))?,
        ),
        Some(serde_json::Value::Number(n)) => Some(Target::Slot(
            n.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| bad(format!("\"to\": {n} is not a slot")))?,
        )),
        Some(other) => return Err(bad(format!("\"to\": {other} is not all, agent or a slot"))),
    };
    let retain = match v.get("retain") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(key)) => {
            relay::check_key(key).map_err(bad)?;
            Some(key.clone())
        }
        Some(other) => return Err(bad(format!("\"retain\": {other} is not a key"))),
    };
    let data = v
        .get("data")
        .ok_or_else(|| bad("it has no \"data\"".into()))?;
    Ok(Outgoing {
        to,
        retain,
        body: relay::body_of(data).map_err(bad)?,
    })
}

/// The `cmd` of a Node process's message that says where to relay its `data`.
pub const RELAY_CMD: &str = "rrbalancer:send";

fn send(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: Option<BorrowedFd<'_>>,
    cmsg: &mut Vec<u8>,
) -> io::Result<usize> {
    loop {
        match sys::send_with_fds(socket, &[IoSlice::new(bytes)], fd, cmsg) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn blocked_or_broken(e: io::Error) -> Flush {
    if e.kind() == io::ErrorKind::WouldBlock {
        Flush::Blocked
    } else {
        Flush::Broken(e)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
