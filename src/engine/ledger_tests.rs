//! Tests of the ledger: who owns each accepted socket, and the rotation.

use super::*;
use crate::engine::dispatch::Placement;

impl<C: Conn> Ledger<C> {
    /// What `retry_full` relies on, checked by a walk: every `full` account is listed.
    pub fn check_full_listed(&self) -> Result<(), String> {
        let unlisted =
            |(k, a): &(usize, &Account<C>)| a.full_until.is_some() && !self.changed.contains(k);
        match self.accounts.iter().find(unlisted) {
            Some((key, _)) => Err(format!("account {key} is full and not listed")),
            None => Ok(()),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Id(u32, Option<Instant>);

/// The moment every test connection was accepted.
fn accepted_at() -> Instant {
    static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *AT.get_or_init(Instant::now)
}

impl Conn for Id {
    fn peer(&self) -> &Peer {
        &Peer::Unix
    }
    fn accepted(&self) -> Instant {
        accepted_at()
    }
    fn sent(&self) -> Option<Instant> {
        self.1
    }
    fn set_sent(&mut self, at: Option<Instant>) {
        self.1 = at;
    }
}

fn ids(q: &VecDeque<Id>) -> Vec<u32> {
    q.iter().map(|c| c.0).collect()
}

/// Sends every outbox, as a flush that found each channel writable does.
fn flush_all(ledger: &mut Ledger<Id>, keys: &[usize]) {
    for &k in keys {
        let account = ledger.account_mut(k).unwrap();
        let n = account.outbox().len();
        account.mark_sent(n, Instant::now());
        account.flushed(n > 0, false);
    }
}

#[test]
fn a_batch_fills_the_window_of_the_worker_whose_turn_it_is_then_the_next() {
    let mut ledger = Ledger::default();
    let keys: Vec<usize> = (0..3).map(|_| ledger.open(3)).collect();
    let serving = |s: usize| keys.get(s).copied();
    let admit =
        |ledger: &mut Ledger<Id>, i| ledger.admit(Id(i, None), 3, serving, Placement::BATCH);
    let placed: Vec<_> = (0..5).map(|i| admit(&mut ledger, i).unwrap()).collect();
    assert_eq!(placed, [keys[0], keys[0], keys[0], keys[1], keys[1]]);
    // Flushed: the next turn's batch starts with the next in rotation, not where the last
    // one stopped (slot 1 still has room, but its batch was sent).
    flush_all(&mut ledger, &keys);
    assert_eq!(admit(&mut ledger, 5), Some(keys[2]));
    assert_eq!(admit(&mut ledger, 6), Some(keys[2]));
    // Off, one each in turn, as before.
    let mut spread = Ledger::default();
    let keys: Vec<usize> = (0..3).map(|_| spread.open(3)).collect();
    let serving = |s: usize| keys.get(s).copied();
    let placed: Vec<_> = (0..4)
        .map(|i| spread.admit(Id(i, None), 3, serving, Placement::default()))
        .collect();
    assert_eq!(placed, [0, 1, 2, 0].map(|s| Some(keys[s])));
}

#[test]
fn a_batch_never_goes_to_a_busy_pulled_worker_nor_one_that_left_its_slot() {
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    let b = ledger.open(4);
    ledger.account_mut(a).unwrap().on_idle();
    ledger.account_mut(b).unwrap().on_idle();
    let serving = |s: usize| [Some(a), Some(b)][s];
    // An idle worker takes the turn's connections up to its window, in one batch...
    for i in 0..2 {
        assert_eq!(
            ledger.admit(Id(i, None), 2, serving, Placement::BATCH),
            Some(a)
        );
    }
    flush_all(&mut ledger, &[a, b]);
    // ...and, sent them, is busy until its next `idle`: the next goes to b.
    assert_eq!(
        ledger.admit(Id(2, None), 2, serving, Placement::BATCH),
        Some(b)
    );
    // b leaves its slot (`leaving`): what follows is not added to its batch.
    let replaced = |s: usize| [Some(a), None][s];
    assert_eq!(ledger.batching(Placement::BATCH, replaced), None);
    assert_eq!(ledger.batching(Placement::BATCH, serving), Some(b));
    ledger.account_mut(a).unwrap().on_idle();
    assert_eq!(
        ledger.admit(Id(3, None), 2, replaced, Placement::BATCH),
        Some(a)
    );
}

#[test]
fn a_stop_hands_the_whole_queue_out_beyond_the_windows_but_not_to_a_worker_out_of_fds() {
    let mut ledger = Ledger::default();
    let keys: Vec<usize> = (0..3).map(|_| ledger.open(1)).collect();
    let serving = |s: usize| keys.get(s).copied();
    for i in 0..8 {
        ledger.enqueue(Id(i, None));
    }
    // Slot 1's worker said `full`: it gets nothing more.
    let one = ledger.account_mut(keys[1]).unwrap();
    one.assign(Id(100, None));
    one.mark_sent(1, Instant::now());
    one.on_full(1, Instant::now()).unwrap();
    ledger.requeue_returned(keys[1]);
    assert_eq!(ledger.hand_out_all(3, serving), 0, "all handed out");
    let held = |k: usize| ledger.account(k).unwrap().outbox().len();
    assert_eq!((held(keys[0]), held(keys[1]), held(keys[2])), (5, 0, 4));
    assert!(ledger.can_hand_out(3, serving));
    // Nobody serves: it all stays queued, for the stop to close.
    ledger.enqueue(Id(9, None));
    assert!(!ledger.can_hand_out(3, |_| None));
    assert_eq!(ledger.hand_out_all(3, |_| None), 1);
}

#[test]
fn rotation_among_free_workers_and_the_window() {
    let mut ledger = Ledger::default();
    let a = ledger.open(2);
    let b = ledger.open(2);
    let serving = |s: usize| [Some(a), Some(b)][s];
    let placed: Vec<usize> = (0..4)
        .map(|i| {
            ledger
                .admit(Id(i, None), 2, serving, Placement::default())
                .unwrap()
        })
        .collect();
    assert_eq!(placed, [a, b, a, b]);
    // Both windows are full: the fifth waits in the queue.
    assert_eq!(
        ledger.admit(Id(4, None), 2, serving, Placement::default()),
        None
    );
    assert_eq!(ledger.queued(), 1);
    let now = Instant::now();
    ledger.account_mut(a).unwrap().mark_sent(2, now);
    ledger.account_mut(a).unwrap().ack_oldest(1, now).unwrap();
    assert!(
        ledger.dispatch(2, serving, Placement::default()),
        "a has room again"
    );
    assert_eq!(ledger.queued(), 0);
    assert_eq!(ledger.account(a).unwrap().handed(), 3);
    assert_eq!(ledger.handed_total(), 5);
    // A worker gone keeps its count in the total, less what it was never sent. Both come
    // back to the queue (the one sent, un-acked, from a dead worker), to be handed again.
    ledger.account_mut(b).unwrap().mark_sent(1, now);
    ledger.remove(b);
    assert_eq!(ledger.queued(), 2);
    assert_eq!(ledger.handed_total(), 4);
}

#[test]
fn the_queue_passed_to_another_master_leaves_in_order_and_what_fails_comes_back_first() {
    let mut ledger: Ledger<Id> = Ledger::default();
    for i in 0..5 {
        ledger.enqueue(Id(i, None));
    }
    let batch = ledger.take_queued(3);
    assert_eq!(batch.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(ledger.queued(), 2);
    // The send failed: they go back ahead of the rest, in their order.
    ledger.return_queued(batch);
    assert_eq!(ids(&ledger.queue), [0, 1, 2, 3, 4]);
    assert_eq!(ledger.take_queued(99).len(), 5);
    assert_eq!(ledger.queued(), 0);
}

#[test]
fn a_closed_channel_holds_what_was_sent_until_the_worker_is_dead() {
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    for i in 0..3 {
        ledger
            .admit(Id(i, None), 1, |_| Some(a), Placement::default())
            .unwrap();
    }
    ledger.account_mut(a).unwrap().mark_sent(2, Instant::now());
    ledger.enqueue(Id(9, None));
    ledger.close(a);
    // The unsent one is first in line; the two sent ones wait for the worker's death.
    assert_eq!(ids(&ledger.queue), [2, 9]);
    assert_eq!(ledger.account(a).unwrap().in_flight(), 2);
    assert!(
        !ledger.account(a).unwrap().has_room(),
        "closed: gets nothing"
    );
    assert_eq!(ledger.remove(a), 2);
    assert_eq!(ids(&ledger.queue), [0, 1, 2, 9]);
    assert!(
        ledger.queue.iter().all(|c| c.1.is_none()),
        "none is marked sent"
    );
}

#[test]
fn acking_more_than_was_sent_changes_nothing() {
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    ledger
        .admit(Id(0, None), 1, |_| Some(a), Placement::default())
        .unwrap();
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(1, Instant::now());
    assert_eq!(account.ack_oldest(2, Instant::now()), Err(1));
    assert_eq!(account.unacked_len(), 1);
    assert_eq!(account.served().acked, 0);
}

#[test]
fn every_ack_is_counted_with_its_time_from_accept_and_retiring_gives_the_tally() {
    use std::time::Duration;
    let t0 = accepted_at();
    let mut ledger = Ledger::default();
    let a = ledger.open(8);
    for i in 0..5 {
        ledger
            .admit(Id(i, None), 1, |_| Some(a), Placement::default())
            .unwrap();
    }
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(5, t0);
    // Native: the two oldest; Node: one by position, the newest; one refused.
    account
        .ack_oldest(2, t0 + Duration::from_micros(50))
        .unwrap();
    assert!(account.ack_at(1, t0 + Duration::from_millis(3)));
    assert!(account.ack_newest(t0 + Duration::from_secs(20)));
    assert!(account.refuse_at(0));
    let served = account.served();
    assert_eq!(
        (served.handed, served.acked, served.latency.count()),
        (5, 4, 4)
    );
    let buckets: Vec<(Option<f64>, u64)> = served.latency.cumulative().collect();
    assert_eq!(buckets[0], (Some(0.0001), 2), "50 µs twice");
    assert_eq!(buckets[5], (Some(0.005), 3), "and 3 ms");
    assert_eq!(buckets[15], (Some(10.0), 3));
    assert_eq!(buckets[16], (None, 4), "+Inf: 20 s too");
    assert!((served.latency.sum_seconds() - 20.0031).abs() < 1e-9);
    // The five sent in second 0 make the account's rate over its first whole second.
    let rate = account.rate().per_second(t0, t0 + Duration::from_secs(1));
    assert_eq!(rate, Some(5.0), "what status shows as CONN/S");
    let (held, tally) = ledger.retire(a);
    assert_eq!((held, tally.acked, tally.handed), (0, 4, 5));
    assert_eq!(ledger.handed_total(), 5);
}

#[test]
fn refused_and_unsent_go_first_in_their_order() {
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    for i in 0..3 {
        ledger
            .admit(Id(i, None), 1, |_| Some(a), Placement::default())
            .unwrap();
    }
    ledger.enqueue(Id(7, None));
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(1, Instant::now());
    assert!(account.refuse_at(0));
    assert_eq!(ledger.requeue_unsent(a), 3);
    assert_eq!(ids(&ledger.queue), [0, 1, 2, 7]);
    assert_eq!(
        ledger.account(a).unwrap().handed(),
        1,
        "the one it was sent"
    );
}

#[test]
fn a_pulled_worker_takes_connections_only_while_idle() {
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    ledger.account_mut(a).unwrap().on_idle();
    assert!(
        ledger
            .admit(Id(0, None), 1, |_| Some(a), Placement::default())
            .is_some()
    );
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(1, Instant::now());
    account.flushed(true, false);
    assert!(!account.has_room(), "busy until it says idle");
    assert!(account.has_window_room(), "affinity may still queue on it");
    account.on_idle();
    assert!(account.has_room());
}

#[test]
fn a_full_worker_gives_back_its_oldest_and_gets_nothing_until_idle_then_one_at_a_time() {
    let mut ledger = Ledger::default();
    let a = ledger.open(8);
    let b = ledger.open(8);
    for i in 0..4 {
        ledger
            .admit(Id(i, None), 1, |_| Some(a), Placement::default())
            .unwrap();
    }
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(4, Instant::now());
    assert_eq!(
        account.on_full(5, Instant::now()),
        Err(4),
        "more than it was sent"
    );
    assert_eq!(account.unacked_len(), 4, "nothing changed");
    account.on_full(3, Instant::now()).unwrap();
    assert!(account.is_full() && !account.has_room() && !account.has_window_room());
    assert_eq!(account.unacked_len(), 1, "the newest is still its own");
    assert_eq!(ledger.requeue_returned(a), 3);
    assert_eq!(ids(&ledger.queue), [0, 1, 2]);
    // Nobody free but the full one: they wait; another worker takes them.
    assert!(!ledger.dispatch(1, |_| Some(a), Placement::default()));
    assert!(ledger.dispatch(1, |_| Some(b), Placement::default()));
    assert_eq!(ids(ledger.account(b).unwrap().outbox()), [0, 1, 2]);
    // Then the last one too; `idle` again: room for one, then twice as many after each
    // ack, up to the window.
    let account = ledger.account_mut(a).unwrap();
    account.on_full(1, Instant::now()).unwrap();
    assert_eq!(ledger.requeue_returned(a), 1);
    assert!(
        !ledger.dispatch(1, |_| Some(a), Placement::default()),
        "full: it waits"
    );
    ledger.account_mut(a).unwrap().on_idle();
    assert!(ledger.dispatch(1, |_| Some(a), Placement::default()));
    ledger.admit(Id(10, None), 1, |_| Some(a), Placement::default());
    assert_eq!(ids(ledger.account(a).unwrap().outbox()), [3]);
    assert_eq!(ids(&ledger.queue), [10], "a cap of 1");
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(1, Instant::now());
    account.ack_oldest(1, Instant::now()).unwrap();
    assert!(ledger.dispatch(1, |_| Some(a), Placement::default()));
    for i in 20..24 {
        ledger.admit(Id(i, None), 1, |_| Some(a), Placement::default());
    }
    assert_eq!(
        ids(ledger.account(a).unwrap().outbox()),
        [10, 20],
        "a cap of 2"
    );
}

#[test]
fn a_full_worker_that_never_says_idle_is_tried_again_with_one_after_a_while() {
    let t0 = accepted_at();
    let mut ledger = Ledger::default();
    let a = ledger.open(4);
    ledger
        .admit(Id(0, None), 1, |_| Some(a), Placement::default())
        .unwrap();
    let account = ledger.account_mut(a).unwrap();
    account.mark_sent(1, t0);
    assert!(account.newest_full(t0));
    assert!(!account.newest_full(t0), "nothing left to give back");
    assert_eq!(ledger.requeue_returned(a), 1);
    assert_eq!(ledger.next_full_retry(), Some(t0 + FULL_RETRY));
    ledger.retry_full(t0 + FULL_RETRY - Duration::from_millis(1));
    assert!(
        !ledger.dispatch(1, |_| Some(a), Placement::default()),
        "not yet"
    );
    ledger.retry_full(t0 + FULL_RETRY);
    assert_eq!(ledger.next_full_retry(), None);
    ledger.enqueue(Id(1, None));
    assert!(
        !ledger.dispatch(1, |_| Some(a), Placement::default()),
        "one, as a probe"
    );
    assert_eq!(ids(ledger.account(a).unwrap().outbox()), [0]);
}

#[test]
fn a_worker_past_its_recycle_limit_takes_only_what_no_other_is_free_for() {
    let mut ledger = Ledger::default();
    let keys: Vec<usize> = (0..2).map(|_| ledger.open(1)).collect();
    let serving = |s: usize| keys.get(s).copied();
    ledger.account_mut(keys[0]).unwrap().set_limit(Some(2));
    let mut to = Vec::new();
    for i in 0..6 {
        to.push(ledger.admit(Id(i, None), 2, serving, Placement::default()));
        // Each served at once: the window of one is free again.
        flush_all(&mut ledger, &keys);
        for &k in &keys {
            let _ = ledger.account_mut(k).unwrap().ack_oldest(1, Instant::now());
        }
    }
    let (a, b) = (Some(keys[0]), Some(keys[1]));
    assert_eq!(
        to,
        [a, b, a, b, b, b],
        "slot 0 handed its 2, then passed over"
    );
    assert!(ledger.account(keys[0]).unwrap().spent());
    // The other busy (its window full): the spent one takes it rather than the queue.
    assert_eq!(
        ledger.admit(Id(6, None), 2, serving, Placement::default()),
        b
    );
    assert_eq!(
        ledger.admit(Id(7, None), 2, serving, Placement::default()),
        a
    );
}
