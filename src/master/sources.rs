//! What each poll token stands for: a typed table, in place of token ranges decoded by
//! arithmetic. A source is added when it is registered and removed when it is gone; a token
//! may be reused afterwards, so handlers take a stale event as the spurious wake-up it is
//! (edge-triggered reads find `WouldBlock`, a missing worker or connection is skipped).

use mio::Token;
use slab::Slab;

/// An event source of the master's poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Signals,
    /// The control socket's listener.
    Control,
    /// The listener with this id (clients).
    Listener(super::listeners::ListenerId),
    /// The control connection with this key.
    ControlConn(usize),
    /// Captured stdout (`stream` 0) or stderr (1) of the worker with this key.
    Output {
        worker: usize,
        stream: usize,
    },
    /// The channel of the worker with this key.
    Channel(usize),
    /// The channel to the new master of an upgrade this master started.
    Successor,
    /// The channel to the old master this one was started to take over from.
    Predecessor,
    /// The monitoring listener (`[metrics] listen`).
    Monitor,
    /// The monitoring connection with this key.
    MonitorConn(usize),
    /// HAProxy's agent-check listener (`[metrics] haproxy_agent`).
    AgentCheck,
    /// Watch mode's inotify fd.
    Watch,
}

#[derive(Debug, Default)]
pub struct Sources(Slab<Source>);

impl Sources {
    pub fn add(&mut self, source: Source) -> Token {
        Token(self.0.insert(source))
    }

    pub fn get(&self, token: Token) -> Option<Source> {
        self.0.get(token.0).copied()
    }

    pub fn remove(&mut self, token: Token) {
        self.0.try_remove(token.0);
    }
}
