//! Tests of reading the keys: each parses, is bounded, and a bad one is named with its line.

use super::tests::{error_of, load_str};
use super::*;

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
fn batching_where_it_cannot_batch_is_warned_about() {
    let warned = |text: &str| load_str(text).unwrap().warnings();
    assert!(warned("[dispatch]\nbatch = true\n").is_empty());
    for (text, why) in [
        ("sched_policy = \"none\"\n", "`none` mode"),
        (
            "[worker]\nexec = \"sh\"\nprotocol = \"node\"\n",
            "Node workers",
        ),
        ("[worker]\nmax_unacked = 1\n", "max_unacked = 1"),
    ] {
        let warnings = warned(&format!("{text}[dispatch]\nbatch = true\n"));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("key `dispatch.batch`") && warnings[0].contains(why),
            "{warnings:?}"
        );
        assert!(warned(text).is_empty(), "batch off: nothing to say");
    }
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

#[test]
fn a_user_and_group_resolve_and_a_bad_one_is_named_with_its_line() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    if nix::unistd::geteuid().is_root() {
        let c = load_str("[worker]\nuser = \"nobody\"\n").unwrap();
        let id = c.worker.command.identity.expect("an identity");
        assert_eq!((id.uid, id.gid), (nobody.uid.as_raw(), nobody.gid.as_raw()));
        assert_eq!(id.user, "nobody");
        let c = load_str("[worker]\nuser = \"65534\"\ngroup = \"0\"\n").unwrap();
        let id = c.worker.command.identity.unwrap();
        assert_eq!((id.uid, id.gid), (65534, 0));
    } else {
        let e = error_of("[worker]\nuser = \"nobody\"\n");
        assert!(e.contains(":2:") && e.contains("needs root"), "{e}");
    }
    let e = error_of("[worker]\nexec = \"sh\"\nuser = \"no-such-user-here\"\n");
    assert!(
        e.contains("cluster.toml:3:") && e.contains("`worker.user`") && e.contains("no user"),
        "{e}"
    );
    let e = error_of("[agent]\nexec = \"sh\"\ngroup = \"no-such-group-here\"\n");
    assert!(e.contains("`agent.group`") && e.contains("no group"), "{e}");
    assert!(load_str("").unwrap().worker.command.identity.is_none());
}

#[test]
fn a_master_that_drops_to_a_user_starts_its_processes_as_that_user_and_keeps_its_files_there() {
    if !nix::unistd::geteuid().is_root() {
        let e = error_of("[master]\nuser = \"nobody\"\n");
        assert!(
            e.contains("`master.user`") && e.contains("needs root"),
            "{e}"
        );
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let uid = nobody.uid.as_raw();
    let c = load_str("[master]\nuser = \"nobody\"\n[agent]\nexec = \"sh\"\n").unwrap();
    let master = c.master_user.clone().expect("[master] user");
    assert_eq!(master.uid, uid);
    assert_eq!(c.worker.command.identity.as_ref(), Some(&master));
    assert_eq!(c.agent.unwrap().command.identity, Some(master));
    let dir = std::path::PathBuf::from(format!("/tmp/rrbalancer-{uid}"));
    assert_eq!(c.control.pid_file.parent(), Some(dir.as_path()));
    assert_eq!(c.control.socket.parent(), Some(dir.as_path()));
    // The same user again is no conflict; another is.
    assert!(load_str("[master]\nuser = \"nobody\"\n[worker]\nuser = \"nobody\"\n").is_ok());
    let e = error_of("[master]\nuser = \"nobody\"\n[worker]\nuser = \"root\"\n");
    assert!(
        e.contains("`worker.user`") && e.contains("`[master] user`"),
        "{e}"
    );
}

#[test]
fn only_root_may_start_a_process_as_someone_else() {
    use super::probe::privilege_problem;
    assert_eq!(privilege_problem(0, 0, 65534, 65534, ""), None);
    assert_eq!(
        privilege_problem(1000, 1000, 1000, 1000, ""),
        None,
        "its own ids"
    );
    for (uid, gid) in [(65534, 1000), (1000, 65534), (0, 0)] {
        let why = privilege_problem(1000, 1000, uid, gid, "it drops it").expect("refused");
        assert!(
            why.contains("needs root") && why.contains("uid 1000") && why.contains("(it drops it)"),
            "{why}"
        );
    }
}

#[test]
fn listen_takes_one_address_or_a_list_and_a_host_name_for_its_addresses() {
    let one = load_str("listen = \"127.0.0.1:4200\"\n").unwrap();
    assert_eq!(
        one.listen,
        [ListenAddr::Tcp("127.0.0.1:4200".parse().unwrap())]
    );
    let named = load_str("listen = [\"localhost:4201\", \"unix:/tmp/x.sock\"]\n").unwrap();
    let tcp: Vec<_> = named
        .listen
        .iter()
        .filter_map(|l| match l {
            ListenAddr::Tcp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        })
        .collect();
    assert!(!tcp.is_empty() && tcp.iter().all(|a| a.ip().is_loopback() && a.port() == 4201));
    assert_eq!(
        named.listen.last(),
        Some(&ListenAddr::Unix("/tmp/x.sock".into()))
    );
    for (text, said) in [
        ("listen = 5\n", "an address such as"),
        ("listen = [\"127.0.0.1:99999\"]\n", "HOST:PORT"),
        (
            "listen = [\"localhost:4202\", \"localhost:4202\"]\n",
            "appears twice",
        ),
    ] {
        let e = error_of(text);
        assert!(
            e.contains("cluster.toml:1:") && e.contains(said),
            "{text}: {e}"
        );
    }
}
