//! The master's start-up: the listening sockets taken (inherited from systemd or from an
//! upgrade's old master, or bound here), the open-file limit raised, `Master` built and its
//! loop run; a failure reported to the old master when this one was started by an upgrade.

use std::io;
use std::time::Instant;

use log::{debug, info, warn};
use mio::Interest;

use super::agent_check_io::AgentCheck;
use super::listeners::{self, Listener};
use super::sources::Source;
use super::{Master, MasterError, Predecessor, control_files, control_socket, monitor};
use crate::config::Config;
use crate::wire::upgrade::CheckKind;

/// File descriptors the master may hold at once: per worker its window of sockets, its
/// channel, two output pipes and one spare; the listeners; and room for control connections,
/// the pid file, the poll and the log.
fn fds_needed(config: &Config) -> u64 {
    let per_worker = config.worker.max_unacked as u64 + 4;
    config.workers as u64 * per_worker + config.listen.len() as u64 + 64
}

/// Reads the configuration again (on reload), the way it was read at start.
pub type Loader = Box<dyn FnMut() -> Result<Config, String>>;

/// Runs the master until it is stopped. `Ok` is a clean stop.
/// `started` is called once the master listens, with the listeners' addresses. `predecessor`:
/// this master was started by an upgrade, to take over from that one.
pub fn run(
    config: Config,
    loader: Loader,
    started: &mut dyn FnMut(&[String]),
    predecessor: Option<Predecessor>,
) -> Result<(), MasterError> {
    let reporter = predecessor.as_ref().map(Predecessor::reporter);
    let result = run_master(config, loader, started, predecessor);
    if let (Err(e), Some(reporter)) = (&result, reporter) {
        reporter.fail(&e.to_string());
    }
    result
}

fn run_master(
    mut config: Config,
    loader: Loader,
    started: &mut dyn FnMut(&[String]),
    mut predecessor: Option<Predecessor>,
) -> Result<(), MasterError> {
    raise_fd_limit(&config);
    // `[master] user`: what needs root (the listeners, the metrics listener, the registry
    // entry) is made first; then the master drops to the user, and makes the rest as that user
    // (an upgrade's new master, started by it, already is).
    let drop_to = (config.master_user.clone()).filter(|id| !privileges_dropped(id.uid, id.gid));
    // First: a second master for the same configuration must fail on this, not on the port.
    // (A new master started by an upgrade stages its own beside the old one's.)
    let mut pid_file = match (&predecessor, &drop_to) {
        (Some(_), _) => Some(control_files::PidFile::acquire_staged(
            &config.control.pid_file,
        )?),
        (None, None) => Some(control_files::PidFile::acquire(&config.control.pid_file)?),
        (None, Some(_)) => {
            control_files::PidFile::check_free(&config.control.pid_file)?;
            None
        }
    };
    // What the file says, before an upgrade keeps the old master's scale.
    let configured_workers = config.workers;
    if let Some(p) = &predecessor {
        config.workers = p.workers(config.workers);
    }
    let listeners = take_listeners(&config, &mut predecessor)?;
    info!(
        "sched_policy={} (from {}), workers={}, worker={}, protocol={}",
        config.sched_policy.as_str(),
        config.policy_source,
        config.workers,
        config.worker.command.program.display(),
        config.worker.protocol.as_str()
    );
    // The check listeners an upgrade's old master passed for the same addresses are taken.
    let mut passed = |kind, addr| (predecessor.as_mut()).and_then(|p| p.check_listener(kind, addr));
    let monitor = match &config.metrics {
        Some(m) => {
            let monitor = monitor::Monitor::bind(m.clone(), passed(CheckKind::Metrics, m.listen))
                .map_err(|e| MasterError::Metrics(m.listen, e))?;
            let from = m.allow.as_ref().map_or(String::new(), |nets| {
                let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
                format!("; clients only from {}", nets.join(", "))
            });
            info!(
                "metrics on http://{}/metrics (health: /healthz, /readyz){from}",
                monitor.local
            );
            Some(monitor)
        }
        None => None,
    };
    let agent = config.metrics.as_ref().and_then(|m| m.haproxy_agent);
    let agent = (agent.map(|addr| {
        AgentCheck::bind(addr, Instant::now(), passed(CheckKind::Agent, addr))
            .map_err(|e| MasterError::AgentCheck(addr, e))
    }))
    .transpose()?;
    if let Some(p) = predecessor.as_mut() {
        p.close_unclaimed_checks();
    }
    // One app of several is found through the master of all, not registered of its own.
    let registration = match config.app {
        Some(_) => control_files::Registration::none(),
        None => control_files::Registration::make(&config.control.socket),
    };
    if let Some(id) = &drop_to {
        for path in [&config.control.pid_file, &config.control.socket] {
            control_files::create_dir_for(path, id.uid, id.gid)?;
        }
        let who = format!("{}:{} (uid {}, gid {})", id.user, id.group, id.uid, id.gid);
        crate::sys::drop_privileges(id.uid, id.gid)
            .map_err(|e| MasterError::Privileges(who.clone(), e))?;
        info!("dropped to {who}: the listeners are bound; no root from here on");
        pid_file = Some(control_files::PidFile::acquire(&config.control.pid_file)?);
    }
    let pid_file = pid_file.expect("acquired before or after the drop");
    let control = match predecessor {
        Some(_) => control_socket::Control::bind_staged(&config.control.socket)?,
        None => control_socket::Control::bind(&config.control.socket)?,
    };
    debug!(
        "control socket {}, pid file {}",
        config.control.socket.display(),
        config.control.pid_file.display()
    );
    let files = (pid_file, registration);
    let mut master = Master::new(config, listeners, loader, control, files, predecessor)
        .map_err(MasterError::EventLoop)?;
    master.ops.monitor = monitor;
    master.ops.agent_check = agent;
    master.announce_agent_check();
    master.watch_checks(false).map_err(MasterError::EventLoop)?;
    master.set_watch();
    master.workers.configured_workers = configured_workers;
    master.announce_start();
    started(&master.listen_names());
    master.run()
}

impl Master {
    /// Watches the balancer-check listeners: at start (`release_held` false) those bound here;
    /// once an upgrade's old master has handed over or is gone (`true`), those it passed
    /// (`held`), on which it answered until then — so that the checks of the moment are
    /// answered by the master that serves, from one queue.
    pub(super) fn watch_checks(&mut self, release_held: bool) -> io::Result<()> {
        let registry = self.io.poll.registry();
        if let Some(m) = (self.ops.monitor.as_mut()).filter(|m| m.held == release_held) {
            m.held = false;
            if let Some(listener) = m.listener() {
                let token = self.io.sources.add(Source::Monitor);
                registry.register(listener, token, Interest::READABLE)?;
            }
        }
        if let Some(a) = (self.ops.agent_check.as_mut()).filter(|a| a.held == release_held) {
            a.held = false;
            let token = self.io.sources.add(Source::AgentCheck);
            registry.register(a.listener(), token, Interest::READABLE)?;
        }
        Ok(())
    }
}

/// The listening sockets: those systemd passed (socket activation), those an upgrade's old
/// master passed, or bound here; each in the blocking mode its workers expect.
fn take_listeners(
    config: &Config,
    predecessor: &mut Option<Predecessor>,
) -> Result<Vec<Listener>, MasterError> {
    let inherited = match &predecessor {
        Some(_) => None,
        None => listeners::inherited().map_err(MasterError::Inherited)?,
    };
    let listeners = match inherited {
        // Socket activation: systemd bound them; we use them as they are.
        Some(got) => {
            let seen: Vec<_> = got
                .iter()
                .map(|g| (g.addr.clone(), g.name.clone()))
                .collect();
            let order = listeners::assign(&config.listen, &seen)
                .map_err(|why| MasterError::Inherited(io::Error::other(why)))?;
            let mut got: Vec<Option<listeners::Inherited>> = got.into_iter().map(Some).collect();
            let mut taken = Vec::new();
            for (want, j) in config.listen.iter().zip(order) {
                let socket = got[j].take().expect("each socket assigned once");
                let listener = Listener::from_inherited(socket).map_err(MasterError::EventLoop)?;
                if listener.local == want.to_string() {
                    info!("`listen` {want}: the socket systemd passed");
                } else {
                    warn!(
                        "`listen` {want}: the socket systemd passed is bound to {} instead; \
                         serving on it (the unit decides the addresses: make `listen` name them)",
                        listener.local
                    );
                }
                taken.push(listener);
            }
            taken
        }
        None => match predecessor {
            Some(p) => p.listeners(config).map_err(MasterError::Upgrade)?,
            None => config
                .listen
                .iter()
                .map(|addr| Listener::bind(addr, config.backlog))
                .collect::<Result<Vec<_>, _>>()?,
        },
    };
    for l in &listeners {
        // A listener an upgrade passed is left as it is: `O_NONBLOCK` is shared with the old
        // master's workers, which may have set it their way and accept on it still.
        if !l.carried {
            (l.set_mode_for(config.mode().socket_activation())).map_err(MasterError::EventLoop)?;
        }
        info!("listening on {}", l.local);
    }
    Ok(listeners)
}

/// Raises the open file limit as far as allowed, and warns if it stays below what the
/// configuration may need.
fn raise_fd_limit(config: &Config) {
    match crate::sys::raise_fd_limit() {
        Ok(limit) => {
            debug!("open file limit: {limit}");
            let needed = fds_needed(config);
            if limit < needed {
                warn!(
                    "the open file limit is {limit}, below the {needed} this configuration may \
                     need (workers × (max_unacked + 4) + listeners + 64): under load, accepts \
                     will pause for lack of file descriptors; raise it (ulimit -n, systemd's \
                     LimitNOFILE=)"
                );
            }
        }
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
}

/// The process already is `uid`:`gid` (an upgrade's new master started by one that dropped).
fn privileges_dropped(uid: u32, gid: u32) -> bool {
    let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    (euid.as_raw(), egid.as_raw()) == (uid, gid)
}
