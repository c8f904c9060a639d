//! The apps supervisor: examples, then a seeded simulation of its invariants.

use super::*;

fn wanted(names: &[&str]) -> Vec<Wanted> {
    (names.iter())
        .map(|n| Wanted {
            name: (*n).into(),
            fingerprint: format!("{n} v1"),
            listens: *n != "jobs",
        })
        .collect()
}

fn start_all(apps: &mut Apps, effects: &[Effect], next_pid: &mut i32) {
    for effect in effects {
        if let Effect::Start(name) = effect {
            *next_pid += 1;
            assert!(apps.started(name, *next_pid).is_empty());
        }
    }
}

#[test]
fn every_app_starts_and_an_unchanged_one_is_not_touched_by_a_reload() {
    let now = Instant::now();
    let (mut apps, effects) = Apps::new(wanted(&["api", "web", "jobs"]), now);
    assert_eq!(effects.len(), 3);
    let mut pid = 100;
    start_all(&mut apps, &effects, &mut pid);
    let mut next = wanted(&["api", "web", "ws"]);
    next[1].fingerprint = "web v2".into();
    let effects = apps.reconfigure(next, now);
    assert_eq!(
        effects,
        vec![
            Effect::Stop("jobs".into(), 103),
            Effect::Reload("web".into()),
            Effect::Start("ws".into()),
        ],
        "api untouched, web reloaded, jobs stopped, ws started"
    );
    start_all(&mut apps, &effects, &mut pid);
    assert!(apps.exited(103, Some(0), None, now).is_empty());
    let names: Vec<String> = apps.view().into_iter().map(|a| a.name).collect();
    assert_eq!(
        names,
        ["api", "web", "ws"],
        "jobs forgotten once its master exited"
    );
}

#[test]
fn a_crashing_app_is_restarted_with_backoff_then_given_up_and_the_others_run_on() {
    let t0 = Instant::now();
    let (mut apps, effects) = Apps::new(wanted(&["api", "bad"]), t0);
    let mut pid = 0;
    start_all(&mut apps, &effects, &mut pid);
    let mut now = t0;
    let mut bad = 2;
    for crash in 1..=MAX_CRASHES {
        let effects = apps.exited(bad, Some(3), None, now);
        assert!(effects.is_empty(), "nothing at once: {effects:?}");
        if crash == MAX_CRASHES {
            break;
        }
        let at = apps.next_deadline().expect("a restart is due");
        assert_eq!(at - now, Duration::from_secs(1 << (crash - 1)));
        now = at;
        let effects = apps.tick(now);
        assert_eq!(effects, vec![Effect::Start("bad".into())]);
        pid += 1;
        bad = pid;
        assert!(apps.started("bad", bad).is_empty());
    }
    let view = apps.view();
    assert!(matches!(view[1].phase, Phase::GivenUp { .. }), "{view:?}");
    assert_eq!(view[0].phase, Phase::Running { pid: 1 }, "api untouched");
    assert_eq!(apps.next_deadline(), None);
    // The file fixed: it gets another chance.
    let mut fixed = wanted(&["api", "bad"]);
    fixed[1].fingerprint = "bad v2".into();
    assert_eq!(
        apps.reconfigure(fixed, now),
        vec![Effect::Start("bad".into())]
    );
}

#[test]
fn an_app_exiting_given_up_is_not_restarted_and_all_given_up_exits_1() {
    let now = Instant::now();
    let (mut apps, effects) = Apps::new(wanted(&["api", "web"]), now);
    let mut pid = 0;
    start_all(&mut apps, &effects, &mut pid);
    assert!(apps.exited(1, Some(EXIT_GIVEN_UP), None, now).is_empty());
    assert_eq!(apps.next_deadline(), None, "not restarted");
    assert_eq!(
        apps.exited(2, Some(EXIT_USAGE), None, now),
        vec![Effect::Exit(1)]
    );
}

#[test]
fn a_stopped_app_stays_stopped_until_started() {
    let now = Instant::now();
    let (mut apps, effects) = Apps::new(wanted(&["api", "jobs"]), now);
    let mut pid = 0;
    start_all(&mut apps, &effects, &mut pid);
    assert_eq!(
        apps.stop_app("jobs").unwrap(),
        vec![Effect::Stop("jobs".into(), 2)]
    );
    assert!(
        apps.exited(2, None, None, now).is_empty(),
        "asked: no restart"
    );
    assert_eq!(apps.view()[1].phase, Phase::Stopped);
    assert!(apps.tick(now + Duration::from_secs(3600)).is_empty());
    assert_eq!(apps.stop_app("nope"), Err(Refused::Unknown("nope".into())));
    assert_eq!(
        apps.start_app("jobs", now).unwrap(),
        vec![Effect::Start("jobs".into())]
    );
}

#[test]
fn stop_all_exits_0_once_every_master_has_exited() {
    let now = Instant::now();
    let (mut apps, effects) = Apps::new(wanted(&["a", "b"]), now);
    let mut pid = 0;
    start_all(&mut apps, &effects, &mut pid);
    let effects = apps.stop_all();
    assert_eq!(effects.len(), 2);
    assert!(apps.exited(1, Some(0), None, now).is_empty());
    assert_eq!(apps.exited(2, Some(1), None, now), vec![Effect::Exit(0)]);
    assert_eq!(apps.start_app("a", now), Err(Refused::Stopping));
}

/// A seeded simulation: random starts, exits, operator requests and reloads. Invariants: at
/// most one master per app at a time; a master is started only for an app that is in the file
/// and not stopped by the operator; nothing is started once stopping; stop ends in one
/// `Exit(0)` once every master exited; an exit is only ever announced once.
#[test]
fn seeded_simulation_keeps_one_master_per_app_and_stops_completely() {
    let names = ["a", "b", "c", "d"];
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let t0 = Instant::now();
        let mut now = t0;
        let (mut apps, mut effects) = Apps::new(wanted(&names[..2]), now);
        // pid → app of every master alive.
        let mut alive: Vec<(i32, String)> = Vec::new();
        let mut in_file: Vec<&str> = names[..2].to_vec();
        let mut stopped_by_operator: Vec<String> = Vec::new();
        let mut next_pid = 0;
        let mut exits = 0;
        let mut stop_asked = false;
        for step in 0..200 {
            for effect in std::mem::take(&mut effects) {
                match effect {
                    Effect::Start(name) => {
                        assert!(!stop_asked, "seed {seed}: start while stopping");
                        assert!(
                            !alive.iter().any(|(_, n)| *n == name),
                            "seed {seed} step {step}: two masters for {name}"
                        );
                        assert!(in_file.contains(&name.as_str()), "seed {seed}: {name} gone");
                        assert!(
                            !stopped_by_operator.contains(&name),
                            "seed {seed}: {name} stopped by the operator, started"
                        );
                        if rng.u8(..10) == 0 {
                            effects.extend(apps.start_failed(&name, "no exec", now));
                        } else {
                            next_pid += 1;
                            alive.push((next_pid, name.clone()));
                            effects.extend(apps.started(&name, next_pid));
                        }
                    }
                    Effect::Stop(name, pid) => {
                        assert!(
                            alive.contains(&(pid, name.clone())),
                            "seed {seed}: stop of a dead master"
                        );
                    }
                    Effect::Reload(name) => {
                        assert!(
                            alive.iter().any(|(_, n)| *n == name),
                            "seed {seed}: reload of none"
                        );
                    }
                    Effect::Exit(code) => {
                        exits += 1;
                        if code == 0 {
                            assert!(stop_asked && alive.is_empty(), "seed {seed}: exit 0 early");
                        }
                    }
                }
            }
            assert!(exits <= 1, "seed {seed}: exit announced twice");
            if exits == 1 {
                break;
            }
            now += Duration::from_millis(rng.u64(0..3000));
            match rng.u8(..10) {
                0..=2 if !alive.is_empty() => {
                    let (pid, _) = alive.remove(rng.usize(..alive.len()));
                    let code = [None, Some(0), Some(1), Some(2), Some(9)][rng.usize(..5)];
                    effects.extend(apps.exited(pid, code, None, now));
                }
                3 => {
                    let name = names[rng.usize(..names.len())];
                    if apps.stop_app(name).is_ok() {
                        stopped_by_operator.push(name.into());
                    }
                }
                4 => {
                    let name = names[rng.usize(..names.len())];
                    if let Ok(e) = apps.start_app(name, now) {
                        stopped_by_operator.retain(|n| n != name);
                        effects.extend(e);
                    }
                }
                5 => {
                    in_file = names.iter().copied().filter(|_| rng.bool()).collect();
                    if in_file.is_empty() {
                        in_file.push("a");
                    }
                    let mut next = wanted(&in_file);
                    for w in &mut next {
                        if rng.bool() {
                            w.fingerprint.push_str(" changed");
                        }
                    }
                    // A removed app is forgotten: stopped by the operator no longer applies.
                    stopped_by_operator.retain(|n| in_file.contains(&n.as_str()));
                    effects.extend(apps.reconfigure(next, now));
                }
                6 if step > 100 => {
                    stop_asked = true;
                    effects.extend(apps.stop_all());
                }
                _ => effects.extend(apps.tick(now)),
            }
        }
        // Stop whatever is left and let every master exit.
        if exits == 0 {
            effects.extend(apps.stop_all());
            while let Some((pid, _)) = alive.pop() {
                effects.extend(apps.exited(pid, Some(0), None, now));
            }
            assert!(
                effects.contains(&Effect::Exit(0)),
                "seed {seed}: no exit: {effects:?}"
            );
        }
    }
}
