//! Which worker gets the next connection: strict rotation over the slots, skipping any that
//! cannot take one now (not ready, window full, leaving). A pure function of a cursor and a
//! predicate, so its fairness is tested here and not through sockets.

/// A round-robin cursor over `n` slots.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The first slot at or after the cursor (wrapping) that `eligible` accepts; the cursor then
    /// moves just past it. `None` when no slot is eligible (the cursor stays).
    pub fn pick(&mut self, n: usize, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        let slot = (0..n).map(|i| (start + i) % n).find(|&i| eligible(i))?;
        self.next = (slot + 1) % n;
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_eligible_rotates_strictly() {
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..7).map(|_| rr.pick(3, |_| true).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn ineligible_slots_are_skipped_without_losing_the_turn_order() {
        let mut rr = RoundRobin::default();
        let picks: Vec<_> = (0..4).map(|_| rr.pick(3, |i| i != 1).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        // Slot 1 comes back and takes its place in the rotation after slot 0.
        assert_eq!(rr.pick(3, |_| true), Some(0));
        assert_eq!(rr.pick(3, |_| true), Some(1));
    }

    #[test]
    fn nobody_eligible_is_none_and_keeps_the_cursor() {
        let mut rr = RoundRobin::default();
        rr.pick(3, |_| true);
        assert_eq!(rr.pick(3, |_| false), None);
        assert_eq!(rr.pick(3, |_| true), Some(1));
        assert_eq!(rr.pick(0, |_| true), None);
    }

    #[test]
    fn a_shrinking_fleet_does_not_index_out_of_range() {
        let mut rr = RoundRobin::default();
        for _ in 0..5 {
            rr.pick(8, |_| true);
        }
        assert_eq!(rr.pick(2, |_| true), Some(1));
    }
}
