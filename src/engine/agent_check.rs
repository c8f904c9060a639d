//! HAProxy's agent-check (`[metrics] haproxy_agent`): what this host answers a balancer in
//! front that asks how much to send it — `up ready N%` while it serves, N the share of its
//! workers free to take a connection (smoothed over about a second, never 0 while one serves),
//! `drain` while a stop drains or runs, `down` while no worker serves. HAProxy reads one line
//! per connection (its configuration manual, `agent-check`): a state word and a weight
//! percentage relative to the server's configured weight.

use std::io::Write;
use std::time::{Duration, Instant};

/// How quickly the free share follows the workers: about this long to move most of the way.
pub const SMOOTHING: Duration = Duration::from_secs(1);

/// How often the master samples the free share while the agent listens.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Where the host stands, for the balancer in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Some worker serves and the master is neither draining nor stopping.
    Serving,
    /// A graceful stop drains or runs: send nothing new.
    Draining,
    /// No worker serves (none ready yet, or all given up).
    Down,
}

/// The free share of the workers, smoothed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreeShare {
    /// In [0, 1]; `None` until the first sample.
    smoothed: Option<f64>,
    last: Option<Instant>,
}

impl FreeShare {
    /// At `now`, `free` of `capacity` workers can take a connection at once.
    pub fn sample(&mut self, free: usize, capacity: usize, now: Instant) {
        let share = if capacity == 0 {
            0.0
        } else {
            free.min(capacity) as f64 / capacity as f64
        };
        let smoothed = match (self.smoothed, self.last) {
            (Some(before), Some(last)) => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                let alpha = 1.0 - (-dt / SMOOTHING.as_secs_f64()).exp();
                before + alpha * (share - before)
            }
            _ => share,
        };
        self.smoothed = Some(smoothed);
        self.last = Some(now);
    }

    /// The share as a whole percentage, at least 1 (a host that serves is never weighted out).
    pub fn percent(&self) -> u8 {
        let share = self.smoothed.unwrap_or(1.0);
        ((share * 100.0).round() as u8).clamp(1, 100)
    }
}

/// The reply line for `state` with `free`, written into `out`; its length. No allocation.
pub fn reply(state: HostState, free: &FreeShare, out: &mut [u8; 32]) -> usize {
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    let _ = match state {
        HostState::Serving => writeln!(cursor, "up ready {}%", free.percent()),
        HostState::Draining => writeln!(cursor, "drain"),
        HostState::Down => writeln!(cursor, "down"),
    };
    cursor.position() as usize
}

/// Several apps' states as one for the host: draining if any drains, down if any that listens
/// is down, else serving at the smallest share (the busiest app sets the host's weight).
/// `apps`: each app's state and free share in percent.
pub fn summarize(apps: &[(HostState, u8)]) -> (HostState, u8) {
    if apps.iter().any(|(s, _)| *s == HostState::Draining) {
        return (HostState::Draining, 0);
    }
    if apps.is_empty() || apps.iter().any(|(s, _)| *s == HostState::Down) {
        return (HostState::Down, 0);
    }
    let share = apps.iter().map(|(_, p)| *p).min().unwrap_or(100);
    (HostState::Serving, share.clamp(1, 100))
}

/// The reply line for `state` at `percent`.
pub fn line(state: HostState, percent: u8) -> String {
    match state {
        HostState::Serving => format!("up ready {}%\n", percent.clamp(1, 100)),
        HostState::Draining => "drain\n".into(),
        HostState::Down => "down\n".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_apps_are_one_host_as_its_busiest_or_worst_app() {
        use HostState::*;
        assert_eq!(summarize(&[(Serving, 80), (Serving, 30)]), (Serving, 30));
        assert_eq!(summarize(&[(Serving, 80), (Down, 0)]), (Down, 0));
        assert_eq!(summarize(&[(Down, 0), (Draining, 0)]), (Draining, 0));
        assert_eq!(summarize(&[]), (Down, 0));
        assert_eq!(
            summarize(&[(Serving, 0)]),
            (Serving, 1),
            "never 0 while serving"
        );
        assert_eq!(line(Serving, 30), "up ready 30%\n");
    }

    fn said(state: HostState, free: &FreeShare) -> String {
        let mut out = [0; 32];
        let n = reply(state, free, &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    #[test]
    fn each_state_has_its_line_in_haproxys_grammar() {
        let mut free = FreeShare::default();
        assert_eq!(said(HostState::Serving, &free), "up ready 100%\n");
        free.sample(1, 4, Instant::now());
        assert_eq!(said(HostState::Serving, &free), "up ready 25%\n");
        assert_eq!(said(HostState::Draining, &free), "drain\n");
        assert_eq!(said(HostState::Down, &free), "down\n");
    }

    #[test]
    fn the_share_follows_the_workers_over_about_a_second_and_never_says_0() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut free = FreeShare::default();
        free.sample(4, 4, t0);
        assert_eq!(free.percent(), 100);
        // All busy from now: a tenth of a second moves it a little, a second most of the way.
        free.sample(0, 4, ms(100));
        assert!((88..=92).contains(&free.percent()), "{}", free.percent());
        let mut t = 100;
        while t < 1_100 {
            t += 100;
            free.sample(0, 4, ms(t));
        }
        // 1.1 s busy: e^-1.1 of the way is left, 33 %.
        assert!((31..=35).contains(&free.percent()), "{}", free.percent());
        for _ in 0..100 {
            t += 100;
            free.sample(0, 4, ms(t));
        }
        assert_eq!(free.percent(), 1, "busy, but serving: never weighted out");
        free.sample(9, 4, ms(t + 100_000));
        assert_eq!(free.percent(), 100, "a long gap: the latest is what counts");
    }
}
