//! The master is told to stop: what waits in its queue goes to the workers that serve, beyond
//! their windows, then every worker is told to stop.

use super::Sim;

impl Sim {
    /// The stop, as the master's: the queue to the workers that serve (closed only when none
    /// does), checked; then every worker drains.
    pub(super) fn stop(&mut self) -> Result<(), String> {
        self.stopping = true;
        // Queued connections go to the workers that serve, beyond their windows (the rest is
        // closed: only when none serves), then every worker is told to stop.
        let queued = self.ledger.queued();
        let left = self.ledger.hand_out_all(self.slots.len(), self.serving());
        let takers = (0..self.slots.len())
            .filter_map(self.serving())
            .filter(|&k| self.ledger.account(k).is_some_and(|a| !a.is_full()))
            .count();
        if takers > 0 && left > 0 {
            return Err(format!(
                "{left} of {queued} left queued at the stop, {takers} serve"
            ));
        }
        self.handed_at_stop = queued - left;
        self.dispatch()?;
        for key in self.workers.keys().copied().collect::<Vec<_>>() {
            self.detach(key);
        }
        self.log("stop".into());
        Ok(())
    }
}
