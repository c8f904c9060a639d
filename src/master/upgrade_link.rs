//! The I/O of an in-place upgrade (the decisions and the protocol are `upgrade.rs`'s).
//!
//! On the old master: start the new one with the listeners and one end of the channel, read
//! what it says, carry out each [`UpgradeStep`], and after the handover pass it the sockets no old
//! worker could take. On the new master: the [`Predecessor`] — what the old one passed (taken
//! before the configuration is read, so that a failure can be reported) — the listeners made
//! from it, the report of its own start, and the take-over (renaming the pid file and the
//! control socket into place). Here: the channel both use; the two sides in
//! `new_master.rs` and `old_master.rs`, each named for the master that runs it.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use mio::Interest;
use mio::unix::SourceFd;

use crate::sys;
use crate::wire::upgrade::{MAX_MESSAGE, Message};

mod new_master;
mod old_master;

pub use new_master::Predecessor;
pub use old_master::own_executable;

/// Most fds one message may carry (the kernel's `SCM_MAX_FD`).
const MAX_FDS: usize = 253;
/// How long the new master waits for `hello` at its start.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// One end of the upgrade channel (`SOCK_SEQPACKET`, non-blocking once registered).
#[derive(Debug)]
pub struct Link {
    fd: OwnedFd,
    buf: Box<[u8]>,
    cmsg_in: Vec<u8>,
    cmsg_out: Vec<u8>,
    token: Option<mio::Token>,
}

/// What one read of the channel found.
enum Read {
    Message(Result<Message, String>, Vec<OwnedFd>),
    /// Nothing more now.
    Empty,
    /// The other side closed it (or it broke).
    Closed,
}

impl Link {
    fn new(fd: OwnedFd) -> Link {
        Link {
            fd,
            buf: vec![0; MAX_MESSAGE].into_boxed_slice(),
            cmsg_in: vec![0; sys::cmsg_space(MAX_FDS)],
            cmsg_out: Vec::new(),
            token: None,
        }
    }

    fn send(&mut self, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let bytes = message.encode();
        sys::send_with_fds(
            self.fd.as_fd(),
            &[IoSlice::new(&bytes)],
            fds.iter().copied(),
            &mut self.cmsg_out,
        )
        .map(drop)
    }

    /// One message, without waiting (`Empty` when none is there).
    fn read(&mut self) -> Read {
        let mut fds = Vec::new();
        loop {
            let got = sys::recv_with_fds(
                self.fd.as_fd(),
                &mut self.buf,
                &mut fds,
                &mut self.cmsg_in,
                true,
            );
            return match got {
                Ok(r) if r.len == 0 && fds.is_empty() => Read::Closed,
                Ok(r) if r.data_truncated || r.fds_truncated => Read::Message(
                    Err("a message too long, or with too many sockets".into()),
                    fds,
                ),
                Ok(r) => Read::Message(Message::decode(&self.buf[..r.len]), fds),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Empty,
                Err(_) => Read::Closed,
            };
        }
    }

    fn register(&mut self, master_poll: &mio::Registry, token: mio::Token) -> io::Result<()> {
        sys::set_nonblocking(self.fd.as_fd(), true)?;
        master_poll.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.token = Some(token);
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl super::Master {
    /// Stops watching `link` and closes it.
    fn release_link(&mut self, link: Link) {
        let _ = self
            .io
            .poll
            .registry()
            .deregister(&mut SourceFd(&link.raw_fd()));
        if let Some(token) = link.token {
            self.io.sources.remove(token);
        }
    }
}
