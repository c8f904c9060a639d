//! Process-wide settings, made once at start-up: the open-file limit, the user the master
//! drops to, and daemonizing (`start --daemon`).

use std::io;

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

/// Becomes `uid`:`gid` for good — real, effective and saved ids, no supplementary group —
/// and checks that root cannot be taken back (`[master] user`, once the listeners are bound).
/// Nothing to do when the process already is that user and group.
pub fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    use nix::unistd::{Gid, Uid, getegid, geteuid, setgroups, setresgid, setresuid};
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if geteuid() == u && getegid() == g {
        return Ok(());
    }
    setgroups(&[])?;
    setresgid(g, g, g)?;
    setresuid(u, u, u)?;
    if uid != 0 && setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err(io::Error::other(
            "root could be taken back after dropping it",
        ));
    }
    Ok(())
}

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
