//! How a worker asked to stop is told, and when its `[shutdown] signal` goes — Node's order:
//! a Node worker's signal just before its `disconnect`, and only once its app runs (it said
//! something, so its handlers are in place), or [`CHANNEL_CLOSED_GRACE`] after its channel
//! closed unheard (its app handled the `disconnect`); a native worker's once its `stop` has
//! left (it reads the `stop` first). A worker that cannot be told on a channel gets the signal
//! alone, at once.
//!
//! Pure: each function takes what the shell saw (the channel open, the `stop` still queued or
//! gone) and `now`, records on the worker what is still due, and returns the signal the shell
//! is to send now, if any.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::fleet::{StopSignalDue, Worker};
use crate::config::StopSignal;

/// How long a worker whose channel closed has to exit before that counts as a failure; and a
/// Node worker whose channel closed unheard, before its stop signal follows.
pub const CHANNEL_CLOSED_GRACE: Duration = Duration::from_millis(200);

/// How to tell a worker to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    /// Queue `stop` (or Node's `disconnect`) on its channel; the signal, if one is due, follows
    /// by the functions below.
    Channel,
    /// Send this signal alone, now: it has no channel to be told on, never spoke on it, or is a
    /// Node worker stopped PM2's way (`disconnect = false`).
    Signal(Signal),
}

/// The worker is asked to stop (`signal`: `[shutdown] signal`; `node`: it speaks Node's IPC;
/// `disconnect`: `[shutdown] disconnect`; `channel`: its channel is open).
pub fn ask(
    worker: &mut Worker,
    signal: StopSignal,
    node: bool,
    disconnect: bool,
    channel: bool,
) -> Tell {
    // A Node worker stopped PM2's way: the signal alone, its app drains and exits.
    let tell = !node || disconnect;
    if channel && worker.spoke && tell {
        worker.stop_signal = signal.after_stop(node).map(|signal| StopSignalDue {
            signal,
            first: node,
        });
        Tell::Channel
    } else {
        Tell::Signal(signal.alone())
    }
}

/// The signal due with its `stop` may go now: never for a Node worker whose app has not run.
pub fn may_signal(worker: &Worker) -> bool {
    worker
        .stop_signal
        .is_some_and(|due| worker.heard || !due.first)
}

/// The due signal, taken (it goes once).
fn take(worker: &mut Worker) -> Option<Signal> {
    worker.stop_signal.take().map(|due| due.signal)
}

/// Its due signal, if it may go now.
fn take_if_may(worker: &mut Worker) -> Option<Signal> {
    if may_signal(worker) {
        take(worker)
    } else {
        None
    }
}

/// It said something on its channel (`stop_left`: its `stop` has left already): the first
/// words of a Node worker show its app runs, so the signal it was owed goes now.
pub fn heard(worker: &mut Worker, stop_left: bool) -> Option<Signal> {
    let first_words = !std::mem::replace(&mut worker.heard, true);
    if first_words && stop_left {
        take_if_may(worker)
    } else {
        None
    }
}

/// Before its channel is flushed (`stop_is_next`: the `stop` is the next thing to leave): a
/// Node worker's signal goes just before its `disconnect`.
pub fn before_flush(worker: &mut Worker, stop_is_next: bool) -> Option<Signal> {
    let first = worker.stop_signal.is_some_and(|due| due.first);
    if first && stop_is_next {
        take_if_may(worker)
    } else {
        None
    }
}

/// After its channel was flushed (`stop_pending`: the `stop` has not left yet): once it has,
/// the signal goes.
pub fn after_flush(worker: &mut Worker, stop_pending: bool) -> Option<Signal> {
    if stop_pending {
        None
    } else {
        take_if_may(worker)
    }
}

/// Its channel closed, so its `stop` will never leave: the signal goes now — unless it is a
/// Node worker that had said nothing, whose closing channel shows its app handled the
/// `disconnect`: then its signal follows [`CHANNEL_CLOSED_GRACE`] later if it has not exited.
pub fn channel_closed(worker: &mut Worker, now: Instant) -> Option<Signal> {
    if worker.stop_signal.is_some_and(|due| due.first) && !worker.heard {
        worker.stop_signal_at = Some(now + CHANNEL_CLOSED_GRACE);
        None
    } else {
        take_if_may(worker)
    }
}

/// The clock: a signal deferred by [`channel_closed`] that is due at `now`.
pub fn tick(worker: &mut Worker, now: Instant) -> Option<Signal> {
    if worker.stop_signal_at.is_some_and(|t| t <= now) {
        worker.stop_signal_at = None;
        take(worker)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fleet::test_worker_at;
    use crate::engine::ids::Place;

    const TERM: Signal = Signal::SIGTERM;

    fn worker(spoke: bool, now: Instant) -> Worker {
        let mut w = test_worker_at(Place::Slot(0), 7, now);
        w.spoke = spoke;
        w
    }

    #[test]
    fn a_native_worker_is_told_on_its_channel_and_signalled_once_its_stop_has_left() {
        let now = Instant::now();
        let mut w = worker(true, now);
        let int = StopSignal::Signal(Signal::SIGINT);
        assert_eq!(ask(&mut w, int, false, true, true), Tell::Channel);
        assert_eq!(before_flush(&mut w, true), None, "not before its stop");
        assert_eq!(after_flush(&mut w, true), None, "its stop is still queued");
        assert_eq!(after_flush(&mut w, false), Some(Signal::SIGINT));
        assert_eq!(after_flush(&mut w, false), None, "once");
        // `auto` sends a native worker nothing beyond its `stop`.
        let mut w = worker(true, now);
        assert_eq!(
            ask(&mut w, StopSignal::Auto, false, true, true),
            Tell::Channel
        );
        assert_eq!(after_flush(&mut w, false), None);
    }

    #[test]
    fn without_a_channel_or_words_or_for_pm2s_way_the_signal_goes_alone() {
        let now = Instant::now();
        for (spoke, node, disconnect, channel) in [
            (true, false, true, false),
            (false, false, true, true),
            (true, true, false, true),
        ] {
            let mut w = worker(spoke, now);
            let tell = ask(&mut w, StopSignal::Auto, node, disconnect, channel);
            assert_eq!(
                tell,
                Tell::Signal(TERM),
                "{spoke} {node} {disconnect} {channel}"
            );
            assert_eq!(w.stop_signal, None, "nothing else is due");
        }
    }

    #[test]
    fn a_node_workers_signal_goes_just_before_its_disconnect_once_its_app_runs() {
        let now = Instant::now();
        let mut w = worker(true, now);
        assert_eq!(
            ask(&mut w, StopSignal::Auto, true, true, true),
            Tell::Channel
        );
        assert_eq!(before_flush(&mut w, true), None, "its app has not run yet");
        assert_eq!(after_flush(&mut w, false), None);
        // Its first words, with its `disconnect` gone already: the signal it was owed.
        assert_eq!(heard(&mut w, true), Some(TERM));
        assert_eq!(heard(&mut w, true), None, "only the first words");
        // First words while its `disconnect` still waits to leave: the signal waits with it.
        let mut w = worker(true, now);
        ask(&mut w, StopSignal::Auto, true, true, true);
        assert_eq!(heard(&mut w, false), None);
        assert_eq!(
            before_flush(&mut w, true),
            Some(TERM),
            "just before the disconnect"
        );
        // Heard before it was asked: the signal goes just before the `disconnect`.
        let mut w = worker(true, now);
        assert_eq!(heard(&mut w, false), None, "nothing due yet");
        ask(&mut w, StopSignal::Auto, true, true, true);
        assert_eq!(before_flush(&mut w, false), None, "other messages first");
        assert_eq!(before_flush(&mut w, true), Some(TERM));
    }

    #[test]
    fn a_closed_channel_sends_the_signal_now_or_after_the_grace_for_an_unheard_node_worker() {
        let now = Instant::now();
        let mut w = worker(true, now);
        ask(&mut w, StopSignal::Auto, false, true, true);
        let mut w2 = worker(true, now);
        ask(
            &mut w2,
            StopSignal::Signal(Signal::SIGUSR2),
            false,
            true,
            true,
        );
        assert_eq!(channel_closed(&mut w, now), None, "auto: nothing due");
        assert_eq!(channel_closed(&mut w2, now), Some(Signal::SIGUSR2));
        // A Node worker that said nothing: after the grace, unless it exits first.
        let mut w = worker(true, now);
        ask(&mut w, StopSignal::Auto, true, true, true);
        assert_eq!(channel_closed(&mut w, now), None);
        assert_eq!(w.stop_signal_at, Some(now + CHANNEL_CLOSED_GRACE));
        assert_eq!(tick(&mut w, now + CHANNEL_CLOSED_GRACE / 2), None);
        assert_eq!(tick(&mut w, now + CHANNEL_CLOSED_GRACE), Some(TERM));
        assert_eq!(w.stop_signal_at, None);
        assert_eq!(tick(&mut w, now + CHANNEL_CLOSED_GRACE * 2), None, "once");
        // Heard, it is signalled at once.
        let mut w = worker(true, now);
        ask(&mut w, StopSignal::Auto, true, true, true);
        w.heard = true;
        assert_eq!(channel_closed(&mut w, now), Some(TERM));
    }
}
