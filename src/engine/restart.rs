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
            retry_after: Duration::from_secs(60),
            on_all_given_up: crate::config::AllGivenUp::Wait,
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

    /// The documented policy, written out plainly: an exit gives up the slot when more than
    /// `max_restarts` exits (this one included) fall within `window` of it; otherwise the delay
    /// is `backoff_initial`, times 1.5 for each consecutive exit since the last one that came
    /// after `min_uptime` or more (that one starts again from `backoff_initial`), at most
    /// `backoff_max`.
    #[test]
    fn decisions_follow_the_documented_policy_over_random_timelines() {
        let mut rng = fastrand::Rng::with_seed(11);
        let ms = Duration::from_millis;
        for case in 0..2_000 {
            let p = RestartConfig {
                max_restarts: rng.u32(0..6),
                window: ms(rng.u64(1_000..20_000)),
                backoff_initial: ms(rng.u64(10..500)),
                backoff_max: ms(rng.u64(10..3_000)),
                min_uptime: ms(rng.u64(0..3_000)),
                ..policy()
            };
            let mut tracker = RestartTracker::default();
            let t0 = Instant::now();
            let mut now = t0;
            let mut exits: Vec<Instant> = Vec::new();
            // The delay the spec expects next, built step by step (not by powi).
            let mut next = p.backoff_initial.as_secs_f64();
            for step in 0..40 {
                now += ms(rng.u64(0..5_000));
                let uptime = ms(rng.u64(0..4_000));
                exits.push(now);
                let recent = exits.iter().filter(|&&t| now - t <= p.window).count();
                let decision = tracker.on_failure(&p, now, uptime);
                if recent > p.max_restarts as usize {
                    assert_eq!(decision, Decision::GiveUp, "case {case} step {step}: {p:?}");
                    break; // a given-up slot is not restarted (until a reload)
                }
                if uptime >= p.min_uptime {
                    next = p.backoff_initial.as_secs_f64();
                }
                let want = next.min(p.backoff_max.as_secs_f64());
                let Decision::RestartAfter(got) = decision else {
                    panic!("case {case} step {step}: gave up with {recent} recent: {p:?}");
                };
                assert!(
                    (got.as_secs_f64() - want).abs() < 1e-6,
                    "case {case} step {step}: {got:?} for {want}s: {p:?}"
                );
                assert_eq!(tracker.recent(), recent);
                next *= 1.5;
            }
        }
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
