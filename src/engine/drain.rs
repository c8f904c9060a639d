//! Draining before a graceful stop (`[shutdown] drain`): for that long the master serves on —
//! accepting and dispatching as ever — while it reports itself not ready (`/readyz` 503
//! `draining`, sd_notify, `status`), so that a balancer in front sees it leave and sends new
//! clients elsewhere before the listeners close. Then the usual graceful stop.
//!
//! What a stop request does, by what the master is doing: running, it drains (or stops at
//! once without a drain, or when asked to skip it); draining, a second request skips what is
//! left; stopping already, it is the caller's (a second signal kills, a second `stop` waits).

use std::time::{Duration, Instant};

/// What to do with a graceful stop request, asked while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopNext {
    /// Drain until then; the graceful stop follows.
    DrainUntil(Instant),
    /// The graceful stop now: no drain configured, asked to skip it, or draining already.
    Stop,
}

/// The drain under way, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    until: Option<Instant>,
}

impl Drain {
    /// A graceful stop is asked at `now` with `[shutdown] drain` = `drain`; `skip`: without it
    /// (`stop --now`).
    pub fn ask(&mut self, drain: Duration, skip: bool, now: Instant) -> StopNext {
        if self.until.is_some() || skip || drain.is_zero() {
            self.until = None;
            return StopNext::Stop;
        }
        let until = now + drain;
        self.until = Some(until);
        StopNext::DrainUntil(until)
    }

    /// Draining: until when.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Whether a drain is under way.
    pub fn active(&self) -> bool {
        self.until.is_some()
    }

    /// The drain is over at `now`: the graceful stop begins (once).
    pub fn ends(&mut self, now: Instant) -> bool {
        if self.until.is_some_and(|t| t <= now) {
            self.until = None;
            return true;
        }
        false
    }

    /// How long is left at `now`.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.until.map(|t| t.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_drains_for_the_configured_time_then_stops_and_a_second_ask_skips_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut drain = Drain::default();
        assert_eq!(drain.ask(s(2), false, t0), StopNext::DrainUntil(t0 + s(2)));
        assert_eq!(drain.until(), Some(t0 + s(2)));
        assert_eq!(drain.left(t0 + s(1)), Some(s(1)));
        assert!(!drain.ends(t0 + s(1)));
        assert!(drain.ends(t0 + s(2)));
        assert!(!drain.ends(t0 + s(3)), "once");
        assert_eq!(drain.until(), None);

        let mut drain = Drain::default();
        drain.ask(s(2), false, t0);
        assert_eq!(
            drain.ask(s(2), false, t0 + s(1)),
            StopNext::Stop,
            "asked again"
        );
        assert_eq!(drain.until(), None);
        assert!(!drain.ends(t0 + s(5)), "the graceful stop began already");
    }

    #[test]
    fn without_a_drain_or_asked_to_skip_it_the_stop_is_now() {
        let t0 = Instant::now();
        let mut drain = Drain::default();
        assert_eq!(drain.ask(Duration::ZERO, false, t0), StopNext::Stop);
        assert_eq!(drain.ask(Duration::from_secs(5), true, t0), StopNext::Stop);
        assert_eq!(drain.until(), None);
    }
}
