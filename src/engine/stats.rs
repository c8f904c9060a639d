//! What the ledger tallies per worker as connections pass: handed and acked counts, the
//! hand-off latency histogram ([`Served`], [`Latency`]), and the connections-per-second ring
//! ([`Rate`]). Fixed size, O(1) per connection, `now` an argument: the core counts, the
//! shell's metrics render.

use std::time::{Duration, Instant};

/// What one worker — or, summed, every worker a slot had — did with the connections handed to
/// it. Fixed size: counting is never an allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    /// Connections assigned to it (those it could not be sent excepted).
    pub handed: u64,
    /// Connections it acked (took for good).
    pub acked: u64,
    /// From accept to ack, of the acked ones.
    pub latency: Latency,
}

impl Served {
    pub fn add(&mut self, other: &Served) {
        self.handed += other.handed;
        self.acked += other.acked;
        self.latency.add(&other.latency);
    }

    /// A connection accepted at `accepted` was acked at `now`.
    pub fn acked(&mut self, accepted: Instant, now: Instant) {
        self.acked += 1;
        self.latency
            .observe(now.saturating_duration_since(accepted));
    }
}

/// Upper bounds of the hand-off latency buckets, in nanoseconds (100 µs … 10 s; a hand-off on
/// an idle machine takes tens of microseconds, a queued one waits for a worker with room).
pub const LATENCY_BOUNDS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram: a count per bucket of [`LATENCY_BOUNDS_NS`] (not cumulative; the last
/// one is `+Inf`) and the sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    counts: [u64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Latency {
    pub fn observe(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub fn add(&mut self, other: &Latency) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c += o;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound in seconds or None for +Inf, cumulative count)`, in order.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = LATENCY_BOUNDS_NS
            .iter()
            .map(|&ns| Some(ns as f64 / 1e9))
            .chain([None]);
        bounds.zip(self.counts.iter().scan(0, |total, &n| {
            *total += n;
            Some(*total)
        }))
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }
}

/// Connections per second over the last [`Rate::WINDOW`] whole seconds, counted into one bucket
/// per second as they are sent: O(1) per send, no allocation, no timer waking the master.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    /// The first count's moment: seconds are numbered from it.
    origin: Option<Instant>,
    /// Counts of the seconds `last - WINDOW ..= last`, at index `second % buckets`.
    buckets: [u64; Rate::WINDOW as usize + 1],
    last: u64,
}

impl Rate {
    pub const WINDOW: u64 = 10;

    pub fn add(&mut self, now: Instant, n: u64) {
        let origin = *self.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        let len = self.buckets.len() as u64;
        // Seconds passed since the last count start empty (at most a full turn to clear).
        for s in (self.last + 1..=second).take(self.buckets.len()) {
            self.buckets[(s % len) as usize] = 0;
        }
        self.last = self.last.max(second);
        self.buckets[(second % len) as usize] += n;
    }

    /// The mean per second over the whole seconds of the window before `now` (fewer where the
    /// counting began less than a window ago); `since` is when the counted thing began (a
    /// worker's start), `None` before a second has passed.
    pub fn per_second(&self, since: Instant, now: Instant) -> Option<f64> {
        let age = now.saturating_duration_since(since).as_secs();
        if age == 0 {
            return None;
        }
        let window = age.min(Rate::WINDOW);
        let Some(origin) = self.origin else {
            return Some(0.0);
        };
        let current = now.saturating_duration_since(origin).as_secs();
        let len = self.buckets.len() as u64;
        // Whole seconds `current - window .. current`, of those still kept (`last - WINDOW ..=
        // last`): the current second is not whole yet.
        let from = current
            .saturating_sub(window)
            .max(self.last.saturating_sub(Rate::WINDOW));
        let total: u64 = (from..current.min(self.last + 1))
            .map(|s| self.buckets[(s % len) as usize])
            .sum();
        Some(total as f64 / window as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_hold_their_upper_bound_and_add_up() {
        let mut a = Latency::default();
        a.observe(Duration::from_micros(100)); // on a bound: in that bucket (`le`)
        a.observe(Duration::from_nanos(100_001));
        a.observe(Duration::from_secs(3600));
        let mut b = Latency::default();
        b.observe(Duration::ZERO);
        a.add(&b);
        let cumulative: Vec<u64> = a.cumulative().map(|(_, n)| n).collect();
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[1], 3);
        assert_eq!(cumulative[15], 3);
        assert_eq!(cumulative[16], 4);
        assert_eq!(a.count(), 4);
        assert!((a.sum_seconds() - 3600.000200001).abs() < 1e-9);
    }

    #[test]
    fn the_rate_is_the_mean_of_the_last_whole_seconds() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Rate::default();
        assert_eq!(r.per_second(t0, at(500)), None, "not a whole second yet");
        assert_eq!(r.per_second(t0, at(1500)), Some(0.0), "nothing sent");
        // 10 a second for 20 seconds.
        for tenth in 0..200 {
            r.add(at(tenth * 100), 1);
        }
        assert_eq!(r.per_second(t0, at(20_050)), Some(10.0));
        // Younger than the window: the mean over its whole seconds so far.
        let mut young = Rate::default();
        young.add(at(0), 6);
        young.add(at(1200), 2);
        assert_eq!(young.per_second(t0, at(2100)), Some(4.0));
        // Silence since: the window forgets, second by second, then entirely.
        assert_eq!(r.per_second(t0, at(25_000)), Some(5.0));
        assert_eq!(r.per_second(t0, at(31_000)), Some(0.0));
        assert_eq!(r.per_second(t0, at(500_000)), Some(0.0));
        // Counting again after a long gap starts from empty buckets.
        r.add(at(500_100), 30);
        assert_eq!(r.per_second(t0, at(501_000)), Some(3.0));
    }
}
