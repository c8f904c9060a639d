//! Signals, each with one meaning. This table is the one the README repeats.
//!
//! | signal    | meaning                                                             |
//! |-----------|---------------------------------------------------------------------|
//! | TERM, INT | graceful stop (a second one: quick stop)                            |
//! | QUIT      | quick stop: kill the workers now                                    |
//! | HUP       | rolling reload of the workers                                       |
//! | TTIN/TTOU | one worker more / fewer                                             |
//! | USR1      | reopen log files                                                    |
//! | USR2      | in-place upgrade: start the binary again as a new master, hand over |
//! | CHLD      | a worker exited: reap it and apply the restart policy               |
//!
//! Delivery goes through signal-hook's self-pipe, registered with the master's `Poll`, so a
//! signal is just another event in the loop and no handler runs our code.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::signal::*;
use signal_hook_mio::v1_0::Signals;

/// What a signal asks the master to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    GracefulStop,
    QuickStop,
    Reload,
    ScaleUp,
    ScaleDown,
    ReopenLogs,
    Upgrade,
    Reap,
}

/// The meaning of each signal we handle.
pub fn meaning(signal: i32) -> Option<Action> {
    Some(match signal {
        SIGTERM | SIGINT => Action::GracefulStop,
        SIGQUIT => Action::QuickStop,
        SIGHUP => Action::Reload,
        SIGTTIN => Action::ScaleUp,
        SIGTTOU => Action::ScaleDown,
        SIGUSR1 => Action::ReopenLogs,
        SIGUSR2 => Action::Upgrade,
        SIGCHLD => Action::Reap,
        _ => return None,
    })
}

const HANDLED: [i32; 9] = [
    SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGCHLD,
];

/// The master's signal source.
pub struct SignalSource {
    signals: Signals,
}

impl SignalSource {
    pub fn new(registry: &Registry, token: Token) -> io::Result<SignalSource> {
        let mut signals = Signals::new(HANDLED)?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(SignalSource { signals })
    }

    /// The actions of every signal received since the last call, in arrival order.
    pub fn drain(&mut self, out: &mut Vec<(i32, Action)>) {
        out.extend(
            self.signals
                .pending()
                .filter_map(|sig| meaning(sig).map(|action| (sig, action))),
        );
    }
}

/// A signal's name for logs.
pub fn name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_has_a_meaning() {
        for sig in HANDLED {
            assert!(meaning(sig).is_some(), "{}", name(sig));
        }
        assert_eq!(meaning(SIGINT), meaning(SIGTERM));
        assert_eq!(meaning(SIGUSR2), Some(Action::Upgrade));
        assert_eq!(meaning(SIGWINCH), None);
        assert_eq!(name(SIGTERM), "SIGTERM");
    }
}
