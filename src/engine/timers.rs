//! The supervisor's timers in the order they fall due, so that its look at the clock touches
//! only what is due — not every worker on every turn of the master's loop.
//!
//! An entry is a *hint*: "look at this worker (or place) at this moment". The truth stays in
//! the records (`Worker::kill_at`, `Slot::start_at`, …); whoever sets one of them arms a hint
//! no later than it, and whoever looks at a due entity arms its next moment again. Nothing is
//! ever removed early: a hint whose timer was cleared or moved only costs one look. So the one
//! rule to keep is that every timer in the records has a hint at or before it
//! ([`Timers::covers`], checked by the supervision simulator after every step).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::ids::Place;

/// What a hint asks to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timed {
    /// A live worker (its slab key): its SIGKILL, its stop signal, its closed channel, its
    /// readiness.
    Worker(usize),
    /// A slot or the agent's place: its (re)start.
    Place(Place),
}

/// The hints, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timed)>>,
}

impl Timers {
    /// A look at `what` at `at` (nothing for `None`).
    pub fn arm(&mut self, at: Option<Instant>, what: Timed) {
        if let Some(at) = at {
            self.heap.push(Reverse((at, what)));
        }
    }

    /// The earliest hint: the master sleeps no longer than this.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes every hint due at `now` into `due` (each entity once, in order).
    pub fn take_due(&mut self, now: Instant, due: &mut Vec<Timed>) {
        let before = due.len();
        while let Some(Reverse((at, what))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            due.push(what);
        }
        if due.len() > before {
            due.sort_unstable();
            due.dedup();
        }
    }

    /// Hints held, stale ones included.
    pub fn held(&self) -> usize {
        self.heap.len()
    }

    /// Forgets every hint (before arming them all again from the records).
    pub fn clear(&mut self) {
        self.heap.clear();
    }

    /// Some hint looks at `what` at or before `at`.
    #[cfg(test)]
    pub fn covers(&self, what: Timed, at: Instant) -> bool {
        self.heap
            .iter()
            .any(|Reverse((t, w))| *w == what && *t <= at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_hints_come_out_once_each_in_order_and_later_ones_stay() {
        let now = Instant::now();
        let ms = |n| now + Duration::from_millis(n);
        let mut timers = Timers::default();
        timers.arm(Some(ms(30)), Timed::Worker(2));
        timers.arm(Some(ms(10)), Timed::Place(Place::Slot(1)));
        timers.arm(Some(ms(20)), Timed::Worker(2));
        timers.arm(None, Timed::Worker(7));
        timers.arm(Some(ms(5)), Timed::Worker(0));
        assert_eq!(timers.next(), Some(ms(5)));
        assert!(timers.covers(Timed::Worker(2), ms(25)));
        assert!(!timers.covers(Timed::Worker(2), ms(15)));
        assert!(!timers.covers(Timed::Worker(7), ms(100)));

        let mut due = Vec::new();
        timers.take_due(ms(20), &mut due);
        let slot = Timed::Place(Place::Slot(1));
        assert_eq!(due, vec![Timed::Worker(0), Timed::Worker(2), slot]);
        assert_eq!(timers.next(), Some(ms(30)));
        timers.take_due(ms(29), &mut due);
        assert_eq!(due.len(), 3, "nothing more is due before 30 ms");
        timers.take_due(ms(30), &mut due);
        assert_eq!(due.len(), 3, "worker 2 is looked at once");
        assert_eq!(timers.held(), 0);
    }
}
