//! Limits on the master's own clients — the control socket's and the metrics listener's — as
//! pure decisions: how long each may take, who gives way when every place is taken, and which
//! refusals the log tells of. Nothing here touches a socket or reads the clock (`now` is an
//! argument); `control_socket` and `monitor` act on the answers.
//!
//! Why: the master serves these doors on its one thread with a bounded number of places, so a
//! client that connects and sends nothing must neither keep a place (and a file descriptor) for
//! long nor keep the operator out, and a flood of refusals must not become a flood of log lines.

use std::time::{Duration, Instant};

/// A control client has this long to send its whole request; then it is answered why, and
/// closed.
pub const CONTROL_REQUEST_TIME: Duration = Duration::from_secs(10);
/// A control client that does not read its answer is closed this long after it was given.
pub const CONTROL_WRITE_TIME: Duration = Duration::from_secs(10);
/// What the master reads and drops of a request too long to be one, and for how long at most,
/// before it closes: a client that writes it all before reading then reads the answer (the
/// error) instead of `EPIPE`. Past either bound the master closes; the answer waits in the
/// client's socket all the same.
pub const CONTROL_DISCARD_BYTES: usize = 16 << 20;
pub const CONTROL_DISCARD_TIME: Duration = Duration::from_secs(5);

/// A metrics client has this long to send its request's head (slowloris); then it is answered
/// 408 and closed.
pub const METRICS_HEADER_TIME: Duration = Duration::from_secs(5);
/// A metrics client that does not read its answer is closed this long after it was given.
pub const METRICS_WRITE_TIME: Duration = Duration::from_secs(10);
/// Once answered (and its side shut for writing), a metrics client's further input is read and
/// dropped until it closes, for this long at most: closing a TCP socket with unread input
/// sends a reset, which can destroy the answer before the client has read it.
pub const METRICS_LINGER_TIME: Duration = Duration::from_secs(1);
pub const METRICS_LINGER_BYTES: usize = 64 << 10;

/// An episode of refusals ends once none has come for this long.
pub const QUIET: Duration = Duration::from_secs(5);

/// Which client gives way to a newcomer when every place is taken: among those that may
/// (`Some(when last heard from)`: they have not sent a whole request, so nothing is owed to
/// them yet), the one heard from longest ago. `None`: every client waits for an outcome it
/// asked for (a reload, a stop) — the newcomer is the one refused.
pub fn give_way<K>(clients: impl IntoIterator<Item = (K, Option<Instant>)>) -> Option<K> {
    clients
        .into_iter()
        .filter_map(|(key, heard)| Some((heard?, key)))
        .min_by_key(|&(heard, _)| heard)
        .map(|(_, key)| key)
}

/// Refusals told once per episode: the first is logged, the others only counted, and once none
/// has come for [`QUIET`] the episode ends, logged with its count.
#[derive(Debug, Default)]
pub struct Refusals {
    episode: Option<Episode>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    first: Instant,
    last: Instant,
    count: u64,
}

/// An episode that ended: how many refusals, over how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub count: u64,
    pub lasted: Duration,
}

impl Refusals {
    /// Counts a refusal at `now`: `true` if it begins an episode (the one to log).
    pub fn note(&mut self, now: Instant) -> bool {
        match &mut self.episode {
            Some(e) => {
                e.last = e.last.max(now);
                e.count += 1;
                false
            }
            None => {
                self.episode = Some(Episode {
                    first: now,
                    last: now,
                    count: 1,
                });
                true
            }
        }
    }

    /// When the episode under way ends if no other refusal comes.
    pub fn deadline(&self) -> Option<Instant> {
        self.episode.map(|e| e.last + QUIET)
    }

    /// The episode under way, if it has ended by `now` (it is then over).
    pub fn ended(&mut self, now: Instant) -> Option<Ended> {
        let e = self.episode.filter(|e| now >= e.last + QUIET)?;
        self.episode = None;
        Some(Ended {
            count: e.count,
            lasted: e.last.saturating_duration_since(e.first),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_heard_from_longest_ago_gives_way_and_none_owed_an_answer_does() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let clients = [(1, Some(t + 3 * s)), (2, None), (3, Some(t + s)), (4, None)];
        assert_eq!(give_way(clients), Some(3));
        assert_eq!(give_way([(1, None), (2, None)]), None, "all owed answers");
        assert_eq!(give_way(Vec::<(usize, Option<Instant>)>::new()), None);
    }

    #[test]
    fn refusals_are_told_once_per_episode_and_counted_when_it_ends() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut refusals = Refusals::default();
        assert_eq!(refusals.deadline(), None);
        assert!(refusals.note(t), "the first is told");
        for i in 1..100 {
            assert!(!refusals.note(t + ms(i * 10)), "the others are counted");
        }
        let last = t + ms(990);
        assert_eq!(refusals.deadline(), Some(last + QUIET));
        assert_eq!(refusals.ended(last + QUIET - ms(1)), None, "not quiet yet");
        assert_eq!(
            refusals.ended(last + QUIET),
            Some(Ended {
                count: 100,
                lasted: ms(990)
            })
        );
        assert_eq!(refusals.ended(last + QUIET * 2), None, "ended once");
        assert_eq!(refusals.deadline(), None);
        assert!(
            refusals.note(last + QUIET * 3),
            "a new episode is told again"
        );
    }
}
