//! Fds across processes: socket pairs, `SCM_RIGHTS` messages both ways (close-on-exec on
//! receipt, truncation reported, no SIGPIPE), and fds inherited under a documented contract.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

/// The first fd number a worker inherits (after stdin, stdout, stderr), as systemd's
/// socket-activation convention and Node's `NODE_CHANNEL_FD=3` both expect.
pub const FIRST_INHERITED_FD: RawFd = 3;

/// Creates a worker channel: a connected `SOCK_SEQPACKET` pair, both ends close-on-exec and
/// blocking. The caller makes its own end non-blocking if it wants to.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Creates a connected `SOCK_STREAM` pair, both ends close-on-exec.
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?)
}

/// Sets or clears `O_NONBLOCK` on the open file description behind `fd`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if nonblocking {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// Bytes of control-message space needed to carry `fds` descriptors.
pub fn cmsg_space(fds: usize) -> usize {
    let bytes = (fds * std::mem::size_of::<RawFd>()) as u32;
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
    unsafe { libc::CMSG_SPACE(bytes) as usize }
}

/// Sends one message made of `parts` with `fds` attached, never blocking and never raising
/// `SIGPIPE`. `cmsg` is scratch space the caller keeps, so a send allocates nothing once it has
/// grown. Returns the bytes sent; on a seqpacket or datagram socket that is all or an error.
///
/// The fds stay owned by the caller: the kernel duplicates them into the message.
pub fn send_with_fds<'f, I>(
    socket: BorrowedFd<'_>,
    parts: &[IoSlice<'_>],
    fds: I,
    cmsg: &mut Vec<u8>,
) -> io::Result<usize>
where
    I: IntoIterator<Item = BorrowedFd<'f>>,
    I::IntoIter: ExactSizeIterator,
{
    let fds = fds.into_iter();
    let count = fds.len();
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = parts.as_ptr() as *mut libc::iovec; // IoSlice is ABI-compatible with iovec
    msg.msg_iovlen = parts.len() as _;
    if count > 0 {
        let space = cmsg_space(count);
        cmsg.clear();
        cmsg.resize(space, 0);
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `space` zeroed bytes we own, enough for one cmsghdr
        // carrying `count` ints (CMSG_SPACE above); CMSG_FIRSTHDR is therefore non-null and
        // CMSG_DATA has room for every fd (`take(count)` guards a lying ExactSizeIterator). The
        // fds are only copied as numbers; they stay borrowed from, and owned by, the caller.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN((count * size_of::<RawFd>()) as u32) as _;
            let data = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.take(count).enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points at live iovecs and control data for the duration of the call.
    let sent = unsafe {
        libc::sendmsg(
            socket.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// What one `recv_with_fds` call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// Bytes of message data; 0 with no fds means the peer closed the channel.
    pub len: usize,
    /// The message was longer than the buffer (`MSG_TRUNC`): its tail is lost.
    pub data_truncated: bool,
    /// More fds were attached than `cmsg` could hold (`MSG_CTRUNC`): the kernel closed the rest.
    pub fds_truncated: bool,
}

/// Receives one message into `buf`, appending the fds that came with it to `fds` as owned,
/// close-on-exec descriptors. `cmsg` must be sized with [`cmsg_space`] for the most fds the
/// caller accepts. Blocks or not according to the socket's mode (`dontwait` forces not).
pub fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    cmsg: &mut [u8],
    dontwait: bool,
) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len() as _;
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if dontwait {
        flags |= libc::MSG_DONTWAIT;
    }
    // SAFETY: iov and cmsg are live, writable buffers of the stated lengths.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was just filled by recvmsg.
    unsafe { take_fds(&msg, fds) };
    Ok(received(&msg, len as usize))
}

/// What `msg`, filled by the kernel with `len` bytes, says of itself.
fn received(msg: &libc::msghdr, len: usize) -> Received {
    Received {
        len,
        data_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    }
}

/// Appends the fds that came with `msg` to `fds`, as owned descriptors.
///
/// # Safety
/// `msg` was just filled by `recvmsg`/`recvmmsg`: its control buffer holds what the kernel
/// wrote, and every fd in it is still ours alone, taken by no one.
unsafe fn take_fds(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY: the kernel filled msg_control with well-formed cmsghdrs up to msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk only within it. Each SCM_RIGHTS int is an fd the kernel has
    // just installed in our table for us alone, so wrapping it in OwnedFd makes us its only owner.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(msg, header);
        }
    }
}

/// Receives up to `N` messages in one call, without waiting (`recvmmsg`): message `i` into
/// `bufs[i]`, the fds that came with any appended to `fds` (`cmsgs` sized as for
/// [`recv_with_fds`]). Fewer than `N` back means nothing more was waiting when the call
/// returned: a caller woken by an edge-triggered poll may stop there, without the call that
/// would only say `EAGAIN` — a message arriving later wakes the poll again. What each message
/// was, and how many came; `WouldBlock` when none was waiting.
pub fn recv_many<const N: usize>(
    socket: BorrowedFd<'_>,
    bufs: [&mut [u8]; N],
    cmsgs: [&mut [u8]; N],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<([Received; N], usize)> {
    let mut iov = bufs.map(|b| libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    });
    // SAFETY: an all-zero mmsghdr is a valid empty message header.
    let mut msgs: [libc::mmsghdr; N] = unsafe { std::mem::zeroed() };
    for ((m, iov), cmsg) in msgs.iter_mut().zip(&mut iov).zip(cmsgs) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = cmsg.len() as _;
    }
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    // SAFETY: every header points at live, writable buffers (its iovec's, its cmsg) of the
    // stated lengths, which outlive the call; no timeout is passed.
    let n = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            N as libc::c_uint,
            flags,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n == 0 {
        return Err(io::ErrorKind::WouldBlock.into()); // not seen: one at least, or an error
    }
    let n = n as usize;
    let mut got = [Received::default(); N];
    for (m, r) in msgs[..n].iter().zip(&mut got) {
        // SAFETY: the first `n` headers were just filled by recvmmsg.
        unsafe { take_fds(&m.msg_hdr, fds) };
        *r = received(&m.msg_hdr, m.msg_len as usize);
    }
    Ok((got, n))
}

/// Takes ownership of an fd this process inherited under a documented contract (`RRB_CHANNEL_FD`,
/// `LISTEN_FDS`), after checking that it is open. The caller must take each number once.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < FIRST_INHERITED_FD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} is stdio, not an inherited socket"),
        ));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF if fd is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Close-on-exec, so it does not leak into programs the worker itself starts.
    // SAFETY: as above, on an fd we now know is open.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the fd is open and was placed in this process for it alone by its parent (the
    // env-var contract); the caller takes each number once, so this OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_cross_a_seqpacket_pair_with_their_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = stream_pair().unwrap();
        let mut cmsg = Vec::new();
        let parts = [IoSlice::new(b"conn 1\n"), IoSlice::new(b"0 unix\n")];
        send_with_fds(a.as_fd(), &parts, [x.as_fd()], &mut cmsg).unwrap();
        send_with_fds(a.as_fd(), &[IoSlice::new(b"stop\n")], [], &mut cmsg).unwrap();

        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let mut space = vec![0u8; cmsg_space(4)];
        let got = recv_with_fds(b.as_fd(), &mut buf, &mut fds, &mut space, true).unwrap();
        assert_eq!(&buf[..got.len], b"conn 1\n0 unix\n");
        assert_eq!(fds.len(), 1);
        assert!(!got.fds_truncated && !got.data_truncated);
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received fds must be close-on-exec"
        );

        let got = recv_with_fds(b.as_fd(), &mut buf, &mut fds, &mut space, true).unwrap();
        assert_eq!(&buf[..got.len], b"stop\n");
        assert_eq!(fds.len(), 1, "the stop message carries no fd");
    }

    #[test]
    fn too_small_control_space_is_reported_not_silent() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, y) = stream_pair().unwrap();
        let mut cmsg = Vec::new();
        // Control space is rounded up to 8 bytes: room for one fd also holds a second.
        send_with_fds(
            a.as_fd(),
            &[IoSlice::new(b"conn 3\n")],
            [x.as_fd(), y.as_fd(), x.as_fd()],
            &mut cmsg,
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        let mut space = vec![0u8; cmsg_space(1)];
        let got = recv_with_fds(b.as_fd(), &mut buf, &mut fds, &mut space, true).unwrap();
        assert!(got.fds_truncated);
    }

    #[test]
    fn sending_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(b);
        let err =
            send_with_fds(a.as_fd(), &[IoSlice::new(b"stop\n")], [], &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
    }
}
