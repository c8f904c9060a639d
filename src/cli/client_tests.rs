//! Tests of what the control client shows.

use super::*;
use crate::wire::control::{AgentStatus, SlotStatus, WorkerStatus};

#[test]
fn a_refusal_sent_before_the_request_was_read_is_read_though_the_write_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // A master that reads a little of a long request, answers why not, and closes.
    let master = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0u8; 100];
        io::Read::read_exact(&mut conn, &mut head).unwrap();
        conn.write_all(b"{\"ok\":false,\"message\":\"request too long\"}\n")
            .unwrap();
    });
    let message = serde_json::Value::String("x".repeat(4 << 20));
    let long = Request::Send {
        to: "all".into(),
        retain: None,
        message,
    };
    let reply = request(&path, &long, Duration::from_secs(10)).unwrap();
    assert!(!reply.ok);
    assert_eq!(reply.message.as_deref(), Some("request too long"));
    master.join().unwrap();

    // No answer at all: the write's error is what is told.
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("d.sock")).unwrap();
    let master = std::thread::spawn(move || drop(listener.accept().unwrap()));
    let err = request(&dir.path().join("d.sock"), &long, Duration::from_secs(10));
    master.join().unwrap();
    let err = err.unwrap_err().to_string();
    assert!(
        err.contains("Broken pipe") || err.contains("reset"),
        "{err}"
    );
}

#[test]
fn status_is_a_table_with_a_row_per_worker_and_empty_slot() {
    let worker = |slot, pid, state: &str, role: &str| WorkerStatus {
        slot,
        pid,
        state: state.into(),
        role: role.into(),
        uptime_secs: 75.0,
        restarts: 1,
        recycled: 2,
        rss_bytes: Some(70 << 20),
        cpu_seconds: Some(1.5),
        conn_per_sec: Some(12.25),
        handed: 1234,
        unacked: 0,
        oldest_unacked_secs: None,
    };
    let status = Status {
        pid: 10,
        version: "0.1.0".into(),
        config: Some("cluster.toml".into()),
        environment: Some("production".into()),
        sched_policy: "rr".into(),
        listeners: vec!["127.0.0.1:3000".into()],
        workers_wanted: 3,
        stopping: false,
        drain_left_ms: None,
        reload_in_progress: false,
        recycling: None,
        upgrade: None,
        workers: vec![
            worker(1, 12, "ready", "current"),
            worker(0, 11, "ready", "current"),
        ],
        empty_slots: vec![SlotStatus {
            slot: 2,
            state: "given up".into(),
            restarts: 10,
            last_causes: vec!["pid 9: exit code 7".into()],
        }],
        agent: None,
    };
    let with_agent = Status {
        agent: Some(AgentStatus {
            state: "ready".into(),
            pid: Some(9),
            uptime_secs: Some(80.0),
            restarts: 1,
            rss_bytes: None,
            cpu_seconds: Some(0.25),
            last_causes: vec!["pid 8: exit code 1".into()],
            others: vec![],
        }),
        ..status.clone()
    };
    let text = format_status(&status);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("pid 10") && lines[1].contains("127.0.0.1:3000"));
    assert!(
        lines[0].ends_with("config cluster.toml  environment \"production\""),
        "{text}"
    );
    assert!(lines[3].starts_with("SLOT  PID  STATE"), "{text}");
    assert!(lines[4].starts_with("0     11   ready     1m15s"), "{text}");
    assert!(
        lines[3].contains("CONN/S") && lines[3].ends_with("RSS       CPU"),
        "{text}"
    );
    assert!(
        lines[4].contains("  12.2  ") && lines[4].ends_with("70.0 MiB  1.50s"),
        "{text}"
    );
    assert!(lines[6].starts_with("2     -    given up"), "{text}");
    assert!(text.ends_with("slot 2 last exit: pid 9: exit code 7\n"));
    // The agent last, its own row; its last exit is not news while it runs again.
    let text = format_status(&with_agent);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[7].starts_with("agent  9    ready     1m20s"),
        "{text}"
    );
    assert!(lines[7].ends_with("-         0.25s"), "{text}");
    assert!(!text.contains("agent last exit"), "{text}");

    // Ready while one worker serves its slot; not once stopping, nor with none.
    assert_eq!(
        status.readiness(),
        Ok("ready: 2/3 workers ready (pid 10)".into())
    );
    let mut stopping = status.clone();
    stopping.stopping = true;
    assert!(stopping.readiness().unwrap_err().contains("stopping"));
    let mut draining = status.clone();
    draining.drain_left_ms = Some(1_500);
    assert_eq!(
        draining.readiness(),
        Err("not ready: pid 10 is draining before it stops (1.5s left)".into())
    );
    assert_eq!(notes(&draining), "  (draining, then stopping)");
    let mut starting = status;
    starting.workers = vec![
        worker(0, 11, "starting", "current"),
        worker(1, 12, "ready", "retiring"),
    ];
    assert_eq!(
        starting.readiness(),
        Err("not ready: 0/3 workers ready (pid 10)".into())
    );
}
