//! Stop signals in the supervision simulator, by the core's own rules (`stop_signal`): a worker
//! told to stop on its channel, or signalled alone; its due signal when its channel closes or
//! at the supervisor's tick. Checked: a signal goes only to a worker told to stop.

use super::Sim;
use crate::config::StopSignal;
use crate::engine::stop_signal::{self, Tell};

impl Sim {
    /// The shell's `Effect::Stop`: told on its channel (a Node or a native worker, at random),
    /// or signalled alone when its channel is gone.
    pub(super) fn tell_to_stop(&mut self, key: usize) -> Result<(), String> {
        let node = self.rng.bool();
        let Some(w) = self.sup.fleet.workers.get_mut(key) else {
            return Ok(());
        };
        self.stopping.insert(key);
        let open = self.open.contains(&w.pid.as_raw());
        if stop_signal::ask(w, StopSignal::Auto, node, true, open) != Tell::Channel {
            self.signal(key)?;
        }
        Ok(())
    }

    /// Its channel closed (as the shell sees it): released, the signal it was owed sent now or
    /// after the grace (the tick's), and the supervisor told.
    pub(super) fn close_channel(&mut self, key: usize, silent: bool) -> Result<(), String> {
        self.release(key);
        let now = self.now;
        let signal =
            (self.sup.fleet.workers.get_mut(key)).and_then(|w| stop_signal::channel_closed(w, now));
        if signal.is_some() {
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
