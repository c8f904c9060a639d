//! The workers as the core sees them: one record per live process (pid, place, state, timers —
//! no fd: the shell keeps those in `process`), grouped in slots (the stable `RRB_WORKER_ID`s).
//!
//! A slot holds at most one *current* worker, the one that gets connections, and during a
//! reload at most one *candidate*, its successor, which becomes current once it is ready. A
//! worker that is leaving, replaced or misbehaving is *detached*: it keeps its pid record until
//! it is reaped, but its slot is free for a successor at once. Slots are only added or removed
//! at the end (scaling), so a detached worker's slot number may no longer exist.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::debug;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use slab::Slab;

use super::ids::{Place, Role};
use super::limits::Limits;
use super::restart::RestartTracker;
use super::timers::{Timed, Timers};

/// Notes of one worker logged at info level; the rest at debug.
const NOTES_AT_INFO: u32 = 20;

/// A worker's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started, has not said `ready`.
    Starting,
    /// Serving; gets connections in `rr` mode.
    Ready,
    /// Gets nothing new: leaving, replaced, or told to stop. Waits to exit.
    Draining,
}

/// One live worker process (the agent's too: it is supervised the same way).
#[derive(Debug)]
pub struct Worker {
    pub pid: Pid,
    pub place: Place,
    pub state: State,
    /// The master's end of its channel is open (the shell holds it, in its process record).
    pub channel_open: bool,
    /// Its account in the ledger: the sockets that are its.
    pub account: usize,
    pub started: Instant,
    /// The worker has sent at least one valid message: it speaks the protocol, so `stop`
    /// reaches it; otherwise it is stopped with SIGTERM.
    pub spoke: bool,
    /// When to SIGKILL it if it has not exited.
    pub kill_at: Option<Instant>,
    /// The signal due with its `stop` (`[shutdown] signal`), sent once.
    pub stop_signal: Option<StopSignalDue>,
    /// A Node worker stopped before it said anything: its signal goes at this time (its channel
    /// closed after the `disconnect`, so its app ran its `disconnect` handling: it runs, its
    /// handlers are in place), unless it has exited by then.
    pub stop_signal_at: Option<Instant>,
    /// It has said something on its channel since it started. For a Node worker: its app is
    /// running (the message was sent from its event loop, after its first tick), so it has
    /// had the chance to install its signal handlers.
    pub heard: bool,
    /// Its channel closed; if it has not exited by then, replace it.
    pub channel_closed_check: Option<Instant>,
    /// It held a socket un-acked past `ack_timeout` and was killed for it.
    pub stuck: bool,
    /// Its own `[recycle]` limits (the configured ones, jittered).
    pub limits: Limits,
    /// The resident memory of its process group when last measured (`[recycle] max_memory`).
    pub rss: Option<u64>,
    /// Notes (its own messages, for Node workers) logged so far at info level.
    pub notes: u32,
    /// When it last said `full` (out of file descriptors).
    pub full_at: Option<Instant>,
}

/// An exit this soon after a `full` is load's doing (a worker at its open-file limit), not a
/// crash: it does not count toward giving up.
pub const LOAD_EXIT_WINDOW: Duration = Duration::from_secs(10);

impl Worker {
    /// A worker just started at `now` for `place`, with its ledger `account` and its own
    /// recycle `limits`: starting, its channel open, nothing heard from it yet.
    pub fn new(pid: Pid, place: Place, account: usize, now: Instant, limits: Limits) -> Worker {
        Worker {
            pid,
            place,
            state: State::Starting,
            channel_open: true,
            account,
            started: now,
            spoke: false,
            kill_at: None,
            stop_signal: None,
            heard: false,
            stop_signal_at: None,
            channel_closed_check: None,
            stuck: false,
            limits,
            rss: None,
            notes: 0,
            full_at: None,
        }
    }

    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// It said `full` within [`LOAD_EXIT_WINDOW`] of `now`.
    pub fn short_of_fds(&self, now: Instant) -> bool {
        self.full_at
            .is_some_and(|t| now.saturating_duration_since(t) <= LOAD_EXIT_WINDOW)
    }

    /// Logs something the worker said: at info level for its first [`NOTES_AT_INFO`] notes,
    /// then at debug (a chatty or flooding worker cannot fill the master's log). Formatted only
    /// if the line is written.
    pub fn note(&mut self, note: std::fmt::Arguments<'_>) {
        self.log(log::Level::Info, note);
    }

    /// The same, at WARN level while the budget lasts: something the operator must see.
    pub fn warn(&mut self, warning: std::fmt::Arguments<'_>) {
        self.log(log::Level::Warn, warning);
    }

    fn log(&mut self, level: log::Level, note: std::fmt::Arguments<'_>) {
        let (place, pid) = (self.place, self.pid);
        self.notes = self.notes.saturating_add(1);
        match self.notes {
            ..=NOTES_AT_INFO => log::log!(level, "worker {place} pid={pid}: {note}"),
            n if n == NOTES_AT_INFO + 1 => log::log!(
                level,
                "worker {place} pid={pid}: {note} (further messages of this worker are \
                 logged at debug level)"
            ),
            _ => debug!("worker {place} pid={pid}: {note}"),
        }
    }
}

/// A signal to send with a worker's `stop` on its channel (`[shutdown] signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopSignalDue {
    pub signal: Signal,
    /// A Node worker's: just before the `disconnect` leaves (the signal is then delivered
    /// while the app runs, not while it is exiting because of the `disconnect`), and only once
    /// its app runs ([`Worker::heard`]). Else (a native worker, which reads its `stop` first):
    /// once the `stop` has left.
    pub first: bool,
}

/// A stable worker position: `RRB_WORKER_ID`.
#[derive(Debug, Default)]
pub struct Slot {
    /// Key of the worker serving this slot.
    pub current: Option<usize>,
    /// Key of the worker that will replace `current` once ready (reload).
    pub candidate: Option<usize>,
    /// When to start a worker here, if none runs.
    pub start_at: Option<Instant>,
    pub restarts: RestartTracker,
    /// Restarts so far (for status).
    pub restart_count: u64,
    /// Exit causes of recent failures, for the give-up report.
    pub last_causes: VecDeque<String>,
    pub given_up: bool,
    /// Times it was given up (a reload gives it a fresh chance: it can be given up again).
    pub giveups: u64,
    /// Workers recycled here (`[recycle]`), and why the last one was.
    pub recycled: u64,
    pub last_recycle: Option<String>,
}

const CAUSES_KEPT: usize = 5;

impl Slot {
    pub fn remember_cause(&mut self, cause: String) {
        if self.last_causes.len() == CAUSES_KEPT {
            self.last_causes.pop_front();
        }
        self.last_causes.push_back(cause);
    }
}

/// All workers and slots, and the agent's place if one is configured.
#[derive(Debug, Default)]
pub struct Fleet {
    pub workers: Slab<Worker>,
    pub slots: Vec<Slot>,
    /// `[agent]`: its place, kept as a slot's is (current, candidate, restarts, give-up).
    pub agent: Option<Slot>,
    /// The agent has been ready once: the slots may start.
    pub agent_started: bool,
    by_pid: HashMap<Pid, usize>,
    /// A hint at or before every timer of the workers and places here ([`Timers`]): whoever
    /// sets one arms it.
    pub timers: Timers,
}

impl Fleet {
    /// `slots` to start at `now`; with `agent`, the agent's place too (its slots start once
    /// it is ready: [`Fleet::may_start_slots`]).
    pub fn new(slots: usize, agent: bool, now: Instant) -> Fleet {
        let mut fleet = Fleet::default();
        fleet.slots.resize_with(slots, Slot::default);
        for slot in &mut fleet.slots {
            slot.start_at = Some(now);
        }
        fleet.agent = agent.then(|| Slot {
            start_at: Some(now),
            ..Slot::default()
        });
        fleet.arm_places();
        fleet
    }

    /// A (re)start of `place` at `at`.
    pub fn start_at(&mut self, place: Place, at: Instant) {
        if let Some(s) = self.place_mut(place) {
            s.start_at = Some(at);
            self.timers.arm(Some(at), Timed::Place(place));
        }
    }

    /// Arms every place's (re)start: after places were added, or when the slots may start.
    pub fn arm_places(&mut self) {
        let places = (self.slots.iter().enumerate())
            .map(|(i, s)| (Place::Slot(i), s.start_at))
            .chain(self.agent.as_ref().map(|a| (Place::Agent, a.start_at)));
        for (place, at) in places {
            self.timers.arm(at, Timed::Place(place));
        }
    }

    /// The place `place` stands for: a slot, or the agent's.
    pub fn place(&self, place: Place) -> Option<&Slot> {
        match place {
            Place::Slot(i) => self.slots.get(i),
            Place::Agent => self.agent.as_ref(),
        }
    }

    pub fn place_mut(&mut self, place: Place) -> Option<&mut Slot> {
        match place {
            Place::Slot(i) => self.slots.get_mut(i),
            Place::Agent => self.agent.as_mut(),
        }
    }

    /// The places a worker may be started for, once their `start_at` is due: the agent first,
    /// then the slots once it has been ready; each with neither a current worker nor a
    /// candidate (one whose candidate is starting waits for it: it takes the place when
    /// ready, or the place is empty once it failed).
    #[cfg(test)]
    pub fn startable(&self) -> impl Iterator<Item = (Place, &Slot)> {
        let slots = (self.slots.iter().enumerate()).map(|(i, s)| (Place::Slot(i), s));
        (self.agent.iter().map(|a| (Place::Agent, a)))
            .chain(slots)
            .filter(|&(place, _)| self.may_start(place))
    }

    /// Whether `place` is [startable](Fleet::startable), in O(1).
    pub fn may_start(&self, place: Place) -> bool {
        (place == Place::Agent || self.may_start_slots())
            && (self.place(place)).is_some_and(|s| s.current.is_none() && s.candidate.is_none())
    }

    /// When a [startable](Fleet::startable) place is next due to (re)start, found by a walk
    /// (for tests: the clock reads [`Fleet::timers`]). The clock's look acts on exactly these,
    /// so no start time already past is returned that it would not act on: the master's loop
    /// would wake for it again and again.
    #[cfg(test)]
    pub fn next_start(&self) -> Option<Instant> {
        self.startable().filter_map(|(_, s)| s.start_at).min()
    }

    /// No slot, nor the agent, is to start again (stopping).
    pub fn start_nothing(&mut self) {
        for slot in self.slots.iter_mut().chain(self.agent.as_mut()) {
            slot.start_at = None;
        }
    }

    /// The agent process that gets messages now (its current one), if any.
    pub fn agent_key(&self) -> Option<usize> {
        self.agent.as_ref()?.current
    }

    /// Slots start only once the agent, if there is one, has been ready (it starts first, so
    /// that its retained values are there before any worker serves; given up before that, the
    /// master stops).
    pub fn may_start_slots(&self) -> bool {
        self.agent_started || self.agent.is_none()
    }

    /// Records a started worker as its slot's current worker, or as its candidate.
    pub fn insert(&mut self, worker: Worker, role: Role) -> usize {
        let pid = worker.pid;
        let place = worker.place;
        let key = self.workers.insert(worker);
        self.by_pid.insert(pid, key);
        if let Some(s) = self.place_mut(place) {
            match role {
                Role::Current => s.current = Some(key),
                Role::Candidate => s.candidate = Some(key),
                Role::Detached => {}
            }
        }
        key
    }

    /// What `key` is to its slot.
    pub fn role(&self, key: usize) -> Role {
        let Some(worker) = self.workers.get(key) else {
            return Role::Detached;
        };
        match self.place(worker.place) {
            Some(s) if s.current == Some(key) => Role::Current,
            Some(s) if s.candidate == Some(key) => Role::Candidate,
            _ => Role::Detached,
        }
    }

    pub fn key_of(&self, pid: Pid) -> Option<usize> {
        self.by_pid.get(&pid).copied()
    }

    /// Forgets a reaped worker, freeing its place in its slot; returns what it was there.
    pub fn remove(&mut self, key: usize) -> (Worker, Role) {
        let role = self.role(key);
        self.clear_role(key);
        let worker = self.workers.remove(key);
        self.by_pid.remove(&worker.pid);
        (worker, role)
    }

    /// Takes a live worker out of its slot (it stays a live record until reaped).
    pub fn detach(&mut self, key: usize) {
        self.clear_role(key);
        if let Some(worker) = self.workers.get_mut(key) {
            worker.state = State::Draining;
        }
    }

    fn clear_role(&mut self, key: usize) {
        let Some(worker) = self.workers.get(key) else {
            return;
        };
        let place = worker.place;
        if let Some(slot) = self.place_mut(place) {
            if slot.current == Some(key) {
                slot.current = None;
            }
            if slot.candidate == Some(key) {
                slot.candidate = None;
            }
            // It may be startable now, at a time set while it was not.
            let at = slot.start_at;
            self.timers.arm(at, Timed::Place(place));
        }
    }

    /// The candidate of its slot becomes current; returns the worker it replaces.
    pub fn promote(&mut self, key: usize) -> Option<usize> {
        let place = self.workers.get(key)?.place;
        let slot = self.place_mut(place)?;
        if slot.candidate != Some(key) {
            return None;
        }
        slot.candidate = None;
        slot.start_at = None; // served again: nothing to start
        slot.current.replace(key)
    }

    /// The ledger account of the worker serving `slot` — current, ready, its channel open —
    /// if there is one.
    pub fn serving(&self, slot: usize) -> Option<usize> {
        self.serving_if(slot, |w| w.channel_open)
    }

    /// [`Fleet::serving`], with what "its channel is open" means given (a simulator has none).
    pub fn serving_if(&self, slot: usize, open: impl Fn(&Worker) -> bool) -> Option<usize> {
        let worker = self.workers.get(self.slots.get(slot)?.current?)?;
        (worker.state == State::Ready && open(worker)).then_some(worker.account)
    }

    /// Every slot has had its start: each is served by a ready worker or was given up (a
    /// restart storm: waiting for it would be waiting forever), and one at least serves.
    /// `/readyz` says ready from then on, while the master is not stopping.
    pub fn started(&self) -> bool {
        let mut serving = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            match self.serving_if(i, |_| true) {
                Some(_) => serving += 1,
                None if slot.given_up => {}
                None => return false,
            }
        }
        serving > 0
    }

    /// Every slot was given up and no reload candidate may revive one: nothing will serve
    /// again. (A slot still starting, or waiting to restart, may yet serve: it is waited for.)
    pub fn none_left(&self) -> bool {
        self.slots
            .iter()
            .all(|s| s.given_up && s.candidate.is_none())
    }

    /// Live worker processes, the agent's not counted.
    pub fn workers_alive(&self) -> usize {
        (self.workers.iter())
            .filter(|(_, w)| w.place != Place::Agent)
            .count()
    }

    /// Workers ready to serve (the agent serves nothing: not counted).
    pub fn ready_count(&self) -> usize {
        self.workers
            .iter()
            .filter(|(_, w)| w.state == State::Ready && w.place != Place::Agent)
            .count()
    }
}

#[cfg(test)]
impl Fleet {
    /// The bookkeeping every step must keep: a slot's current and candidate are live workers of
    /// that slot and not the same one; no worker holds two places; the pid index matches.
    pub fn check(&self) -> Result<(), String> {
        let mut placed = HashMap::new();
        let places = (self.slots.iter().enumerate())
            .map(|(i, s)| (Place::Slot(i), s))
            .chain(self.agent.iter().map(|a| (Place::Agent, a)));
        for (i, s) in places {
            if s.current.is_some() && s.current == s.candidate {
                return Err(format!("{i}: current and candidate are one worker"));
            }
            for key in [s.current, s.candidate].into_iter().flatten() {
                let w = self
                    .workers
                    .get(key)
                    .ok_or(format!("{i}: dead worker {key}"))?;
                if w.place != i {
                    return Err(format!("worker {key} of {} sits in {i}", w.place));
                }
                if let Some(other) = placed.insert(key, i) {
                    return Err(format!("worker {key} in {other} and {i}"));
                }
            }
        }
        for (key, w) in &self.workers {
            if self.key_of(w.pid) != Some(key) {
                return Err(format!("pid {} does not find worker {key}", w.pid));
            }
            let role = self.role(key);
            if (role != Role::Detached) != placed.contains_key(&key) {
                return Err(format!(
                    "worker {key}: role {role:?} disagrees with the slots"
                ));
            }
        }
        if self.by_pid.len() != self.workers.len() {
            return Err("the pid index keeps dead workers".into());
        }
        Ok(())
    }
}

/// A worker record with no process behind it, for tests of the bookkeeping and decisions.
#[cfg(test)]
pub fn test_worker(slot: usize, pid: i32, started: Instant) -> Worker {
    test_worker_at(Place::Slot(slot), pid, started)
}

/// [`test_worker`] for any place (the agent's too).
#[cfg(test)]
pub fn test_worker_at(place: Place, pid: i32, started: Instant) -> Worker {
    let mut worker = Worker::new(Pid::from_raw(pid), place, 0, started, Limits::default());
    worker.channel_open = false;
    worker
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
