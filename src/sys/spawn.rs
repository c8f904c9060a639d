//! Starting a worker (or an upgrade's new master): fork with std's `Command`, then in the child
//! the fds placed at 3, 4, …, everything else close-on-exec, its own process group, the death
//! signal, and `execve` with `LISTEN_PID` written in — nothing allocated after the fork.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::fds::FIRST_INHERITED_FD;

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
    /// The uid and gid to run it as (`[worker] user`, `group`), with no supplementary group;
    /// `None`: ours. Changing them needs root (checked when the config was read).
    pub identity: Option<(u32, u32)>,
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
    // A master that dropped to this user already (`[master] user`) could not change it again,
    // nor needs to: its children are that user. Root still clears the groups.
    let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let identity = (spec.identity)
        .filter(|&(uid, gid)| euid.is_root() || (euid.as_raw(), egid.as_raw()) != (uid, gid));
    let mut command = Command::new(spec.program);
    command
        .stdin(Stdio::null())
        .stdout(spec.stdout)
        .stderr(spec.stderr)
        .process_group(0);
    if let Some(cwd) = spec.cwd {
        command.current_dir(cwd);
    }
    // SAFETY: the closure runs in the forked child, before exec (of a single-threaded master,
    // or of the master of several apps, whose other threads hold no lock the closure takes). It
    // calls only async-signal-safe functions (setgroups, setgid, setuid, prctl, getppid, getpid,
    // sigprocmask, signal, fcntl, dup2, execve) and writes only into buffers allocated before
    // the fork; it allocates nothing.
    // fds: `sources` are borrowed from the master for the duration of `spawn`; the child's
    // copies at 3.. become the new program's, and the temporary duplicates are close-on-exec.
    unsafe {
        let mut state = child_state;
        command.pre_exec(move || {
            // Capture the whole struct (not its raw-pointer fields one by one) so its Send
            // impl applies.
            let state = &mut state;
            // The user first: a change of credentials clears the death signal set below.
            if let Some((uid, gid)) = identity {
                become_user(uid, gid)?;
            }
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

/// Takes on `uid` and `gid` with no supplementary group: the groups before the gid, the gid
/// before the uid (after which neither could change). Async-signal-safe: used between fork and
/// exec.
///
/// # Safety
/// Only in a freshly forked child.
unsafe fn become_user(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: setgroups with a count of 0 reads no pointer; setgid and setuid take plain ids.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
            identity: None,
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
}
