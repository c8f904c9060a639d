//! Tests of loading and validating configurations.

use super::*;

#[test]
fn the_shipped_cluster_toml_is_the_embedded_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
    let mut shipped = load(Some(&path), &Overrides::default()).unwrap();
    let embedded = load(None, &Overrides::default()).unwrap();
    // Only where it came from may differ (and what is named after that).
    shipped.source = None;
    shipped.control = embedded.control.clone();
    shipped.policy_source = embedded.policy_source;
    assert_eq!(format!("{shipped:?}"), format!("{embedded:?}"));
}

#[test]
fn the_window_is_native_only_and_the_ack_deadline_is_bounded() {
    let native = load_str("").unwrap();
    assert_eq!(native.worker.max_unacked, DEFAULT_MAX_UNACKED);
    assert_eq!(native.worker.ack_timeout, Duration::from_secs(10));
    assert_eq!(native.affinity, Affinity::None);
    let node = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n").unwrap();
    assert_eq!(node.worker.max_unacked, 1, "Node's rule: one in flight");
    let e = error_of("[worker]\nexec = \"sh\"\nprotocol = \"node\"\nmax_unacked = 8\n");
    assert!(
        e.starts_with("cluster.toml:4:15: key `worker.max_unacked`") && e.contains("Node"),
        "{e}"
    );
    let e = error_of("[worker]\nack_timeout = \"1ms\"\n");
    assert!(
        e.starts_with("cluster.toml:2:15: key `worker.ack_timeout`") && e.contains("10ms"),
        "{e}"
    );
    let sticky = load_str("[dispatch]\naffinity = \"client-ip\"\n").unwrap();
    assert_eq!(sticky.affinity, Affinity::ClientIp);
    let e = error_of("[dispatch]\naffinity = \"cookie\"\n");
    assert!(
        e.contains("dispatch.affinity") && e.contains("client-ip"),
        "{e}"
    );
    assert!(!native.batch, "batching is off by default");
    assert!(load_str("[dispatch]\nbatch = true\n").unwrap().batch);
    let e = error_of("[dispatch]\nbatch = \"no\"\n");
    assert!(
        e.starts_with("cluster.toml:2:9: key `dispatch.batch`") && e.contains("bool"),
        "{e}"
    );
}

#[test]
fn the_effective_settings_print_as_toml_that_loads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml"))
            .unwrap(),
        format!(
            "listen = [\"[::1]:0\", \"unix:/tmp/x.sock\"]\nworkers = 3\nsched_policy = \"none\"\n\
             [worker]\nexec = \"sh\"\nargs = [\"-c\", \"echo 'hi' \\\"there\\\"\"]\n\
             env = {{ A = \"1\" }}\ncwd = {:?}\nprotocol = \"node-cluster\"\n\
             ready_timeout = \"1m 30s 5ms\"\n[worker.node]\nleaving_message = {{ bye = [1, 2] }}\n\
             [dispatch]\naffinity = \"client-ip\"\nbatch = true\n[restart]\non_giveup = \"true\"\n\
             [metrics]\nlisten = \"[::]:9100\"\nallow = [\"10.9.0.0/16\", \"::1\"]\n\
             [log]\nstdout = {:?}\ndate_format = \"%H:%M\"\n",
            dir.path().display(),
            dir.path().join("out.log").display()
        ),
    ];
    for text in configs {
        let first = load_str(&text).unwrap();
        let printed = first.to_toml();
        let again = load_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        let mut first = first;
        first.policy_source = again.policy_source; // now written in the file
        // `exec` is printed as the program's absolute path (so the text loads from any
        // directory), which then is also its argv[0].
        first.worker.command.arg0 = again.worker.command.arg0.clone();
        assert_eq!(format!("{first:?}"), format!("{again:?}"), "{printed}");
    }
}

#[test]
fn arguments_the_system_cannot_exec_are_refused_at_validation() {
    let many = vec!["\"x\""; 2_000_000].join(",");
    let e = error_of(&format!("[worker]\nargs = [{many}]\n"));
    assert!(e.contains("worker.args") && e.contains("ARG_MAX"), "{e}");
    let long = "y".repeat(200_000);
    let e = error_of(&format!("[worker]\nargs = [\"{long}\"]\n"));
    assert!(
        e.contains("longer than one argument") && e.len() < 500,
        "{e}"
    );
    assert!(load_str("[worker]\nargs = [\"--max-requests\", \"1000\"]\n").is_ok());
}

#[test]
fn a_huge_bad_value_is_quoted_short() {
    let huge = "x".repeat(10_000_000);
    let e = error_of(&format!("listen = [\"{huge}\"]\n"));
    assert!(e.len() < 500, "{} bytes of error", e.len());
    assert!(
        e.contains("`listen") && e.contains("(10000000 bytes)"),
        "{e}"
    );
}

#[test]
fn giving_up_waits_and_retries_by_default_and_exit_is_a_choice() {
    let config = load_str("").unwrap();
    assert_eq!(config.restart.on_all_given_up, AllGivenUp::Wait);
    assert_eq!(config.restart.retry_after, DEFAULT_RETRY_AFTER);
    let exit = load_str("[restart]\non_all_given_up = \"exit\"\nretry_after = \"5m\"\n").unwrap();
    assert_eq!(exit.restart.on_all_given_up, AllGivenUp::Exit);
    assert_eq!(exit.restart.retry_after, Duration::from_secs(300));
    let e = error_of("[restart]\non_all_given_up = \"never\"\n");
    assert!(
        e.starts_with("cluster.toml:2:")
            && e.contains("restart.on_all_given_up")
            && e.contains("wait")
            && e.contains("exit"),
        "{e}"
    );
    let e = error_of("[restart]\nretry_after = \"100ms\"\n");
    assert!(
        e.contains("`restart.retry_after`") && e.contains("at least 1s"),
        "{e}"
    );
}

#[test]
fn the_haproxy_agent_is_an_address_beside_the_metrics_listener() {
    let ok = "[metrics]\nlisten = \"127.0.0.1:9100\"\nhaproxy_agent = \"127.0.0.1:9101\"\n";
    let metrics = load_str(ok).unwrap().metrics.unwrap();
    assert_eq!(
        metrics.haproxy_agent,
        Some("127.0.0.1:9101".parse().unwrap())
    );
    let e = error_of("[metrics]\nhaproxy_agent = \"127.0.0.1:9101\"\n");
    assert!(
        e.starts_with("cluster.toml:2:") && e.contains("needs `metrics.listen`"),
        "{e}"
    );
    let e = error_of("[metrics]\nlisten = \"127.0.0.1:9100\"\nhaproxy_agent = \"9101\"\n");
    assert!(
        e.starts_with("cluster.toml:3:") && e.contains("metrics.haproxy_agent"),
        "{e}"
    );
    assert!(e.contains("not IP:PORT"), "{e}");
}

#[test]
fn a_stop_drains_only_when_asked() {
    assert_eq!(load_str("").unwrap().drain, Duration::ZERO);
    let config = load_str("[shutdown]\ndrain = \"2s\"\n").unwrap();
    assert_eq!(config.drain, Duration::from_secs(2));
    let e = error_of("[shutdown]\ndrain = \"soon\"\n");
    assert!(
        e.starts_with("cluster.toml:2:") && e.contains("shutdown.drain"),
        "{e}"
    );
}

#[test]
fn every_duration_is_bounded_so_no_deadline_can_overflow() {
    for (table, key) in [
        ("worker", "ready_delay"),
        ("worker", "ready_timeout"),
        ("worker", "ack_timeout"),
        ("shutdown", "kill_timeout"),
        ("shutdown", "drain"),
        ("restart", "window"),
        ("restart", "backoff_initial"),
        ("restart", "backoff_max"),
        ("restart", "min_uptime"),
        ("restart", "retry_after"),
    ] {
        // What an issue found `check` accepting, and the master then panicking on.
        let e = error_of(&format!("[{table}]\n{key} = \"18446744073709551615s\"\n"));
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains(&format!("`{table}.{key}`")),
            "{e}"
        );
        assert!(e.contains("at most") || e.contains("to 1h"), "{e}");
        let ok = format!("[{table}]\n{key} = \"1day\"\n");
        assert_eq!(
            load_str(&ok).is_ok(),
            key != "ack_timeout",
            "{key}: a day is the bound (ack_timeout: an hour)"
        );
    }
}

#[test]
fn the_mode_answers_what_the_master_asks_of_policy_and_protocol() {
    use Protocol::*;
    use SchedPolicy::{None as Shared, Rr};
    // (policy, protocol): master accepts, socket activation, node, cluster
    let table = [
        (Rr, Native, (true, false, false, false)),
        (Rr, Node, (true, false, true, false)),
        (Rr, NodeCluster, (true, false, true, true)),
        (Shared, Native, (false, true, false, false)),
        (Shared, Node, (false, false, true, false)),
        (Shared, NodeCluster, (false, false, true, true)),
    ];
    for (policy, protocol, want) in table {
        let m = Mode::new(policy, protocol);
        let got = (
            m.master_accepts(),
            m.socket_activation(),
            m.node(),
            m.cluster(),
        );
        assert_eq!(got, want, "{policy:?} {protocol:?}");
        assert_eq!(m.workers_accept(), !m.master_accepts());
    }
}

#[test]
fn the_restart_count_is_bounded_so_a_slots_history_stays_small() {
    let ok = load_str(&format!("[restart]\nmax_restarts = {MAX_RESTARTS}\n")).unwrap();
    assert_eq!(ok.restart.max_restarts, MAX_RESTARTS);
    let e = error_of(&format!("[restart]\nmax_restarts = {}\n", MAX_RESTARTS + 1));
    assert!(
        e.starts_with("cluster.toml:2:")
            && e.contains("`restart.max_restarts`")
            && e.contains("0 to 10000"),
        "{e}"
    );
}

#[test]
fn readiness_defaults_per_protocol_and_start_is_for_node_only() {
    let node = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node\"\n").unwrap();
    assert_eq!(node.worker.ready, Readiness::Start);
    let cluster = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n").unwrap();
    assert_eq!(cluster.worker.ready, Readiness::Message);
    let e = load_str("[worker]\nexec = \"sh\"\nready = \"start\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cluster.toml:3:9: key `worker.ready`") && e.contains("protocol = \"node\""),
        "{e}"
    );
    let e = load_str("[log]\ndate_format = \"%Q\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("log.date_format"), "{e}");
    let e = load_str("[worker.node]\nsocket_msg = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("socket_msg") && e.contains("socket_message"),
        "{e}"
    );
}

pub(super) fn load_str(text: &str) -> Result<Config, ConfigError> {
    let file = parse(text, "cluster.toml")?;
    validate(file, text, "cluster.toml", None, &Overrides::default())
}

pub(super) fn error_of(text: &str) -> String {
    load_str(text).unwrap_err().to_string()
}

#[test]
fn a_file_that_cannot_be_created_under_a_non_directory_is_refused_naming_its_key() {
    let e = error_of("[log]\nmaster_log = \"/dev/null/dir/master.log\"\n");
    assert!(
        e.contains("key `log.master_log`") && e.contains("/dev/null is not a directory"),
        "{e}"
    );
    let e = error_of("[control]\npid_file = \"/dev/null/x.pid\"\n");
    assert!(e.contains("key `control.pid_file`"), "{e}");
    // A directory still to be made is the master's to make.
    assert!(load_str("[log]\nstdout = \"/tmp/rrb-not-yet/a/b/out.log\"\n").is_ok());
}

#[test]
fn a_listening_socket_where_none_can_be_bound_is_refused_naming_the_key_and_line() {
    let e = error_of("workers = 1\nlisten = [\"unix:/dev/null/dir/x.sock\"]\n");
    assert!(
        e.starts_with("cluster.toml:2:") && e.contains("key `listen`"),
        "{e}"
    );
    assert!(e.contains("/dev/null is not a directory"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    // The master makes no directory for a listening socket, and replaces only a socket.
    let e = error_of(&format!("listen = [\"unix:{d}/missing/x.sock\"]\n"));
    assert!(e.contains("its directory does not exist"), "{e}");
    std::fs::write(dir.path().join("file"), "").unwrap();
    let e = error_of(&format!("listen = [\"unix:{d}/file\"]\n"));
    assert!(e.contains("is not a socket"), "{e}");
    assert!(load_str(&format!("listen = [\"unix:{d}/x.sock\"]\n")).is_ok());
    // The same for --listen, which names itself.
    let overrides = Overrides {
        listen: vec!["unix:/dev/null/dir/x.sock".into()],
        ..Overrides::default()
    };
    let file = parse("", "cluster.toml").unwrap();
    let e = validate(file, "", "cluster.toml", None, &overrides).unwrap_err();
    assert!(e.to_string().starts_with("--listen: "), "{e}");
}

/// A directory of `dir` that another user owns (uid 65534, "nobody"): `None` if we may not
/// give one away (not root).
fn foreign_dir(dir: &Path) -> Option<PathBuf> {
    let theirs = dir.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))
        .ok()
        .map(|()| theirs)
}

#[test]
fn control_paths_in_a_directory_another_user_controls_are_refused_naming_key_and_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let text = format!(
        "workers = 1\n[control]\nsocket = \"{}/x.sock\"\n",
        open.display()
    );
    let e = error_of(&text);
    assert!(
        e.starts_with("cluster.toml:3:10: key `control.socket`")
            && e.contains("anyone may write in it (mode 1777)"),
        "{e}"
    );
    match foreign_dir(dir.path()) {
        Some(theirs) => {
            let text = format!("[control]\npid_file = \"{}/x.pid\"\n", theirs.display());
            let e = error_of(&text);
            assert!(
                e.starts_with("cluster.toml:2:12: key `control.pid_file`")
                    && e.contains("belongs to uid 65534"),
                "{e}"
            );
        }
        None => eprintln!("SKIPPED: a directory another user owns needs root to make"),
    }
    // A pid file is never written through a link.
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("x.pid")).unwrap();
    let text = format!("[control]\npid_file = \"{}/x.pid\"\n", dir.path().display());
    let e = error_of(&text);
    assert!(
        e.contains("key `control.pid_file`") && e.contains("it is a symbolic link"),
        "{e}"
    );
    // One of ours, or one still to be made (the master makes it private), is fine.
    let ours = format!("[control]\nsocket = \"{}/x.sock\"\n", dir.path().display());
    assert!(load_str(&ours).is_ok());
    let later = format!("[control]\nsocket = \"{}/new/x.sock\"\n", open.display());
    assert!(load_str(&later).is_ok());
}

#[test]
fn an_agent_needs_a_program_and_speaks_native_or_node_not_node_cluster() {
    let e = error_of("workers = 2\n[agent]\nargs = [\"x\"]\n");
    assert!(e.contains("key `agent.exec`"), "{e}");
    let e = error_of("[agent]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n");
    assert!(
        e.starts_with("cluster.toml:3:12: key `agent.protocol`") && e.contains("\"node\""),
        "{e}"
    );
    let e = error_of("[agent]\nexec = \"sh\"\nready = \"start\"\n");
    assert!(e.contains("key `agent.ready`"), "{e}");
    let e = error_of("[agent]\nexec = \"no-such-program-rrb\"\n");
    assert!(e.contains("key `agent.exec`"), "{e}");
    let e = error_of("[agent]\nexec = \"sh\"\nargs = [\"a\\u0000b\"]\n");
    assert!(e.contains("key `agent.args`"), "{e}");
    let e = error_of("[agent]\nexec = \"sh\"\ncwd = \"/dev/null/dir\"\n");
    assert!(e.contains("key `agent.cwd`"), "{e}");
    let node = load_str("[agent]\nexec = \"sh\"\nprotocol = \"node\"\n").unwrap();
    let agent = node.agent.clone().unwrap();
    assert_eq!(
        (agent.protocol, agent.ready),
        (Protocol::Node, Readiness::Start)
    );
    // `check` prints it, and what it prints loads back the same.
    let text = node.to_toml();
    assert!(text.contains("[agent]"), "{text}");
    let mut back = load_str(&text).unwrap().agent.unwrap();
    // (`exec` is written as the absolute path it resolved to: argv[0] says that.)
    back.command.arg0 = agent.command.arg0.clone();
    assert_eq!(back, agent);
    assert!(load_str("").unwrap().agent.is_none());
}

#[test]
fn what_exec_cannot_pass_is_refused_naming_the_key() {
    for (text, key) in [
        ("[worker]\nargs = [\"ok\", \"a\\u0000b\"]\n", "worker.args"),
        ("[worker]\nenv = { \"A=B\" = \"x\" }\n", "worker.env"),
        ("[worker]\nenv = { \"\" = \"x\" }\n", "worker.env"),
        ("[worker]\nenv = { A = \"a\\u0000b\" }\n", "worker.env"),
        (
            "[restart]\non_giveup = \"echo \\u0000\"\n",
            "restart.on_giveup",
        ),
    ] {
        let e = error_of(text);
        let what = e.contains("NUL") || e.contains("variable name");
        assert!(e.contains(&format!("`{key}`")) && what, "{e}");
    }
}

#[test]
fn listen_addresses_that_cannot_all_be_bound_are_refused() {
    let e = error_of("listen = [\"127.0.0.1:3000\", \"127.0.0.1:3000\"]\n");
    assert!(
        e.starts_with("cluster.toml:1:") && e.contains("appears twice"),
        "{e}"
    );
    // Port 0 twice is two ports.
    assert!(load_str("listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n").is_ok());
    let long = format!("/tmp/{}", "s".repeat(120));
    let e = error_of(&format!("listen = [\"unix:{long}\"]\n"));
    assert!(e.contains("at most 107"), "{e}");
    let e = error_of(&format!("[control]\nsocket = \"{long}\"\n"));
    assert!(
        e.contains("`control.socket`") && e.contains("at most 107"),
        "{e}"
    );
}
