//! The worker side of rrbalancer's native protocol, for Rust workers.
//!
//! A worker started by rrbalancer finds its channel in `RRB_CHANNEL_FD`, says `ready`, and then
//! receives connections (the sockets themselves) in `rr` mode, or accepts on the listeners it
//! inherited (`LISTEN_FDS`, systemd's convention) in `none` mode. It says `leaving` before it
//! exits on its own, and finishes and exits when told `stop`.
//!
//! The simplest worker is a blocking loop:
//!
//! ```no_run
//! use std::io::Write;
//! use rrbalancer::worker::Channel;
//!
//! fn main() -> Result<(), rrbalancer::worker::WorkerError> {
//!     let mut channel = Channel::from_env()?;
//!     channel.ready()?;
//!     for conn in channel.incoming() {
//!         let mut conn = conn?;
//!         // The socket is ours (already acked); the master has stepped out of the data path.
//!         let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n");
//!     }
//!     Ok(()) // `stop` received: every connection we got was served
//! }
//! ```
//!
//! Messages (docs/PROTOCOL.md, "Messages"): a worker that calls [`Channel::subscribe`] gets
//! [`Event::Message`]s from [`Channel::recv`] — the retained values first, then
//! [`Event::Subscribed`], then each message relayed to it — and sends with
//! [`Channel::send_message`]. The agent (`[agent]`, [`is_agent`]) uses the same channel and is
//! never sent a connection.
//!
//! An event-loop worker sets the channel non-blocking ([`Channel::set_nonblocking`]), registers
//! its fd ([`AsRawFd`](std::os::fd::AsRawFd)) with mio or epoll for readability, and calls [`Channel::recv`] until it
//! returns [`Event::WouldBlock`]. See `src/demo/` for a complete one.
//!
//! Here: [`Channel`] and what it receives (`channel.rs`), the listeners of `none` mode and the
//! worker's identity (`listeners.rs`), [`Drain`] (`drain.rs`). Imports `wire` and `sys` only.

use std::io;

use crate::wire::protocol::{MAX_MESSAGE_LEN, ProtocolError};

mod channel;
mod drain;
mod listeners;

pub(crate) use channel::may_open_a_file;
pub use channel::{Channel, Connection, Event, Incoming, Stream};
pub use drain::Drain;
pub use listeners::{Listener, is_agent, listeners, worker_id};

/// Why the channel could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("RRB_CHANNEL_FD is not set: this program was not started by rrbalancer")]
    NotUnderRrbalancer,
    #[error("RRB_CHANNEL_FD={0:?} is not a file descriptor number")]
    BadChannelFd(String),
    #[error("the channel was already taken by this process")]
    AlreadyTaken,
    #[error("channel I/O failed: {0}")]
    Io(io::Error),
    #[error("the master sent something we do not understand: {0}")]
    Protocol(ProtocolError),
    #[error("a message from the master was longer than {MAX_MESSAGE_LEN} bytes")]
    Truncated,
    /// The kernel dropped sockets of a message that announced none (never from a master that
    /// follows the protocol: its only message with sockets is `conn`).
    #[error(
        "a `conn` message lost sockets on the way in: this process is at its open-file limit \
         (RLIMIT_NOFILE); raise it (ulimit -n)"
    )]
    FdLimit,
}

// The cause is in the message, not also a `source()`: printed with `{e}` or walked as a chain,
// it appears once.
impl From<io::Error> for WorkerError {
    fn from(e: io::Error) -> Self {
        WorkerError::Io(e)
    }
}

impl From<ProtocolError> for WorkerError {
    fn from(e: ProtocolError) -> Self {
        WorkerError::Protocol(e)
    }
}
