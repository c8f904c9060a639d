//! Tests of the fleet's bookkeeping over random operations.

use super::*;

/// A worker record with no process behind it (a pid no process has: nothing is signalled).
fn worker(slot: usize, pid: i32) -> Worker {
    test_worker(slot, pid, Instant::now())
}

#[test]
fn roles_and_slots_stay_consistent_over_random_operations() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut next_pid = 1_000_000;
    for case in 0..500 {
        let mut fleet = Fleet::new(rng.usize(1..4), false, Instant::now());
        for step in 0..200 {
            let keys: Vec<usize> = fleet.workers.iter().map(|(k, _)| k).collect();
            let any = |rng: &mut fastrand::Rng| keys.get(rng.usize(..keys.len().max(1))).copied();
            let what = match rng.u8(..7) {
                // As the master starts workers: a current one only into an empty slot, a
                // candidate only beside a current one with none yet.
                0 | 1 => {
                    let slot = rng.usize(..fleet.slots.len());
                    let s = &fleet.slots[slot];
                    let role = if s.current.is_none() && s.candidate.is_none() {
                        Role::Current
                    } else if s.current.is_some() && s.candidate.is_none() {
                        Role::Candidate
                    } else {
                        continue;
                    };
                    next_pid += 1;
                    fleet.insert(worker(slot, next_pid), role);
                    format!("insert {role:?} into slot {slot}")
                }
                2 => match any(&mut rng) {
                    Some(key) => {
                        let old = fleet.promote(key);
                        if let Some(old) = old {
                            fleet.detach(old);
                        }
                        format!("promote {key} (replacing {old:?})")
                    }
                    None => continue,
                },
                3 => match any(&mut rng) {
                    Some(key) => {
                        fleet.detach(key);
                        format!("detach {key}")
                    }
                    None => continue,
                },
                4 | 5 => match any(&mut rng) {
                    Some(key) => {
                        let (_, role) = fleet.remove(key);
                        format!("remove {key} ({role:?})")
                    }
                    None => continue,
                },
                // Scaling, as Master::resize does: the last slot's workers are detached,
                // then the slot goes; or a slot is added.
                _ => {
                    if rng.bool() && fleet.slots.len() > 1 {
                        let last = fleet.slots.len() - 1;
                        let s = &fleet.slots[last];
                        for key in [s.current, s.candidate].into_iter().flatten() {
                            fleet.detach(key);
                        }
                        fleet.slots.truncate(last);
                        "scale down".to_owned()
                    } else {
                        fleet.slots.push(Slot::default());
                        "scale up".to_owned()
                    }
                }
            };
            if let Err(e) = fleet.check() {
                panic!("case {case} step {step} ({what}): {e}");
            }
        }
    }
}

#[test]
fn started_once_every_slot_serves_or_was_given_up_and_one_serves() {
    let mut fleet = Fleet::new(2, false, Instant::now());
    assert!(!fleet.started(), "nothing runs");
    let a = fleet.insert(worker(0, 1_000_001), Role::Current);
    fleet.workers[a].state = State::Ready;
    assert!(!fleet.started(), "slot 1 has not had its start");
    fleet.slots[1].given_up = true;
    assert!(fleet.started(), "slot 1 gave up: slot 0 serves");
    fleet.workers[a].state = State::Starting;
    assert!(!fleet.started(), "none serves");
    fleet.slots[1].given_up = false;
    let b = fleet.insert(worker(1, 1_000_002), Role::Current);
    fleet.workers[a].state = State::Ready;
    fleet.workers[b].state = State::Ready;
    assert!(fleet.started());
}

#[test]
fn the_next_start_is_the_agents_until_it_was_ready_then_the_slots_too() {
    let t0 = Instant::now();
    let ms = std::time::Duration::from_millis;
    let mut fleet = Fleet::new(2, true, t0);
    // Every place is due at t0; the slots wait for the agent.
    fleet.slots[0].start_at = Some(t0 - ms(5)); // overdue: must not count yet
    fleet.agent.as_mut().unwrap().start_at = Some(t0 + ms(100));
    assert!(!fleet.may_start_slots());
    assert_eq!(fleet.next_start(), Some(t0 + ms(100)), "the agent's alone");
    fleet.agent.as_mut().unwrap().start_at = None;
    assert_eq!(
        fleet.next_start(),
        None,
        "nothing due while the agent starts"
    );
    fleet.agent_started = true;
    assert_eq!(fleet.next_start(), Some(t0 - ms(5)));
    // An agent restarting later has its own deadline among the slots'.
    fleet.slots[0].start_at = None;
    fleet.slots[1].start_at = None;
    fleet.agent.as_mut().unwrap().start_at = Some(t0 + ms(10));
    assert_eq!(fleet.next_start(), Some(t0 + ms(10)));
    assert_eq!(Fleet::new(1, false, t0).next_start(), Some(t0));
}
