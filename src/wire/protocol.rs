//! The native hand-off protocol: what crosses a worker's channel, byte for byte.
//!
//! The channel is an `AF_UNIX` `SOCK_SEQPACKET` socket pair, so one `send` is one message and the
//! file descriptors attached to it (`SCM_RIGHTS`) arrive with exactly that message. Every message is
//! short ASCII text: a verb, optional space-separated fields, and lines ending in `\n`. Text keeps a
//! worker in C, Python or shell a few lines long, and makes a captured packet readable.
//!
//! This module only encodes and decodes; it owns no socket. `docs/PROTOCOL.md` is the normative
//! description for people writing workers in other languages, and the tests below pin it.

use crate::text::quoted;
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;

/// The most file descriptors the master attaches to one `conn` message.
///
/// A receiver must offer control-message space for this many fds; fewer makes the kernel drop
/// the extra ones and set `MSG_CTRUNC`.
pub const MAX_FDS_PER_MESSAGE: usize = 64;

/// A receive buffer this large holds any message either side sends, but `send` and `message`.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

/// The longest `send` or `message`: a first line of at most 256 bytes, then at most 64 KiB of
/// JSON. A worker that says `subscribe` receives with a buffer this large.
pub const MAX_RELAY_MESSAGE_LEN: usize = 64 * 1024 + 256;

/// What a worker tells the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMessage {
    /// `ready`: the worker serves; the master starts routing to it only now.
    Ready,
    /// `ack N`: the worker owns the next `N` sockets it was sent, in order, and the master may
    /// close its copies. Sent before the worker reads a byte from them.
    Ack(usize),
    /// `leaving`: the worker will exit on its own soon (Node's "suicide" message). The master
    /// routes nothing more to it and starts its replacement at once.
    Leaving,
    /// `idle`: the worker has finished the work it had and waits for more. A worker that says
    /// it at least once is *pulled*: it gets connections only while it is idle (the master
    /// hands it up to its window in one go, then waits for the next `idle`), so nothing waits
    /// behind a request it is still busy with.
    Idle,
    /// `subscribe`: the worker takes messages (`message`): the retained values now, each
    /// message relayed to it from then on.
    Subscribe,
    /// `full N`: the worker gives back the next `N` sockets it was sent and not acked, unread
    /// (it is at its open-file limit: the kernel dropped fds of a `conn` message, or it chose
    /// not to take more). The master hands them to others and sends this worker nothing more
    /// until its next `idle` or `ack`. Not a failure.
    Full(usize),
}

/// A worker's `send TO [KEY]` and the JSON after its first line (checked by the master).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest<'a> {
    /// `all`, `agent`, or a slot number.
    pub to: &'a str,
    /// Retained under this key.
    pub retain: Option<&'a str>,
    pub body: &'a str,
}

/// The `send` in `bytes`, `Ok(None)` if it is another message.
pub fn parse_send(bytes: &[u8]) -> Result<Option<SendRequest<'_>>, ProtocolError> {
    if bytes.split(|&b| b == b' ' || b == b'\n').next() != Some(b"send") {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotText)?;
    let malformed = |detail: String| ProtocolError::Malformed {
        verb: "send",
        detail,
    };
    let (first, body) = text
        .split_once('\n')
        .ok_or_else(|| malformed("no JSON after the first line".into()))?;
    let mut words = first.split(' ').skip(1);
    let to = words
        .next()
        .filter(|w| !w.is_empty())
        .ok_or_else(|| malformed(format!("expected `send TO [KEY]`, got {}", quoted(first))))?;
    let retain = words.next();
    if words.next().is_some() {
        return Err(malformed(format!("too many fields in {}", quoted(first))));
    }
    Ok(Some(SendRequest { to, retain, body }))
}

/// The first line of a `message` from the master: who sent it (`agent`, `control` or a slot
/// number) and the key it is retained under; the JSON follows.
pub fn message_header(from: &dyn fmt::Display, retain: Option<&str>, out: &mut Vec<u8>) {
    out.clear();
    let _ = match retain {
        Some(key) => writeln!(out, "message {from} {key}"),
        None => writeln!(out, "message {from}"),
    };
}

/// Said by the master after the retained values that answer a `subscribe`.
pub const SUBSCRIBED: &[u8] = b"subscribed\n";

/// What the master tells a worker, as decoded by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterMessage {
    /// `conn N` and one line per attached socket: which listener accepted it and the peer.
    Conn(Vec<ConnInfo>),
    /// `stop`: finish the connections you have, then exit. Nothing more will be sent.
    Stop,
    /// `message FROM [KEY]` and its JSON: relayed from the agent, a worker (its slot) or
    /// `rrbalancer send` (`control`); retained under `KEY` if it has one.
    Message {
        from: String,
        retain: Option<String>,
        body: String,
    },
    /// `subscribed`: the retained values were all sent (after a `subscribe`).
    Subscribed,
}

/// One handed-off connection as announced in a `conn` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Index of the listener (in the order of `listen` in the config) that accepted it.
    pub listener: usize,
    /// `ip:port`, `[ipv6]:port`, or `unix` for a Unix-socket client.
    pub peer: String,
}

/// A message that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is not ASCII text")]
    NotText,
    #[error("unknown message {0}")]
    UnknownVerb(String),
    #[error("malformed {verb} message: {detail}")]
    Malformed { verb: &'static str, detail: String },
}

/// Decodes one message from a worker. A trailing newline is optional.
pub fn parse_worker_message(bytes: &[u8]) -> Result<WorkerMessage, ProtocolError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotText)?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut words = text.split(' ');
    let verb = words.next().unwrap_or_default();
    let message = match verb {
        "ready" => WorkerMessage::Ready,
        "leaving" => WorkerMessage::Leaving,
        "idle" => WorkerMessage::Idle,
        "subscribe" => WorkerMessage::Subscribe,
        "ack" => WorkerMessage::Ack(count("ack", words.next(), text)?),
        "full" => WorkerMessage::Full(count("full", words.next(), text)?),
        _ => return Err(ProtocolError::UnknownVerb(quoted(text))),
    };
    if words.next().is_some() {
        return Err(ProtocolError::Malformed {
            verb: verb_name(&message),
            detail: format!("unexpected trailing fields in {text:?}"),
        });
    }
    Ok(message)
}

/// The `N` of `ack N` or `full N`: a decimal count of at least 1.
fn count(verb: &'static str, word: Option<&str>, text: &str) -> Result<usize, ProtocolError> {
    match word.and_then(|w| w.parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ProtocolError::Malformed {
            verb,
            detail: format!("expected `{verb} N` with N >= 1, got {text:?}"),
        }),
    }
}

/// Encodes a worker's message (used by the worker library).
pub fn encode_worker_message(message: WorkerMessage, out: &mut Vec<u8>) {
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = match message {
        WorkerMessage::Ready => out.write_all(b"ready\n"),
        WorkerMessage::Leaving => out.write_all(b"leaving\n"),
        WorkerMessage::Idle => out.write_all(b"idle\n"),
        WorkerMessage::Subscribe => out.write_all(b"subscribe\n"),
        WorkerMessage::Ack(n) => writeln!(out, "ack {n}"),
        WorkerMessage::Full(n) => writeln!(out, "full {n}"),
    };
}

/// How many sockets a `conn` message announces (its first line, `conn N`), whatever arrived
/// with it: what a worker gives back with `full N` when the kernel dropped some of its fds.
pub fn announced_conns(bytes: &[u8]) -> Option<usize> {
    let first = bytes.split(|&b| b == b'\n').next()?;
    let count = std::str::from_utf8(first).ok()?.strip_prefix("conn ")?;
    count.parse().ok().filter(|&n| n > 0)
}

/// Decodes one message from the master (used by the worker library). `fds` is how many file
/// descriptors arrived with it; a `conn` message must announce exactly that many.
pub fn parse_master_message(bytes: &[u8], fds: usize) -> Result<MasterMessage, ProtocolError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotText)?;
    let mut lines = text.strip_suffix('\n').unwrap_or(text).split('\n');
    let first = lines.next().unwrap_or_default();
    if first == "stop" {
        return Ok(MasterMessage::Stop);
    }
    if first == "subscribed" {
        return Ok(MasterMessage::Subscribed);
    }
    if let Some(rest) = first.strip_prefix("message ") {
        let mut words = rest.split(' ');
        let from = words.next().unwrap_or_default().to_owned();
        let retain = words.next().map(str::to_owned);
        let body = text.split_once('\n').map_or("", |(_, b)| b);
        return Ok(MasterMessage::Message {
            from,
            retain,
            body: body.strip_suffix('\n').unwrap_or(body).to_owned(),
        });
    }
    let malformed = |detail: String| ProtocolError::Malformed {
        verb: "conn",
        detail,
    };
    let Some(count) = first.strip_prefix("conn ") else {
        return Err(ProtocolError::UnknownVerb(quoted(first)));
    };
    let count: usize = count
        .parse()
        .map_err(|_| malformed(format!("bad count in {first:?}")))?;
    if count != fds {
        return Err(malformed(format!(
            "announces {count} sockets but {fds} arrived"
        )));
    }
    let mut conns = Vec::with_capacity(count);
    for line in lines {
        let (listener, peer) = line
            .split_once(' ')
            .ok_or_else(|| malformed(format!("bad line {line:?}")))?;
        let listener = listener
            .parse()
            .map_err(|_| malformed(format!("bad listener index in {line:?}")))?;
        conns.push(ConnInfo {
            listener,
            peer: peer.to_owned(),
        });
    }
    if conns.len() != count {
        return Err(malformed(format!(
            "announces {count} sockets but has {} lines",
            conns.len()
        )));
    }
    Ok(MasterMessage::Conn(conns))
}

/// The text of a `conn` message, built one connection at a time without allocating once its
/// buffers have grown (the master reuses one per worker).
#[derive(Debug, Default)]
pub struct ConnBatch {
    header: Vec<u8>,
    body: Vec<u8>,
    count: usize,
}

/// The peer of an accepted connection, as the master announces it.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Inet(SocketAddr),
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Inet(addr) => addr.fmt(f),
            Peer::Unix => f.write_str("unix"),
        }
    }
}

impl ConnBatch {
    /// Adds one connection line.
    pub fn push(&mut self, listener: usize, peer: Peer) {
        // Writing to a Vec cannot fail.
        let _ = writeln!(self.body, "{listener} {peer}");
        self.count += 1;
    }

    /// The message as two parts (header, lines), for one vectored send.
    pub fn parts(&mut self) -> (&[u8], &[u8]) {
        self.header.clear();
        let _ = writeln!(self.header, "conn {}", self.count);
        (&self.header, &self.body)
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.body.clear();
        self.count = 0;
    }
}

/// The `stop` message.
pub const STOP: &[u8] = b"stop\n";

/// The verb of a worker message, as it is written.
pub fn verb_name(message: &WorkerMessage) -> &'static str {
    match message {
        WorkerMessage::Ready => "ready",
        WorkerMessage::Ack(_) => "ack",
        WorkerMessage::Leaving => "leaving",
        WorkerMessage::Idle => "idle",
        WorkerMessage::Subscribe => "subscribe",
        WorkerMessage::Full(_) => "full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_messages_parse_with_or_without_newline() {
        assert_eq!(parse_worker_message(b"ready\n"), Ok(WorkerMessage::Ready));
        assert_eq!(parse_worker_message(b"ready"), Ok(WorkerMessage::Ready));
        assert_eq!(parse_worker_message(b"ack 3\n"), Ok(WorkerMessage::Ack(3)));
        assert_eq!(parse_worker_message(b"leaving"), Ok(WorkerMessage::Leaving));
        assert_eq!(parse_worker_message(b"idle\n"), Ok(WorkerMessage::Idle));
        assert_eq!(
            parse_worker_message(b"full 64\n"),
            Ok(WorkerMessage::Full(64))
        );
    }

    #[test]
    fn a_conn_message_announces_its_count_even_when_fds_were_lost() {
        assert_eq!(
            announced_conns(b"conn 3\n0 unix\n0 unix\n0 unix\n"),
            Some(3)
        );
        assert_eq!(announced_conns(b"conn 64"), Some(64));
        for other in [&b"stop\n"[..], b"conn 0\n", b"conn x\n", b"", b"\xff"] {
            assert_eq!(announced_conns(other), None, "{other:?}");
        }
    }

    #[test]
    fn garbage_from_a_worker_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"hello",
            b"ack",
            b"ack 0",
            b"ack -1",
            b"ack 99999999999999999999999",
            b"ready now",
            b"ack 1 2",
            b"idle 3",
            b"full",
            b"full 0",
            b"full 2 3",
        ] {
            assert!(parse_worker_message(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn worker_messages_round_trip() {
        let mut buf = Vec::new();
        for m in [
            WorkerMessage::Ready,
            WorkerMessage::Ack(17),
            WorkerMessage::Leaving,
            WorkerMessage::Idle,
            WorkerMessage::Full(5),
        ] {
            encode_worker_message(m, &mut buf);
            assert_eq!(parse_worker_message(&buf), Ok(m));
        }
    }

    #[test]
    fn a_conn_batch_encodes_one_line_per_socket() {
        let mut batch = ConnBatch::default();
        batch.push(0, Peer::Inet("127.0.0.1:5555".parse().unwrap()));
        batch.push(1, Peer::Inet("[::1]:80".parse().unwrap()));
        batch.push(2, Peer::Unix);
        let (header, body) = batch.parts();
        let message = [header, body].concat();
        assert_eq!(
            message,
            b"conn 3\n0 127.0.0.1:5555\n1 [::1]:80\n2 unix\n".to_vec()
        );
        let decoded = parse_master_message(&message, 3).unwrap();
        let MasterMessage::Conn(conns) = decoded else {
            panic!("not a conn message")
        };
        assert_eq!(conns[1].listener, 1);
        assert_eq!(conns[1].peer, "[::1]:80");
        batch.clear();
        assert_eq!(batch.parts(), (&b"conn 0\n"[..], &b""[..]));
    }

    #[test]
    fn a_conn_message_must_match_the_fds_that_came_with_it() {
        assert!(parse_master_message(b"conn 2\n0 unix\n0 unix\n", 1).is_err());
        assert!(parse_master_message(b"conn 2\n0 unix\n", 2).is_err());
        assert!(parse_master_message(b"conn x\n", 0).is_err());
        assert_eq!(parse_master_message(STOP, 0), Ok(MasterMessage::Stop));
    }
}

#[cfg(test)]
mod relay_tests {
    use super::*;

    #[test]
    fn send_is_a_first_line_and_json_and_message_answers_it() {
        assert_eq!(parse_send(b"ack 1"), Ok(None));
        assert_eq!(parse_send(b"sender"), Ok(None));
        assert_eq!(
            parse_send(b"send all config\n{\"a\":1}"),
            Ok(Some(SendRequest {
                to: "all",
                retain: Some("config"),
                body: "{\"a\":1}"
            }))
        );
        assert_eq!(
            parse_send(b"send 2\n[1,\n2]\n").unwrap().unwrap().body,
            "[1,\n2]\n"
        );
        for bad in [
            &b"send"[..],
            b"send all",
            b"send \n1",
            b"send a b c\n1",
            b"send \xff\n1",
        ] {
            assert!(parse_send(bad).is_err(), "{bad:?}");
        }
        let mut header = Vec::new();
        message_header(&"agent", Some("flags"), &mut header);
        assert_eq!(header, b"message agent flags\n");
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"{\"on\":true}");
        assert_eq!(
            parse_master_message(&bytes, 0),
            Ok(MasterMessage::Message {
                from: "agent".into(),
                retain: Some("flags".into()),
                body: "{\"on\":true}".into()
            })
        );
        message_header(&3, None, &mut header);
        assert_eq!(header, b"message 3\n");
        assert_eq!(
            parse_master_message(SUBSCRIBED, 0),
            Ok(MasterMessage::Subscribed)
        );
        assert_eq!(
            parse_worker_message(b"subscribe\n"),
            Ok(WorkerMessage::Subscribe)
        );
    }
}
