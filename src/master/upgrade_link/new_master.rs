//! The new master's side of an upgrade: what the old master passed, the listeners made from
//! it, the report of its own start, the take-over, and the sockets passed after it.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::PathBuf;

use log::{debug, error, info, warn};

use super::super::listeners::{self, Listener};
use super::super::sources::Source;
use super::super::wire_shared::Handoff;
use super::super::{Master, Phase};
use super::{HELLO_TIMEOUT, Link, Read};
use crate::config::{Config, ListenAddr};
use crate::engine::upgrade::{self, Verdict};
use crate::sys;
use crate::wire::env;
use crate::wire::upgrade::{Carried, CarriedCheck, CheckKind, Message};

/// Where the new master stands with the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// Its workers are starting.
    Starting,
    /// It said `ready`; waiting for `take_over`.
    Ready,
    /// It serves alone, or will once the old master's workers are done.
    TookOver,
}

/// What the old master passed to this one.
#[derive(Debug)]
pub struct Predecessor {
    link: Option<Link>,
    pid: i32,
    passed: Vec<(Carried, Option<OwnedFd>)>,
    /// The balancer-check listeners passed, until startup takes them (or closes them).
    checks: Vec<(CarriedCheck, OwnedFd)>,
    /// Those taken, which the old master is told of when this one starts.
    checks_taken: Vec<CheckKind>,
    blocking: bool,
    workers: usize,
    configured_workers: usize,
    pub state: Succession,
    /// The old master went away without a word: take over once ready, nobody else serves.
    orphaned: bool,
    /// For each passed listener, which of ours it became (for sockets passed later).
    ours: Vec<Option<usize>>,
    /// Unix socket files to own once we took over: (our listener, path).
    claims: Vec<(usize, PathBuf)>,
}

/// A second handle on the channel, to report a failure from wherever it happens.
#[derive(Debug)]
pub struct Reporter(Option<OwnedFd>);

impl Reporter {
    /// Tells the old master this one failed (and will exit), if the channel is still there.
    pub fn fail(&self, reason: &str) {
        if let Some(fd) = &self.0 {
            let bytes = Message::Failed {
                reason: reason.to_owned(),
            }
            .encode();
            let _ = sys::send_with_fds(fd.as_fd(), &[IoSlice::new(&bytes)], [], &mut Vec::new());
        }
    }
}

impl Predecessor {
    /// Takes the channel named by `RRB_UPGRADE_FD`, if this master was started by an upgrade,
    /// and reads the old master's `hello`. Called once, first thing.
    pub fn from_env() -> Result<Option<Predecessor>, String> {
        let Some(value) = std::env::var_os(env::UPGRADE_FD) else {
            return Ok(None);
        };
        let fd: RawFd = value
            .to_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{}={value:?} is not a file descriptor", env::UPGRADE_FD))?;
        let fd = sys::take_inherited_fd(fd).map_err(|e| format!("{}: {e}", env::UPGRADE_FD))?;
        let mut link = Link::new(fd);
        let ready = nix::poll::poll(
            &mut [nix::poll::PollFd::new(
                link.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )],
            nix::poll::PollTimeout::try_from(HELLO_TIMEOUT).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        if !matches!(ready, Ok(n) if n > 0) {
            return Err(format!(
                "started for an upgrade, but the old master sent nothing within {HELLO_TIMEOUT:?}"
            ));
        }
        let (message, fds) = match link.read() {
            Read::Message(message, fds) => (message?, fds),
            _ => return Err("started for an upgrade, but the old master went away".into()),
        };
        let Message::Hello {
            pid,
            listeners,
            blocking,
            workers,
            configured_workers,
            checks,
        } = message
        else {
            return Err(format!("the old master's first message was {message:?}"));
        };
        if fds.len() != listeners.len() + checks.len() {
            return Err(format!(
                "the old master passed {} socket(s) for {} listener(s)",
                fds.len(),
                listeners.len() + checks.len()
            ));
        }
        info!(
            "upgrade: taking over from pid {pid} ({} listening socket(s) passed)",
            listeners.len()
        );
        let mut fds = fds.into_iter();
        Ok(Some(Predecessor {
            link: Some(link),
            pid,
            passed: (listeners.into_iter())
                .zip(fds.by_ref().map(Some))
                .collect(),
            checks: checks.into_iter().zip(fds).collect(),
            checks_taken: Vec::new(),
            blocking,
            workers,
            configured_workers,
            state: Succession::Starting,
            orphaned: false,
            ours: Vec::new(),
            claims: Vec::new(),
        }))
    }

    pub fn reporter(&self) -> Reporter {
        Reporter(self.link.as_ref().and_then(|l| l.fd.try_clone().ok()))
    }

    /// The listeners for `config`: the passed ones it still names (by the text it was
    /// configured with, else by address), new ones bound. Passed ones it no longer names are
    /// closed (the old master closes its copies when it exits).
    pub fn listeners(&mut self, config: &Config) -> Result<Vec<Listener>, String> {
        let activation = config.mode().socket_activation();
        if activation != self.blocking && !self.passed.is_empty() {
            return Err(format!(
                "the new configuration changes how the listening sockets are used ({} → {}): \
                 they are shared with the old master while it serves, so this takes a stop and \
                 a start, not an upgrade",
                if self.blocking {
                    "workers accept on them"
                } else {
                    "the master accepts"
                },
                if activation {
                    "workers accept on them"
                } else {
                    "the master accepts"
                },
            ));
        }
        let carried: Vec<Carried> = self.passed.iter().map(|(c, _)| c.clone()).collect();
        let plan = upgrade::carry_over(&config.listen, &carried);
        self.ours = vec![None; carried.len()];
        let mut out = Vec::with_capacity(config.listen.len());
        for (i, (want, got)) in config.listen.iter().zip(plan).enumerate() {
            let listener = match got {
                Some(j) => {
                    let (carried, fd) = &mut self.passed[j];
                    let fd = fd.take().expect("each passed socket is taken once");
                    let l = Listener::from_carried(fd, carried.local.clone(), config.backlog)
                        .map_err(|e| format!("`listen` {want}: {e}"))?;
                    if let (true, ListenAddr::Unix(path)) = (carried.owned, want) {
                        self.claims.push((i, path.clone()));
                    }
                    self.ours[j] = Some(i);
                    info!("`listen` {want}: the socket passed by pid {}", self.pid);
                    l
                }
                None => Listener::bind(want, config.backlog).map_err(|e| e.to_string())?,
            };
            out.push(listener);
        }
        for (carried, fd) in &self.passed {
            if fd.is_some() {
                warn!(
                    "upgrade: {} is no longer in `listen`: this master does not serve it (the \
                     old one closes it when it exits)",
                    carried.local
                );
            }
        }
        self.passed.clear(); // closes what no entry took
        Ok(out)
    }

    /// The balancer-check listener of `kind` the old master passed, if it serves `want`: the
    /// same socket, so that both masters take checks from one queue and none is reset when the
    /// old one closes its copy. The old master answers on it until the handover; this one
    /// watches it from then on ([`Master::watch_checks`]). `None`: bind `want`.
    pub fn check_listener(&mut self, kind: CheckKind, want: SocketAddr) -> Option<OwnedFd> {
        let i = (self.checks.iter())
            .position(|(c, _)| c.kind == kind && upgrade::check_carried_over(want, &c.local))?;
        let (carried, fd) = self.checks.remove(i);
        self.checks_taken.push(kind);
        let key = match kind {
            CheckKind::Metrics => "listen",
            CheckKind::Agent => "haproxy_agent",
        };
        info!(
            "`[metrics] {key}` {}: the socket passed by pid {}",
            carried.local, self.pid
        );
        Some(fd)
    }

    /// Closes the passed check listeners the configuration no longer names (the old master
    /// closes its copies at the handover).
    pub fn close_unclaimed_checks(&mut self) {
        for (carried, _) in self.checks.drain(..) {
            warn!(
                "upgrade: {} is no longer a check listener: this master does not serve it",
                carried.local
            );
        }
    }

    /// The worker count to start with: the old master's, if it was scaled since its
    /// configuration was read and ours says the same as its did (as a reload keeps it).
    pub fn workers(&self, configured_now: usize) -> usize {
        let (workers, note) = crate::engine::reload::reload_size(
            self.workers,
            self.configured_workers,
            configured_now,
        );
        if workers != configured_now || configured_now != self.configured_workers {
            info!("upgrade: {}", note.trim_start_matches("reload: "));
        }
        workers
    }
}

/// Which listener a socket came from, as the old master numbered them, and the socket.
type Adopted = (usize, OwnedFd);

impl Master {
    // ---- the new master -------------------------------------------------------------------

    /// 1 while the master this one took over from still runs (finishing its connections).
    pub(in crate::master) fn predecessor_draining(&self) -> usize {
        self.upgrade
            .predecessor
            .as_ref()
            .is_some_and(|p| p.state == Succession::TookOver && p.link.is_some()) as usize
    }

    /// For `status`: the old master still finishing, seen from the new one.
    pub(in crate::master) fn predecessor_status(&self) -> Option<String> {
        let p = self.upgrade.predecessor.as_ref()?;
        (p.state == Succession::TookOver && p.link.is_some())
            .then(|| format!("from pid {}: it finishes its connections and exits", p.pid))
    }

    /// Says `starting` to the old master and watches the channel.
    pub(in crate::master) fn announce_start(&mut self) {
        let timeout = self.config.worker.ready_timeout;
        let token = self.io.sources.add(Source::Predecessor);
        let Some(p) = self.upgrade.predecessor.as_mut() else {
            return;
        };
        let Some(link) = p.link.as_mut() else {
            return;
        };
        let said = link
            .send(
                &Message::Starting {
                    pid: std::process::id() as i32,
                    ready_timeout_ms: timeout.as_millis() as u64,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    checks: p.checks_taken.clone(),
                },
                &[],
            )
            .and_then(|()| link.register(self.io.poll.registry(), token));
        if let Err(e) = said {
            warn!("upgrade: the old master cannot be reached: {e}");
        }
    }

    /// Each turn, until it took over: is the fleet ready, or has it failed?
    pub(in crate::master) fn succession_turn(&mut self) {
        let Some(p) = self.upgrade.predecessor.as_mut() else {
            return;
        };
        if p.state != Succession::Starting || self.core.phase() != Phase::Running {
            return;
        }
        match upgrade::verdict(self.core.fleet()) {
            Verdict::Waiting => {}
            Verdict::Ready(workers) => {
                p.state = Succession::Ready;
                let sent = p
                    .link
                    .as_mut()
                    .map(|l| l.send(&Message::Ready { workers }, &[]));
                if matches!(sent, Some(Ok(()))) {
                    info!(
                        "upgrade: {workers} worker(s) ready; asking pid {} to hand over",
                        p.pid
                    );
                } else {
                    info!(
                        "upgrade: {workers} worker(s) ready; pid {} is gone: taking over",
                        p.pid
                    );
                    self.take_over();
                }
            }
            Verdict::Failed(reason) => self.fail_succession(reason),
        }
    }

    fn fail_succession(&mut self, reason: String) {
        error!("upgrade failed: {reason}; stopping this master");
        if let Some(link) = self
            .upgrade
            .predecessor
            .as_mut()
            .and_then(|p| p.link.as_mut())
        {
            let _ = link.send(
                &Message::Failed {
                    reason: reason.clone(),
                },
                &[],
            );
        }
        self.upgrade.failed = Some(reason);
        self.begin_stop();
    }

    /// Pid file and control socket into place, Unix socket files ours; systemd hears from us.
    fn take_over(&mut self) {
        if self.upgrade.predecessor.is_none() {
            return;
        }
        let installed = self
            .ops
            .pid_file
            .as_mut()
            .map_or(Ok(()), |f| f.install())
            .and_then(|()| self.ops.control.as_mut().map_or(Ok(()), |c| c.install()));
        if let Err(e) = installed {
            return self.fail_succession(format!("cannot take over: {e}"));
        }
        let Some(p) = self.upgrade.predecessor.as_mut() else {
            return;
        };
        p.state = Succession::TookOver;
        for (i, path) in p.claims.drain(..) {
            if let Some(l) = self.accept.listeners.get_mut(i) {
                l.socket.claim_path(path);
            }
        }
        if let Some(link) = p.link.as_mut() {
            if let Err(e) = link.send(&Message::TookOver, &[]) {
                debug!("upgrade: took_over not delivered: {e}");
            }
        }
        self.ops.notifier.release();
        info!(
            "upgrade: took over from pid {} (pid file and control socket are this master's)",
            p.pid
        );
        self.release_checks();
    }

    /// The check listeners the old master passed are watched here from now on.
    fn release_checks(&mut self) {
        if let Err(e) = self.watch_checks(true) {
            error!("upgrade: cannot watch the check listeners the old master passed: {e}");
        }
    }

    /// The old master's channel is readable (or writable: nothing is sent on it here that
    /// could wait).
    pub(in crate::master) fn on_predecessor(&mut self) {
        loop {
            let Some(link) = self
                .upgrade
                .predecessor
                .as_mut()
                .and_then(|p| p.link.as_mut())
            else {
                return;
            };
            match link.read() {
                Read::Empty => return,
                Read::Closed => return self.predecessor_gone(),
                Read::Message(Ok(Message::TakeOver), _) => self.take_over(),
                Read::Message(Ok(Message::Abort { reason }), _) => {
                    self.close_predecessor_link();
                    if self.core.phase() == Phase::Running {
                        self.fail_succession(format!("the old master gave up on it: {reason}"));
                    }
                }
                Read::Message(Ok(Message::Adopt { listeners }), fds) => {
                    self.adopt(listeners.into_iter().zip(fds).collect())
                }
                Read::Message(other, fds) => {
                    drop(fds);
                    warn!("upgrade: unexpected from the old master: {other:?}");
                }
            }
        }
    }

    fn close_predecessor_link(&mut self) {
        if let Some(link) = self
            .upgrade
            .predecessor
            .as_mut()
            .and_then(|p| p.link.take())
        {
            self.release_link(link);
        }
    }

    /// The old master's end closed: it exited (after the handover, as it should), or died.
    fn predecessor_gone(&mut self) {
        self.close_predecessor_link();
        let stopping = self.core.phase() != Phase::Running;
        let Some(p) = self.upgrade.predecessor.as_mut() else {
            return;
        };
        match p.state {
            Succession::TookOver => info!("upgrade: the old master (pid {}) has exited", p.pid),
            _ if stopping => debug!("upgrade: the old master (pid {}) closed the channel", p.pid),
            _ => {
                warn!(
                    "upgrade: the old master (pid {}) went away before handing over; this master \
                     takes over once its workers are ready",
                    p.pid
                );
                p.orphaned = true;
                if p.state == Succession::Ready {
                    self.take_over();
                }
                // Nobody else answers the balancers' checks now.
                self.release_checks();
            }
        }
    }

    /// Sockets the old master accepted and no worker of its took: ours now, in the queue.
    fn adopt(&mut self, sockets: Vec<Adopted>) {
        let Some(p) = self.upgrade.predecessor.as_ref() else {
            return;
        };
        let count = sockets.len();
        let rules = crate::master::handoff::placement(&self.config);
        for (theirs, socket) in sockets {
            let ours = p.ours.get(theirs).copied().flatten();
            let Some(listener) = ours.and_then(|i| self.accept.listeners.get(i)) else {
                warn!("upgrade: closing a passed connection whose listener this master dropped");
                continue;
            };
            let listener = listener.id;
            let peer = listeners::peer_of(socket.as_fd());
            let handoff = Handoff {
                socket,
                listener,
                peer,
                accepted: std::time::Instant::now(),
                sent: None,
            };
            let fleet = &self.core.fleet();
            self.ledger
                .admit(handoff, fleet.slots.len(), |s| fleet.serving(s), rules);
        }
        info!("upgrade: took {count} connection(s) the old master's workers could not");
    }
}
