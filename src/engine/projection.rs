//! What a place — a slot or the agent — is doing, as every view says it: `status` and `top`
//! (in words, with times), `/metrics` (a label of [`STATES`](super::metrics::render::STATES)). One
//! function decides it, so the views cannot disagree (they did during a stop: `/metrics` said
//! the agent was given up while `status` said it was stopping).

use std::time::Instant;

use super::fleet::{Fleet, Slot, State};
use super::ids::{Place, Role};

/// A place's state. The order of the rules in [`of`] is the precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceState {
    /// The master is stopping: nothing here starts again.
    Stopping,
    /// Its current worker serves (the agent: takes messages).
    Ready,
    /// Its current worker has not said `ready` yet.
    Starting,
    /// Its current worker was asked to leave and its successor has not taken over.
    Draining,
    /// Given up after a restart storm; tried again at `retry_at` (`[restart] retry_after`),
    /// never when `None`.
    GivenUp { retry_at: Option<Instant> },
    /// A slot waits for the agent's first `ready` before it starts.
    WaitingForAgent,
    /// No worker: one starts at `at` (a restart's back-off).
    Restarting { at: Instant },
}

/// The state of `place` in `fleet`; `stopping`: the master is stopping.
pub fn of(fleet: &Fleet, place: Place, stopping: bool) -> Option<PlaceState> {
    let slot: &Slot = fleet.place(place)?;
    let current = (slot.current)
        .filter(|&k| fleet.role(k) == Role::Current)
        .and_then(|k| fleet.workers.get(k));
    Some(match current.map(|w| w.state) {
        _ if stopping => PlaceState::Stopping,
        Some(State::Ready) => PlaceState::Ready,
        Some(State::Starting) => PlaceState::Starting,
        Some(State::Draining) => PlaceState::Draining,
        None if slot.given_up => PlaceState::GivenUp {
            retry_at: slot.start_at,
        },
        None if place != Place::Agent && !fleet.may_start_slots() => PlaceState::WaitingForAgent,
        None => match slot.start_at {
            Some(at) => PlaceState::Restarting { at },
            None => PlaceState::Starting,
        },
    })
}

impl PlaceState {
    /// Its `state` label on `/metrics` (one of [`STATES`](super::metrics::render::STATES)).
    pub fn label(self) -> &'static str {
        match self {
            PlaceState::Stopping | PlaceState::Draining => "stopping",
            PlaceState::Ready => "ready",
            PlaceState::Starting | PlaceState::WaitingForAgent => "starting",
            PlaceState::GivenUp { .. } => "given_up",
            PlaceState::Restarting { .. } => "restarting",
        }
    }

    /// What `status` and `top` say, with the times counted from `now`.
    pub fn describe(self, now: Instant) -> String {
        match self {
            PlaceState::GivenUp { retry_at: Some(at) } => format!(
                "given up, retried in {:.0?}",
                at.saturating_duration_since(now)
            ),
            PlaceState::GivenUp { retry_at: None } => "given up".to_owned(),
            PlaceState::WaitingForAgent => "waiting for the agent".to_owned(),
            PlaceState::Restarting { at } => {
                format!("restarting in {:.1?}", at.saturating_duration_since(now))
            }
            other => other.label().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::fleet::test_worker_at;

    #[test]
    fn every_view_reads_one_state_and_a_stop_comes_first() {
        let now = Instant::now();
        let mut fleet = Fleet::new(2, true, now);
        // The agent given up, to be retried in a minute; slot 0 waits for it.
        let agent = fleet.agent.as_mut().unwrap();
        agent.given_up = true;
        agent.start_at = Some(now + Duration::from_secs(60));
        let s = of(&fleet, Place::Agent, false).unwrap();
        assert_eq!(s.label(), "given_up");
        assert_eq!(s.describe(now), "given up, retried in 60s");
        assert_eq!(
            of(&fleet, Place::Slot(0), false),
            Some(PlaceState::WaitingForAgent)
        );
        // The master begins to stop: every place says so, in every view.
        for place in [Place::Agent, Place::Slot(0), Place::Slot(1)] {
            let s = of(&fleet, place, true).unwrap();
            assert_eq!(
                (s.label(), s.describe(now).as_str()),
                ("stopping", "stopping")
            );
        }
        assert_eq!(of(&fleet, Place::Slot(2), false), None);
    }

    #[test]
    fn a_current_worker_speaks_for_its_slot() {
        let now = Instant::now();
        let mut fleet = Fleet::new(1, false, now);
        let key = fleet.insert(test_worker_at(Place::Slot(0), 7, now), Role::Current);
        let state = |f: &Fleet| of(f, Place::Slot(0), false).unwrap();
        assert_eq!(state(&fleet), PlaceState::Starting);
        fleet.workers[key].state = State::Ready;
        assert_eq!(
            (state(&fleet), state(&fleet).label()),
            (PlaceState::Ready, "ready")
        );
        fleet.workers[key].state = State::Draining;
        assert_eq!(state(&fleet).label(), "stopping");
        fleet.remove(key);
        fleet.slots[0].start_at = Some(now + Duration::from_millis(1500));
        let s = state(&fleet);
        assert_eq!(
            (s.label(), s.describe(now).as_str()),
            ("restarting", "restarting in 1.5s")
        );
        fleet.slots[0].start_at = None;
        assert_eq!(state(&fleet).describe(now), "starting");
    }

    #[test]
    fn every_label_is_a_state_metrics_shows() {
        let now = Instant::now();
        for s in [
            PlaceState::Stopping,
            PlaceState::Ready,
            PlaceState::Starting,
            PlaceState::Draining,
            PlaceState::GivenUp { retry_at: None },
            PlaceState::WaitingForAgent,
            PlaceState::Restarting { at: now },
        ] {
            assert!(
                crate::engine::metrics::render::STATES.contains(&s.label()),
                "{s:?}"
            );
        }
    }
}
