//! Each rule at its edge: the last value allowed and the first refused, and where an error
//! points (cargo-mutants found these edges unguarded).

use super::tests::{error_of, load_str};
use super::*;

#[test]
fn an_error_points_at_its_key_and_a_default_at_the_file_alone() {
    let text = "backlog = 0\n";
    let c = Checker {
        text,
        name: "cluster.toml",
        dir: None,
    };
    let at = |span: Range<usize>| match c.invalid(span, "k", "bad".into()) {
        ConfigError::Invalid { line, column, .. } => (line, column),
        other => panic!("{other:?}"),
    };
    assert_eq!(at(0..0), (0, 0), "a key that took its default has no line");
    assert_eq!(at(0..7), (1, 1), "a span at the very start is on line 1");
    assert_eq!(at(10..11), (1, 11));
    assert_eq!(
        at(12..12),
        (2, 1),
        "an empty span elsewhere still has its place"
    );
}

#[test]
fn a_unix_socket_path_of_107_bytes_fits_and_108_does_not() {
    let path = |n: usize| PathBuf::from(format!("/tmp/{}", "s".repeat(n - 5)));
    assert_eq!(path(107).as_os_str().len(), 107);
    assert_eq!(check_unix_path(&path(107)), Ok(()));
    let e = check_unix_path(&path(108)).unwrap_err();
    assert!(
        e.contains("is 108 bytes") && e.contains("at most 107"),
        "{e}"
    );
}

#[test]
fn the_backlog_is_a_positive_int() {
    let e = error_of("backlog = 0\n");
    assert!(e.starts_with("cluster.toml:1:11: key `backlog`"), "{e}");
    assert_eq!(load_str("backlog = 1\n").unwrap().backlog, 1);
    assert_eq!(
        load_str("backlog = 2147483647\n").unwrap().backlog,
        i32::MAX as u32
    );
    let e = error_of("backlog = 2147483648\n");
    assert!(e.contains("out of range (allowed: 1 to 2147483647)"), "{e}");
}

#[test]
fn a_relative_path_is_taken_from_the_files_directory_and_an_absolute_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[log]\nstdout = \"out.log\"\nstderr = \"/tmp/err.log\"\n";
    let file = parse(text, "cluster.toml").unwrap();
    let config = validate(
        file,
        text,
        "cluster.toml",
        Some(dir.path()),
        &Overrides::default(),
    )
    .unwrap();
    assert_eq!(config.log.stdout, Some(dir.path().join("out.log")));
    assert_eq!(config.log.stderr, Some(PathBuf::from("/tmp/err.log")));
}

#[test]
fn an_error_about_a_default_path_says_it_is_the_default() {
    // The default control socket is named after the file: a long file name makes it too long.
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join(format!("{}.toml", "c".repeat(110)));
    let name = name.to_str().unwrap();
    let file = parse("", name).unwrap();
    let e = validate(file, "", name, Some(dir.path()), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `control.socket`: its default, the Unix socket path"),
        "{e}"
    );
    // Written in the file, it is the key's value, at its line.
    let text = format!("[control]\nsocket = \"/tmp/{}\"\n", "s".repeat(110));
    let e = error_of(&text);
    assert!(
        e.starts_with("cluster.toml:2:10: key `control.socket`: the Unix socket path"),
        "{e}"
    );
}

#[test]
fn an_empty_program_is_refused_naming_its_own_section() {
    let e = error_of("[worker]\nexec = \"\"\n");
    assert!(
        e.starts_with("cluster.toml:2:8: key `worker.exec`: is empty")
            && e.contains("remove the key for the demo worker"),
        "{e}"
    );
    let e = error_of("[agent]\nexec = \"\"\n");
    assert!(e.contains("key `agent.exec`"), "{e}");
    assert!(!e.contains("demo worker"), "an agent has no default: {e}");
}

#[test]
fn max_memory_of_one_mebibyte_is_taken_and_a_byte_less_refused() {
    let config = load_str("[recycle]\nmax_memory = \"1MiB\"\n").unwrap();
    assert_eq!(config.recycle.max_memory, Some(1 << 20));
    let e = error_of("[recycle]\nmax_memory = \"1048575\"\n");
    assert!(
        e.contains("key `recycle.max_memory`") && e.contains("too small"),
        "{e}"
    );
}

#[test]
fn an_exec_fits_arg_max_to_the_byte() {
    let p = std::mem::size_of::<usize>();
    let args = vec!["ab".to_owned(), "c".to_owned()];
    let env: BTreeMap<String, String> = [("K".to_owned(), "vvv".to_owned())].into();
    // "ab\0" "c\0" and "K=vvv\0", each with its pointer, beside 1000 inherited bytes.
    let size = 1000 + (3 + p) + (2 + p) + (6 + p);
    assert_eq!(exec_size_problem("worker", &args, &env, 1000, size), Ok(()));
    let e = exec_size_problem("worker", &args, &env, 1000, size - 1).unwrap_err();
    assert!(
        e.contains(&format!("take {size} bytes")) && e.contains("(1000 bytes)"),
        "{e}"
    );
}

#[test]
fn one_string_may_be_one_byte_shorter_than_max_arg_strlen() {
    let big = usize::MAX / 2;
    let none = BTreeMap::new();
    let arg = |n: usize| vec!["a".repeat(n)];
    assert_eq!(
        exec_size_problem("worker", &arg(MAX_ARG_STRLEN - 1), &none, 0, big),
        Ok(())
    );
    let e = exec_size_problem("worker", &arg(MAX_ARG_STRLEN), &none, 0, big).unwrap_err();
    assert!(
        e.contains("longer than one argument may be (131072 bytes)"),
        "{e}"
    );
    // `K=value` and its NUL: the key and value may take MAX_ARG_STRLEN - 2 bytes.
    let env = |n: usize| BTreeMap::from([("K".to_owned(), "v".repeat(n - 1))]);
    assert_eq!(
        exec_size_problem("agent", &[], &env(MAX_ARG_STRLEN - 2), 0, big),
        Ok(())
    );
    let e = exec_size_problem("agent", &[], &env(MAX_ARG_STRLEN - 1), 0, big).unwrap_err();
    assert!(e.contains("key `agent.env`: \"K\" is 131072 bytes"), "{e}");
}

#[test]
fn default_control_paths_are_named_after_the_file_the_same_way_in_every_version() {
    // A master started by an older rrbalancer must be found by a newer `status --config`: the
    // name is the file's stem and FNV-1a of its full path, a fixed function.
    let base = default_runtime_dir();
    let (pid, socket) = default_control_paths(Some("/nonexistent/dir/cluster.toml"));
    assert_eq!(pid, base.join("cluster-3e544fbe.pid"));
    assert_eq!(socket, base.join("cluster-3e544fbe.sock"));
    let (_, other) = default_control_paths(Some("/nonexistent/other/cluster.toml"));
    assert_eq!(
        other,
        base.join("cluster-65ce9bbd.sock"),
        "another directory, another name"
    );
    assert_eq!(
        default_control_paths(None),
        (base.join("default.pid"), base.join("default.sock"))
    );
}

#[test]
fn an_executable_is_a_regular_file_with_an_execute_bit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    assert!(is_executable_file(&file("run", 0o755)));
    assert!(is_executable_file(&file("owner", 0o700)));
    assert!(!is_executable_file(&file("data", 0o644)));
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    assert!(
        !is_executable_file(&sub),
        "a directory is searched, not run"
    );
    // A relative program is taken from the base (the worker's cwd or the file's directory).
    assert_eq!(
        resolve_program("./run", Some(dir.path())),
        Ok(dir.path().join("./run"))
    );
    let e = resolve_program("./data", Some(dir.path())).unwrap_err();
    assert!(e.contains("is not an executable file"), "{e}");
    let e = resolve_program("./missing", Some(dir.path())).unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn a_duration_out_of_bounds_is_quoted_as_written() {
    let e = error_of("[shutdown]\ndrain = \"2 days\"\n");
    assert!(e.contains("\"2 days\" is too long (at most 1day)"), "{e}");
    let e = error_of("[restart]\nwindow = \"500 ms\"\n");
    assert!(e.contains("\"500 ms\" is too short"), "{e}");
}
