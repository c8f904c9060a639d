//! What another local user cannot do to a master: plant a link where it writes its pid, or own
//! the directory that holds its pid file and control socket. And least privilege: workers run
//! as the user `[worker] user` names, not as the master's root.

mod common;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, symlink};
use std::path::Path;

use common::run_to_exit;

const CONFIG: &str = "listen = [\"127.0.0.1:0\"]\nworkers = 1\n";

/// Starts a master in `dir` with the runtime directory under `runtime`; it must refuse to
/// start, and `check` must refuse the same (what `check` accepts starts). The master's exit
/// code and what it said.
fn refused(dir: &Path, runtime: &Path, config: &str) -> (i32, String) {
    fs::write(dir.join("cluster.toml"), config).unwrap();
    let runtime = runtime.to_str().unwrap();
    let env = [("XDG_RUNTIME_DIR", runtime)];
    let (checked, check_said) = run_to_exit(&["--config", "cluster.toml", "check"], dir, &env);
    let (code, said) = run_to_exit(&["--config", "cluster.toml", "run"], dir, &env);
    assert_eq!(checked, code, "check: {check_said}\nthe master: {said}");
    (code, said)
}

fn private_dir(path: &Path) {
    fs::DirBuilder::new().mode(0o700).create(path).unwrap();
}

#[test]
fn a_pid_file_planted_as_a_symlink_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, "precious\n").unwrap();
    private_dir(&dir.path().join("run"));
    symlink(&victim, dir.path().join("run/app.pid")).unwrap();
    let config =
        format!("{CONFIG}[control]\npid_file = \"run/app.pid\"\nsocket = \"run/app.sock\"\n");
    let (code, said) = refused(dir.path(), dir.path(), &config);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("refusing") && said.contains("app.pid") && said.contains("symbolic link"),
        "{said}"
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_runtime_directory_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("rrbalancer");
    private_dir(&runtime);
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, said) = refused(dir.path(), dir.path(), CONFIG);
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains(&format!("refusing {}", runtime.display())) && said.contains("0777"),
        "{said}"
    );
    assert_eq!(
        fs::read_dir(&runtime).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_runtime_directory_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    private_dir(&elsewhere);
    symlink(&elsewhere, dir.path().join("rrbalancer")).unwrap();
    let (code, said) = refused(dir.path(), dir.path(), CONFIG);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("symbolic link"), "{said}");
    assert_eq!(
        fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn a_runtime_directory_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give a directory to another uid");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("rrbalancer");
    private_dir(&runtime);
    let stranger = nix::unistd::Uid::from_raw(54_321);
    nix::unistd::chown(&runtime, Some(stranger), None).unwrap();
    let (code, said) = refused(dir.path(), dir.path(), CONFIG);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("belongs to uid 54321"), "{said}");
    assert_eq!(
        fs::read_dir(&runtime).unwrap().count(),
        0,
        "nothing written"
    );
}

/// The ids of a process, from /proc: (real uid, effective uid, real gid, effective gid,
/// supplementary groups).
fn ids_of(pid: i32) -> (u32, u32, u32, u32, Vec<u32>) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (uid, gid) = (field("Uid:"), field("Gid:"));
    (uid[0], uid[1], gid[0], gid[1], field("Groups:"))
}

/// The ids of the user `nobody`, when this test may start processes as another user (root);
/// else `None`, said as a skip (a failure in CI).
fn nobody() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        common::skip("needs root to start workers as another user");
        return None;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    Some((nobody.uid.as_raw(), nobody.gid.as_raw()))
}

/// Issue 26: `[worker] user` runs every worker as that user and its primary group; the
/// channel (rr) and the inherited listener (none) still serve.
#[test]
fn workers_run_as_the_configured_user_and_serve() {
    let Some((uid, gid)) = nobody() else { return };
    for policy in ["rr", "none"] {
        let config =
            format!("workers = 2\nsched_policy = \"{policy}\"\n[worker]\nuser = \"nobody\"\n");
        let rrb = common::Rrb::start(&config, 2);
        let workers = rrb.workers();
        assert_eq!(workers.len(), 2, "{policy}");
        for &w in &workers {
            let (ruid, euid, rgid, egid, _) = ids_of(w);
            assert_eq!(
                (ruid, euid, rgid, egid),
                (uid, uid, gid, gid),
                "{policy}: worker {w}"
            );
            // Its environment as `su` makes it: nobody's home and name, not root's runtime
            // directory.
            let environ = fs::read(format!("/proc/{w}/environ")).unwrap();
            let vars: Vec<String> = environ
                .split(|&b| b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            let home = nix::unistd::User::from_uid(uid.into())
                .unwrap()
                .unwrap()
                .dir;
            assert!(
                vars.contains(&format!("HOME={}", home.display())),
                "{vars:?}"
            );
            assert!(vars.contains(&"USER=nobody".to_string()), "{vars:?}");
            assert!(
                !vars.iter().any(|v| v.starts_with("XDG_RUNTIME_DIR=")),
                "{vars:?}"
            );
        }
        for _ in 0..6 {
            let body = rrb.get().unwrap_or_else(|e| panic!("{policy}: {e}"));
            assert!(body.contains("handled by worker"), "{body}");
        }
        assert_eq!(ids_of(rrb.pid()).1, 0, "the master itself stays root");
    }
}

/// A worker started as another user has no supplementary group of the master's, and still
/// dies with the master: a change of user clears the death signal, so it must be set after.
/// (The worker is `sleep`, which would outlive a master whose channel closed.)
#[test]
fn a_worker_of_another_user_keeps_none_of_the_masters_groups_and_dies_with_it() {
    let Some((uid, gid)) = nobody() else { return };
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("cluster.toml"),
        format!(
            "{CONFIG}workers = 2\nsched_policy = \"none\"\n[worker]\nexec = \"sleep\"\n\
             args = [\"600\"]\nuser = \"nobody\"\nready = \"delay\"\nready_delay = \"10ms\"\n"
        )
        .replace("workers = 1\n", ""),
    )
    .unwrap();
    // The master with supplementary groups of its own (adm, sudo: 4 and 27).
    let mut command = std::process::Command::new("setpriv");
    command
        .args([
            "--groups",
            "4,27",
            "--reuid=0",
            "--regid=0",
            "--",
            common::BIN,
        ])
        .args(["--config", "cluster.toml"]);
    let mut master = common::spawn_in(&mut command, dir.path());
    let pid = master.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut workers = Vec::new();
    while workers.len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        workers = common::children_of(pid);
    }
    let seen: Vec<_> = workers.iter().map(|&w| ids_of(w)).collect();
    assert_eq!(ids_of(pid).4, vec![4, 27], "the master's own groups");
    // SAFETY: signalling the master this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = master.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while workers.iter().any(|&w| common::alive(w)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let survivors: Vec<i32> = workers
        .iter()
        .copied()
        .filter(|&w| common::alive(w))
        .collect();
    for &w in &survivors {
        // SAFETY: a worker of the master this test started, in its own process group.
        unsafe { libc::killpg(w, libc::SIGKILL) };
    }
    assert_eq!(workers.len(), 2, "both workers started");
    for ids in seen {
        assert_eq!(ids, (uid, uid, gid, gid, vec![]));
    }
    assert!(
        survivors.is_empty(),
        "workers {survivors:?} outlived their killed master"
    );
}

/// SIGKILLs a process group when dropped: the master an upgrade started, which the test's own
/// group kill does not reach.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: a master this test started (through an upgrade), and its group.
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
    }
}

/// A free port below 1024 on 127.0.0.1 (only root may bind one).
fn privileged_port() -> u16 {
    (600..1000)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 1024")
}

/// Issue 26 (3.): `[master] user`: the master binds a port below 1024 as root, then becomes
/// nobody for good (real, effective and saved ids; no group of root's), before any worker
/// starts; as nobody it serves, reloads (a new port above 1023 too; one below is refused,
/// saying why), upgrades and stops.
#[test]
fn the_master_drops_to_a_user_once_it_has_bound_a_privileged_port() {
    let Some((uid, gid)) = nobody() else { return };
    let port = privileged_port();
    let rrb = common::Rrb::start(
        &format!("listen = [\"127.0.0.1:{port}\"]\nworkers = 2\n[master]\nuser = \"nobody\"\n"),
        2,
    );
    // The user reads the file again on reload.
    let dir = rrb.config_path().parent().unwrap().to_owned();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let (ruid, euid, rgid, egid, groups) = ids_of(rrb.pid());
    assert_eq!((ruid, euid, rgid, egid), (uid, uid, gid, gid), "the master");
    assert!(groups.is_empty(), "no supplementary group: {groups:?}");
    let saved = fs::read_to_string(format!("/proc/{}/status", rrb.pid())).unwrap();
    assert!(
        saved.contains(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")),
        "no saved root: {saved}"
    );
    for w in rrb.workers() {
        assert_eq!(ids_of(w).1, uid, "worker {w}");
    }
    let said = rrb.wait_for_log("dropped to nobody", std::time::Duration::from_secs(5));
    assert!(said.contains(&format!("uid {uid}")), "{said}");
    assert!(rrb.get().unwrap().contains("handled by worker"));
    // Control files in the user's directory, made by root for it.
    let (code, out, err) = rrb.ctl(&["status"]);
    assert_eq!(code, 0, "{out}{err}");
    // Reload: the workers are replaced, as nobody.
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    // A new port below 1024 needs root: refused, the fleet kept, and it says why.
    let other = privileged_port();
    let text = fs::read_to_string(rrb.config_path()).unwrap();
    let two = text.replace(
        &format!("\"127.0.0.1:{port}\""),
        &format!("\"127.0.0.1:{port}\", \"127.0.0.1:{other}\""),
    );
    fs::write(rrb.config_path(), &two).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{other}"))
            && err.contains("dropped root")
            && err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
    fs::write(rrb.config_path(), &text).unwrap();
    assert!(
        rrb.get().unwrap().contains("handled by worker"),
        "serves on"
    );
    // Upgrade: the new master, started by nobody, is nobody; it serves on the same socket.
    let (code, out, err) = rrb.ctl(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}");
    let new = common::upgraded_pid(&out);
    let _new = KillGroup(new);
    assert_eq!(ids_of(new).1, uid, "the new master");
    assert!(rrb.get().unwrap().contains("handled by worker"));
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!common::alive(new) || common::stat_of(new).is_some_and(|(_, s)| s == 'Z'));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped"
    );
}

/// `[master] user` with `start --daemon`: the log root opened before detaching is the user's,
/// so the new master of an upgrade appends to it and `SIGUSR1` opens it again after a rotation.
#[test]
fn a_daemon_that_drops_root_upgrades_and_reopens_its_log() {
    let Some((uid, _)) = nobody() else { return };
    let port = privileged_port();
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let run = dir.path().join("run");
    private_dir(&run);
    let config =
        format!("listen = [\"127.0.0.1:{port}\"]\nworkers = 1\n[master]\nuser = \"nobody\"\n");
    fs::write(dir.path().join("d.toml"), config).unwrap();
    let env = [("XDG_RUNTIME_DIR", run.to_str().unwrap())];
    let ctl = |args: &[&str]| {
        let all: Vec<&str> = ["--config", "d.toml"].iter().chain(args).copied().collect();
        run_to_exit(&all, dir.path(), &env)
    };
    let (code, said) = ctl(&["start", "--daemon"]);
    assert_eq!(code, 0, "{said}");
    let log: std::path::PathBuf = said
        .split("log: ")
        .nth(1)
        .map(|p| p.trim().into())
        .unwrap_or_else(|| panic!("{said}"));
    let pid_of_master = || -> i32 {
        let pid_file = log.with_extension("pid");
        fs::read_to_string(pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let _first = KillGroup(pid_of_master());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&log).unwrap().uid(),
        uid,
        "the log is the user's"
    );
    let (code, said) = ctl(&["upgrade"]);
    assert_eq!(code, 0, "{said}");
    let new = pid_of_master();
    let _new = KillGroup(new);
    assert_eq!(ids_of(new).1, uid);
    // Rotated, then reopened by the new master, as the user.
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).unwrap();
    // SAFETY: the master this test started (through an upgrade).
    unsafe { libc::kill(new, libc::SIGUSR1) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !fs::read_to_string(&log).is_ok_and(|t| t.contains("reopened")) {
        assert!(std::time::Instant::now() < deadline, "not reopened");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, said) = ctl(&["stop"]);
    assert_eq!(code, 0, "{said}");
}
