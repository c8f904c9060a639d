//! A deterministic simulator of supervision: the real [`Supervisor`] driven by a seeded random
//! interleaving of what happens to workers and to the master — clocks ticks on a virtual clock,
//! workers that become ready or never do, leave, crash, close their channel, misbehave, get
//! stuck, obey `stop` slowly or ignore it; spawns that fail; reloads, scaling and a stop asked
//! at any moment — with worker records and no processes. Checked after every step:
//!
//! - the fleet's bookkeeping: a slot has at most one current worker and one candidate, of that
//!   slot, never the same; roles agree with the slots;
//! - a candidate takes its slot only once ready (a reload never replaces a worker with one that
//!   cannot serve);
//! - every effect names a worker that exists when it is carried out (or one just reaped in the
//!   same decision), never one started since under a reused key;
//! - nothing is started once the stop began, nor for a slot that no longer exists, nor for a
//!   slot given up (until a reload);
//! - giving up everything stops the master;
//! - a stop ends: every worker left is killed by the first tick at `kill_timeout` after it
//!   began, and once they are reaped the stop is over.
//!
//! `SIM_SEED=<n>` replays one seed; `SIM_SEEDS=<count>` runs that many (default 2,000).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::fleet::{Role, State, test_worker};
use super::lifecycle::{Phase, ReadyRule, StopStep};
use super::supervisor::{Effect, Policy, Supervisor};
use crate::config::{Readiness, RestartConfig};

/// What the simulated process of a worker does.
#[derive(Debug, Clone, Copy)]
struct Process {
    /// When it exits (reaped at the first step at or after it).
    exit_at: Option<Instant>,
    /// It finishes within this long of being asked to stop, or never (ignores SIGTERM).
    obeys: Option<Duration>,
}

struct Sim {
    rng: fastrand::Rng,
    sup: Supervisor,
    policy: Policy,
    now: Instant,
    procs: BTreeMap<usize, Process>,
    next_pid: i32,
    /// When the stop began, if it did.
    stop_began: Option<Instant>,
    /// Workers sent SIGKILL.
    killed: BTreeSet<usize>,
    /// Live workers started as reload candidates.
    candidates: BTreeSet<usize>,
    /// The last steps, for a failure's report.
    trace: Vec<String>,
}

fn policy(rng: &mut fastrand::Rng) -> Policy {
    let ms = |lo: u64, hi: u64, rng: &mut fastrand::Rng| Duration::from_millis(rng.u64(lo..hi));
    let ready = if rng.bool() {
        Readiness::Message
    } else {
        Readiness::Delay
    };
    let ready_timeout = ms(200, 3_000, rng);
    let worker = crate::config::WorkerConfig {
        ready,
        ready_delay: ms(0, 500, rng),
        ready_timeout,
        ..crate::config::load(None, &Default::default())
            .expect("the default config loads")
            .worker
    };
    let backoff_initial = ms(10, 300, rng);
    Policy {
        restart: RestartConfig {
            max_restarts: rng.u32(0..5),
            window: ms(1_000, 10_000, rng),
            backoff_initial,
            backoff_max: backoff_initial + ms(0, 2_000, rng),
            min_uptime: ms(0, 2_000, rng),
        },
        kill_timeout: ms(100, 2_000, rng),
        ready: ReadyRule::new(&worker),
        ready_timeout,
        ack_timeout: ms(1_000, 10_000, rng),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let policy = policy(&mut rng);
        let now = Instant::now();
        let slots = rng.usize(1..=4);
        Sim {
            sup: Supervisor::new(slots, policy, now),
            policy,
            rng,
            now,
            procs: BTreeMap::new(),
            next_pid: 3_000_000,
            stop_began: None,
            killed: BTreeSet::new(),
            candidates: BTreeSet::new(),
            trace: Vec::new(),
        }
    }

    fn log(&mut self, step: String) {
        if self.trace.len() == 40 {
            self.trace.remove(0);
        }
        self.trace.push(step);
    }

    fn any_worker(&mut self) -> Option<usize> {
        let keys: Vec<usize> = self.sup.fleet.workers.iter().map(|(k, _)| k).collect();
        (!keys.is_empty()).then(|| keys[self.rng.usize(..keys.len())])
    }

    /// Carries out the supervisor's effects as the shell does. `reaped`: a worker removed by
    /// the decision that produced them (an effect may still name it, harmlessly).
    fn apply(&mut self, reaped: Option<usize>) -> Result<(), String> {
        loop {
            let mut batch = Vec::new();
            self.sup.drain_effects(&mut batch);
            if batch.is_empty() {
                return Ok(());
            }
            // Workers started while carrying out this batch: its other effects were decided
            // before, so none may name one of them (a key reused for a new worker).
            let mut started = BTreeSet::new();
            for effect in batch {
                let target = match &effect {
                    Effect::Stop(k) | Effect::Kill(k) | Effect::Requeue(k) => Some(*k),
                    _ => None,
                };
                if let Some(key) = target {
                    if started.contains(&key) {
                        return Err(format!("{effect:?} names a worker started since"));
                    }
                    if !self.sup.fleet.workers.contains(key) && reaped != Some(key) {
                        return Err(format!("{effect:?} names no worker"));
                    }
                }
                match effect {
                    Effect::Spawn { slot, role } => {
                        if self.stop_began.is_some() {
                            return Err(format!("spawn for slot {slot} while stopping"));
                        }
                        let Some(s) = self.sup.fleet.slots.get(slot) else {
                            return Err(format!("spawn for slot {slot}, which does not exist"));
                        };
                        if s.given_up {
                            return Err(format!("spawn for slot {slot}, given up"));
                        }
                        if self.rng.u8(..20) == 0 {
                            self.log(format!("spawn {slot} {role:?} fails"));
                            self.sup.spawn_failed(slot, role, self.now, "EAGAIN".into());
                            continue;
                        }
                        self.next_pid += 1;
                        let key = self
                            .sup
                            .fleet
                            .insert(test_worker(slot, self.next_pid, self.now), role);
                        let obeys = (self.rng.u8(..5) != 0)
                            .then(|| Duration::from_millis(self.rng.u64(0..3_000)));
                        self.procs.insert(
                            key,
                            Process {
                                exit_at: None,
                                obeys,
                            },
                        );
                        started.insert(key);
                        if role == Role::Candidate {
                            self.candidates.insert(key);
                        }
                        self.log(format!("spawned {key} in slot {slot} as {role:?}"));
                    }
                    Effect::Stop(key) => {
                        if let Some(p) = self.procs.get_mut(&key) {
                            if let Some(after) = p.obeys {
                                let at = self.now + after;
                                p.exit_at = Some(p.exit_at.map_or(at, |t| t.min(at)));
                            }
                        }
                    }
                    Effect::Kill(key) => {
                        self.killed.insert(key);
                        if let Some(p) = self.procs.get_mut(&key) {
                            p.exit_at = Some(self.now);
                        }
                    }
                    Effect::StopAccepting => self.sup.stop_workers(self.now),
                    Effect::KillHooks
                    | Effect::Requeue(_)
                    | Effect::Hook { .. }
                    | Effect::Answer { .. }
                    | Effect::CloseListeners => {}
                }
            }
        }
    }

    /// Reaps the workers whose process has exited by now.
    fn reap(&mut self) -> Result<(), String> {
        let due: Vec<usize> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exit_at.is_some_and(|t| t <= self.now))
            .map(|(&k, _)| k)
            .collect();
        for key in due {
            self.procs.remove(&key);
            self.killed.remove(&key);
            self.candidates.remove(&key);
            self.log(format!("reaped {key}"));
            self.sup.exited(key, self.now, "exit".into());
            self.apply(Some(key))?;
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        match self.rng.u8(..100) {
            0..=34 => {
                self.now += Duration::from_millis(self.rng.u64(0..300));
                self.sup.tick(self.now, 0);
                self.log("tick".into());
                self.apply(None)?;
                self.check_stop_bound()?;
            }
            35..=49 => {
                let starting: Vec<usize> = self
                    .sup
                    .fleet
                    .workers
                    .iter()
                    .filter(|(_, w)| w.state == State::Starting)
                    .map(|(k, _)| k)
                    .collect();
                if let Some(&key) = starting.get(self.rng.usize(..starting.len().max(1))) {
                    self.log(format!("ready {key}"));
                    self.sup.ready(key, self.now);
                    self.apply(None)?;
                }
            }
            50..=53 => {
                if let Some(key) = self.any_worker() {
                    self.log(format!("leaving {key}"));
                    self.sup.leaving(key, self.now);
                    self.apply(None)?;
                }
            }
            // A crash: the process is gone; reaped at once.
            54..=59 => {
                if let Some(key) = self.any_worker() {
                    if let Some(p) = self.procs.get_mut(&key) {
                        p.exit_at = Some(self.now);
                    }
                }
            }
            60..=62 => {
                if let Some(key) = self.any_worker() {
                    let silent = self.rng.u8(..4) == 0;
                    self.log(format!("channel of {key} closed (silent {silent})"));
                    self.sup.channel_closed(key, self.now, silent);
                    self.apply(None)?;
                }
            }
            63..=65 => {
                if let Some(key) = self.any_worker() {
                    self.log(format!("{key} misbehaves"));
                    self.sup.misbehaved(key, self.now, "garbage".into());
                    self.apply(None)?;
                }
            }
            66..=67 => {
                if let Some(key) = self.any_worker() {
                    self.log(format!("{key} stuck"));
                    self.sup.stuck(key, self.now);
                    self.apply(None)?;
                }
            }
            68..=73 if self.sup.can_reload().is_ok() => {
                let slots = (self.sup.fleet.slots.len() as isize + self.rng.isize(-1..=1))
                    .clamp(1, 5) as usize;
                self.log(format!("reload to {slots}"));
                self.sup.begin_reload(Some(1), slots, self.now);
                self.apply(None)?;
            }
            74..=78 => {
                let n = self.rng.usize(0..6);
                let outcome = self.sup.scale(n, self.now);
                self.log(format!("scale to {n}: {outcome:?}"));
                self.apply(None)?;
            }
            79 if self.rng.u8(..4) == 0 => self.begin_stop(false)?,
            80 if self.rng.u8(..16) == 0 => self.begin_stop(true)?,
            _ => {}
        }
        self.reap()?;
        self.check()
    }

    fn begin_stop(&mut self, quick: bool) -> Result<(), String> {
        if self.stop_began.is_none() {
            self.stop_began = Some(self.now);
        }
        self.log(format!("stop (quick {quick})"));
        if quick {
            self.sup.quick_stop(self.now);
        } else {
            self.sup.begin_stop(self.now);
        }
        self.apply(None)
    }

    /// By the first tick at `kill_timeout` after the stop began, every worker left is killed.
    fn check_stop_bound(&self) -> Result<(), String> {
        let Some(began) = self.stop_began else {
            return Ok(());
        };
        if self.now < began + self.policy.kill_timeout {
            return Ok(());
        }
        for (key, _) in self.sup.fleet.workers.iter() {
            if !self.killed.contains(&key) {
                return Err(format!(
                    "worker {key} not killed {:?} after the stop began (kill_timeout {:?})",
                    self.now - began,
                    self.policy.kill_timeout
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), String> {
        self.sup.fleet.check()?;
        for (slot, s) in self.sup.fleet.slots.iter().enumerate() {
            if let Some(key) = s.current {
                let w = &self.sup.fleet.workers[key];
                // A worker that was a candidate and is current now was promoted: ready.
                if w.state == State::Starting && self.candidates.contains(&key) {
                    return Err(format!("slot {slot}: candidate {key} took over, not ready"));
                }
            }
        }
        // A reload rolls one slot at a time: at most one candidate in the whole fleet, so it
        // never has fewer serving workers than the target minus the one being replaced.
        let candidates = self
            .sup
            .fleet
            .slots
            .iter()
            .filter(|s| s.candidate.is_some())
            .count();
        if candidates > 1 {
            return Err(format!("{candidates} candidates at once"));
        }
        if self.sup.gave_up && self.sup.phase == Phase::Running {
            return Err("gave up but still running".into());
        }
        if self.sup.phase != Phase::Running && self.stop_began.is_none() {
            // The supervisor stopped on its own (every slot given up).
            self.stop_began = Some(self.now);
        }
        Ok(())
    }

    /// Ends the run: a stop (if none began), ticks on the virtual clock until every worker is
    /// reaped; it must end within `kill_timeout` plus a tick and the reaping.
    fn finish(&mut self) -> Result<(), String> {
        if self.stop_began.is_none() {
            self.begin_stop(false)?;
            self.reap()?;
        }
        let began = self.stop_began.expect("set above");
        let tick = Duration::from_millis(50);
        let bound = began + self.policy.kill_timeout + 2 * tick;
        while !self.sup.fleet.workers.is_empty() {
            if self.now > bound {
                return Err(format!(
                    "{} worker(s) left {:?} after the stop began",
                    self.sup.fleet.workers.len(),
                    self.now - began
                ));
            }
            self.now += tick;
            self.sup.tick(self.now, 0);
            self.apply(None)?;
            self.check_stop_bound()?;
            self.reap()?;
            self.check()?;
        }
        match self.sup.phase.stop_step(self.now, 0) {
            Some(StopStep::Exit) => Ok(()),
            other => Err(format!("all reaped, yet the stop says {other:?}")),
        }
    }
}

fn run(seed: u64, steps: usize) -> Result<(), String> {
    let mut sim = Sim::new(seed);
    let result = (|| {
        for _ in 0..steps {
            sim.step()?;
        }
        sim.finish()
    })();
    result.map_err(|e| {
        format!(
            "seed {seed} (SIM_SEED={seed} replays it): {e}\nlast steps:\n  {}",
            sim.trace.join("\n  ")
        )
    })
}

#[test]
fn supervision_keeps_its_invariants_over_random_interleavings() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("SIM_SEEDS").unwrap_or(2_000)).collect(),
    };
    let started = Instant::now();
    for &seed in &seeds {
        if let Err(e) = run(seed, 300) {
            panic!("{e}");
        }
    }
    eprintln!("{} seeds in {:?}", seeds.len(), started.elapsed());
}
