//! Relaying messages, the shell's side: a worker's `send` (a Node process's `process.send`) or
//! `rrbalancer send` goes to every worker, one slot, or the agent; retained values are kept and
//! given to each worker that subscribes (a native `subscribe`; a Node process at its start)
//! before its first connection. What a message is and the bounds are [`crate::engine::relay`]'s.

use std::rc::Rc;
use std::time::Instant;

use log::{debug, warn};

use super::Master;
use crate::engine::ids::{Place, Role};
use crate::engine::relay::{self, Message, Outgoing, Sender, Target};
use crate::wire::control::Reply;

impl Master {
    /// Relays what `sender` (the worker at `from`, if it is one) asked to send; how many
    /// received it, or why nothing was sent.
    pub(super) fn relay(
        &mut self,
        from: Option<usize>,
        sender: Sender,
        outgoing: Outgoing,
    ) -> Result<usize, String> {
        let to = outgoing.to.unwrap_or(match sender {
            Sender::Slot(_) => Target::Agent,
            Sender::Agent | Sender::Control => Target::All,
        });
        if outgoing.retain.is_some() && to != Target::All {
            return Err(format!(
                "only a message to all workers can be retained (this one: to {to})"
            ));
        }
        let message = Rc::new(Message {
            from: sender,
            retain: outgoing.retain,
            body: outgoing.body,
        });
        if self.ops.retained.overrides_operator(&message) {
            warn!(
                "retained {:?}: {sender}'s value replaces the one `rrbalancer send --retain` set",
                message.retain.as_deref().unwrap_or_default()
            );
        }
        self.ops.retained.keep(&message)?;
        let fleet = &self.core.fleet();
        let receivers: Vec<usize> = match to {
            // Serving or about to (a reload's candidate, a worker still starting); not one on
            // its way out, nor the sender.
            Target::All => fleet
                .workers
                .iter()
                .filter(|&(k, w)| {
                    Some(k) != from && w.place != Place::Agent && fleet.role(k) != Role::Detached
                })
                .map(|(k, _)| k)
                .collect(),
            Target::Slot(slot) => {
                let current = fleet.slots.get(slot).and_then(|s| s.current);
                vec![current.ok_or_else(|| format!("no worker serves slot {slot}"))?]
            }
            // Its current process; while a reload replaces it, the candidate takes over only
            // once ready.
            Target::Agent => match (&fleet.agent, fleet.agent_key()) {
                (None, _) => return Err("no [agent] is configured".into()),
                (Some(_), None) => return Err("the agent is not running now".into()),
                (Some(_), Some(key)) if Some(key) == from => {
                    return Err("the agent cannot send to itself".into());
                }
                (Some(_), Some(key)) => vec![key],
            },
        };
        self.ops.counters.messages += 1;
        let mut sent = 0;
        let now = Instant::now();
        for key in receivers {
            let Some(channel) = self.workers.procs.channel_mut(key) else {
                continue;
            };
            match channel.send_message(&message, now) {
                Ok(true) => {
                    sent += 1;
                    self.workers.backlogged.insert(key);
                    self.workers.flush_due.insert(key);
                }
                Ok(false) => {}
                Err(overflow) => self.replace_receiver(key, overflow.bytes, &overflowed(), now),
            }
        }
        self.ops.counters.deliveries += sent as u64;
        debug!(
            "message from {sender} to {to}{}: {sent} receiver(s)",
            message
                .retain
                .as_ref()
                .map_or(String::new(), |k| format!(" (retained as {k})"))
        );
        Ok(sent)
    }

    /// `rrbalancer send`'s answer: sent to how many, or why not — a message nobody takes is
    /// an error (said once retained: those started later get it).
    pub(super) fn send_reply(
        &mut self,
        to: &str,
        retain: Option<String>,
        message: &serde_json::Value,
    ) -> Reply {
        let kept = retain.clone();
        match (self.send_from_control(to, retain, message), kept) {
            (Ok(0), None) => Reply::error(
                "nobody took it: no worker takes messages now (a Node process with \
                 process.on('message'), a native worker that said `subscribe`)"
                    .into(),
            ),
            (Ok(0), Some(key)) => Reply::ok(format!(
                "no worker takes messages now; kept as {key:?} for those started later"
            )),
            (Ok(n), _) => Reply::ok(format!("sent to {n} receiver(s)")),
            (Err(why), _) => Reply::error(why),
        }
    }

    /// `rrbalancer send`: checked as a worker's `send` is.
    pub(super) fn send_from_control(
        &mut self,
        to: &str,
        retain: Option<String>,
        message: &serde_json::Value,
    ) -> Result<usize, String> {
        let to =
            Target::parse(to).ok_or_else(|| format!("send to {to:?}: not all, agent or a slot"))?;
        if let Some(key) = &retain {
            relay::check_key(key)?;
        }
        let outgoing = Outgoing {
            to: Some(to),
            retain,
            body: relay::body_of(message)?,
        };
        self.relay(None, Sender::Control, outgoing)
    }

    /// The worker at `key` takes messages from now on: the retained values first.
    pub(super) fn subscribe(&mut self, key: usize) {
        let Some(channel) = self.workers.procs.channel_mut(key) else {
            return;
        };
        let now = Instant::now();
        if let Err(overflow) = channel.subscribe(&self.ops.retained, now) {
            self.replace_receiver(key, overflow.bytes, &overflowed(), now);
        }
        self.workers.backlogged.insert(key);
        self.workers.flush_due.insert(key);
    }

    /// What a worker asked to relay: sent, or why not said in its log lines (not a protocol
    /// violation: the message was well formed).
    pub(super) fn relay_from_worker(&mut self, key: usize, outgoing: Outgoing) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        let sender = match worker.place {
            Place::Slot(slot) => Sender::Slot(slot),
            Place::Agent => Sender::Agent,
        };
        let nowhere = self.core.fleet().agent.is_none() && sender != Sender::Agent;
        if outgoing.to.is_none() && outgoing.retain.is_none() && nowhere {
            // A Node worker's own message with nowhere to go (there is no agent): logged, as
            // any message a worker says.
            let body = &outgoing.body;
            self.core.note(key, format_args!("message: {body}"));
            return;
        }
        if let Some(channel) = self.workers.procs.channel_mut(key) {
            channel.mark_sender();
        }
        if let Err(why) = self.relay(Some(key), sender, outgoing) {
            self.core
                .warn(key, format_args!("message not relayed: {why}"));
        }
    }

    /// After the flush: the flow-control pause begins past the high-water mark of any
    /// backlog and ends once all are under the low-water mark; a backlog that has not moved
    /// for [`relay::STALL_TIMEOUT`] gets its receiver replaced. Only the channels listed as
    /// backlogged are looked at, and those emptied leave the list.
    pub(super) fn relay_turn(&mut self, now: Instant) {
        if self.workers.backlogged.is_empty() && !self.ops.relay_paused {
            return;
        }
        let mut highest = 0;
        let mut stalled = Vec::new();
        let procs = &self.workers.procs;
        self.workers.backlogged.retain(|key| {
            let Some(channel) = procs.channel(key) else {
                return false; // released
            };
            highest = highest.max(channel.backlog_bytes());
            if channel.stall_deadline().is_some_and(|t| t <= now) {
                stalled.push(key);
            }
            channel.backlog_bytes() > 0
        });
        let paused = if self.ops.relay_paused {
            highest > relay::LOW_WATER
        } else {
            highest > relay::HIGH_WATER
        };
        if paused != self.ops.relay_paused {
            debug!(
                "relay flow control: senders {}",
                if paused { "paused" } else { "resumed" }
            );
            self.ops.relay_paused = paused;
        }
        for key in stalled {
            let bytes = self
                .workers
                .procs
                .channel(key)
                .map_or(0, |c| c.backlog_bytes());
            let why = format!("waited over {:?}", relay::STALL_TIMEOUT);
            self.replace_receiver(key, bytes, &why, now);
        }
    }

    /// The nearest moment a backlog would count as stalled.
    pub(super) fn next_stall_deadline(&self) -> Option<Instant> {
        (self.workers.backlogged.iter())
            .filter_map(|key| self.workers.procs.channel(key)?.stall_deadline())
            .min()
    }

    /// The worker at `key` does not read its messages: `bytes` of them `why` (would wait past
    /// the bound, waited past the stall timeout). What waits is dropped and it gets no more;
    /// it is replaced (its successor starts now) rather than the master buffering for it.
    fn replace_receiver(&mut self, key: usize, bytes: usize, why: &str, now: Instant) {
        let Some(worker) = self.core.fleet().workers.get(key) else {
            return;
        };
        if let Some(channel) = self.workers.procs.channel_mut(key) {
            channel.drop_backlog();
        }
        warn!(
            "worker not reading its messages {} pid={}: {bytes} bytes {why}; replacing it",
            worker.place, worker.pid
        );
        self.core.replace_slow(key, now);
        self.apply_effects();
    }
}

/// Why a receiver whose backlog passed the hard bound is replaced.
fn overflowed() -> String {
    format!("would wait (at most {})", relay::MAX_BACKLOG_BYTES)
}
