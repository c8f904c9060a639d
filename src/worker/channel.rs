//! The worker's end of its channel: `ready`, connections in (acked on receipt), messages both
//! ways, `leaving`, and `stop`.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::sys;
use crate::wire::env;
use crate::wire::protocol::{
    self, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_LEN, MasterMessage, ProtocolError, WorkerMessage,
};

use super::WorkerError;

static CHANNEL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The worker's end of its channel to the master.
#[derive(Debug)]
pub struct Channel {
    socket: OwnedFd,
    buf: Box<[u8]>,
    cmsg: Vec<u8>,
    out: Vec<u8>,
    fds: Vec<OwnedFd>,
    /// It said `subscribe`: messages may come.
    subscribed: bool,
}

/// What the master said.
#[derive(Debug)]
pub enum Event {
    /// New connections, in the order the master accepted them.
    Conns(Vec<Connection>),
    /// A message relayed by the master (after [`Channel::subscribe`]).
    Message {
        /// Who sent it: `agent`, `control` (`rrbalancer send`) or a slot number.
        from: String,
        /// The key it is the current value of, if it is retained.
        retain: Option<String>,
        /// One JSON value, compact.
        body: String,
    },
    /// After [`Channel::subscribe`]: every retained value has arrived. Say `ready` now to serve
    /// with the current state.
    Subscribed,
    /// A `conn` message arrived with fewer sockets than it announced: this process is at its
    /// open-file limit and the kernel dropped the rest. The channel has given all `refused`
    /// back to the master (`full N`) without reading any, closed those that came, and the
    /// master sends nothing more until the next `idle` (or `ack`): say `idle` once a
    /// connection has closed. [`Channel::incoming`] waits for a free descriptor itself.
    Full { refused: usize },
    /// Finish the connections you have and exit. Nothing more will come.
    Stop,
    /// The master is gone (the channel closed): finish up and exit.
    Closed,
    /// Non-blocking mode only: nothing to read now.
    WouldBlock,
}

/// A connection handed over by the master.
#[derive(Debug)]
pub struct Connection {
    pub stream: Stream,
    /// Index of the listener (in `listen` order) that accepted it.
    pub listener: usize,
    /// The client: `ip:port`, `[ipv6]:port` or `unix`.
    pub peer: String,
}

/// A handed-over socket, TCP or Unix. Blocking, as the master leaves it.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn from_fd(fd: OwnedFd) -> io::Result<Stream> {
        let domain = socket2::SockRef::from(&fd).domain()?;
        Ok(if domain == socket2::Domain::UNIX {
            Stream::Unix(UnixStream::from(fd))
        } else {
            Stream::Tcp(TcpStream::from(fd))
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Channel {
    /// Takes the channel named by `RRB_CHANNEL_FD` (once per process).
    pub fn from_env() -> Result<Channel, WorkerError> {
        let value = std::env::var(env::CHANNEL_FD).map_err(|_| WorkerError::NotUnderRrbalancer)?;
        let fd: RawFd = value
            .parse()
            .map_err(|_| WorkerError::BadChannelFd(value.clone()))?;
        if CHANNEL_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(WorkerError::AlreadyTaken);
        }
        let socket = sys::take_inherited_fd(fd).map_err(|_| WorkerError::BadChannelFd(value))?;
        // Each connection we are sent is one more open file: take all the hard limit allows.
        let _ = sys::raise_fd_limit();
        Ok(Channel::from_fd(socket))
    }

    /// Wraps a channel fd obtained some other way.
    pub fn from_fd(socket: OwnedFd) -> Channel {
        Channel {
            socket,
            buf: vec![0; MAX_MESSAGE_LEN].into_boxed_slice(),
            cmsg: vec![0; sys::cmsg_space(MAX_FDS_PER_MESSAGE)],
            out: Vec::with_capacity(32),
            fds: Vec::with_capacity(MAX_FDS_PER_MESSAGE),
            subscribed: false,
        }
    }

    /// Takes messages from now on: the master sends every retained value ([`Event::Message`]s),
    /// then [`Event::Subscribed`], then each message relayed to this worker. Say it before
    /// `ready` and read until `Subscribed` to serve with the current state from the first
    /// connection. ([`Channel::incoming`] passes over messages: read them with
    /// [`Channel::recv`].)
    pub fn subscribe(&mut self) -> io::Result<()> {
        if !self.subscribed {
            self.buf = vec![0; protocol::MAX_RELAY_MESSAGE_LEN].into_boxed_slice();
            self.subscribed = true;
        }
        self.send(WorkerMessage::Subscribe)
    }

    /// Sends `json` (one JSON value, at most 64 KiB compact) through the master `to` `"all"`
    /// workers, `"agent"`, or a slot number; with `retain`, also as the current value of that
    /// key (to `"all"` only) for every worker started later. The master checks it: anything
    /// malformed is a protocol violation, and this worker is replaced.
    pub fn send_message(&mut self, to: &str, retain: Option<&str>, json: &str) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(b"send ");
        self.out.extend_from_slice(to.as_bytes());
        if let Some(key) = retain {
            self.out.push(b' ');
            self.out.extend_from_slice(key.as_bytes());
        }
        self.out.push(b'\n');
        self.out.extend_from_slice(json.as_bytes());
        self.send_out()
    }

    /// Tells the master we serve: it starts routing to us now.
    pub fn ready(&mut self) -> io::Result<()> {
        self.send(WorkerMessage::Ready)
    }

    /// Tells the master we will exit on our own: it routes nothing more here and starts our
    /// successor now. Keep serving what you already have, then exit.
    pub fn leaving(&mut self) -> io::Result<()> {
        self.send(WorkerMessage::Leaving)
    }

    /// Tells the master we have finished what we had and wait for more. Say it whenever the
    /// worker is about to wait (an event loop: once just before `ready`, so that it is pulled
    /// from its first connection on, then at the end of each turn in which it got
    /// connections): the master then hands connections only to workers that are free, never
    /// to one still busy with a slow request. [`Channel::incoming`] does
    /// this for you. A worker that never says it gets connections whenever its window has room.
    pub fn idle(&mut self) -> io::Result<()> {
        self.send(WorkerMessage::Idle)
    }

    /// Gives back, unread, the next `n` sockets received and not acked (`full N`): this
    /// process cannot take them (its open-file limit). The master hands them to other workers
    /// and sends this one nothing until its next `idle` or `ack`. [`Channel::recv`] does this
    /// for you when the kernel drops sockets of a message.
    pub fn full(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(WorkerMessage::Full(n))
    }

    /// Takes ownership of the next `n` sockets received. [`Channel::recv`] does this for you.
    pub fn ack(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.send(WorkerMessage::Ack(n))
    }

    /// Blocking (default) or non-blocking reads; non-blocking ones may return
    /// [`Event::WouldBlock`].
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        sys::set_nonblocking(self.socket.as_fd(), nonblocking)
    }

    /// Receives the next message and acks any connections in it before returning them.
    pub fn recv(&mut self) -> Result<Event, WorkerError> {
        let event = self.recv_unacked()?;
        if let Event::Conns(conns) = &event {
            self.ack(conns.len())?;
        }
        Ok(event)
    }

    /// Receives the next message without acking. A worker that uses this must [`Channel::ack`]
    /// the connections before reading from them, or the master may give them to someone else
    /// if we die.
    pub fn recv_unacked(&mut self) -> Result<Event, WorkerError> {
        self.fds.clear();
        let received = loop {
            match sys::recv_with_fds(
                self.socket.as_fd(),
                &mut self.buf,
                &mut self.fds,
                &mut self.cmsg,
                false,
            ) {
                Ok(r) => break r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Event::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Event::Closed),
                Err(e) => return Err(e.into()),
            }
        };
        if received.fds_truncated && !received.data_truncated {
            // At our open-file limit: the kernel dropped some of the message's sockets, and we
            // cannot tell which lines the others belong to. Give the whole message back unread
            // (docs/PROTOCOL.md, "fewer fds"): the master hands it to others.
            self.fds.clear();
            let announced = protocol::announced_conns(&self.buf[..received.len]);
            let Some(refused) = announced else {
                return Err(WorkerError::FdLimit);
            };
            self.full(refused)?;
            return Ok(Event::Full { refused });
        }
        if received.fds_truncated || received.data_truncated {
            self.fds.clear();
            return Err(WorkerError::Truncated);
        }
        if received.len == 0 && self.fds.is_empty() {
            return Ok(Event::Closed);
        }
        match protocol::parse_master_message(&self.buf[..received.len], self.fds.len())? {
            MasterMessage::Stop => Ok(Event::Stop),
            // Sent only to a worker that said `subscribe`.
            MasterMessage::Message { .. } | MasterMessage::Subscribed if !self.subscribed => Err(
                ProtocolError::UnknownVerb("message (this worker did not subscribe)".into()).into(),
            ),
            MasterMessage::Message { from, retain, body } => {
                Ok(Event::Message { from, retain, body })
            }
            MasterMessage::Subscribed => Ok(Event::Subscribed),
            MasterMessage::Conn(infos) => {
                let mut conns = Vec::with_capacity(infos.len());
                for (info, fd) in infos.into_iter().zip(self.fds.drain(..)) {
                    conns.push(Connection {
                        stream: Stream::from_fd(fd)?,
                        listener: info.listener,
                        peer: info.peer,
                    });
                }
                Ok(Event::Conns(conns))
            }
        }
    }

    /// A blocking iterator over connections, acked as they arrive; it ends at `stop` or when the
    /// master goes away. Each time it has handed out everything it received it says `idle`
    /// before it waits, so the master sends more only once the previous ones were served.
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming {
            channel: self,
            queue: std::collections::VecDeque::new(),
            done: false,
            said_idle: false,
            full: false,
        }
    }

    fn send(&mut self, message: WorkerMessage) -> io::Result<()> {
        protocol::encode_worker_message(message, &mut self.out);
        self.send_out()
    }

    /// Sends what `out` holds, as one message.
    fn send_out(&mut self) -> io::Result<()> {
        loop {
            match sys::send_with_fds(
                self.socket.as_fd(),
                &[IoSlice::new(&self.out)],
                [],
                &mut Vec::new(),
            ) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The channel is non-blocking and full: the master is not reading. Wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(&self.socket)?,
                Err(e) => return Err(e),
            }
        }
    }
}

fn wait_writable(fd: &OwnedFd) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::from(1000u16))?;
    Ok(())
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// See [`Channel::incoming`].
pub struct Incoming<'a> {
    channel: &'a mut Channel,
    queue: std::collections::VecDeque<Connection>,
    done: bool,
    /// `idle` was sent since the last connections arrived.
    said_idle: bool,
    /// A `conn` message was cut (out of descriptors) since the last `idle`.
    full: bool,
}

impl Iterator for Incoming<'_> {
    type Item = Result<Connection, WorkerError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(conn) = self.queue.pop_front() {
                return Some(Ok(conn));
            }
            if self.done {
                return None;
            }
            if !self.said_idle {
                if std::mem::take(&mut self.full) {
                    // Out of descriptors: `idle` only once one is free again (a connection
                    // handed out earlier was closed), or the next `conn` would be cut again.
                    wait_for_a_free_fd(&self.channel.socket);
                }
                match self.channel.idle() {
                    Ok(()) => self.said_idle = true,
                    // The master is gone: nothing more will come.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        self.done = true;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e.into()));
                    }
                }
            }
            match self.channel.recv() {
                Ok(Event::Conns(conns)) => {
                    self.said_idle = false;
                    self.queue.extend(conns);
                }
                Ok(Event::Full { .. }) => {
                    self.said_idle = false;
                    self.full = true;
                }
                Ok(Event::Stop | Event::Closed) => self.done = true,
                // Not connections (see `Channel::subscribe`).
                Ok(Event::Message { .. } | Event::Subscribed) => {}
                Ok(Event::WouldBlock) => {
                    if let Err(e) = wait_readable(&self.channel.socket) {
                        return Some(Err(e.into()));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Waits until this process may open one more file: probes with a `dup` (closed at once),
/// 10 ms apart at first, then less often, up to a second.
fn wait_for_a_free_fd(fd: &OwnedFd) {
    let mut pause = Duration::from_millis(10);
    while !may_open_a_file(fd.as_fd()) {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Whether this process may open one more file now: a `dup` of `fd`, closed at once, does
/// not fail for the open-file limit (any other failure is not the limit's: `true`).
pub(crate) fn may_open_a_file(fd: BorrowedFd<'_>) -> bool {
    match fd.try_clone_to_owned() {
        Ok(_) => true,
        Err(e) => !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)),
    }
}

fn wait_readable(fd: &OwnedFd) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::NONE)?;
    Ok(())
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
