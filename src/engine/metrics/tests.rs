//! Tests of the counters and their rendering.

use std::time::{Duration, Instant};

use super::super::stats::Served;
use super::*;

fn slot(state: &'static str, handed: u64) -> Slot {
    let mut served = Served {
        handed,
        ..Served::default()
    };
    let t0 = Instant::now();
    served.acked(t0, t0 + Duration::from_micros(300));
    Slot {
        state,
        served,
        unacked: 1,
        oldest_unacked_secs: Some(0.25),
        restarts: 2,
        recycles: 0,
        giveups: 1,
        rss_bytes: None,
        cpu_seconds: None,
    }
}

#[test]
fn the_text_has_a_help_and_type_per_family_and_a_series_per_slot() {
    let counters = Counters {
        accepted: vec![7],
        retired: vec![],
        paused_no_worker: 1,
        fd_exhausted: 0,
        rerouted: vec![[0; 3], [4, 0, 1]],
        exits: vec![[1, 0, 2]],
        starts: vec![3],
        messages: 5,
        deliveries: 15,
        agent_starts: 2,
        agent_exits: [0, 1, 0],
        turned_away: [0, 0, 0, 0, 3, 0, 0, 0],
    };
    let listeners = [
        "127.0.0.1:3000".to_owned(),
        "unix:/run/a\"b.sock".to_owned(),
    ];
    let text = render(&Snapshot {
        version: "0.1.0",
        sched_policy: "rr",
        listeners: &listeners,
        counters: &counters,
        queued: 0,
        workers_wanted: 2,
        workers_ready: 1,
        draining: true,
        reloads: [2, 1, 0],
        retained: (1, 12),
        slots: vec![slot("ready", 4), slot("restarting", 3)],
        agent: Some("ready"),
        process: Process::default(),
    });
    assert!(
        text.contains("rrbalancer_connections_accepted_total{listener=\"127.0.0.1:3000\"} 7\n")
    );
    // A listener never seen yet counts 0; quotes in a label are escaped.
    assert!(
        text.contains("{listener=\"unix:/run/a\\\"b.sock\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("rrbalancer_connections_handed_total{slot=\"1\"} 3\n"));
    assert!(text.contains("\nrrbalancer_draining 1\n"), "{text}");
    assert!(text.contains("rrbalancer_worker_state{slot=\"1\",state=\"restarting\"} 1\n"));
    assert!(text.contains("rrbalancer_worker_state{slot=\"1\",state=\"ready\"} 0\n"));
    assert!(
        !text.contains("rrbalancer_worker_resident_memory_bytes{"),
        "not measured"
    );
    assert!(
        text.contains(
            "rrbalancer_connections_rerouted_total{slot=\"1\",cause=\"worker_exited\"} 4\n"
        )
    );
    assert!(
        text.contains("rrbalancer_connections_rerouted_total{slot=\"1\",cause=\"refused\"} 1\n")
    );
    assert!(text.contains("rrbalancer_connections_acked_total{slot=\"0\"} 1\n"));
    // 300 µs: above the 250 µs bucket, in the 500 µs one and every one after.
    let bucket = "rrbalancer_handoff_latency_seconds_bucket{slot=\"1\"";
    assert!(
        text.contains(&format!("{bucket},le=\"0.00025\"}} 0\n")),
        "{text}"
    );
    assert!(text.contains(&format!("{bucket},le=\"0.0005\"}} 1\n")));
    assert!(text.contains(&format!("{bucket},le=\"+Inf\"}} 1\n")));
    assert!(text.contains("rrbalancer_handoff_latency_seconds_sum{slot=\"1\"} 0.000300\n"));
    assert!(text.contains("rrbalancer_handoff_latency_seconds_count{slot=\"1\"} 1\n"));
    assert!(text.contains("rrbalancer_worker_starts_total{slot=\"0\"} 3\n"));
    assert!(text.contains("rrbalancer_worker_starts_total{slot=\"1\"} 0\n"));
    assert!(text.contains("rrbalancer_worker_giveups_total{slot=\"1\"} 1\n"));
    assert!(text.contains("rrbalancer_reloads_total{outcome=\"completed\"} 2\n"));
    assert!(text.contains("rrbalancer_reloads_total{outcome=\"aborted\"} 0\n"));
    assert!(text.contains("rrbalancer_message_deliveries_total 15\n"));
    assert!(text.contains("rrbalancer_retained_bytes 12\n"));
    assert!(text.contains("rrbalancer_agent_state{state=\"ready\"} 1\n"));
    assert!(text.contains("rrbalancer_agent_state{state=\"given_up\"} 0\n"));
    assert!(text.contains("rrbalancer_agent_starts_total 2\n"));
    assert!(text.contains("rrbalancer_agent_exits_total{cause=\"exited\"} 1\n"));
    assert!(text.contains("rrbalancer_worker_exits_total{slot=\"0\",cause=\"killed\"} 2\n"));
    assert!(text.contains("rrbalancer_worker_exits_total{slot=\"1\",cause=\"stopped\"} 0\n"));
    assert!(text.contains(
        "rrbalancer_clients_turned_away_total{door=\"metrics\",cause=\"not_allowed\"} 3\n"
    ));
    assert!(
        text.contains(
            "rrbalancer_clients_turned_away_total{door=\"control\",cause=\"crowded\"} 0\n"
        )
    );
    // Every sample belongs to a family declared before it, once.
    let mut declared = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            assert!(
                declared.insert(rest.split(' ').next().unwrap().to_owned()),
                "{line}"
            );
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| declared.contains(*f))
                .unwrap_or(name);
            assert!(declared.contains(family), "{line}");
        }
    }
}

#[test]
fn each_reason_to_turn_a_client_away_has_its_labels() {
    use TurnedAway::*;
    let mut counters = Counters::default();
    for (why, labels) in [
        (ControlCrowded, ("control", "crowded")),
        (ControlTimeout, ("control", "timeout")),
        (ControlTooLong, ("control", "too_long")),
        (ControlOtherUser, ("control", "other_user")),
        (MetricsNotAllowed, ("metrics", "not_allowed")),
        (MetricsTimeout, ("metrics", "timeout")),
        (MetricsBadRequest, ("metrics", "bad_request")),
        (MetricsCrowded, ("metrics", "crowded")),
    ] {
        assert_eq!(TURNED_AWAY[why as usize], labels);
        counters.turn_away(why);
    }
    assert_eq!(counters.turned_away, [1; TURNED_AWAY.len()]);
}

#[test]
fn exits_are_stopped_when_asked_else_by_their_status() {
    assert_eq!(
        EXIT_CAUSES[exit_cause(true, "killed by SIGKILL")],
        "stopped"
    );
    assert_eq!(EXIT_CAUSES[exit_cause(false, "exit code 3")], "exited");
    assert_eq!(
        EXIT_CAUSES[exit_cause(false, "killed by SIGSEGV (core dumped)")],
        "killed"
    );
}

#[test]
fn counters_grow_to_a_new_index() {
    let mut v = Vec::new();
    Counters::add(&mut v, 2, 5);
    Counters::add(&mut v, 2, 1);
    assert_eq!(v, [0, 0, 6]);
}

/// A scrape of one ready slot and nothing counted.
fn one_ready_slot<'a>(counters: &'a Counters, agent: Option<&'a str>) -> Snapshot<'a> {
    Snapshot {
        version: "0.1.0",
        sched_policy: "rr",
        listeners: &[],
        counters,
        queued: 0,
        workers_wanted: 1,
        workers_ready: 1,
        draining: false,
        reloads: [0; 3],
        retained: (0, 0),
        slots: vec![slot("ready", 1)],
        agent,
        process: Process::default(),
    }
}

#[test]
fn a_scrape_declares_every_family_of_the_table_once_in_its_order() {
    let counters = Counters::default();
    let snapshot = |agent| one_ready_slot(&counters, agent);
    let declared = |text: String| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let all: Vec<_> = families::ALL.iter().map(|f| f.name.to_owned()).collect();
    assert_eq!(declared(render(&snapshot(Some("ready")))), all);
    let agents = [
        &families::AGENT_STATE,
        &families::AGENT_STARTS,
        &families::AGENT_EXITS,
    ];
    let without: Vec<_> = families::ALL
        .iter()
        .filter(|f| !agents.contains(f))
        .map(|f| f.name.to_owned())
        .collect();
    assert_eq!(
        declared(render(&snapshot(None))),
        without,
        "no agent, no agent families"
    );
}

#[test]
fn a_reroute_is_labelled_by_why_the_first_worker_let_go() {
    assert_eq!(REROUTE_CAUSES[reroute_cause(false)], "worker_exited");
    assert_eq!(REROUTE_CAUSES[reroute_cause(true)], "ack_timeout");
    assert_eq!(REROUTE_CAUSES[REFUSED], "refused");
}

#[test]
fn exits_reroutes_and_what_gone_workers_served_add_up_per_slot() {
    let mut c = Counters::default();
    c.count_exit(1, 2);
    c.count_exit(1, 2);
    c.count_exit(0, 0);
    assert_eq!(c.exits, [[1, 0, 0], [0, 0, 2]]);
    c.count_rerouted(2, 1, 3);
    c.count_rerouted(2, 1, 4);
    assert_eq!(c.rerouted, [[0; 3], [0; 3], [0, 7, 0]]);
    let served = |handed| Served {
        handed,
        ..Served::default()
    };
    c.retire(1, &served(5));
    c.retire(1, &served(2));
    assert_eq!(c.retired.len(), 2);
    assert_eq!((c.retired[0].handed, c.retired[1].handed), (0, 7));
}

#[test]
fn each_family_says_its_type() {
    let counters = Counters::default();
    let text = render(&one_ready_slot(&counters, None));
    for line in [
        "# TYPE rrbalancer_connections_accepted_total counter\n",
        "# TYPE rrbalancer_worker_state gauge\n",
        "# TYPE rrbalancer_handoff_latency_seconds histogram\n",
    ] {
        assert!(text.contains(line), "{line}");
    }
}
