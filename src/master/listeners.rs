//! The listening sockets: made once at start with socket2, owned by the master for its whole life
//! (workers come and go; in `none` mode each new worker inherits them).
//!
//! Accepted sockets are left in **blocking** mode: `O_NONBLOCK` belongs to the open file
//! description that master and worker share after the hand-off, and a worker that receives a
//! `std::net::TcpStream` expects an ordinary blocking socket. The listener itself is
//! non-blocking, so `accept` still returns `WouldBlock` when the queue is empty.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::ListenAddr;
use crate::protocol::Peer;

/// One listening socket.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// The address actually bound (port 0 resolved), for logs and `LISTEN_FDNAMES`.
    pub local: String,
    /// A Unix socket file we created and must remove when we exit.
    unix_path: Option<PathBuf>,
}

/// Why a listener could not be made. A runtime failure (exit code 1), not a config error.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct ListenError {
    addr: String,
    error: io::Error,
}

impl Listener {
    /// Binds and listens with `SO_REUSEADDR`, `IPV6_V6ONLY` for IPv6, the given backlog, and
    /// close-on-exec (only workers in `none` mode inherit it, explicitly).
    pub fn bind(addr: &ListenAddr, backlog: u32) -> Result<Listener, ListenError> {
        let fail = |error| ListenError {
            addr: addr.to_string(),
            error,
        };
        let (socket, unix_path) = match addr {
            ListenAddr::Tcp(sa) => {
                let socket =
                    Socket::new(Domain::for_address(*sa), Type::STREAM, None).map_err(fail)?;
                socket.set_reuse_address(true).map_err(fail)?;
                if sa.is_ipv6() {
                    socket.set_only_v6(true).map_err(fail)?;
                }
                socket.bind(&SockAddr::from(*sa)).map_err(fail)?;
                (socket, None)
            }
            ListenAddr::Unix(path) => {
                remove_stale_unix_socket(path).map_err(fail)?;
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
                socket
                    .bind(&SockAddr::unix(path).map_err(fail)?)
                    .map_err(fail)?;
                (socket, Some(path.clone()))
            }
        };
        socket.listen(backlog as i32).map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        let local = match &unix_path {
            Some(path) => format!("unix:{}", path.display()),
            None => socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| addr.to_string(), |a| a.to_string()),
        };
        Ok(Listener {
            socket,
            local,
            unix_path,
        })
    }

    /// Accepts one connection without reading from it. The returned socket is blocking and
    /// close-on-exec.
    pub fn accept(&self) -> io::Result<(OwnedFd, Peer)> {
        let (socket, addr) = self.socket.accept()?;
        let peer = addr.as_socket().map_or(Peer::Unix, Peer::Inet);
        Ok((socket.into(), peer))
    }

    /// In `none` mode the master never accepts, and workers expect what systemd gives them: a
    /// blocking listener (`O_NONBLOCK` is shared by every process holding the socket).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.socket.set_nonblocking(nonblocking)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A socket file left by a master that died: remove it. One that still answers is in use.
fn remove_stale_unix_socket(path: &std::path::Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::from(io::ErrorKind::AddrInUse)),
        Err(_) => std::fs::remove_file(path),
    }
}

/// Whether an accept error means "out of file descriptors" (back off, do not spin).
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an accept error concerns only that one client (it reset before we took it).
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_reports_the_port_it_got() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        assert!(l.local.starts_with("127.0.0.1:"));
        assert!(!l.local.ends_with(":0"));
    }

    #[test]
    fn a_port_in_use_is_an_error_that_names_the_address() {
        let a = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let err = Listener::bind(&a.local.parse().unwrap(), 16).unwrap_err();
        assert!(err.to_string().contains(&a.local), "{err}");
    }

    #[test]
    fn accepted_sockets_are_blocking_and_unread() {
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), 16).unwrap();
        assert_eq!(
            l.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the listener is non-blocking"
        );
        let _client = std::net::TcpStream::connect(&l.local).unwrap();
        let (fd, peer) = loop {
            match l.accept() {
                Ok(x) => break x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(matches!(peer, Peer::Inet(_)));
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }

    #[test]
    fn a_stale_unix_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        // std leaves the file behind when the listener closes, as a master that died would.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = Listener::bind(&addr, 16).unwrap();
        assert!(
            Listener::bind(&addr, 16).is_err(),
            "in use while it listens"
        );
        drop(live);
        assert!(!path.exists(), "removed on drop");
    }
}
