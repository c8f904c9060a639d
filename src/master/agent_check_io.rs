//! The HAProxy agent-check listener (`[metrics] haproxy_agent`): each connection is answered
//! one line at once ([`agent_check::reply`](crate::engine::agent_check::reply)) and closed, so
//! that no client, idle or slow, holds anything of the master; what it sent (HAProxy's
//! `agent-send`) is read and dropped first, so that the close does not reset the answer. The
//! free share of the workers is sampled every [`SAMPLE_EVERY`] while it listens.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpListener;

use super::Master;
use crate::engine::agent_check::{self, FreeShare, HostState, SAMPLE_EVERY};
use crate::engine::client_limits;
use crate::engine::metrics::TurnedAway;
use crate::wire::upgrade::CheckKind;

/// Connections answered in one turn at most; the rest wait for the next.
const ACCEPTS_PER_TURN: usize = 64;

/// The listener and what it answers from.
pub(super) struct AgentCheck {
    listener: TcpListener,
    pub local: SocketAddr,
    free: FreeShare,
    next_sample: Instant,
    refused: client_limits::Refusals,
    /// More connections waited than one turn answers: answer on without an event.
    pub pending: bool,
    /// Passed by an upgrade's old master: not watched before it hands over.
    pub held: bool,
}

impl AgentCheck {
    /// Binds `addr`, or takes the socket an upgrade's old master `passed` for it (as the
    /// metrics listener).
    pub fn bind(addr: SocketAddr, now: Instant, passed: Option<OwnedFd>) -> io::Result<AgentCheck> {
        let held = passed.is_some();
        let (listener, local) = super::monitor::bind_or_take(addr, 128, passed)?;
        Ok(AgentCheck {
            listener,
            local,
            free: FreeShare::default(),
            next_sample: now,
            refused: client_limits::Refusals::default(),
            pending: false,
            held,
        })
    }

    pub fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    pub fn listening(&self) -> &TcpListener {
        &self.listener
    }

    /// When the free share is next sampled.
    pub fn deadline(&self) -> Instant {
        self.next_sample
    }
}

impl Master {
    /// Where the host stands for a balancer in front.
    fn host_state(&self) -> HostState {
        if self.leaving() {
            HostState::Draining
        } else if self.core.fleet().ready_count() == 0 {
            HostState::Down
        } else {
            HostState::Serving
        }
    }

    /// Every [`SAMPLE_EVERY`]: how many of the slots have a ready worker free and not busy
    /// ([`Account::is_free`](crate::engine::ledger::Account::is_free)). Only while the host
    /// serves and this master answers its checks: the first sample after a start, a time
    /// without a ready worker or an upgrade's take-over is the share as it is, not averaged
    /// with the empty fleet of the moments before (which told HAProxy `up ready 1%` for a host
    /// that had just taken over idle, and kept its weight down for a second or two).
    pub(super) fn agent_turn(&mut self, now: Instant) {
        let Some(agent) = self.ops.agent_check.as_ref() else {
            return;
        };
        if now < agent.next_sample {
            return;
        }
        if agent.held || self.host_state() != HostState::Serving {
            if let Some(agent) = self.ops.agent_check.as_mut() {
                agent.free = FreeShare::default();
                agent.next_sample = now + SAMPLE_EVERY;
            }
            return;
        }
        let fleet = self.core.fleet();
        let free = (0..fleet.slots.len())
            .filter_map(|s| fleet.serving(s))
            .filter(|&a| self.ledger.account(a).is_some_and(|a| a.is_free()))
            .count();
        let capacity = fleet.slots.len();
        if let Some(agent) = self.ops.agent_check.as_mut() {
            agent.free.sample(free, capacity, now);
            agent.next_sample = now + SAMPLE_EVERY;
        }
    }

    /// Answers the connections waiting on the agent-check listener.
    pub(super) fn on_agent_check(&mut self) {
        let state = self.host_state();
        let metrics = self.config.metrics.as_ref();
        let Some(agent) = self.ops.agent_check.as_mut() else {
            return;
        };
        agent.pending = false;
        let mut line = [0; 32];
        let len = agent_check::reply(state, &agent.free, &mut line);
        for _ in 0..ACCEPTS_PER_TURN {
            let (mut stream, peer) = match agent.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("haproxy agent-check listener: accept: {e}");
                    return;
                }
            };
            if !metrics.is_some_and(|m| m.allows(peer.ip())) {
                self.ops.counters.turn_away(TurnedAway::MetricsNotAllowed);
                if agent.refused.note(Instant::now()) {
                    warn!(
                        "haproxy agent-check listener: refused a client from {}: not in \
                         metrics.allow (further refusals are counted until {:?} pass without one)",
                        peer.ip(),
                        client_limits::QUIET
                    );
                }
                continue; // dropping closes it
            }
            // What it sent so far (an `agent-send` string, or anything) is dropped unread.
            let mut sink = [0; 512];
            let _ = stream.read(&mut sink);
            // A fresh socket's buffer takes the short line whole.
            let _ = stream.write(&line[..len]);
            let _ = stream.shutdown(Shutdown::Write);
        }
        // More may wait, and the listener is edge-triggered: answer on next turn.
        agent.pending = true;
    }

    /// An upgrade's new master has taken this host over: from now on it answers the balancer's
    /// checks alone, and this master closes its metrics and agent-check listeners (its
    /// metrics connections already open are still answered). A listener the new master took
    /// (`taken`: it serves the same socket) is closed as it is: what waits on it is the new
    /// master's to answer, from the same queue. One it did not take (its configuration moved
    /// the check elsewhere, or it predates passing them) first answers what waits — the host
    /// still serves — since closing it would reset those checks; open, it would take about
    /// half of them (the kernel spreads them over the sockets bound beside each other) and
    /// answer `stopping` and `drain` for a host that serves on.
    pub(super) fn leave_checks_to_successor(&mut self, taken: &[CheckKind]) {
        if !taken.contains(&CheckKind::Metrics) {
            self.on_monitor_accept();
        }
        if !taken.contains(&CheckKind::Agent) {
            self.on_agent_check();
        }
        let registry = self.io.poll.registry();
        if let Some(monitor) = self.ops.monitor.as_mut() {
            monitor.close_listener(registry);
        }
        if let Some(mut agent) = self.ops.agent_check.take() {
            let _ = registry.deregister(agent.listener());
        }
    }

    /// Logs where the agent-check is answered.
    pub(super) fn announce_agent_check(&self) {
        if let Some(agent) = &self.ops.agent_check {
            info!(
                "haproxy agent-check on {} (answers: up ready N%, drain, down)",
                agent.local
            );
        }
    }
}
