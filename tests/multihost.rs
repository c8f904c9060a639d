//! A fleet of hosts behind HAProxy (issue 28, part 4): `scripts/multihost.sh` builds three
//! hosts as network namespaces on a bridge, runs this build's rrbalancer in each and the
//! shipped `contrib/haproxy/haproxy.cfg` in front, and drives `wrk` through it while host 1 is
//! stopped and started again, host 2 upgraded twice and host 3 reloaded. Not one client may
//! fail, every host must have served, and nothing the script made may outlive it. With
//! `[shutdown] drain` longer than HAProxy takes to see a host leave (`inter 250 fall 2`), HAProxy
//! never even finds a closed door: it retries no connection.
//!
//! Needs root, `ip`, haproxy and wrk: where they cannot be had the script exits 2 saying what it
//! needs, and the test skips with that line (a failure in CI, whose `.ci/run` installs them).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The script's process group, ended (TERM: its trap removes the namespaces, then KILL) if the
/// test stops early.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let group = self.0.id() as i32;
            // SAFETY: the group of the script this test started (process_group(0)).
            unsafe { libc::killpg(group, libc::SIGTERM) };
            std::thread::sleep(Duration::from_secs(2));
            // SAFETY: as above.
            unsafe { libc::killpg(group, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

/// The `key=value` fields of the script's `RESULT` line.
fn result_fields(out: &str) -> BTreeMap<String, String> {
    let line = out
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{out}"));
    line.split([' ', ','])
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    (common::command_lines().into_iter())
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .map(|(pid, cmdline)| format!("{pid}: {cmdline}"))
        .collect()
}

#[test]
fn a_rolling_stop_upgrade_and_reload_across_three_hosts_behind_haproxy_fails_no_client() {
    let work = tempfile::tempdir().unwrap();
    let mut command = Command::new(common::repo().join("scripts/multihost.sh"));
    command
        .args([
            "--hosts",
            "3",
            "--seconds",
            "12",
            "--runs",
            "1",
            "--drain",
            "2s",
        ])
        .args(["--clients", "16", "--bin", common::BIN])
        .env("TMPDIR", work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut script = Script(command.spawn().unwrap());
    let (mut out, mut err) = (String::new(), String::new());
    let (mut stdout, mut stderr) = (
        script.0.stdout.take().unwrap(),
        script.0.stderr.take().unwrap(),
    );
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        stderr.read_to_string(&mut err).unwrap();
        err
    });
    stdout.read_to_string(&mut out).unwrap();
    err.push_str(&reader.join().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = script.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after 120 s:\n{out}{err}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.code() == Some(2) && err.contains("needs ") {
        common::skip(err.lines().find(|l| l.contains("needs ")).unwrap());
        return;
    }
    let fields = result_fields(&out);
    let field = |k: &str| -> u64 {
        fields
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in the RESULT line:\n{out}"))
    };
    assert_eq!(
        field("errors"),
        0,
        "socket errors through HAProxy:\n{out}{err}"
    );
    assert_eq!(field("non2xx"), 0, "non-2xx answers:\n{out}{err}");
    assert_eq!(field("ops_failed"), 0, "a rolling step failed:\n{out}{err}");
    assert!(field("requests") > 1000, "the load really ran:\n{out}{err}");
    assert_eq!(
        field("retried"),
        0,
        "HAProxy found a host's door closed and retried:\n{out}{err}"
    );
    for host in ["host1", "host2", "host3"] {
        assert!(field(host) > 100, "{host} served little or nothing:\n{out}");
    }
    assert!(status.success(), "exit {status:?}:\n{out}{err}");

    // Nothing outlives the script: no process of the fleet, no namespace, no bridge.
    let net = out
        .split("(10.213.")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .unwrap_or_else(|| panic!("no fleet line:\n{out}"));
    let work_path = work.path().to_string_lossy().into_owned();
    assert_eq!(processes_mentioning(&work_path), Vec::<String>::new());
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&namespaces.stdout).into_owned();
    assert!(
        !namespaces.contains(&format!("rrb{net}h")),
        "namespaces left: {namespaces}"
    );
    let bridge = Command::new("ip")
        .args(["link", "show", &format!("rrb{net}br")])
        .output()
        .unwrap();
    assert!(!bridge.status.success(), "bridge rrb{net}br left");
}
