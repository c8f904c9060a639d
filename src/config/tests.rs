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
             [dispatch]\naffinity = \"client-ip\"\n[restart]\non_giveup = \"true\"\n\
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
fn every_duration_is_bounded_so_no_deadline_can_overflow() {
    for (table, key) in [
        ("worker", "ready_delay"),
        ("worker", "ready_timeout"),
        ("worker", "ack_timeout"),
        ("shutdown", "kill_timeout"),
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
        listen: vec!["unix:/dev/null/dir/x.sock".parse().unwrap()],
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

#[test]
fn restart_storm_protection_cannot_be_switched_off() {
    for (key, value) in [
        ("window", "500ms"),
        ("backoff_initial", "0s"),
        ("backoff_max", "1ms"),
    ] {
        let e = error_of(&format!("[restart]\n{key} = \"{value}\"\n"));
        assert!(
            e.starts_with("cluster.toml:2:")
                && e.contains(&format!("`restart.{key}`"))
                && e.contains("too short"),
            "{e}"
        );
    }
    assert!(load_str("[restart]\nwindow = \"1s\"\nbackoff_initial = \"10ms\"\n").is_ok());
}

#[test]
fn a_megabyte_where_a_word_goes_is_cut_in_every_message() {
    let big = "z".repeat(1_000_000);
    for text in [
        format!("[shutdown]\nkill_timeout = \"{big}\"\n"),
        format!("{big} = 1\n"),
        format!("[log]\ndate_format = \"%Q{big}\"\n"),
        format!("[worker]\nexec = \"{big}\"\n"),
    ] {
        let e = error_of(&text);
        assert!(e.len() < 1_000, "{} bytes: {}", e.len(), &e[..200]);
    }
}

#[test]
fn an_empty_file_is_the_documented_default() {
    let config = load_str("").unwrap();
    assert_eq!(config.listen, vec!["127.0.0.1:3000".parse().unwrap()]);
    assert_eq!(config.sched_policy, SchedPolicy::Rr);
    assert_eq!(config.policy_source, PolicySource::Default);
    assert_eq!(config.backlog, 511);
    assert_eq!(config.kill_timeout, Duration::from_secs(5));
    assert_eq!(config.worker.command.args, vec!["demo-worker"]);
    assert!(config.workers >= 1);
}

#[test]
fn every_key_parses() {
    let config = load_str(
        r#"
        listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/x.sock"]
        workers = 3
        sched_policy = "none"
        backlog = 128
        [worker]
        exec = "sh"
        args = ["-c", "true"]
        env = { A = "1" }
        protocol = "native"
        max_unacked = 16
        [shutdown]
        kill_timeout = "500ms"
        [restart]
        max_restarts = 3
        window = "10s"
        backoff_initial = "50ms"
        backoff_max = "2s"
        min_uptime = "2s"
        "#,
    )
    .unwrap();
    assert_eq!(config.listen.len(), 3);
    assert_eq!(config.listen[2], ListenAddr::Unix("/tmp/x.sock".into()));
    assert_eq!(config.workers, 3);
    assert_eq!(config.sched_policy, SchedPolicy::None);
    assert_eq!(config.policy_source, PolicySource::File);
    assert_eq!(config.kill_timeout, Duration::from_millis(500));
    assert!(config.worker.command.program.is_absolute());
    assert_eq!(config.worker.command.env, vec![("A".into(), "1".into())]);
    assert_eq!(config.restart.max_restarts, 3);
}

#[test]
fn unknown_keys_name_the_key_line_and_allowed_keys() {
    let e = error_of("workers = 2\n[worker]\nexcec = \"x\"\n");
    assert!(e.starts_with("cluster.toml:3:1: "), "{e}");
    assert!(e.contains("excec"), "{e}");
    assert!(e.contains("exec"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn wrong_types_and_bad_values_name_the_key() {
    let e = error_of("backlog = \"big\"\n");
    assert!(
        e.contains("cluster.toml:1:11") && e.contains("`backlog`"),
        "{e}"
    );
    let e = error_of("sched_policy = \"fair\"\n");
    assert!(
        e.contains("`sched_policy`") && e.contains("rr") && e.contains("none"),
        "{e}"
    );
    let e = error_of("[shutdown]\nkill_timeout = \"soon\"\n");
    assert!(
        e.contains("cluster.toml:2:") && e.contains("shutdown.kill_timeout"),
        "{e}"
    );
    let e = error_of("workers = 0\n");
    assert!(e.contains("`workers`") && e.contains("auto"), "{e}");
    let e = error_of("listen = [\"localhost\"]\n");
    assert!(e.contains("`listen") && e.contains("IP:PORT"), "{e}");
    let e = error_of("[worker]\nprotocol = \"grpc\"\n");
    assert!(e.contains("worker.protocol") && e.contains("native"), "{e}");
}

#[test]
fn a_missing_program_is_reported_at_its_line() {
    let e = error_of("[worker]\nexec = \"no-such-program-rrb\"\n");
    assert!(e.starts_with("cluster.toml:2:8: key `worker.exec`"), "{e}");
    let e = error_of("[worker]\nexec = \"/nonexistent/bin\"\n");
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn the_stop_signal_is_auto_none_or_a_signal_a_worker_can_handle() {
    let signal = |text: &str| load_str(&format!("[shutdown]\nsignal = {text}\n"));
    assert_eq!(load_str("").unwrap().stop_signal, StopSignal::Auto);
    for (text, want) in [
        ("\"auto\"", StopSignal::Auto),
        ("\"none\"", StopSignal::None),
        ("\"SIGINT\"", StopSignal::Signal(Signal::SIGINT)),
        ("\"INT\"", StopSignal::Signal(Signal::SIGINT)),
        ("\"SIGQUIT\"", StopSignal::Signal(Signal::SIGQUIT)),
        ("\"sigterm\"", StopSignal::Signal(Signal::SIGTERM)),
    ] {
        assert_eq!(signal(text).unwrap().stop_signal, want, "{text}");
    }
    for text in [
        "\"SIGKILL\"",
        "\"STOP\"",
        "\"TERMINATE\"",
        "\"\"",
        "\"SIGCHLD\"",
        "\"SEGV\"",
    ] {
        let e = signal(text).unwrap_err().to_string();
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains("key `shutdown.signal`"),
            "{text}: {e}"
        );
    }
    // A Node worker asked nothing at all is refused.
    let e = load_str(
        "[worker]\nexec = \"sh\"\nprotocol = \"node\"\n[shutdown]\nsignal = \"none\"\ndisconnect = false\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("cluster.toml:6:") && e.contains("shutdown.disconnect"),
        "{e}"
    );
    assert!(
        !load_str("[shutdown]\ndisconnect = false\n")
            .unwrap()
            .disconnect
    );
    // What each kind of worker gets.
    let auto = StopSignal::Auto;
    assert_eq!(
        auto.after_stop(true),
        Some(Signal::SIGTERM),
        "Node: disconnect, SIGTERM"
    );
    assert_eq!(auto.after_stop(false), None, "native: `stop` alone");
    assert_eq!(auto.alone(), Signal::SIGTERM, "a plain program");
    assert_eq!(
        StopSignal::None.alone(),
        Signal::SIGTERM,
        "nothing else would ask it"
    );
    let int = StopSignal::Signal(Signal::SIGINT);
    assert_eq!(
        (int.after_stop(false), int.alone()),
        (Some(Signal::SIGINT), Signal::SIGINT)
    );
}

#[test]
fn a_file_setting_that_names_a_directory_is_refused() {
    for (text, key) in [
        ("[control]\npid_file = \"/tmp/\"\n", "control.pid_file"),
        ("[control]\nsocket = \"/tmp\"\n", "control.socket"),
        ("[log]\nstdout = \"/tmp/\"\n", "log.stdout"),
        ("[log]\nmaster_log = \"/\"\n", "log.master_log"),
    ] {
        let e = error_of(text);
        assert!(
            e.contains(&format!("key `{key}`")) && e.contains("is a directory"),
            "{text}: {e}"
        );
    }
}

#[test]
fn a_descriptor_in_the_args_of_a_socket_activated_worker_is_warned_about() {
    let config = |policy: &str| {
        load_str(&format!(
            "sched_policy = \"{policy}\"\n[worker]\nexec = \"sh\"\nargs = [\"--bind\", \"fd://3\"]\nready = \"delay\"\n"
        ))
        .unwrap()
    };
    let warnings = config("none").warnings();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("key `worker.args`") && warnings[0].contains("\"fd://3\""),
        "{warnings:?}"
    );
    assert!(config("rr").warnings().is_empty(), "no LISTEN_FDS in rr");
}

#[test]
fn metrics_allow_takes_addresses_and_networks_and_names_a_bad_entry_at_its_line() {
    let config = load_str(
        "[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.1.2.3/8\", \"192.0.2.7\", \"::1\", \"fd00::/8\"]\n",
    )
    .unwrap();
    let m = config.metrics.clone().unwrap();
    let shown: Vec<String> = m.allow.iter().flatten().map(IpNet::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "::1/128", "fd00::/8"]);
    assert!(config.warnings().is_empty(), "restricted: no warning");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    for allowed in [
        "10.200.0.1",
        "192.0.2.7",
        "::1",
        "fd12::5",
        "::ffff:10.0.0.9",
    ] {
        assert!(m.allows(ip(allowed)), "{allowed}");
    }
    for refused in ["11.0.0.1", "192.0.2.8", "127.0.0.1", "::2", "fe80::1"] {
        assert!(!m.allows(ip(refused)), "{refused}");
    }
    let anyone = MetricsConfig { allow: None, ..m };
    assert!(anyone.allows(ip("203.0.113.1")));

    let e = error_of(
        "[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
    );
    assert!(
        e.starts_with("cluster.toml:3:24: key `metrics.allow`: \"10.0.0.0/33\" is neither"),
        "{e}"
    );
    let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"localhost\"]\n");
    assert!(
        e.contains("key `metrics.allow`") && e.contains("\"10.0.0.0/8\""),
        "{e}"
    );
    let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = []\n");
    assert!(
        e.starts_with("cluster.toml:3:9: key `metrics.allow`: an empty list"),
        "{e}"
    );
    let e = error_of("[metrics]\nallow = [\"::1\"]\n");
    assert!(
        e.contains("key `metrics.allow`: means nothing without"),
        "{e}"
    );
    let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = \"::1\"\n");
    assert!(
        e.contains("cluster.toml:3:9") && e.contains("metrics.allow"),
        "{e}"
    );
}

#[test]
fn a_metrics_listener_reachable_beyond_this_host_without_allow_is_warned_about() {
    for (listen, warned) in [
        ("127.0.0.1:9100", false),
        ("[::1]:9100", false),
        ("0.0.0.0:9100", true),
        ("[::]:9100", true),
        ("192.0.2.1:9100", true),
    ] {
        let config = load_str(&format!("[metrics]\nlisten = \"{listen}\"\n")).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), warned as usize, "{listen}: {warnings:?}");
        if warned {
            assert!(
                warnings[0].contains("key `metrics.listen`")
                    && warnings[0].contains("`metrics.allow` is unset"),
                "{warnings:?}"
            );
        }
    }
}

#[test]
fn recycle_limits_are_parsed_and_bounded() {
    let c = load_str(
        "[recycle]\nmax_connections = 1000\nmax_memory = \"64MiB\"\nmax_age = \"1h\"\njitter = 0.2\n",
    )
    .unwrap()
    .recycle;
    assert_eq!(c.max_connections, Some(1000));
    assert_eq!(c.max_memory, Some(64 << 20));
    assert_eq!(c.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(c.jitter, 0.2);
    let weekly = load_str("[recycle]\nmax_age = \"7days\"\n")
        .unwrap()
        .recycle;
    assert_eq!(weekly.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
    let off = load_str("").unwrap().recycle;
    assert_eq!(
        (off.max_connections, off.max_memory, off.max_age),
        (None, None, None)
    );
    for (text, key) in [
        ("max_memory = \"lots\"", "recycle.max_memory"),
        ("max_memory = \"100KiB\"", "recycle.max_memory"),
        ("max_age = \"10ms\"", "recycle.max_age"),
        ("max_age = \"31days\"", "recycle.max_age"),
        ("jitter = 0.9", "recycle.jitter"),
        ("jitter = -0.1", "recycle.jitter"),
    ] {
        let e = error_of(&format!("[recycle]\n{text}\n"));
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains(&format!("key `{key}`")),
            "{text}: {e}"
        );
    }
    let e = error_of("sched_policy = \"none\"\n[recycle]\nmax_connections = 10\n");
    assert!(
        e.contains("recycle.max_connections") && e.contains("\"rr\""),
        "{e}"
    );
}

#[test]
fn invalid_toml_names_the_line() {
    let e = error_of("workers = \n");
    assert!(e.starts_with("cluster.toml:1:"), "{e}");
}

#[test]
fn empty_listen_is_refused() {
    let e = error_of("listen = []\n");
    assert!(e.starts_with("cluster.toml:1:10: key `listen`"), "{e}");
}

#[test]
fn policy_precedence_is_flag_then_envs_then_file() {
    use PolicySource::*;
    use SchedPolicy::{None as N, Rr};
    let p = effective_policy;
    assert_eq!(p(Some(N), Some("rr"), Some("rr"), Some(Rr)), Ok((N, Flag)));
    assert_eq!(p(None, Some("none"), Some("rr"), Some(Rr)), Ok((N, RrbEnv)));
    assert_eq!(p(None, None, Some("none"), Some(Rr)), Ok((N, NodeEnv)));
    assert_eq!(p(None, None, None, Some(N)), Ok((N, File)));
    assert_eq!(p(None, None, None, None), Ok((Rr, Default)));
    assert_eq!(p(None, Some(""), Some("bogus"), None), Ok((Rr, Default)));
    assert!(p(None, Some("bogus"), None, None).is_err());
}
