//! Stop signals in the supervision simulator, through the supervisor's methods the shell calls
//! (`supervisor/told.rs`, applying `stop_signal`'s rules): a worker told to stop on its
//! channel, or signalled alone; its due signal when its channel closes or at the supervisor's
//! tick. Checked: a signal goes only to a worker told to stop.

use super::Sim;
use crate::config::StopSignal;
use crate::engine::stop_signal::Tell;

impl Sim {
    /// The shell's `Effect::Stop`: told on its channel (a Node or a native worker, at random),
    /// or signalled alone when its channel is gone.
    pub(super) fn tell_to_stop(&mut self, key: usize) -> Result<(), String> {
        let node = self.rng.bool();
        let Some(w) = self.sup.fleet().workers.get(key) else {
            return Ok(());
        };
        let open = self.open.contains(&w.pid.as_raw());
        self.stopping.insert(key);
        match self
            .sup
            .ask_to_stop(key, StopSignal::Auto, node, true, open)
        {
            Some((_, Tell::Channel)) => Ok(()),
            Some((_, Tell::Signal(_))) => self.signal(key),
            None => Err(format!(
                "{key} is in the fleet, yet asking it to stop found none"
            )),
        }
    }

    /// Its channel closed (as the shell sees it): released, the signal it was owed sent now or
    /// after the grace (the tick's), and the supervisor told.
    pub(super) fn close_channel(&mut self, key: usize, silent: bool) -> Result<(), String> {
        self.release(key);
        let now = self.now;
        if self.sup.channel_released(key, now).is_some() {
            self.signal(key)?;
        }
        self.sup.channel_closed(key, now, silent);
        Ok(())
    }

    /// A stop signal goes to `key`: only to a worker told to stop. (A worker told twice — asked
    /// to stop, then failed while draining — may get it twice: the second is the one that
    /// reaches it if its `stop` never left its broken channel.)
    pub(super) fn signal(&mut self, key: usize) -> Result<(), String> {
        if !self.stopping.contains(&key) {
            return Err(format!("a stop signal to {key}, never told to stop"));
        }
        Ok(())
    }
}
