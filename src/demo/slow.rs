//! `--slow-every N --slow-ms M`: every Nth request holds the worker's only thread for M ms.

use std::time::{Duration, Instant};

use super::DemoArgs;

/// The uneven-work setting: which requests are slow and for how long.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlowWork {
    every: u64,
    pub(super) burn: Duration,
}

impl SlowWork {
    pub(super) fn from_args(args: &DemoArgs) -> Option<SlowWork> {
        (args.slow_every > 0).then(|| SlowWork {
            every: args.slow_every,
            burn: Duration::from_millis(args.slow_ms),
        })
    }

    /// Whether the `nth` request answered by this process (counting from 1) is a slow one.
    pub(super) fn is_slow(&self, nth: u64) -> bool {
        nth % self.every == 0
    }
}

/// Keeps this thread busy for `burn`: spinning, not sleeping, so that the event loop is
/// occupied exactly as by a long synchronous computation.
pub(super) fn burn_cpu(burn: Duration) {
    let start = Instant::now();
    while start.elapsed() < burn {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::Drain;

    #[test]
    pub(super) fn every_nth_request_is_slow_counting_from_one() {
        let slow = SlowWork {
            every: 50,
            burn: Duration::from_millis(20),
        };
        let slow_ones: Vec<u64> = (1..=150).filter(|&n| slow.is_slow(n)).collect();
        assert_eq!(slow_ones, vec![50, 100, 150]);
    }

    #[test]
    pub(super) fn slow_work_is_off_unless_slow_every_is_given() {
        let args = |every| DemoArgs {
            max_requests: 0,
            standalone: None,
            ready_delay: None,
            slow_every: every,
            slow_ms: 20,
            drain_grace: Drain::DEFAULT_GRACE,
            idle_timeout: Drain::DEFAULT_IDLE_TIMEOUT,
            request_timeout: Drain::DEFAULT_REQUEST_TIMEOUT,
        };
        assert!(SlowWork::from_args(&args(0)).is_none());
        let slow = SlowWork::from_args(&args(3)).expect("on with --slow-every 3");
        assert_eq!(slow.burn, Duration::from_millis(20));
    }

    #[test]
    pub(super) fn burning_cpu_takes_at_least_the_time_asked() {
        let start = Instant::now();
        burn_cpu(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
