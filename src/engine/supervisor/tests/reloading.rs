//! The supervisor's reload and scaling decisions, with the harness of `tests.rs`.

use super::*;

#[test]
fn a_reload_to_another_count_resizes_and_says_so() {
    let mut h = Harness::new(2, policy(10));
    ready_fleet(&mut h, 0);
    h.sup.begin_reload(Some(5), false, 3, h.at(10));
    assert_eq!(h.sup.fleet.slots.len(), 3, "the configuration's count");
    let spawns = |e: &[Effect]| {
        e.iter()
            .filter(|e| matches!(e, Effect::Spawn { .. }))
            .count()
    };
    assert_eq!(
        spawns(&h.tick(10)),
        2,
        "the new slot and the first candidate"
    );
    for t in [20, 30] {
        h.run(h.at(t));
        let candidate = (h.spawned.iter().rev())
            .find(|(_, role, key)| *role == Role::Candidate && h.sup.fleet.workers.contains(*key))
            .map(|&(_, _, key)| key)
            .unwrap();
        h.sup.ready(candidate, h.at(t));
    }
    let effects = h.run(h.at(30));
    assert!(
        matches!(effects.last(), Some(Effect::Answer { waiters, outcome: Ok(m) })
            if waiters == &[5] && m.contains("scaled from 2 to 3 worker(s)")),
        "{effects:?}"
    );
}

#[test]
fn a_failed_candidate_is_killed_and_again_only_after_kill_timeout() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    h.sup.begin_reload(Some(1), false, 1, h.at(10));
    h.run(h.at(10));
    let (_, _, candidate) = *h.spawned.last().unwrap();
    h.sup.reload_failed(candidate, h.at(20), "not ready".into());
    let effects = h.run(h.at(20));
    assert!(effects.contains(&Effect::Kill(candidate)), "{effects:?}");
    // Not reaped yet: SIGKILL again only once kill_timeout (500 ms) has passed.
    assert!(!h.tick(21).contains(&Effect::Kill(candidate)));
    assert!(!h.tick(519).contains(&Effect::Kill(candidate)));
    assert!(h.tick(521).contains(&Effect::Kill(candidate)));
}

#[test]
fn a_reload_starts_an_agent_the_file_now_has_and_stops_one_it_dropped() {
    let mut h = Harness::new(1, policy(10));
    ready_fleet(&mut h, 0);
    h.sup.set_policy(policy_with_agent(10));
    h.sup.begin_reload(None, false, 1, h.at(10));
    assert!(h.sup.fleet.agent.is_some() && h.sup.fleet.may_start_slots());
    let effects = h.tick(10);
    assert!(
        effects.contains(&Effect::Spawn {
            place: Place::Agent,
            role: Role::Current
        }),
        "{effects:?}"
    );
    let agent = h.sup.fleet.agent_key().expect("started");
    h.sup.ready(agent, h.at(20));
    h.run(h.at(20));
    // The next reload's file has none: it is asked to stop, its place gone.
    h.sup.reload = None;
    h.sup.set_policy(policy(10));
    h.sup.begin_reload(None, false, 1, h.at(30));
    assert!(h.sup.fleet.agent.is_none());
    assert!(h.run(h.at(30)).contains(&Effect::Stop(agent)));
}
