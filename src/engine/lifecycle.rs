//! The timing rules of a worker's start and of the master's stop, as data: when a starting
//! worker counts as ready or as failed, and what a stopping master does next. Pure (the time is
//! an argument), so their edges are tested here.

use std::time::{Duration, Instant};

use crate::config::{AgentConfig, Readiness, WorkerConfig};

/// How long SIGKILLed processes have to be reaped before the master exits anyway.
pub const REAP_GRACE: Duration = Duration::from_secs(2);

/// When a started worker counts as ready without saying so, and when it has taken too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyRule {
    /// Ready this long after its start without a word (`ready = "delay"`, or zero for
    /// `"start"`); `None`: only by saying so.
    after: Option<Duration>,
    /// Not ready this long after its start: killed, a failed start.
    timeout: Duration,
}

/// Where a starting worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Counts as ready now.
    Ready,
    /// Too late: a failed start.
    Late,
    /// Not yet either.
    Waiting,
}

impl ReadyRule {
    pub fn new(worker: &WorkerConfig) -> ReadyRule {
        ReadyRule::with(worker.ready, worker.ready_delay, worker.ready_timeout)
    }

    /// The agent's, from `[agent]`.
    pub fn of_agent(agent: &AgentConfig) -> ReadyRule {
        ReadyRule::with(agent.ready, agent.ready_delay, agent.ready_timeout)
    }

    fn with(ready: Readiness, delay: Duration, timeout: Duration) -> ReadyRule {
        let after = match ready {
            Readiness::Message => None,
            Readiness::Delay => Some(delay),
            Readiness::Start => Some(Duration::ZERO),
        };
        ReadyRule { after, timeout }
    }

    /// A worker up for `up` that has not said `ready`. Reaching the delay wins over reaching
    /// the timeout at the same moment.
    /// Ready the moment it starts (`ready = "start"`): nothing says its app has loaded.
    pub fn at_start(self) -> bool {
        self.after == Some(Duration::ZERO)
    }

    pub fn check(self, up: Duration) -> Start {
        if self.after.is_some_and(|d| up >= d) {
            Start::Ready
        } else if up >= self.timeout {
            Start::Late
        } else {
            Start::Waiting
        }
    }

    /// When a worker started at `started` is next checked (ready by delay, or late).
    pub fn deadline(self, started: Instant) -> Instant {
        let wait = self.after.map_or(self.timeout, |d| d.min(self.timeout));
        started + wait
    }
}

/// How the master is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Workers were told to stop; SIGKILL at `deadline`.
    Stopping {
        deadline: Instant,
        killed: bool,
    },
}

/// What a stopping master does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// Nothing yet; look again by then.
    Wait(Instant),
    /// `kill_timeout` passed: SIGKILL whatever is left.
    KillAll,
    /// Every process it started is reaped.
    Exit,
    /// Processes were SIGKILLed [`REAP_GRACE`] ago and are still not reaped: exit anyway.
    ExitUnreaped,
}

impl Phase {
    /// A graceful stop begun at `now`, with `grace` for the workers to finish.
    pub fn stopping(now: Instant, grace: Duration) -> Phase {
        Phase::Stopping {
            deadline: now + grace,
            killed: false,
        }
    }

    /// A quick stop: everything is SIGKILLed now.
    pub fn killed(now: Instant) -> Phase {
        Phase::Stopping {
            deadline: now,
            killed: true,
        }
    }

    /// What stopping needs at `now` with `left` processes (workers and hooks) not yet reaped;
    /// `None` while running. After [`StopStep::KillAll`], call [`Phase::mark_killed`].
    pub fn stop_step(self, now: Instant, left: usize) -> Option<StopStep> {
        let Phase::Stopping { deadline, killed } = self else {
            return None;
        };
        Some(if left == 0 {
            StopStep::Exit
        } else if !killed && now >= deadline {
            StopStep::KillAll
        } else if killed && now >= deadline + REAP_GRACE {
            StopStep::ExitUnreaped
        } else if killed {
            StopStep::Wait(deadline + REAP_GRACE)
        } else {
            StopStep::Wait(deadline)
        })
    }

    pub fn mark_killed(&mut self) {
        if let Phase::Stopping { killed, .. } = self {
            *killed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ready: Readiness, delay: u64, timeout: u64) -> ReadyRule {
        let worker = WorkerConfig {
            ready,
            ready_delay: Duration::from_millis(delay),
            ready_timeout: Duration::from_millis(timeout),
            ..crate::config::load(None, &Default::default())
                .unwrap()
                .worker
        };
        ReadyRule::new(&worker)
    }

    #[test]
    fn a_worker_is_ready_by_its_word_its_delay_or_at_once_and_late_at_its_timeout() {
        let ms = Duration::from_millis;
        let message = rule(Readiness::Message, 100, 1000);
        assert_eq!(message.check(ms(999)), Start::Waiting);
        assert_eq!(message.check(ms(1000)), Start::Late);
        let delay = rule(Readiness::Delay, 100, 1000);
        assert_eq!(delay.check(ms(99)), Start::Waiting);
        assert_eq!(delay.check(ms(100)), Start::Ready);
        assert_eq!(rule(Readiness::Start, 100, 1000).check(ms(0)), Start::Ready);
        // A delay at or past the timeout: the delay wins when both are reached.
        assert_eq!(
            rule(Readiness::Delay, 1000, 1000).check(ms(1000)),
            Start::Ready
        );
        assert_eq!(
            rule(Readiness::Delay, 2000, 1000).check(ms(1000)),
            Start::Late
        );
        let t0 = Instant::now();
        assert_eq!(delay.deadline(t0), t0 + ms(100));
        assert_eq!(message.deadline(t0), t0 + ms(1000));
        assert_eq!(
            rule(Readiness::Delay, 2000, 1000).deadline(t0),
            t0 + ms(1000)
        );
    }

    #[test]
    fn a_stop_kills_at_its_deadline_and_exits_once_all_are_reaped_or_the_grace_is_over() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(Phase::Running.stop_step(t0, 3), None);
        let mut phase = Phase::stopping(t0, s(5));
        assert_eq!(phase.stop_step(t0, 3), Some(StopStep::Wait(t0 + s(5))));
        assert_eq!(
            phase.stop_step(t0 + s(1), 0),
            Some(StopStep::Exit),
            "all gone early"
        );
        assert_eq!(phase.stop_step(t0 + s(5), 3), Some(StopStep::KillAll));
        phase.mark_killed();
        let after = t0 + s(5) + REAP_GRACE;
        assert_eq!(phase.stop_step(t0 + s(6), 1), Some(StopStep::Wait(after)));
        assert_eq!(phase.stop_step(t0 + s(6), 0), Some(StopStep::Exit));
        assert_eq!(phase.stop_step(after, 1), Some(StopStep::ExitUnreaped));
        // A quick stop has killed everything already.
        let quick = Phase::killed(t0);
        assert_eq!(
            quick.stop_step(t0, 2),
            Some(StopStep::Wait(t0 + REAP_GRACE))
        );
        assert_eq!(
            quick.stop_step(t0 + REAP_GRACE, 2),
            Some(StopStep::ExitUnreaped)
        );
    }

    #[test]
    fn only_start_counts_a_worker_ready_at_start() {
        assert!(rule(Readiness::Start, 0, 1000).at_start());
        assert!(!rule(Readiness::Message, 0, 1000).at_start());
        assert!(!rule(Readiness::Delay, 500, 1000).at_start());
    }
}
