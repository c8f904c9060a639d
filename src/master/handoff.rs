//! The hand-off, the master's side of it: accepting while some worker is free, placing each
//! socket through the [`Ledger`](crate::engine::ledger::Ledger), flushing accounts onto their channels,
//! reading what workers say back, and releasing a channel's sockets when it closes. The rules
//! are the ledger's; this is where they meet the sockets.

use std::io;
use std::time::Instant;

use log::{debug, error, info, warn};
use mio::Interest;
use mio::unix::SourceFd;

use super::parts::{FdShortage, Listening};
use super::wire_shared::{Flush, Handoff};
use super::{ACCEPT_BURST, FD_EXHAUSTED_PAUSE, Master, Phase};
use super::{listeners, process};
use crate::config::{Affinity, Config};
use crate::engine::dispatch::Placement;

impl Master {
    pub(super) fn can_accept_more(&self) -> bool {
        self.core.phase() == Phase::Running
            && self.config.mode().master_accepts()
            && self.accept.accept_paused_until.is_none()
            && self.accept.listeners.iter().any(|l| l.ready && !l.held)
            && self.ledger.queued() == 0
            && self.free_slot().is_some()
    }

    /// Watches the listeners while some worker is free, and only then (`rr` mode). A client
    /// that arrives meanwhile waits in the kernel's backlog; when a worker becomes free the
    /// listeners are watched again and tried at once, since clients may be waiting.
    pub(super) fn watch_listeners(&mut self) {
        let wanted = self.core.phase() == Phase::Running
            && self.config.mode().master_accepts()
            && self.free_slot().is_some();
        if wanted == self.accept.watching {
            return;
        }
        if !wanted && self.core.phase() == Phase::Running {
            self.ops.counters.paused_no_worker += 1;
        }
        self.accept.watching = wanted;
        for l in &mut self.accept.listeners {
            watch(self.io.poll.registry(), l, wanted);
        }
    }

    /// The slot whose turn it is among those free to take a connection now, without taking
    /// the turn.
    pub(super) fn free_slot(&self) -> Option<usize> {
        let fleet = &self.core.fleet();
        self.ledger
            .free_slot(fleet.slots.len(), |s| fleet.serving(s))
    }

    /// A file descriptor was closed: if accepting is paused for lack of them, try again now.
    pub(super) fn fd_freed(&mut self) {
        if self.accept.fd_shortage.is_some() {
            self.accept.accept_paused_until = None;
        }
    }

    /// Channels whose last read stopped for its budget, with messages perhaps still waiting
    /// (but those that flow control holds back). From the list [`Master::read_channel`] keeps,
    /// not a walk of every worker.
    pub(super) fn unread_channels(&self) -> impl Iterator<Item = usize> + '_ {
        let paused = self.ops.relay_paused;
        let procs = &self.workers.procs;
        (self.workers.unread.iter()).filter(move |&key| {
            procs
                .channel(key)
                .is_some_and(|c| c.has_unread() && !(paused && c.is_sender()))
        })
    }

    /// Reads on where a worker said more than one turn's budget: every worker gets a turn.
    /// Those flow control holds back stay listed, for when it lets them go.
    pub(super) fn read_unread(&mut self) {
        if self.workers.unread.is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut self.workers.scratch[0]);
        self.workers.unread.take_into(&mut keys);
        let paused = self.ops.relay_paused;
        for &key in &keys {
            let Some(channel) = self.workers.procs.channel(key) else {
                continue; // released
            };
            if !channel.has_unread() {
                continue;
            }
            if paused && channel.is_sender() {
                self.note_unread(key);
            } else {
                self.on_channel(key, true); // listed again if still unread
            }
        }
        self.workers.scratch[0] = keys; // keeps the allocation
    }

    /// Lists the channel of `key` if its read stopped before all was read.
    fn note_unread(&mut self, key: usize) {
        let unread = self
            .workers
            .procs
            .channel(key)
            .is_some_and(|c| c.has_unread());
        if unread {
            self.workers.unread.insert(key);
        }
    }

    /// The channel of `key` takes writes again: it may be given connections again.
    pub(super) fn on_channel_writable(&mut self, key: usize) {
        self.workers.flush_due.insert(key);
        let account = self.core.fleet().workers.get(key).map(|w| w.account);
        if let Some(account) = account.and_then(|a| self.ledger.account_mut(a)) {
            account.on_writable();
        }
    }

    pub(super) fn on_channel(&mut self, key: usize, readable: bool) {
        self.read_channel(key, readable, false);
    }

    /// Reads what the worker of `key` said (`readable`); `force`: even if flow control holds
    /// its reads back (its last words, before it is reaped). A read stopped by its budget (or
    /// held back) lists the channel for [`Master::read_unread`].
    pub(super) fn read_channel(&mut self, key: usize, readable: bool, force: bool) {
        self.read_channel_once(key, readable, force);
        self.note_unread(key);
        // What it said may let something go to it (a Node worker's next handle, a reply).
        self.workers.flush_due.insert(key);
    }

    fn read_channel_once(&mut self, key: usize, readable: bool, force: bool) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return; // a stale event for a worker already reaped
        };
        let Some(channel) = self.workers.procs.channel_mut(key) else {
            return;
        };
        if readable && self.ops.relay_paused && channel.is_sender() && !force {
            // A receiver is behind: this sender waits (in its own socket buffer) until it
            // catches up; read later.
            channel.defer_read();
            return;
        }
        if readable {
            let mut incoming = std::mem::take(&mut self.accept.incoming);
            if let Some(account) = self.ledger.account_mut(worker.account) {
                channel.read(account, Instant::now(), &mut incoming);
            }
            // Refused connections (Node's `accepted: false`) are first in line for another.
            let refused = self.ledger.requeue_returned(worker.account);
            if refused > 0 {
                let cause = crate::engine::metrics::REFUSED;
                if let Some(slot) = worker.place.slot() {
                    self.ops
                        .counters
                        .count_rerouted(slot, cause, refused as u64);
                }
                debug!(
                    "pid={} refused {refused} connection(s); handing them to another",
                    worker.pid
                );
            }
            for message in incoming.drain(..) {
                self.on_incoming(key, message);
            }
            self.accept.incoming = incoming;
        }
        // Writable (or anything else): try to send what waits; `flush` runs every turn anyway.
    }

    /// Closes the master's side of the channel of `key`. Sockets the worker never got go to
    /// the front of the queue for the next worker at once; those it was sent and had not
    /// acked are held until it is dead (it may still have them: none is served twice).
    pub(super) fn release_channel(&mut self, key: usize) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        let (account, pid) = (worker.account, worker.pid);
        self.ledger.close(account);
        // Its `stop` will never leave now: the signal goes (or, for a Node worker that said
        // nothing, follows a moment later if it has not exited).
        let signal = self.core.channel_released(key, Instant::now());
        process::send_stop_signal(pid, signal);
        let Some(channel) = self
            .workers
            .procs
            .get_mut(key)
            .and_then(|p| p.channel.take())
        else {
            return;
        };
        let _ = self
            .io
            .poll
            .registry()
            .deregister(&mut SourceFd(&channel.raw_fd()));
        drop(channel);
        self.fd_freed();
    }

    /// Sockets assigned to `key` but not yet sent (or given back) go to someone else, first in
    /// line: they are older than anything still to be accepted.
    pub(super) fn requeue_outbox(&mut self, key: usize) {
        if let Some(worker) = self.core.fleet().workers.get(key) {
            self.ledger.requeue_unsent(worker.account);
        }
    }

    /// First the sockets waiting for a new owner, then new connections while anyone is free.
    /// A connection is bound to a worker only here, just before [`Master::flush`] sends it;
    /// while nobody is free it waits in the backlog or, not yet accepted, in the kernel's.
    pub(super) fn dispatch(&mut self, now: Instant) {
        if !self.config.mode().master_accepts() {
            return;
        }
        let fleet = &self.core.fleet();
        let rules = placement(&self.config);
        let emptied = self
            .ledger
            .dispatch(fleet.slots.len(), |s| fleet.serving(s), rules);
        if self.core.phase() != Phase::Running {
            // Stopping: what comes back now (from a worker that died holding it) finds nobody
            // to take it here. After an upgrade the new master takes it; else close it at
            // once, and say so, rather than silently at exit.
            if self.upgrade.successor.is_some() && !self.pass_leftovers() {
                return; // more when the channel has room
            }
            let dropped = self.ledger.drop_queue();
            if dropped > 0 {
                warn!("closing {dropped} connection(s) no worker could take");
            }
            return;
        }
        if !emptied {
            return; // nobody has room: the kernel's backlog holds new clients meanwhile
        }
        if let Some(until) = self.accept.accept_paused_until {
            if now < until {
                return;
            }
            self.accept.accept_paused_until = None;
        }
        for i in 0..self.accept.listeners.len() {
            let mut accepted = 0;
            let id = self.accept.listeners[i].id;
            while self.accept.listeners[i].ready
                && !self.accept.listeners[i].held
                && accepted < ACCEPT_BURST
            {
                // Look for room without taking a turn: the accept may find nobody waiting.
                if self.free_slot().is_none() {
                    return;
                }
                match self.accept.listeners[i].socket.accept() {
                    Ok((socket, peer)) => {
                        accepted += 1;
                        crate::engine::metrics::Counters::add(
                            &mut self.ops.counters.accepted,
                            i,
                            1,
                        );
                        if let Some(shortage) = self.accept.fd_shortage.take() {
                            info!(
                                "accepting again after {:.1?}: {} accept(s) had failed for lack \
                                 of file descriptors",
                                now.saturating_duration_since(shortage.since),
                                shortage.refused
                            );
                        }
                        let handoff = Handoff {
                            socket,
                            listener: id,
                            peer,
                            accepted: Instant::now(),
                            sent: None,
                        };
                        // Room was checked: it is placed, not queued (either way it is the
                        // ledger's now, until a worker acks it).
                        let fleet = &self.core.fleet();
                        let serving = |s| fleet.serving(s);
                        self.ledger
                            .admit(handoff, fleet.slots.len(), serving, rules);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.accept.listeners[i].ready = false
                    }
                    Err(e) if listeners::is_transient_accept_error(&e) => {}
                    Err(e) if listeners::is_fd_exhaustion(&e) => {
                        let shortage = self.accept.fd_shortage.get_or_insert_with(|| {
                            warn!(
                                "accept on {}: {e}; pausing accepts until a file descriptor is \
                                 freed",
                                self.accept.listeners[i].socket.local
                            );
                            FdShortage {
                                since: now,
                                refused: 0,
                            }
                        });
                        shortage.refused += 1;
                        self.ops.counters.fd_exhausted += 1;
                        self.accept.accept_paused_until = Some(now + FD_EXHAUSTED_PAUSE);
                        return;
                    }
                    Err(e) => {
                        let local = &self.accept.listeners[i].socket.local;
                        error!("accept on {local}: {e}");
                        self.accept.accept_paused_until = Some(now + FD_EXHAUSTED_PAUSE);
                        return;
                    }
                }
            }
        }
    }

    /// Accepts every connection queued on `l` into the ledger: placed with a worker that has
    /// room, else queued for the next one. How many.
    pub(super) fn accept_queued(&mut self, l: &Listening) -> usize {
        let rules = placement(&self.config);
        let mut handed = 0;
        loop {
            match l.socket.accept() {
                Ok((socket, peer)) => {
                    handed += 1;
                    let handoff = Handoff {
                        socket,
                        listener: l.id,
                        peer,
                        accepted: Instant::now(),
                        sent: None,
                    };
                    let fleet = &self.core.fleet();
                    self.ledger
                        .admit(handoff, fleet.slots.len(), |s| fleet.serving(s), rules);
                }
                Err(e) if listeners::is_transient_accept_error(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return handed,
                Err(e) => {
                    warn!("accept on {} before closing it: {e}", l.socket.local);
                    return handed;
                }
            }
        }
    }

    /// A graceful stop begins: what the kernel queued on the listeners is accepted, and it and
    /// the master's own queue go to the workers — beyond their windows and whether idle or not,
    /// since each is told to finish what it has before its `stop` — so that closing the
    /// listeners next resets no client whose handshake completed. Not after an upgrade's hand
    /// over (the new master has the same listeners), not in `none` mode (the workers accept),
    /// and not with no worker to take them (a new master whose workers never became ready:
    /// the old one, which shares the listeners, serves those clients). What waits in the
    /// master's queue with nobody to take it is closed by `dispatch`.
    pub(super) fn hand_out_before_stop(&mut self, now: Instant) {
        let fleet = &self.core.fleet();
        let takers = self
            .ledger
            .can_hand_out(fleet.slots.len(), |s| fleet.serving(s));
        if self.config.mode().master_accepts() && self.upgrade.successor.is_none() && takers {
            let listeners = std::mem::take(&mut self.accept.listeners);
            let accepted: usize = listeners.iter().map(|l| self.accept_queued(l)).sum();
            self.accept.listeners = listeners;
            let fleet = &self.core.fleet();
            let queued = self.ledger.queued();
            let unplaced = self
                .ledger
                .hand_out_all(fleet.slots.len(), |s| fleet.serving(s));
            if accepted > 0 || queued > 0 {
                info!(
                    "stopping: accepted the {accepted} connection(s) the kernel had queued before \
                     closing the listeners; {} waiting connection(s) handed to the workers, to serve \
                     before they stop",
                    queued - unplaced
                );
            }
        }
        self.dispatch(now);
    }

    /// Sends what each worker was assigned (and queued `stop`s). A socket that could not be
    /// sent (the channel is full) is not left waiting for that worker: it goes back to the
    /// front of the backlog, for whoever is free next. Only the channels listed in
    /// `flush_due` are looked at (with the ledger's touched accounts); one that still wants a
    /// flush after it stays listed, for the next turn.
    pub(super) fn flush(&mut self, now: Instant) {
        let [mut keys, mut touched] = std::mem::take(&mut self.workers.scratch);
        self.ledger.take_touched(&mut touched);
        for &account in &touched {
            if let Some(&Some(key)) = self.workers.owners.get(account) {
                self.workers.flush_due.insert(key);
            }
        }
        #[cfg(debug_assertions)]
        self.check_flush_listed();
        self.workers.flush_due.take_into(&mut keys);
        let mut broken = Vec::new();
        for &key in &keys {
            let Some(channel) = self.workers.procs.channel_mut(key) else {
                continue;
            };
            let Some(worker) = self.core.fleet().workers.get(key) else {
                continue;
            };
            let (account_id, pid) = (worker.account, worker.pid);
            let Some(account) = self.ledger.account_mut(account_id) else {
                continue;
            };
            if !channel.wants_flush(account) {
                continue;
            }
            // Node: the signal just before the `disconnect` (see `StopSignalDue::first`).
            let signal = self.core.before_flush(key, channel.stop_is_next(account));
            process::send_stop_signal(pid, signal);
            match channel.flush(account, now) {
                Flush::Done | Flush::Blocked => {}
                Flush::Broken(e) => {
                    debug!("channel of pid={pid} broke: {e}");
                    broken.push(key);
                }
            }
            let signal = self.core.after_flush(key, channel.stop_pending());
            process::send_stop_signal(pid, signal);
            // Running, what a full channel could not take goes to whoever is free next. Stopping,
            // nobody takes new work: a draining worker keeps its outbox, sent when its channel
            // is writable again, before its `stop`.
            if self.core.phase() == Phase::Running {
                self.ledger.requeue_unsent(account_id);
            }
            let account = self.ledger.account(account_id);
            if account.is_some_and(|a| channel.wants_flush(a)) {
                self.workers.flush_due.insert(key);
            }
        }
        self.workers.scratch = [keys, touched];
        for key in broken {
            // Its last words (a `leaving`, acks) may wait unread: they decide what happens next.
            self.on_channel(key, true);
            if self.workers.procs.channel(key).is_some() {
                self.on_channel_closed(key);
            }
        }
    }
}

#[cfg(debug_assertions)]
impl Master {
    /// Debug builds (the integration tests): no channel that wants a flush is left unlisted.
    fn check_flush_listed(&self) {
        for (key, worker) in self.core.fleet().workers.iter() {
            let Some(channel) = self.workers.procs.channel(key) else {
                continue;
            };
            let Some(account) = self.ledger.account(worker.account) else {
                continue;
            };
            assert!(
                !channel.wants_flush(account) || self.workers.flush_due.contains(key),
                "the channel of {} pid={} wants a flush and is not listed",
                worker.place,
                worker.pid
            );
        }
    }
}

/// Registers `l` with the poll (`wanted`) or deregisters it. Registered, it is tried at once:
/// clients may have queued while it was not watched.
pub(super) fn watch(registry: &mio::Registry, l: &mut Listening, wanted: bool) {
    let mut source = SourceFd(&l.socket.raw_fd());
    let done = if wanted {
        registry.register(&mut source, l.token, Interest::READABLE)
    } else {
        registry.deregister(&mut source)
    };
    if let Err(e) = done {
        error!("cannot (un)watch the listener {}: {e}", l.socket.local);
    }
    if wanted {
        l.ready = true;
    }
}

/// The rules a connection is placed by, from `[dispatch]`.
pub(super) fn placement(config: &Config) -> Placement {
    Placement {
        affinity: config.affinity == Affinity::ClientIp,
        batch: config.batch,
    }
}
