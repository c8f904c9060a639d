//! A reload that changes `listen`, the master's side: bind the new addresses (a failure
//! refuses the reload and changes nothing), keep the sockets of the addresses that stay, and
//! retire the others — their queue accepted and handed to workers, then closed. The plan is
//! the engine's ([`Relisten`]).
//!
//! Which worker may be handed a connection is decided by what it was started with: a worker
//! knows the listeners that existed when it started (their order is its `listen` order: the
//! index in a native `conn` line, a Node server's port). So a listener the reload added is
//! *held* — bound, its clients queued by the kernel — until every slot's worker is one started
//! after it, that is until the rolling reload has replaced them all; then it is accepted on.
//! In `none` mode the workers accept: each new worker inherits the new list, the old ones
//! keep theirs until they exit.

use log::{info, warn};

use super::handoff::watch;
use super::listeners::{Listener, ListenerId};
use super::parts::Listening;
use super::sources::Source;
use super::{Master, listeners};
use crate::config::Config;
use crate::engine::relisten::Relisten;
use crate::wire::upgrade::Carried;

impl Master {
    /// Makes the listeners `config.listen` names. `Ok` with the line for the reload's answer
    /// (`None`: `listen` did not change); `Err`, everything left as it was, when an address
    /// cannot be bound.
    pub(super) fn relisten(&mut self, config: &Config) -> Result<Option<String>, String> {
        let plan = Relisten::plan(&config.listen, &self.running_listeners());
        if config.backlog != self.config.backlog {
            for l in &self.accept.listeners {
                if let Err(e) = l.socket.set_backlog(config.backlog) {
                    warn!("reload: cannot apply `backlog` to {}: {e}", l.socket.local);
                }
            }
        }
        if plan.unchanged() {
            return Ok(None);
        }
        // Bind first: a failure leaves everything as it was.
        let mut bound = Vec::new();
        let activation = self.config.mode().socket_activation();
        for (want, from) in config.listen.iter().zip(&plan.from) {
            if from.is_none() {
                let listener = Listener::bind(want, config.backlog)
                    .and_then(|l| match l.set_mode_for(activation) {
                        Ok(()) => Ok(l),
                        Err(e) => Err(listeners::ListenError::new(&l.local, e)),
                    })
                    .map_err(|e| self.bind_refused(e))?;
                bound.push(listener);
            }
        }
        let running = self.listen_names();
        let mut old: Vec<Option<Listening>> = std::mem::take(&mut self.accept.listeners)
            .into_iter()
            .map(Some)
            .collect();
        let counted = std::mem::take(&mut self.ops.counters.accepted);
        let mut bound = bound.into_iter();
        for from in &plan.from {
            let (listening, accepted) = match from.and_then(|i| Some((old[i].take()?, i))) {
                Some((kept, i)) => (kept, counted.get(i).copied().unwrap_or(0)),
                None => {
                    let socket = bound.next().expect("one bound per new entry");
                    (self.new_listening(socket), 0)
                }
            };
            self.accept.listeners.push(listening);
            self.ops.counters.accepted.push(accepted);
        }
        for l in old.into_iter().flatten() {
            self.retire(l);
        }
        let workers_accept = self.config.mode().workers_accept();
        Ok(plan.describe(&self.listen_names(), &running, workers_accept))
    }

    /// Why the reload is refused, when an address cannot be bound.
    fn bind_refused(&self, e: listeners::ListenError) -> String {
        let dropped = match (&self.config.master_user, e.is_refused_to_user()) {
            (Some(id), true) => format!(
                " (the master runs as {} since it dropped root, `[master] user`: binding a \
                 port below 1024 takes a restart, or the capability CAP_NET_BIND_SERVICE)",
                id.user
            ),
            _ => String::new(),
        };
        format!("{e}{dropped}: the running fleet and its listeners are kept")
    }

    /// The listeners' addresses, as bound, in `listen` order: what users are shown.
    pub(super) fn listen_names(&self) -> Vec<String> {
        (self.accept.listeners.iter())
            .map(|l| l.socket.local.clone())
            .collect()
    }

    /// The listeners as they run: each with the `listen` entry it serves (as configured), the
    /// address bound, and whether its socket file is ours — what a reload matches the new
    /// `listen` against, and what an upgrade passes.
    pub(super) fn running_listeners(&self) -> Vec<Carried> {
        (self.accept.listeners.iter())
            .zip(&self.config.listen)
            .map(|(l, configured)| Carried {
                configured: configured.to_string(),
                local: l.socket.local.clone(),
                owned: l.socket.owns_path(),
            })
            .collect()
    }

    /// A listener the reload bound: watched like the others, held until the workers know it.
    fn new_listening(&mut self, socket: Listener) -> Listening {
        let id = ListenerId(self.accept.next_id);
        self.accept.next_id += 1;
        info!("listening on {}", socket.local);
        let mut l = Listening {
            socket,
            id,
            token: self.io.sources.add(Source::Listener(id)),
            ready: false,
            held: self.config.mode().master_accepts(),
        };
        if self.accept.watching {
            watch(self.io.poll.registry(), &mut l, true);
        }
        l
    }

    /// Stops listening on `l`: what the kernel had queued on it is accepted and handed to
    /// workers (`rr` mode), then it is closed.
    fn retire(&mut self, mut l: Listening) {
        self.unwatch(&mut l);
        let handed = if self.config.mode().master_accepts() {
            self.accept_queued(&l)
        } else {
            0
        };
        // Closed before it is said to be: whoever reads the line may try the address at once.
        let (local, activated) = (std::mem::take(&mut l.socket.local), l.socket.activated);
        drop(l);
        info!("no longer listening on {local} ({handed} queued connection(s) handed to workers)");
        let privileged = (local.parse::<std::net::SocketAddr>()).is_ok_and(|a| a.port() < 1024);
        if let (Some(id), true) = (&self.config.master_user, privileged) {
            warn!(
                "{local} is closed for good: the master runs as {} since it dropped root, and \
                 only a restart binds a port below 1024 again",
                id.user
            );
        }
        if activated {
            warn!(
                "{local} was passed by systemd, which keeps it open: clients still connect to it \
                 and wait; remove it from the .socket unit too"
            );
        }
    }

    /// `l` leaves the poll for good: no event of it is waited for, its token is free.
    fn unwatch(&mut self, l: &mut Listening) {
        if self.accept.watching {
            watch(self.io.poll.registry(), l, false);
        }
        self.io.sources.remove(l.token);
    }

    /// Lets each held listener be accepted on once every slot's worker was started knowing
    /// it; closes it again if the reload that bound it ended without that (it failed: its
    /// clients are refused, not left waiting). Costs a look at the slots only while one is
    /// held.
    pub(super) fn release_held(&mut self) {
        if !self.accept.listeners.iter().any(|l| l.held) {
            return;
        }
        let (fleet, reloading) = (self.core.fleet(), self.core.reloading());
        let procs = &self.workers.procs;
        let mut failed = Vec::new();
        for (i, l) in self.accept.listeners.iter_mut().enumerate() {
            if !l.held {
                continue;
            }
            let known = (fleet.slots.iter().filter_map(|s| s.current))
                .all(|key| procs.channel(key).is_none_or(|c| c.knows_listener(l.id)));
            if known {
                l.held = false;
                l.ready = true; // clients may have queued meanwhile
                info!("serving {}: every worker knows it", l.socket.local);
            } else if !reloading {
                failed.push(i);
            }
        }
        for i in failed.into_iter().rev() {
            self.close_held(i);
        }
    }

    /// Closes the held listener at `i`, and takes its address out of `listen`: the reload that
    /// bound it failed.
    fn close_held(&mut self, i: usize) {
        let mut l = self.accept.listeners.remove(i);
        self.unwatch(&mut l);
        if i < self.ops.counters.accepted.len() {
            self.ops.counters.accepted.remove(i);
        }
        if i < self.config.listen.len() {
            self.config.listen.remove(i);
        }
        // Closed before it is said to be: whoever reads the line may try the address at once.
        let local = std::mem::take(&mut l.socket.local);
        drop(l);
        warn!(
            "closed {local} again: the reload that bound it failed, so no worker was started \
             knowing it (reload again once the cause is fixed)"
        );
    }
}
