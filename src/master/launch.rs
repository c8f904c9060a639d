//! How a worker process is started: its environment (the master's own, cleaned, with
//! `[worker] env` on top and the variables of [`wire::env`](crate::wire::env)), its channel
//! (a socketpair speaking the native protocol or Node's IPC), the listeners it inherits in
//! `none` mode, its captured output. Returns the core's record of the worker and the shell's
//! record of its process.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::channel::Channel;
use super::node::NodeWire;
use super::node_servers::SharedListener;
use super::output::Pipe;
use super::parts::Listening;
use super::process::Process;
use crate::config::{Command, Config, Identity};
use crate::engine::fleet::Worker;
use crate::engine::ids::Place;
use crate::engine::limits::{self, Limits};
use crate::sys;
use crate::wire::env;

/// What every worker's environment starts from: the master's own, without variables that would
/// mislead a worker (an inherited socket-activation or Node channel meant for the master), with
/// `own` (`[worker] env` or `[agent] env`) on top.
pub fn base_env(config: &Config, own: &[(String, String)]) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !env::NOT_INHERITED_BY_WORKERS.iter().any(|n| k == n))
        .filter(|(k, _)| !own.iter().any(|(ck, _)| k == ck.as_str()))
        .collect();
    let named = own.iter().any(|(k, _)| k == env::LOG_FORMAT);
    if config.log.format == crate::config::LogFormat::Json && !named {
        // The demo worker writes the same format; other programs may use it.
        env.push((env::LOG_FORMAT.into(), "json".into()));
    }
    env.extend(
        own.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env
}

/// The environment of a process started as `id` (`[worker] user`), as `su` makes it: its
/// `HOME`, `USER` and `LOGNAME` (unless the section's `env` sets them), and not the master's
/// `XDG_RUNTIME_DIR`.
fn as_user(env: &mut Vec<(OsString, OsString)>, id: &Identity, own: &[(String, String)]) {
    let replaced = [env::HOME, env::USER, env::LOGNAME, env::XDG_RUNTIME_DIR];
    let set_by_section = |k: &str| own.iter().any(|(ok, _)| ok == k);
    env.retain(|(k, _)| !replaced.iter().any(|r| k == r && !set_by_section(r)));
    if let Some((name, home)) = &id.login {
        for (key, value) in [
            (env::HOME, home.as_os_str().to_owned()),
            (env::USER, name.into()),
            (env::LOGNAME, name.into()),
        ] {
            if !set_by_section(key) {
                env.push((key.into(), value));
            }
        }
    }
}

/// Whether the process at `place` speaks Node's IPC (`[worker] protocol` or
/// `[agent] protocol`) rather than the native protocol.
pub fn speaks_node(config: &Config, place: Place) -> bool {
    match place {
        Place::Slot(_) => config.mode().node(),
        Place::Agent => (config.agent.as_ref()).is_some_and(|a| a.protocol.is_node()),
    }
}

/// What is started for a place: `[worker]` for a slot, `[agent]` for the agent.
struct Launch<'a> {
    command: &'a Command,
    /// Its channel speaks Node's IPC (else the native protocol).
    node: bool,
    /// Node's cluster protocol (workers only).
    cluster: bool,
    /// It inherits the listeners at fd 3… (`none` mode, native workers).
    activation: bool,
    /// Workers accept on the listeners themselves (`none` mode).
    workers_accept: bool,
    /// Its Node wire knows the listeners (a Node worker's servers are matched to them; in
    /// `none` mode it gets them as handles). Not the agent's: it has no server.
    listeners: bool,
}

/// The command that starts the process of `place`, if it has one (an agent is configured).
pub(super) fn command_of(config: &Config, place: Place) -> Option<&crate::config::Command> {
    match place {
        Place::Slot(_) => Some(&config.worker.command),
        Place::Agent => config.agent.as_ref().map(|a| &a.command),
    }
}

impl<'a> Launch<'a> {
    fn of(config: &'a Config, place: Place) -> io::Result<Launch<'a>> {
        match place {
            Place::Slot(_) => {
                let (w, mode) = (&config.worker, config.mode());
                Ok(Launch {
                    command: &w.command,
                    node: speaks_node(config, place),
                    cluster: mode.cluster(),
                    activation: mode.socket_activation(),
                    workers_accept: mode.workers_accept(),
                    listeners: true,
                })
            }
            Place::Agent => {
                let a = config
                    .agent
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no [agent] is configured"))?;
                Ok(Launch {
                    command: &a.command,
                    node: speaks_node(config, place),
                    cluster: false,
                    activation: false,
                    workers_accept: false,
                    listeners: false,
                })
            }
        }
    }
}

/// The master's end of a new process's channel, speaking its protocol.
fn channel(
    config: &Config,
    launch: &Launch<'_>,
    socket: OwnedFd,
    listeners: &[Listening],
) -> io::Result<Channel> {
    // The agent serves no connection: it knows no listener.
    let listeners = if launch.listeners { listeners } else { &[] };
    let known = listeners.iter().map(|l| l.id).collect();
    if !launch.node {
        return Ok(Channel::native(socket)?.knowing(known));
    }
    let shared = listeners
        .iter()
        .map(|l| {
            // Its own copy only when it will be handed the listener itself (`none` mode).
            let fd = match launch.workers_accept {
                true => Some(l.socket.as_fd().try_clone_to_owned()?),
                false => None,
            };
            Ok(SharedListener {
                fd,
                addr: l.socket.local.parse().ok(),
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let wire = NodeWire::new(
        launch.cluster,
        launch.workers_accept,
        config.worker.node.clone(),
        shared,
    );
    Ok(Channel::node(socket, wire)?.knowing(known))
}

/// Where a new worker goes: its place (a slot among `slots`, or the agent's), and its account
/// in the ledger.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    pub place: Place,
    pub slots: usize,
    pub account: usize,
}

/// Starts a worker for `seat.place` and returns its record and its process's. In `none` mode a worker inherits
/// the listeners at fd 3… (socket activation); its channel comes right after them. The agent
/// gets no listener: only its channel (at fd 3) and `RRB_AGENT=1`.
pub fn spawn(
    config: &Config,
    base_env: &[(OsString, OsString)],
    listeners: &[Listening],
    seat: Seat,
    capture: [bool; 2],
    now: Instant,
) -> io::Result<(Worker, Process)> {
    let Seat {
        place,
        slots,
        account,
    } = seat;
    let launch = Launch::of(config, place)?;
    let (master_end, worker_end) = if launch.node {
        sys::stream_pair()? // Node's IPC is a byte stream
    } else {
        sys::seqpacket_pair()?
    };
    // Node workers get the listeners as handles over the channel, not as inherited fds.
    let mut inherit: Vec<BorrowedFd<'_>> = Vec::with_capacity(listeners.len() + 1);
    if launch.activation {
        inherit.extend(listeners.iter().map(|l| l.socket.as_fd()));
    }
    let channel_fd = sys::FIRST_INHERITED_FD + inherit.len() as i32;
    inherit.push(worker_end.as_fd());

    let mut env = base_env.to_vec();
    if let Some(id) = &launch.command.identity {
        as_user(&mut env, id, &launch.command.env);
    }
    let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
    set(env::CHANNEL_FD, channel_fd.to_string());
    match place {
        Place::Slot(slot) => set(env::WORKER_ID, slot.to_string()),
        Place::Agent => set(env::AGENT, "1".into()),
    }
    set(env::WORKERS, slots.to_string());
    if launch.node {
        set(env::NODE_CHANNEL_FD, channel_fd.to_string());
        set(env::NODE_CHANNEL_SERIALIZATION_MODE, "json".into());
    }
    if let (true, Place::Slot(slot)) = (launch.cluster, place) {
        // `cluster.isWorker`; Node's worker ids start at 1.
        set(env::NODE_UNIQUE_ID, (slot + 1).to_string());
    }
    if launch.activation {
        set(env::LISTEN_FDS, listeners.len().to_string());
        let names: Vec<String> = (0..listeners.len()).map(|i| format!("listen{i}")).collect();
        set(env::LISTEN_FDNAMES, names.join(":"));
    }

    let stdio = |captured: bool| {
        if captured {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    // Everything that can fail before the process exists: after, a failure must not leave it
    // running untracked (see below).
    let channel = channel(config, &launch, master_end, listeners)?;
    let mut child = sys::spawn(sys::SpawnSpec {
        program: &launch.command.program,
        arg0: &launch.command.arg0,
        args: &launch.command.args,
        env: &env,
        cwd: launch.command.cwd.as_deref(),
        inherit: &inherit,
        listen_pid: launch.activation,
        new_master: false,
        identity: launch.command.identity.as_ref().map(|i| (i.uid, i.gid)),
        stdout: stdio(capture[0]),
        stderr: stdio(capture[1]),
    })?;
    let output = match output_pipes(&mut child) {
        Ok(output) => output,
        Err(e) => {
            // Not yet a worker the master knows: it must not outlive this failure.
            super::process::signal_group(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            return Err(e);
        }
    };
    // Our copy of the worker's end must go, or we would never see the channel close.
    drop(inherit);
    drop(worker_end);
    let limits = match place {
        Place::Slot(_) => limits::limits(&config.recycle, jitter_seed(child.id())),
        Place::Agent => Limits::default(), // `[recycle]` is about serving: not the agent's
    };
    let pid = Pid::from_raw(child.id() as i32);
    let mut worker = Worker::new(pid, place, account, now, limits);
    // Node itself speaks its IPC, whatever the script does: `stop` goes over the channel.
    worker.spoke = launch.node;
    let process = Process {
        channel: Some(channel),
        output,
        tokens: Vec::new(),
    };
    Ok((worker, process))
}

/// The master's ends of the child's captured stdout and stderr, non-blocking.
fn output_pipes(child: &mut std::process::Child) -> io::Result<[Option<Pipe>; 2]> {
    let pipe = |p: Option<OwnedFd>| p.map(Pipe::new).transpose();
    Ok([
        pipe(child.stdout.take().map(OwnedFd::from))?,
        pipe(child.stderr.take().map(OwnedFd::from))?,
    ])
}

/// A seed for a worker's share of the `[recycle]` jitter: its pid and the time it started.
fn jitter_seed(pid: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (u64::from(pid) << 32) | u64::from(nanos)
}
