//! Every `unsafe` block and every raw file-descriptor number in rrbalancer lives here.
//!
//! Three jobs need the raw OS: passing sockets over a Unix channel (`sendmsg`/`recvmsg` with
//! `SCM_RIGHTS`), starting a worker with exactly the fds it should inherit at exactly the numbers
//! it expects, and a few process-wide settings (fd limit, death signal). Everything outside this
//! module deals in `OwnedFd`/`BorrowedFd` and typed sockets. Each `unsafe` block says, in a
//! `SAFETY:` line, who owns which fd after it.
//!
//! Why not the `sendfd` crate here: it takes std `UnixStream`/`UnixDatagram` only (our channel is
//! `SOCK_SEQPACKET`), sends without `MSG_NOSIGNAL`, receives without `MSG_CMSG_CLOEXEC` and does
//! not report `MSG_CTRUNC`; each of those is a lost or leaked connection for us.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    // SAFETY: the kernel filled msg_control with well-formed cmsghdrs up to msg_controllen;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk only within it. Each SCM_RIGHTS int is an fd the kernel has
    // just installed in our table for us alone, so wrapping it in OwnedFd makes us its only owner.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    Ok(Received {
        len: len as usize,
        data_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the master holds every un-acked socket).
/// Returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// Everything a worker is started with. The environment is given whole: nothing else leaks in.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// Absolute path of the program (already looked up on `PATH`).
    pub program: &'a Path,
    /// `argv[0]` as the user wrote it.
    pub arg0: &'a OsStr,
    pub args: &'a [String],
    pub env: &'a [(OsString, OsString)],
    pub cwd: Option<&'a Path>,
    /// Placed at fds 3, 4, … in this order, without close-on-exec; every other fd the master holds
    /// is close-on-exec and does not cross.
    pub inherit: &'a [BorrowedFd<'a>],
    /// Also set `LISTEN_PID` to the worker's own pid, which only the child can know.
    pub listen_pid: bool,
    /// A new master (in-place upgrade) rather than a worker: it outlives us (no death signal).
    pub new_master: bool,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// Starts a worker: its own process group (so a terminal's Ctrl-C reaches only the master, which
/// then stops the workers gracefully), `SIGKILL` when the master dies, stdin from `/dev/null`,
/// the inherited fds in place, an empty signal mask and default dispositions. A new master
/// (`new_master`) gets its process group (so that one given up on is stopped with whatever it
/// started) but not the death signal.
///
/// std's `Command` does the fork, stdio and the reporting of a failed exec back to us; the
/// `pre_exec` hook does the rest and calls `execve` itself, because `LISTEN_PID` must hold the
/// child's own pid and only the child can write it into the environment.
pub fn spawn(spec: SpawnSpec<'_>) -> io::Result<Child> {
    let program = cstring(spec.program.as_os_str())?;
    let mut argv_owned = vec![cstring(spec.arg0)?];
    for arg in spec.args {
        argv_owned.push(cstring(OsStr::new(arg))?);
    }
    let mut env_owned = Vec::with_capacity(spec.env.len() + 1);
    for (key, value) in spec.env {
        let mut pair = key.clone();
        pair.push("=");
        pair.push(value);
        env_owned.push(cstring(&pair)?);
    }
    // "LISTEN_PID=" then room for any pid and the terminating NUL, filled in by the child.
    const LISTEN_PID: &[u8] = b"LISTEN_PID=";
    let mut listen_pid = LISTEN_PID.to_vec();
    listen_pid.resize(LISTEN_PID.len() + 24, 0);

    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|s| s.as_ptr()).collect();
    if spec.listen_pid {
        envp.push(listen_pid.as_ptr().cast());
    }
    envp.push(std::ptr::null());

    let sources: Vec<RawFd> = spec.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let master_pid = std::process::id() as libc::pid_t;

    let child_state = ChildState {
        program,
        _argv_owned: argv_owned,
        _env_owned: env_owned,
        argv,
        envp,
        listen_pid,
        with_listen_pid: spec.listen_pid,
    };

    let new_master = spec.new_master;
    let mut command = Command::new(spec.program);
    command
        .stdin(Stdio::null())
        .stdout(spec.stdout)
        .stderr(spec.stderr)
        .process_group(0);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    // SAFETY: the closure runs in the forked child of a single-threaded master, before exec. It
    // calls only async-signal-safe functions (prctl, getppid, getpid, sigprocmask, signal, fcntl,
    // dup2, execve) and writes only into buffers allocated before the fork; it allocates nothing.
    // fds: `sources` are borrowed from the master for the duration of `spawn`; the child's
    // copies at 3.. become the new program's, and the temporary duplicates are close-on-exec.
    unsafe {
        let mut state = child_state;
        command.pre_exec(move || {
            // Capture the whole struct (not its raw-pointer fields one by one) so its Send
            // impl applies.
            let state = &mut state;
            if !new_master {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The master may have died between fork and prctl: then nobody would kill us.
                if libc::getppid() != master_pid {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);

            // Move every source out of the way first (above the target range), so placing one
            // cannot overwrite another that happens to sit on a target number.
            let above = FIRST_INHERITED_FD + sources.len() as RawFd;
            for (tmp, &src) in scratch.iter_mut().zip(&sources) {
                *tmp = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
                if *tmp < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // dup2 to a different number gives a descriptor without FD_CLOEXEC.
            for (i, &tmp) in scratch.iter().enumerate() {
                if libc::dup2(tmp, FIRST_INHERITED_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }

            // Whatever else is open (fds the master itself inherited without close-on-exec, such
            // as a job server's pipe) must not reach the worker either.
            cloexec_from(FIRST_INHERITED_FD + sources.len() as RawFd);

            if state.with_listen_pid {
                let pid = libc::getpid();
                write_decimal(&mut state.listen_pid[LISTEN_PID.len()..], pid as u64);
            }
            libc::execve(
                state.program.as_ptr(),
                state.argv.as_ptr(),
                state.envp.as_ptr(),
            );
            Err(io::Error::last_os_error())
        });
    }
    command.spawn()
}

/// Marks every fd from `first` up close-on-exec, so none of them reaches the new program.
/// Async-signal-safe: used between fork and exec. Marking rather than closing keeps std's own
/// pipe, through which a failed `execve` is reported to the parent, working until the exec.
///
/// # Safety
/// Only in a freshly forked child.
unsafe fn cloexec_from(first: RawFd) {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if done != 0 {
        // Kernels before 5.11: one by one, up to the fd limit.
        // SAFETY: getrlimit only writes into our struct; F_SETFD only sets a flag (EBADF for
        // numbers that are not open is harmless).
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as RawFd
            } else {
                4096
            };
            for fd in first..max {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Buffers the child reads between fork and exec. The raw pointers point into the owned
/// strings kept beside them, which live as long as the closure that holds this.
struct ChildState {
    program: CString,
    _argv_owned: Vec<CString>,
    _env_owned: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    listen_pid: Vec<u8>,
    with_listen_pid: bool,
}

// SAFETY: the pointers are only dereferenced by execve in the forked child; the master never
// shares ChildState between threads (it has one), and the pointees are owned by the same struct.
unsafe impl Send for ChildState {}
unsafe impl Sync for ChildState {}

/// Writes `n` in decimal followed by NUL into `out`, without allocating (safe after fork).
/// Which side of [`daemonize`] we are on.
pub enum Daemon {
    /// The original process: read the child's start-up report from `report`.
    Parent { child: i32, report: std::fs::File },
    /// The detached process: write the start-up report to `report`, then drop it.
    Child { report: std::fs::File },
}

/// Forks; the child starts a new session (no controlling terminal, its own process group) and
/// takes stdin from `/dev/null` and stdout/stderr from `log`. A pipe connects the two so the
/// parent can wait for "listening" or the reason for failing.
///
/// Call it only while the process has one thread (before the master starts): after `fork` the
/// child continues as a full Rust program, which is sound only if no other thread held a lock.
pub fn daemonize(log: &std::fs::File) -> io::Result<Daemon> {
    use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, pipe2, setsid};
    let (read, write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: the caller guarantees a single-threaded process (see above), so the child may
    // run arbitrary code; both sides only use fds they own afterwards.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(write);
            Ok(Daemon::Parent {
                child: child.as_raw(),
                report: read.into(),
            })
        }
        ForkResult::Child => {
            drop(read);
            setsid()?;
            dup2_stdin(&null)?;
            dup2_stdout(log)?;
            dup2_stderr(log)?;
            Ok(Daemon::Child {
                report: write.into(),
            })
        }
    }
}

fn write_decimal(out: &mut [u8], mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    out[len] = 0;
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_failed_exec_is_reported_by_spawn_not_hidden() {
        let err = spawn(SpawnSpec {
            program: Path::new("/nonexistent/program"),
            arg0: OsStr::new("program"),
            args: &[],
            env: &[],
            cwd: None,
            inherit: &[],
            listen_pid: false,
            new_master: false,
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }

    #[test]
    fn write_decimal_terminates_the_number() {
        let mut out = [0xffu8; 24];
        write_decimal(&mut out, 40213);
        assert_eq!(&out[..6], b"40213\0");
        write_decimal(&mut out, 0);
        assert_eq!(&out[..2], b"0\0");
    }

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
