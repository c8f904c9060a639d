//! Watch mode's decision (`[watch]`, `--watch`): a change under the watched paths asks for a
//! rolling reload — never a stop — once per burst of changes, `debounce` after the last one;
//! a burst while a reload runs is kept, once, for when it ends. Pure: the shell says what
//! changed and when, and asks when to reload.

use std::time::{Duration, Instant};

/// Whether a file name is left out of watching (`[watch] ignore`): equal to a pattern, or
/// matching `*suffix` / `prefix*`.
pub fn ignored(name: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        if let Some(suffix) = p.strip_prefix('*') {
            name.ends_with(suffix)
        } else if let Some(prefix) = p.strip_suffix('*') {
            name.starts_with(prefix)
        } else {
            name == p
        }
    })
}

/// Changes seen and not yet reloaded for.
#[derive(Debug)]
pub struct Watch {
    debounce: Duration,
    /// The last change of the burst not yet answered with a reload.
    last_change: Option<Instant>,
    /// How many changes that burst holds (for the log).
    changes: u64,
}

impl Watch {
    pub fn new(debounce: Duration) -> Watch {
        Watch {
            debounce,
            last_change: None,
            changes: 0,
        }
    }

    /// Something under the watched paths changed at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.last_change = Some(now);
        self.changes += 1;
    }

    /// When the pending burst is due, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_change.map(|t| t + self.debounce)
    }

    /// A reload is due now (the burst has been quiet for `debounce`, and no reload runs):
    /// taken, with how many changes it answers. While `reloading`, the burst waits.
    pub fn take_due(&mut self, now: Instant, reloading: bool) -> Option<u64> {
        if reloading || self.deadline().is_none_or(|d| now < d) {
            return None;
        }
        self.last_change = None;
        Some(std::mem::take(&mut self.changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_reloads_once_after_its_last_change_and_waits_for_a_running_reload() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = Watch::new(Duration::from_millis(100));
        assert_eq!(w.take_due(ms(0), false), None, "nothing changed");
        assert_eq!(w.deadline(), None);
        for t in [0, 40, 80] {
            w.changed(ms(t));
        }
        assert_eq!(w.deadline(), Some(ms(180)), "from the last change");
        assert_eq!(w.take_due(ms(179), false), None);
        assert_eq!(
            w.take_due(ms(180), false),
            Some(3),
            "one reload for the burst"
        );
        assert_eq!(w.take_due(ms(500), false), None, "and only one");
        w.changed(ms(600));
        assert_eq!(w.take_due(ms(800), true), None, "a reload runs: kept");
        w.changed(ms(810));
        assert_eq!(w.take_due(ms(2000), true), None);
        assert_eq!(
            w.take_due(ms(2001), false),
            Some(2),
            "once it ended: one reload"
        );
        assert_eq!(w.take_due(ms(3000), false), None);
    }

    #[test]
    fn names_are_ignored_whole_or_by_a_star_at_one_end() {
        let p: Vec<String> = ["node_modules", "*.log", ".git*"]
            .map(String::from)
            .to_vec();
        assert!(ignored("node_modules", &p));
        assert!(ignored("app.log", &p));
        assert!(ignored(".gitignore", &p) && ignored(".git", &p));
        assert!(!ignored("app.js", &p) && !ignored("node_modules2", &p));
    }
}
