//! Tests of the upgrade's protocol and decisions.

use super::*;

const KILL: Duration = Duration::from_secs(5);

fn handover(now: Instant) -> Handover {
    Handover::new(
        Pid::from_raw(42),
        "/usr/bin/rrbalancer".into(),
        vec![7],
        now,
    )
}

#[test]
fn a_clean_upgrade_takes_over_then_hands_over() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    assert_eq!(h.deadline(), Some(t0 + START_TIMEOUT));
    let starting = Message::Starting {
        pid: 42,
        ready_timeout_ms: 2_000,
        version: "9.9.9".into(),
        checks: vec![CheckKind::Agent],
    };
    assert_eq!(h.on_message(starting, t0, KILL), UpgradeStep::Nothing);
    assert_eq!(
        h.deadline(),
        Some(t0 + Duration::from_secs(2) + READY_SLACK)
    );
    assert_eq!(
        h.on_message(Message::Ready { workers: 4 }, t0, KILL),
        UpgradeStep::TakeOver
    );
    let UpgradeStep::HandedOver(message) = h.on_message(Message::TookOver, t0, KILL) else {
        panic!("not handed over")
    };
    assert!(
        message.contains("pid 42 serves with 4 worker(s) (rrbalancer ")
            && message.contains(" → 9.9.9), started "),
        "{message}"
    );
    assert_eq!(h.checks_taken, [CheckKind::Agent]);
    assert!(
        !h.in_progress() && !h.must_reap(),
        "the new master outlives us"
    );
    // Its exit later, or its channel closing, changes nothing.
    h.on_channel_closed(t0);
    assert_eq!(h.tick(t0 + EXIT_GRACE, KILL), UpgradeStep::Nothing);
    assert_eq!(h.on_exit("exit code 0", t0, KILL), UpgradeStep::Nothing);
}

#[test]
fn an_exit_or_silence_before_the_handover_fails_it_and_the_child_is_reaped() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    let UpgradeStep::Failed { reason, abort, .. } = h.on_exit("exit code 1", t0, KILL) else {
        panic!()
    };
    assert!(!abort, "nothing left to abort");
    assert!(
        reason.contains("exited before it was ready: exit code 1"),
        "{reason}"
    );
    assert!(!h.must_reap());

    let mut h = handover(t0);
    assert_eq!(h.tick(t0 + START_TIMEOUT / 2, KILL), UpgradeStep::Nothing);
    let UpgradeStep::Failed { reason, abort, .. } = h.tick(t0 + START_TIMEOUT, KILL) else {
        panic!()
    };
    assert!(abort && reason.contains("did not start within"), "{reason}");
    assert!(h.must_reap(), "an aborted child is waited for");
    assert_eq!(
        h.deadline(),
        Some(t0 + START_TIMEOUT + KILL + Duration::from_secs(5))
    );
    assert_eq!(
        h.tick(t0 + START_TIMEOUT * 9, KILL),
        UpgradeStep::Nothing,
        "fails once"
    );
}

#[test]
fn a_reported_failure_or_a_closed_channel_fails_it_once() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    let failed = Message::Failed {
        reason: "its worker in slot 0 failed: not ready within 1s".into(),
    };
    let UpgradeStep::Failed { reason, abort, .. } = h.on_message(failed, t0, KILL) else {
        panic!()
    };
    assert!(!abort && reason.contains("not ready within 1s"), "{reason}");
    h.on_channel_closed(t0);
    assert_eq!(h.tick(t0 + EXIT_GRACE, KILL), UpgradeStep::Nothing);

    // A closed channel: the exit status, if it comes soon, is the reason given.
    let mut h = handover(t0);
    h.on_message(Message::Ready { workers: 1 }, t0, KILL);
    h.on_channel_closed(t0);
    assert_eq!(h.deadline(), Some(t0 + EXIT_GRACE));
    let UpgradeStep::Failed { reason, .. } = h.on_exit("killed by SIGSEGV", t0, KILL) else {
        panic!()
    };
    assert!(reason.contains("SIGSEGV"), "{reason}");
    // Else the closed channel is.
    let mut h = handover(t0);
    h.on_channel_closed(t0);
    assert_eq!(h.tick(t0 + EXIT_GRACE / 2, KILL), UpgradeStep::Nothing);
    let step = h.tick(t0 + EXIT_GRACE, KILL);
    assert!(
        matches!(step, UpgradeStep::Failed { abort: true, .. }),
        "{step:?}"
    );
}

#[test]
fn the_grace_counts_from_the_first_close_and_a_close_after_the_outcome_wakes_nobody() {
    let t0 = Instant::now();
    // Closed twice (a read error, then the hang-up): the grace runs from the first.
    let mut h = handover(t0);
    h.on_channel_closed(t0);
    h.on_channel_closed(t0 + EXIT_GRACE / 2);
    assert_eq!(h.deadline(), Some(t0 + EXIT_GRACE));
    let step = h.tick(t0 + EXIT_GRACE, KILL);
    assert!(
        matches!(step, UpgradeStep::Failed { abort: true, .. }),
        "{step:?}"
    );

    // Handed over, then its channel closes: no deadline is left to wake this master for.
    let mut h = handover(t0);
    h.on_message(Message::Ready { workers: 1 }, t0, KILL);
    h.on_message(Message::TookOver, t0, KILL);
    assert_eq!(h.deadline(), None);
    h.on_channel_closed(t0);
    assert_eq!(
        h.deadline(),
        None,
        "a close after the outcome is not a failure to wait for"
    );
}

#[test]
fn out_of_order_messages_fail_the_upgrade() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    let step = h.on_message(Message::TookOver, t0, KILL);
    assert!(
        matches!(step, UpgradeStep::Failed { abort: true, .. }),
        "{step:?}"
    );
}

#[test]
fn stopping_ends_an_upgrade_under_way_but_not_one_done() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    assert!(matches!(
        h.on_stop(t0, KILL),
        UpgradeStep::Failed { abort: true, .. }
    ));
    let mut h = handover(t0);
    h.on_message(Message::Ready { workers: 1 }, t0, KILL);
    h.on_message(Message::TookOver, t0, KILL);
    assert_eq!(h.on_stop(t0, KILL), UpgradeStep::Nothing);
}

#[test]
fn upgrades_are_refused_while_stopping_reloading_upgrading_or_as_pid_one() {
    let now = Instant::now();
    assert!(may_begin(Phase::Running, false, None, false).is_ok());
    let stopping = Phase::stopping(now, KILL);
    assert!(may_begin(stopping, false, None, false).is_err());
    let e = may_begin(Phase::Running, false, Some(Pid::from_raw(9)), false).unwrap_err();
    assert!(e.contains("pid 9"), "{e}");
    assert!(may_begin(Phase::Running, true, None, false).is_err());
    assert!(
        may_begin(Phase::Running, false, None, true)
            .unwrap_err()
            .contains("PID 1")
    );
}

#[test]
fn the_new_master_is_ready_when_every_slot_is_and_fails_at_the_first_failure() {
    use super::super::fleet::{State, test_worker};
    use super::super::ids::Role;
    let t0 = Instant::now();
    let mut fleet = Fleet::new(2, false, t0);
    assert_eq!(verdict(&fleet), Verdict::Waiting);
    let a = fleet.insert(test_worker(0, 2_000_001, t0), Role::Current);
    let b = fleet.insert(test_worker(1, 2_000_002, t0), Role::Current);
    fleet.workers[a].state = State::Ready;
    assert_eq!(verdict(&fleet), Verdict::Waiting, "one of two");
    fleet.workers[b].state = State::Ready;
    assert_eq!(verdict(&fleet), Verdict::Ready(2));
    // A failure, even one the restart policy would simply restart, refuses the upgrade.
    fleet.slots[1].remember_cause("pid 2000002: not ready within 1s".into());
    fleet.slots[1].restart_count = 1;
    let Verdict::Failed(why) = verdict(&fleet) else {
        panic!()
    };
    assert!(
        why.contains("slot 1") && why.contains("not ready within 1s"),
        "{why}"
    );
    assert_eq!(
        verdict(&Fleet::new(0, false, t0)),
        Verdict::Waiting,
        "nothing to be ready"
    );
}

/// Each sign of a failure alone refuses the upgrade: given up, restarted, or a cause on
/// record (a worker that failed and was restarted at once).
#[test]
fn any_one_sign_of_a_failure_refuses_the_new_master() {
    let t0 = Instant::now();
    let failed = |set: &dyn Fn(&mut super::super::fleet::Slot)| {
        let mut fleet = Fleet::new(2, false, t0);
        set(&mut fleet.slots[1]);
        matches!(verdict(&fleet), Verdict::Failed(why) if why.contains("slot 1"))
    };
    assert!(failed(&|s| s.given_up = true));
    assert!(failed(&|s| s.restart_count = 1));
    assert!(failed(&|s| s.remember_cause("exit code 1".into())));
    assert!(!failed(&|_| {}));
}

#[test]
fn any_sequence_of_events_ends_in_at_most_one_outcome_and_keeps_it() {
    for seed in 0..2_000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let mut h = handover(t0);
        let (mut took_over, mut outcomes) = (false, Vec::new());
        for _ in 0..rng.usize(1..12) {
            now += Duration::from_millis(rng.u64(0..40_000));
            let step = match rng.u8(..8) {
                0 => h.on_message(
                    Message::Starting {
                        pid: 42,
                        ready_timeout_ms: rng.u64(..60_000),
                        version: String::new(),
                        checks: Vec::new(),
                    },
                    now,
                    KILL,
                ),
                1 => h.on_message(Message::Ready { workers: 2 }, now, KILL),
                2 => h.on_message(Message::TookOver, now, KILL),
                3 => h.on_message(Message::TakeOver, now, KILL),
                4 => {
                    h.on_channel_closed(now);
                    UpgradeStep::Nothing
                }
                5 => h.on_exit("exit code 1", now, KILL),
                6 => h.on_stop(now, KILL),
                _ => h.tick(now, KILL),
            };
            match step {
                UpgradeStep::Nothing => {}
                UpgradeStep::TakeOver => {
                    assert!(!took_over && outcomes.is_empty(), "seed {seed}");
                    took_over = true;
                }
                UpgradeStep::HandedOver(_) => {
                    assert!(took_over, "seed {seed}: handed over unasked");
                    outcomes.push("handed over");
                }
                UpgradeStep::Failed { .. } => outcomes.push("failed"),
            }
            assert!(outcomes.len() <= 1, "seed {seed}: {outcomes:?}");
            assert_eq!(h.in_progress(), outcomes.is_empty(), "seed {seed}");
            // Something is always due while it is under way: it cannot hang.
            if h.in_progress() {
                assert!(h.deadline().is_some(), "seed {seed}: {:?}", h.stage);
            }
        }
    }
}

#[test]
fn listeners_carry_over_by_configured_text_then_by_address() {
    let carried = |configured: &str, local: &str| Carried {
        configured: configured.into(),
        local: local.into(),
        owned: false,
    };
    let passed = [
        carried("127.0.0.1:0", "127.0.0.1:41000"),
        carried("[::1]:3000", "[::1]:3000"),
        carried("unix:/run/a.sock", "unix:/run/a.sock"),
    ];
    let listen: Vec<ListenAddr> = ["[::1]:3000", "127.0.0.1:0", "127.0.0.1:5000"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(carry_over(&listen, &passed), [Some(1), Some(0), None]);
    // By the address it is bound to, once the port is written out.
    let listen: Vec<ListenAddr> = vec!["127.0.0.1:41000".parse().unwrap()];
    assert_eq!(carry_over(&listen, &passed), [Some(0)]);
    // One socket serves one entry.
    let listen: Vec<ListenAddr> = vec!["[::1]:3000".parse().unwrap(); 2];
    assert_eq!(carry_over(&listen, &passed), [Some(1), None]);
}

/// What `status` says of an upgrade, and why a new master whose workers were not ready in time
/// was refused.
#[test]
fn status_names_the_stage_and_a_late_start_says_what_was_late() {
    let t0 = Instant::now();
    let mut h = handover(t0);
    assert!(h.describe().ends_with(": starting"), "{}", h.describe());
    let starting = Message::Starting {
        pid: 42,
        ready_timeout_ms: 1_000,
        version: String::new(),
        checks: Vec::new(),
    };
    assert_eq!(h.on_message(starting, t0, KILL), UpgradeStep::Nothing);
    assert!(h.describe().ends_with(": starting its workers"));
    let late = t0 + Duration::from_secs(1) + READY_SLACK;
    let UpgradeStep::Failed { reason, .. } = h.tick(late, KILL) else {
        panic!("not refused at its deadline")
    };
    assert!(
        reason.ends_with("did not have its workers ready in time"),
        "{reason}"
    );
    assert!(h.describe().ends_with(": failed; stopping it"));
}

#[test]
fn a_check_listener_is_carried_over_to_the_same_address_only() {
    let want = |a: &str| a.parse().unwrap();
    assert!(check_carried_over(want("127.0.0.1:9100"), "127.0.0.1:9100"));
    assert!(check_carried_over(want("[::1]:9100"), "[::1]:9100"));
    assert!(check_carried_over(want("127.0.0.1:0"), "127.0.0.1:40123"));
    assert!(!check_carried_over(
        want("127.0.0.1:9101"),
        "127.0.0.1:9100"
    ));
    assert!(!check_carried_over(want("0.0.0.0:9100"), "127.0.0.1:9100"));
    assert!(!check_carried_over(want("127.0.0.1:0"), "127.0.0.2:40123"));
    assert!(!check_carried_over(want("127.0.0.1:9100"), "garbage"));
}
