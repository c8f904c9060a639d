//! What another local user cannot do to a master: plant a link where it writes its pid, or own
//! the directory that holds its pid file and control socket.

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
