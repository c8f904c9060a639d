//! What a user sees when the command line or the config is wrong: one line naming the problem,
//! exit code 2 (1 for a failure at run time), and a complete --help.

mod common;

use std::path::Path;

use common::{Rrb, run_to_exit};

fn with_config(dir: &Path, text: &str) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The error line rrbalancer printed (env_logger's ERROR line).
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("ERROR") || l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
}

#[test]
fn a_missing_config_file_exits_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_to_exit(&["--config", "nope.toml"], dir.path(), &[]);
    assert_eq!(code, 2);
    let line = error_line(&err);
    assert!(
        line.contains("nope.toml") && line.contains("No such file"),
        "{line}"
    );
}

#[test]
fn config_errors_exit_2_with_file_line_key_and_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("workers = [\n", "cluster.toml:", "invalid TOML"),
        ("workers = 2\nwrokers = 3\n", "cluster.toml:2:1", "wrokers"),
        (
            "workers = 2\nbacklog = \"lots\"\n",
            "cluster.toml:2:11",
            "`backlog`",
        ),
        // The allowed values as they are written in the file: quoted.
        (
            "sched_policy = \"fair\"\n",
            "cluster.toml:1:16",
            "not one of \"rr\", \"none\"",
        ),
        // Issue 26: no Rust type names; the key meant.
        (
            "worker = 2\n",
            "cluster.toml:1:10",
            "did you mean `workers`?",
        ),
        (
            "wrokers = 3\n",
            "cluster.toml:1:1",
            "did you mean `workers`?",
        ),
        (
            "[restart]\nmax_restarts = -1\n",
            "cluster.toml:2:16",
            "a whole number, 0 or more",
        ),
        (
            "[shutdown]\nkill_timeout = 5\n",
            "cluster.toml:2:16",
            "\"500ms\"",
        ),
        (
            "[worker]\nexec = \"/no/such/program\"\n",
            "cluster.toml:2:8",
            "does not exist",
        ),
        (
            "[worker]\nexec = \"no-such-program-xyz\"\n",
            "key `worker.exec`",
            "not found on PATH",
        ),
    ];
    for (text, location, detail) in cases {
        let path = with_config(dir.path(), text);
        let (code, err) = run_to_exit(&["--config", &path], dir.path(), &[]);
        assert_eq!(code, 2, "{text:?}: {err}");
        let line = error_line(&err);
        for rust in ["struct File", "expected u", "a sequence", "wanted string"] {
            assert!(!line.contains(rust), "{text:?}: Rust's words: {line}");
        }
        assert!(
            line.contains(location),
            "{text:?}: {location:?} not in {line}"
        );
        assert!(line.contains(detail), "{text:?}: {detail:?} not in {line}");
    }
}

/// A directory under `dir` that another user owns (uid 65534, "nobody"); `None` when we may
/// not give one away (not root: CI runs as root).
fn foreign_dir(dir: &Path) -> Option<String> {
    let theirs = dir.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))
        .ok()
        .map(|()| theirs.display().to_string())
}

#[test]
fn paths_the_master_cannot_create_or_should_not_trust_exit_2_from_check_and_the_master() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let open = open.display().to_string();
    let mut cases = vec![
        (
            "listen = [\"unix:/dev/null/dir/x.sock\"]\n".to_owned(),
            "cluster.toml:1:10: key `listen`",
            "/dev/null is not a directory",
        ),
        (
            format!("workers = 1\n[control]\npid_file = \"{open}/x.pid\"\n"),
            "cluster.toml:3:12: key `control.pid_file`",
            "anyone may write in it (mode 0777)",
        ),
    ];
    match foreign_dir(dir.path()) {
        Some(theirs) => cases.push((
            format!("[control]\nsocket = \"{theirs}/x.sock\"\n"),
            "cluster.toml:2:10: key `control.socket`",
            "belongs to uid 65534",
        )),
        None => common::skip("a control directory another user owns needs root to make"),
    }
    for (text, location, detail) in cases {
        let path = with_config(dir.path(), &text);
        for command in ["check", "run"] {
            let (code, err) = run_to_exit(&["--config", &path, command], dir.path(), &[]);
            assert_eq!(code, 2, "{command}: {text:?}: {err}");
            let line = error_line(&err);
            assert!(
                line.contains(location),
                "{command}: {location:?} not in {line}"
            );
            assert!(line.contains(detail), "{command}: {detail:?} not in {line}");
        }
    }
    // The default control paths under an XDG_RUNTIME_DIR anyone may write in.
    for command in ["check", "run"] {
        let (code, err) = run_to_exit(&[command], dir.path(), &[("XDG_RUNTIME_DIR", &open)]);
        assert_eq!(code, 2, "{command}: {err}");
        let line = error_line(&err);
        assert!(
            line.contains("key `control.pid_file`")
                && line.contains(&format!("refusing {open}"))
                && line.contains("it is XDG_RUNTIME_DIR, and anyone may write in it"),
            "{command}: {line}"
        );
    }
}

#[test]
fn bad_policy_values_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_to_exit(&["--sched-policy", "fair"], dir.path(), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("possible values: rr, none"), "{err}");
    let (code, err) = run_to_exit(&["check"], dir.path(), &[("RRB_SCHED_POLICY", "fair")]);
    assert_eq!(code, 2);
    assert!(error_line(&err).contains("RRB_SCHED_POLICY"), "{err}");
}

#[test]
fn a_port_in_use_exits_1_naming_the_address() {
    let rrb = Rrb::start("workers = 1\n", 1);
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = run_to_exit(&["--listen", &rrb.addr, "--workers", "1"], dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains(&rrb.addr) && line.contains("in use"),
        "{line}"
    );
}

#[test]
fn help_documents_every_flag_and_version_works() {
    let dir = tempfile::tempdir().unwrap();
    let (code, help) = run_to_exit(&["--help"], dir.path(), &[]);
    assert_eq!(code, 0);
    for needle in [
        "--config",
        "--sched-policy",
        "--workers",
        "--listen",
        "--version",
        "demo-worker",
        "RRB_SCHED_POLICY",
        "NODE_CLUSTER_SCHED_POLICY",
        "Signals",
        "Exit codes",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let (code, version) = run_to_exit(&["--version"], dir.path(), &[]);
    assert_eq!(code, 0);
    assert!(version.starts_with(&format!("rrbalancer {}", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn check_validates_the_shipped_config_files() {
    // Third-party servers (gunicorn, uvicorn: config/servers/, config/apps.toml) are checked
    // with a stand-in executable of each name first on PATH, so that everything but their
    // installation is.
    let bin = tempfile::tempdir().unwrap();
    for program in ["gunicorn", "uvicorn"] {
        let stand_in = bin.path().join(program);
        std::fs::write(&stand_in, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut checked = 0;
    for dir in ["config", "config/servers"] {
        for entry in std::fs::read_dir(common::repo().join(dir)).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let (code, out) = run_to_exit(
                &["--config", &file.display().to_string(), "check"],
                &common::repo(),
                &[("PATH", &path)],
            );
            assert_eq!(code, 0, "{}: {out}", file.display());
            checked += 1;
        }
    }
    // Every shipped file: config/ (apps, cluster, …) and config/servers/ (2).
    assert!(checked >= 10, "{checked} files checked");
}

#[test]
fn the_shipped_systemd_units_agree_with_the_master() {
    let dir = common::repo().join("contrib/systemd");
    let service = std::fs::read_to_string(dir.join("rrbalancer.service")).unwrap();
    let socket = std::fs::read_to_string(dir.join("rrbalancer.socket")).unwrap();
    let value = |unit: &str, key: &str| -> String {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_owned()
    };
    // Ready when the master says so; the master alone gets SIGTERM and stops its workers.
    assert_eq!(value(&service, "Type"), "notify");
    assert_eq!(value(&service, "KillMode"), "mixed");
    assert_eq!(value(&service, "KillSignal"), "SIGTERM");
    assert!(value(&service, "ExecReload").ends_with(" reload"));
    assert!(value(&service, "ExecStart").ends_with(" run"));
    // systemd's SIGKILL for the cgroup only after the master's own kill_timeout.
    let (_, checked) = run_to_exit(
        &["--config", "config/cluster.toml", "check"],
        &common::repo(),
        &[],
    );
    let config: toml::Table = toml::from_str(&checked).unwrap();
    let kill = config["shutdown"]["kill_timeout"].as_str().unwrap();
    let kill_secs: u64 = kill.trim_end_matches('s').parse().unwrap();
    let stop_secs: u64 = value(&service, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop_secs >= kill_secs + 5,
        "TimeoutStopSec {stop_secs} vs kill_timeout {kill}"
    );
    // The socket unit passes what the config listens on, to the service as a whole.
    let listen = config["listen"].as_array().unwrap();
    assert_eq!(listen.len(), 1);
    assert_eq!(value(&socket, "ListenStream"), listen[0].as_str().unwrap());
    assert_eq!(value(&socket, "Accept"), "no");
}

/// The JSON array of a Dockerfile instruction in exec form (`CMD ["a", "b"]`; for
/// `HEALTHCHECK [OPTIONS] CMD [...]`, its command).
fn dockerfile_exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    // Continuation lines joined, so that `HEALTHCHECK … \ CMD [...]` is one instruction.
    let joined = dockerfile.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let array = &line[line.find('[').expect("exec form")..];
    serde_json::from_str(array).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn the_dockerfile_and_kubernetes_manifests_agree_with_the_shipped_config() {
    use yaml_rust2::{Yaml, YamlLoader};
    let repo = common::repo();
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    // The image's config directory is the repository's config/.
    assert!(dockerfile.contains("\nCOPY config /etc/rrbalancer\n"));
    let local = |arg: &str| {
        arg.replace(
            "/etc/rrbalancer",
            &repo.join("config").display().to_string(),
        )
    };
    let entrypoint = dockerfile_exec_form(&dockerfile, "ENTRYPOINT");
    assert_eq!(entrypoint, ["rrbalancer"]);
    let cmd = dockerfile_exec_form(&dockerfile, "CMD");
    let health = dockerfile_exec_form(&dockerfile, "HEALTHCHECK");
    let config_arg = cmd[cmd.iter().position(|a| a == "--config").unwrap() + 1].clone();
    assert_eq!(
        health,
        ["rrbalancer", "--config", &config_arg, "status", "--ready"]
    );
    let uid = dockerfile
        .split("--uid ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|u| u.parse::<i64>().ok())
        .expect("useradd --uid");

    // What the image runs is a valid configuration: check it as the container would.
    let checked = |args: &[String]| -> toml::Table {
        let args: Vec<String> = args.iter().map(|a| local(a)).collect();
        let mut check: Vec<&str> = args.iter().map(String::as_str).collect();
        check.push("check");
        let (code, checked) = run_to_exit(&check, &repo, &[]);
        assert_eq!(code, 0, "{checked}");
        toml::from_str(&checked).unwrap()
    };
    checked(&cmd);
    let secs = |config: &toml::Table, key: &str| -> i64 {
        let value = config["shutdown"][key].as_str().unwrap();
        value.trim_end_matches('s').parse().unwrap()
    };
    let port_of = |address: &str| -> i64 { address.rsplit(':').next().unwrap().parse().unwrap() };

    let load = |name: &str| -> Yaml {
        let text = std::fs::read_to_string(repo.join("contrib/kubernetes").join(name)).unwrap();
        let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(docs.len(), 1, "{name}: one document");
        docs.remove(0)
    };
    let strings = |y: &Yaml| -> Vec<String> {
        y.as_vec()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let deployment = load("deployment.yaml");
    let service = load("service.yaml");
    assert_eq!(deployment["kind"].as_str(), Some("Deployment"));
    assert_eq!(service["kind"].as_str(), Some("Service"));
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    let containers = pod["spec"]["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    // rrbalancer is PID 1: the container runs the image's entrypoint, with its own config file
    // from the image (config/kubernetes.toml), a valid one.
    assert!(
        c["command"].is_badvalue(),
        "no command: the image's ENTRYPOINT"
    );
    let args = strings(&c["args"]);
    assert_eq!(args, ["--config", "/etc/rrbalancer/kubernetes.toml"]);
    let config = checked(&args);
    // The port it listens on is the one declared, and the one the Service targets.
    let listen = config["listen"].as_array().unwrap()[0].as_str().unwrap();
    let ports = c["ports"].as_vec().unwrap();
    let declared = |name: &str| {
        let port = ports.iter().find(|p| p["name"].as_str() == Some(name));
        port.and_then(|p| p["containerPort"].as_i64())
    };
    assert_eq!(declared("http"), Some(port_of(listen)));
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        target.as_str() == Some("http") || target.as_i64() == Some(port_of(listen)),
        "the Service targets the container's port"
    );
    // Readiness is /readyz on the metrics listener (503 while draining or stopping); liveness,
    // that the master answers on its control socket.
    let metrics = config["metrics"]["listen"].as_str().unwrap();
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(ready["path"].as_str(), Some("/readyz"));
    let probed = ready["port"]
        .as_str()
        .map_or(ready["port"].as_i64(), declared);
    assert_eq!(probed, Some(port_of(metrics)));
    assert_eq!(
        strings(&c["livenessProbe"]["exec"]["command"]),
        [
            "rrbalancer",
            "--config",
            "/etc/rrbalancer/kubernetes.toml",
            "status"
        ]
    );
    // The master drains itself (no preStop sleep), and the grace period covers the drain and
    // the master's own kill_timeout.
    assert!(c["lifecycle"]["preStop"].is_badvalue(), "no preStop");
    let (drain, kill) = (secs(&config, "drain"), secs(&config, "kill_timeout"));
    assert!(drain > 0, "a drain before the stop");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        grace >= drain + kill + 5,
        "terminationGracePeriodSeconds {grace} vs drain {drain} s + kill_timeout {kill} s"
    );
    // The image's user; a read-only root needs /tmp (pid file, control socket) writable.
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].as_i64(),
        Some(uid)
    );
    if c["securityContext"]["readOnlyRootFilesystem"].as_bool() == Some(true) {
        let mounts = c["volumeMounts"].as_vec().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"].as_str() == Some("/tmp"))
        );
    }
}

/// README: without `XDG_RUNTIME_DIR` (unset, or empty) the pid file and control socket go to
/// `/tmp/rrbalancer-<uid>/`, never to a directory relative to wherever the master started.
#[test]
fn without_xdg_runtime_dir_the_control_paths_fall_back_to_tmp_rrbalancer_uid() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_config(dir.path(), "workers = 1\n");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let expected = format!("\"/tmp/rrbalancer-{uid}/");
    for xdg in [None, Some("")] {
        let mut command = std::process::Command::new(common::BIN);
        command
            .args(["--config", &config, "check"])
            .current_dir(dir.path());
        match xdg {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(value) => command.env("XDG_RUNTIME_DIR", value),
        };
        let out = command.output().unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        for key in ["socket = ", "pid_file = "] {
            let line = printed
                .lines()
                .find(|l| l.starts_with(key))
                .unwrap_or_else(|| panic!("no {key} in {printed}"));
            assert!(line.contains(&expected), "XDG_RUNTIME_DIR {xdg:?}: {line}");
        }
    }
}

/// Issue 26: `demo-worker --help` shows the demo worker's own options, none of the master's
/// (global to the master's commands); the demo worker still starts from the master.
#[test]
fn demo_worker_help_lists_its_own_options_only() {
    let out = std::process::Command::new(common::BIN)
        .args(["demo-worker", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: rrbalancer demo-worker"), "{help}");
    assert!(
        help.contains("--max-requests") && help.contains("--drain-grace"),
        "{help}"
    );
    for master in [
        "--config",
        "--workers",
        "--listen",
        "--sched-policy",
        "--control",
        "PROGRAM",
    ] {
        assert!(!help.contains(master), "{master} in {help}");
    }
}

/// `--protocol` without a program after `--` is refused, not silently ignored.
#[test]
fn protocol_without_a_program_is_a_usage_error() {
    let out = std::process::Command::new(common::BIN)
        .args(["--protocol", "node", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--protocol is for the program named after `--`"),
        "{err}"
    );
}

/// `--listen` takes a host name as `listen` does: every address it resolves to.
#[test]
fn listen_on_the_command_line_takes_a_host_name() {
    let out = std::process::Command::new(common::BIN)
        .args(["--listen", "localhost:4312", "check"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("127.0.0.1:4312"), "{said}");
    let out = std::process::Command::new(common::BIN)
        .args(["--listen", "bogus", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen: invalid listen address"));
}
