//! `[env]` and `[env.<name>]` (issue 29, part 2): `--env production` gives every worker the
//! file's `[env]` with the production block over it, `check` says which environment it
//! applied, and a reload keeps it (the master re-reads the file with the flags it started
//! with).

mod common;

use std::time::{Duration, Instant};

use common::{Rrb, Start};

const ENVS: &str = "\
[env]
PORT = \"3000\"
NODE_ENV = \"development\"
[env.production]
NODE_ENV = \"production\"
API_URL = \"https://api.example.com\"
[env.staging]
NODE_ENV = \"staging\"
";

/// The lines in `path`, waiting up to 10 s for at least `n`.
fn lines_at_least(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn env_production_reaches_every_worker_and_a_reload_keeps_it() {
    let out = tempfile::tempdir().unwrap();
    let seen = out.path().join("env.log");
    let config = format!(
        "workers = 2\nsched_policy = \"none\"\n[worker]\nexec = \"sh\"\n\
         args = [\"-c\", \"echo \\\"$RRB_WORKER_ID $NODE_ENV $PORT $API_URL\\\" >> {}; exec sleep 60\"]\n\
         ready = \"delay\"\nready_delay = \"10ms\"\n{ENVS}",
        seen.display()
    );
    let rrb = Rrb::start_with(Start {
        config: &config,
        args: &["--env", "production"],
        ready: 2,
        ..Start::default()
    });
    let mut first = lines_at_least(&seen, 2);
    first.sort();
    assert_eq!(
        first,
        [
            "0 production 3000 https://api.example.com",
            "1 production 3000 https://api.example.com"
        ]
    );
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    let all = lines_at_least(&seen, 4);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all.iter().all(|l| l.contains(" production 3000 ")),
        "the reloaded workers lost the environment: {all:?}"
    );
}

#[test]
fn check_says_which_environment_it_applied_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    std::fs::write(&file, format!("workers = 1\n{ENVS}")).unwrap();
    let check = |env: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&file)
            .args(env)
            .arg("check")
            .env("XDG_RUNTIME_DIR", dir.path())
            .output()
            .unwrap();
        common::outcome(out)
    };
    let (code, out, err) = check(&["--env", "staging"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# environment \"staging\" (--env)")
            && out.contains("NODE_ENV = \"staging\"")
            && out.contains("PORT = \"3000\""),
        "{out}"
    );
    let (code, out, _) = check(&[]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("# no environment selected (--env NAME): the file's environments: \"production\", \"staging\"")
            && out.contains("NODE_ENV = \"development\""),
        "{out}"
    );
    let (code, _, err) = check(&["--env", "prod"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--env \"prod\":")
            && err.contains("app.toml has no [env.prod] (its environments: production, staging)"),
        "{err}"
    );
}

/// `restart` starts the next master in the environment the running one has, unless another is
/// named (a restart that silently dropped `--env production` would start development). `status`
/// shows it.
#[test]
fn restart_keeps_the_running_masters_environment() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("env.log");
    let file = dir.path().join("app.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"127.0.0.1:0\"]\nworkers = 1\nsched_policy = \"none\"\n[worker]\n\
             exec = \"sh\"\nargs = [\"-c\", \"echo $NODE_ENV >> {}; exec sleep 60\"]\n\
             ready = \"delay\"\nready_delay = \"10ms\"\n{ENVS}",
            seen.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN)
            .arg("--config")
            .arg(&file)
            .args(args)
            .env("XDG_RUNTIME_DIR", dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        common::outcome(out)
    };
    /// Kills what the test started in the background, whatever happens.
    struct Masters<'a>(&'a std::path::Path);
    impl Drop for Masters<'_> {
        fn drop(&mut self) {
            common::kill_upgraded_masters(self.0);
        }
    }
    let _masters = Masters(dir.path());
    let (code, out, err) = run(&["--env", "production", "start", "--daemon"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(lines_at_least(&seen, 1), ["production"]);
    let (code, out, err) = run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("environment \"production\""), "{out}");

    let (code, out, err) = run(&["restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("keeping the running master's environment: --env \"production\""),
        "{err}"
    );
    assert!(!err.contains("is ignored"), "{err}");
    assert_eq!(lines_at_least(&seen, 2), ["production", "production"]);

    // Named, another one.
    let (code, out, err) = run(&["--env", "staging", "restart"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(lines_at_least(&seen, 3)[2], "staging");
    let (code, out, err) = run(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
}
