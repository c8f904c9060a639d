//! The apps' masters as processes: each started as `rrbalancer run --config FILE --app NAME`
//! (with the flags the master of all was given that shape an app), in a process group of its
//! own (a terminal's Ctrl-C reaches the master of all, which stops them gracefully) and with
//! the death signal (none outlives it, killed or not).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys::{SpawnSpec, spawn};
use crate::wire::env;

/// What the master of each app is started with besides its file and name.
#[derive(Debug, Clone, Default)]
pub struct Passthrough {
    /// `--env`, `--workers`, `--sched-policy`, `--watch` as given.
    pub args: Vec<String>,
}

/// Starts the master of `app`, which writes why it failed, if it does, to `reason`; its pid.
pub fn start(file: &Path, app: &str, passthrough: &Passthrough, reason: &Path) -> io::Result<i32> {
    let exe = std::env::current_exe()?;
    let mut args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        file.display().to_string(),
        "--app".to_owned(),
        app.to_owned(),
    ];
    args.extend(passthrough.args.iter().cloned());
    // Ours alone: systemd speaks to the master of all, which says when every app serves.
    let ours = [
        env::NOTIFY_SOCKET,
        env::WATCHDOG_USEC,
        env::WATCHDOG_PID,
        env::LISTEN_FDS,
        env::LISTEN_PID,
        env::LISTEN_FDNAMES,
        env::APP,
        env::EXIT_REASON,
    ];
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !ours.iter().any(|o| k == o))
        .collect();
    vars.push((env::APP.into(), app.into()));
    let _ = std::fs::remove_file(reason);
    vars.push((env::EXIT_REASON.into(), reason.into()));
    let child = spawn(SpawnSpec {
        program: &exe,
        arg0: "rrbalancer".as_ref(),
        args: &args,
        env: &vars,
        cwd: None,
        inherit: &[],
        listen_pid: false,
        new_master: false,
        identity: None,
        stdout: Stdio::inherit(),
        stderr: Stdio::inherit(),
    })?;
    Ok(child.id() as i32)
}

/// What the master whose file is `reason` said of why it failed, if anything (the file read
/// and removed; its first line, cut short).
pub fn reason(reason: &Path) -> Option<String> {
    let text = std::fs::read_to_string(reason).ok()?;
    let _ = std::fs::remove_file(reason);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| crate::text::cut(line, 300))
}

/// Sends `signal` to the master `pid` (gone already: nothing to do).
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// The children that exited: pid and exit code (`None`: killed by a signal).
pub fn reap() -> Vec<(i32, Option<i32>)> {
    let mut exited = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exited.push((pid.as_raw(), Some(code))),
            Ok(WaitStatus::Signaled(pid, ..)) => exited.push((pid.as_raw(), None)),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    exited
}
