//! The listening sockets: made once at start with socket2 — or taken from systemd when it
//! started the master with them (socket activation) — owned by the master for its whole life
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
use crate::wire::env;
use crate::wire::protocol::Peer;

/// A listener's name for its whole life, never reused by another: connections carry it, and
/// each worker knows the listeners it was started with by it (a reload may add and remove
/// listeners, so a position in `listen` names different sockets over time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerId(pub u32);

/// The place of `id` among the listeners a worker was started with (`known`): what its
/// connections' lines call it (the index in a native `conn` line; the Node server it goes to).
/// One it does not know — only a connection a reload's removed listener had queued, handed on
/// after the workers that knew it left — is called 0, the first it knows, rather than not
/// handed at all.
pub fn place_of(known: impl IntoIterator<Item = ListenerId>, id: ListenerId) -> usize {
    known.into_iter().position(|l| l == id).unwrap_or(0)
}

/// One listening socket.
#[derive(Debug)]
pub struct Listener {
    socket: Socket,
    /// The address actually bound (port 0 resolved), for logs and `LISTEN_FDNAMES`.
    pub local: String,
    /// A Unix socket file we created and must remove when we exit.
    unix_path: Option<PathBuf>,
    /// Passed by the master this one upgrades: shared with it and its workers, as it is.
    pub carried: bool,
    /// Passed by systemd (socket activation), which keeps its own copy open.
    pub activated: bool,
}

/// Why a listener could not be made. A runtime failure (exit code 1), not a config error.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct ListenError {
    addr: String,
    error: io::Error,
}

impl ListenError {
    pub fn new(addr: &str, error: io::Error) -> ListenError {
        ListenError {
            addr: addr.to_string(),
            error,
        }
    }

    /// The system refused the address to this user (a port below 1024 without root).
    pub fn is_refused_to_user(&self) -> bool {
        self.error.kind() == io::ErrorKind::PermissionDenied
    }
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
            carried: false,
            activated: false,
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

    /// Made blocking when the workers accept on it by socket activation (`activation`), as
    /// systemd hands listeners to such servers; left non-blocking otherwise: Node (libuv)
    /// expects that and would block its event loop in accept(), and the master accepts only
    /// until `WouldBlock`.
    pub fn set_mode_for(&self, activation: bool) -> io::Result<()> {
        if activation {
            self.set_nonblocking(false)?;
        }
        Ok(())
    }

    /// `listen()` again: only the length of its queue changes (a reload's `backlog`).
    pub fn set_backlog(&self, backlog: u32) -> io::Result<()> {
        self.socket.listen(backlog as i32)
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

/// A listening socket the master was started with (systemd's socket activation).
#[derive(Debug)]
pub struct Inherited {
    socket: Socket,
    /// Its address, from the socket itself.
    pub addr: Option<ListenAddr>,
    /// Its name in `LISTEN_FDNAMES`, if given.
    pub name: Option<String>,
}

/// The listening sockets this process was started with: `LISTEN_PID` is our pid, `LISTEN_FDS`
/// of them from fd 3 on, `LISTEN_FDNAMES` their names (systemd's contract, also
/// `systemd-socket-activate`'s). `None` when there are none for us. Each must be a listening
/// stream socket. (Workers never see these variables: see `fleet::base_env`.)
pub fn inherited() -> io::Result<Option<Vec<Inherited>>> {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(pid), Some(count)) = (var(env::LISTEN_PID), var(env::LISTEN_FDS)) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None); // meant for the process that started us, not for us
    }
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let count: i32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| bad(format!("LISTEN_FDS={count:?} is not a count of sockets")))?;
    let names: Vec<String> = var(env::LISTEN_FDNAMES)
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut got = Vec::new();
    for i in 0..count {
        let fd = crate::sys::take_inherited_fd(3 + i)
            .map_err(|e| bad(format!("LISTEN_FDS: fd {}: {e}", 3 + i)))?;
        let socket = Socket::from(fd);
        let listening =
            socket.r#type().ok() == Some(Type::STREAM) && socket.is_listener().unwrap_or(false);
        if !listening {
            return Err(bad(format!(
                "LISTEN_FDS: fd {} is not a listening stream socket",
                3 + i
            )));
        }
        let addr = socket.local_addr().ok().and_then(|a| match a.as_socket() {
            Some(sa) => Some(ListenAddr::Tcp(sa)),
            None => a.as_pathname().map(|p| ListenAddr::Unix(p.to_path_buf())),
        });
        let name = names.get(i as usize).filter(|n| !n.is_empty()).cloned();
        got.push(Inherited { socket, addr, name });
    }
    Ok(Some(got))
}

/// What is known of a passed socket: its address, its `LISTEN_FDNAMES` name.
pub type Passed = (Option<ListenAddr>, Option<String>);

/// Which inherited socket serves each `listen` entry (indexes into `got`): the one bound to that
/// address, else the one named like it in `LISTEN_FDNAMES` (`"127.0.0.1:3000"`), else, in order,
/// the ones left — systemd decides the addresses. As many sockets as entries, or an error
/// naming both lists.
pub fn assign(listen: &[ListenAddr], got: &[Passed]) -> Result<Vec<usize>, String> {
    let show = |g: &Passed| match g {
        (Some(addr), _) => addr.to_string(),
        (None, Some(name)) => name.clone(),
        (None, None) => "?".into(),
    };
    if got.len() != listen.len() {
        let passed: Vec<String> = got.iter().map(show).collect();
        let wanted: Vec<String> = listen.iter().map(ToString::to_string).collect();
        return Err(format!(
            "started with {} listening socket(s) ({}), but `listen` names {} ({}): name as many \
             addresses as the unit passes sockets (ListenStream= in the .socket unit)",
            got.len(),
            passed.join(", "),
            listen.len(),
            wanted.join(", ")
        ));
    }
    let mut taken = vec![false; got.len()];
    let mut chosen: Vec<Option<usize>> = vec![None; listen.len()];
    // First by address, then by name.
    for by_name in [false, true] {
        let fits = |want: &ListenAddr, g: &Passed| match by_name {
            false => g.0.as_ref() == Some(want),
            true => g.1.as_deref() == Some(want.to_string().as_str()),
        };
        for (i, want) in listen.iter().enumerate() {
            if chosen[i].is_some() {
                continue;
            }
            if let Some(j) = (0..got.len()).find(|&j| !taken[j] && fits(want, &got[j])) {
                taken[j] = true;
                chosen[i] = Some(j);
            }
        }
    }
    let mut left = (0..got.len()).filter(|&j| !taken[j]);
    Ok(chosen
        .into_iter()
        .map(|c| {
            c.or_else(|| left.next())
                .expect("as many sockets as entries")
        })
        .collect())
}

impl Listener {
    /// A listener from a socket the master was started with: non-blocking like ours; its
    /// socket file (if Unix) is not ours to remove.
    pub fn from_inherited(got: Inherited) -> io::Result<Listener> {
        got.socket.set_nonblocking(true)?;
        let local = match &got.addr {
            Some(ListenAddr::Unix(path)) => format!("unix:{}", path.display()),
            Some(addr) => addr.to_string(),
            None => "an inherited socket".into(),
        };
        Ok(Listener {
            socket: got.socket,
            local,
            unix_path: None,
            carried: false,
            activated: true,
        })
    }

    /// A listener passed by the master this one upgrades: as it was (blocking or not, bound,
    /// listening), with `backlog` applied again. Its socket file (if Unix) stays the old
    /// master's until this one takes over ([`Listener::claim_path`]).
    pub fn from_carried(fd: OwnedFd, local: String, backlog: u32) -> io::Result<Listener> {
        let socket = Socket::from(fd);
        let listening =
            socket.r#type().ok() == Some(Type::STREAM) && socket.is_listener().unwrap_or(false);
        if !listening {
            return Err(io::Error::other(format!(
                "{local}: the passed socket is not a listening stream socket"
            )));
        }
        // listen() again on a listening socket only changes its backlog.
        socket.listen(backlog as i32)?;
        Ok(Listener {
            socket,
            local,
            unix_path: None,
            carried: true,
            activated: false,
        })
    }

    /// The Unix socket file is ours to remove at exit (an upgrade's new master, once it took
    /// over from the one that created it).
    pub fn claim_path(&mut self, path: PathBuf) {
        self.unix_path = Some(path);
    }

    /// The Unix socket file is no longer ours to remove (it serves the master we upgraded to).
    /// Returns it, if it was.
    pub fn release_path(&mut self) -> Option<PathBuf> {
        self.unix_path.take()
    }

    /// Whether the Unix socket file is ours to remove at exit.
    pub fn owns_path(&self) -> bool {
        self.unix_path.is_some()
    }
}

/// The peer of an accepted socket passed by another master.
pub fn peer_of(fd: BorrowedFd<'_>) -> Peer {
    let socket = socket2::SockRef::from(&fd);
    socket
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(Peer::Unix, Peer::Inet)
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

    #[test]
    fn inherited_sockets_go_to_listen_entries_by_address_then_name_then_order() {
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        let got = |addr: &str, name: Option<&str>| (Some(tcp(addr)), name.map(str::to_owned));
        let listen = [tcp("127.0.0.1:80"), tcp("[::1]:81")];
        // By address, whatever the order systemd passed them in.
        let passed = [got("[::1]:81", None), got("127.0.0.1:80", None)];
        assert_eq!(assign(&listen, &passed), Ok(vec![1, 0]));
        // By name (FileDescriptorName=127.0.0.1:80), when the addresses differ.
        let passed = [
            got("0.0.0.0:9", None),
            got("0.0.0.0:8", Some("127.0.0.1:80")),
        ];
        assert_eq!(assign(&listen, &passed), Ok(vec![1, 0]));
        // Else in order: systemd decides the addresses.
        let passed = [got("0.0.0.0:9", None), got("0.0.0.0:8", None)];
        assert_eq!(assign(&listen, &passed), Ok(vec![0, 1]));
        // A count that differs is a configuration error naming both lists.
        let e = assign(&listen, &[got("0.0.0.0:9", None)]).unwrap_err();
        assert!(
            e.contains("1 listening socket(s) (0.0.0.0:9)")
                && e.contains("`listen` names 2 (127.0.0.1:80, [::1]:81)"),
            "{e}"
        );
    }
}
