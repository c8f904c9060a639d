//! The restart policy as data: when to restart a slot whose worker exited unasked, and when to
//! give up on it (a restart storm). Pure; the supervisor feeds it exits and reads decisions.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::RestartConfig;

/// Growth of the back-off between consecutive failed starts of one slot.
const BACKOFF_FACTOR: f64 = 1.5;

/// What to do after an unasked exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a new worker in the slot after this delay.
    RestartAfter(Duration),
    /// Too many exits within the window: leave the slot empty.
    GiveUp,
}

/// One slot's recent history.
#[derive(Debug, Default, Clone)]
pub struct RestartTracker {
    /// When each recent unasked exit happened (within the window).
    exits: VecDeque<Instant>,
    /// Consecutive short-lived failures, for the back-off.
    streak: u32,
}

impl RestartTracker {
    /// Records an unasked exit at `now` of a worker that had been up for `uptime`.
    pub fn on_failure(
        &mut self,
        policy: &RestartConfig,
        now: Instant,
        uptime: Duration,
    ) -> Decision {
        while self
            .exits
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        if self.exits.len() > policy.max_restarts as usize {
            return Decision::GiveUp;
        }
        if uptime >= policy.min_uptime {
            self.streak = 0;
        }
        let delay = backoff(policy, self.streak);
        self.streak = self.streak.saturating_add(1);
        Decision::RestartAfter(delay)
    }

    /// How many unasked exits are in the current window.
    pub fn recent(&self) -> usize {
        self.exits.len()
    }
}

/// The delay before the `streak`-th consecutive restart: initial × 1.5^streak, capped.
pub fn backoff(policy: &RestartConfig, streak: u32) -> Duration {
    let factor = BACKOFF_FACTOR.powi(streak.min(64) as i32);
    let delay = policy.backoff_initial.as_secs_f64() * factor;
    Duration::from_secs_f64(delay.min(policy.backoff_max.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartConfig {
        RestartConfig {
            max_restarts: 3,
            window: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            min_uptime: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_grows_by_half_and_is_capped() {
        let p = policy();
        assert_eq!(backoff(&p, 0), Duration::from_millis(100));
        assert_eq!(backoff(&p, 1), Duration::from_millis(150));
        assert_eq!(backoff(&p, 2), Duration::from_millis(225));
        assert_eq!(backoff(&p, 3), Duration::from_millis(300));
        assert_eq!(backoff(&p, 1000), Duration::from_millis(300));
    }

    #[test]
    fn more_than_max_restarts_in_the_window_gives_up() {
        let p = policy();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        for i in 0..3 {
            let d = t.on_failure(&p, t0 + Duration::from_secs(i), quick);
            assert!(matches!(d, Decision::RestartAfter(_)), "exit {i}: {d:?}");
        }
        assert_eq!(
            t.on_failure(&p, t0 + Duration::from_secs(3), quick),
            Decision::GiveUp
        );
    }

    #[test]
    fn the_window_slides() {
        let p = policy();
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        for i in 0..10 {
            // One exit every 4 s: never more than 3 within 10 s.
            let d = t.on_failure(&p, t0 + Duration::from_secs(4 * i), quick);
            assert!(matches!(d, Decision::RestartAfter(_)), "exit {i}: {d:?}");
        }
        assert!(t.recent() <= 3);
    }

    #[test]
    fn staying_up_resets_the_backoff() {
        let p = RestartConfig {
            max_restarts: 100,
            ..policy()
        };
        let mut t = RestartTracker::default();
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        t.on_failure(&p, t0, quick);
        assert_eq!(
            t.on_failure(&p, t0, quick),
            Decision::RestartAfter(Duration::from_millis(150))
        );
        assert_eq!(
            t.on_failure(&p, t0, Duration::from_secs(5)),
            Decision::RestartAfter(Duration::from_millis(100))
        );
    }
}
