//! Several apps in one master (`[[app]]`): each app operated alone — reloaded, scaled, stopped
//! and started — without touching the others' workers; the file read again adds and removes
//! apps; an app that crash-loops is given up while the others serve every request; `/metrics`
//! labels every series with its app; and a stop leaves no process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// `status --json` of a master of several apps: the apps.
fn apps(rrb: &Rrb) -> Vec<serde_json::Value> {
    let (code, out, err) = rrb.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "status: {err}");
    serde_json::from_str::<Vec<serde_json::Value>>(&out).expect("an array of apps")
}

fn app<'a>(all: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no app {name}: {all:?}"))
}

/// The pids of `name`'s current workers.
fn worker_pids(all: &[serde_json::Value], name: &str) -> Vec<i64> {
    let mut pids: Vec<i64> = (app(all, name)["status"]["workers"].as_array())
        .map(|ws| {
            ws.iter()
                .filter(|w| w["role"] == "current")
                .map(|w| w["pid"].as_i64().unwrap())
                .collect()
        })
        .unwrap_or_default();
    pids.sort();
    pids
}

/// Every app's master and current workers.
fn every_pid(all: &[serde_json::Value]) -> Vec<i32> {
    (all.iter())
        .flat_map(|a| {
            let workers = worker_pids(all, a["name"].as_str().unwrap());
            std::iter::once(a["pid"].as_i64().unwrap()).chain(workers)
        })
        .map(|p| p as i32)
        .collect()
}

/// Waits until `done` holds of the apps' status.
fn wait_apps(
    rrb: &Rrb,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = apps(rrb);
        if done(&all) {
            return all;
        }
        if Instant::now() > deadline {
            panic!("not {what} within 20s: {all:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn all_ready(all: &[serde_json::Value], names: &[(&str, usize)]) -> bool {
    names.iter().all(|(name, n)| {
        all.iter().any(|a| {
            a["name"] == *name
                && a["state"] == "running"
                && (a["status"]["workers"].as_array()).is_some_and(|ws| {
                    ws.iter()
                        .filter(|w| w["role"] == "current" && w["state"] == "ready")
                        .count()
                        == *n
                })
        })
    })
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn apps_config(dir: &Path, api: &str, second: (&str, &str), metrics: &str) -> String {
    let ticks = dir.join("ticks");
    format!(
        r#"
[metrics]
listen = "{metrics}"

[shutdown]
kill_timeout = "3s"

[[app]]
name = "api"
listen = "{api}"
workers = 2

[[app]]
name = "{name}"
listen = "{addr}"
workers = 1

[[app]]
name = "jobs"
workers = 1
[app.worker]
exec = "sh"
args = ["-c", "while true; do echo tick >> '{ticks}'; sleep 0.1; done"]
ready_delay = "200ms"
"#,
        ticks = ticks.display(),
        name = second.0,
        addr = second.1,
    )
}

#[test]
fn each_app_is_reloaded_scaled_stopped_and_started_alone_and_the_file_adds_and_removes_apps() {
    let dir = tempfile::tempdir().unwrap();
    let (api, web, ws, metrics) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = apps_config(dir.path(), &api, ("web", &web), &metrics);
    let mut rrb = Rrb::start(&config, 4);
    let ticks = dir.path().join("ticks");
    let all = wait_apps(&rrb, "serving", |a| {
        all_ready(a, &[("api", 2), ("web", 1), ("jobs", 1)])
    });
    assert!(http_get(&api).unwrap().contains("handled by worker"));
    assert!(http_get(&web).unwrap().contains("handled by worker"));
    let masters: Vec<i64> = all.iter().map(|a| a["pid"].as_i64().unwrap()).collect();
    let (api0, web0, jobs0) = (
        worker_pids(&all, "api"),
        worker_pids(&all, "web"),
        worker_pids(&all, "jobs"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while file_len(&ticks) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(file_len(&ticks) > 0, "the job runs");
    let (code, out, err) = rrb.ctl(&["status"]);
    assert_eq!(code, 0, "{err}");
    for header in [
        "== app api: running",
        "== app web: running",
        "== app jobs (no listen): running",
    ] {
        assert!(out.contains(header), "{header} in:\n{out}");
    }

    // reload api: api's workers replaced, no other process touched.
    let (code, out, err) = rrb.ctl(&["reload", "api"]);
    assert_eq!(code, 0, "reload api: {out}{err}");
    let all = apps(&rrb);
    let api1 = worker_pids(&all, "api");
    assert_eq!(api1.len(), 2);
    assert!(
        api1.iter().all(|p| !api0.contains(p)),
        "api's workers replaced: {api0:?} → {api1:?}"
    );
    assert_eq!(worker_pids(&all, "web"), web0, "web untouched");
    assert_eq!(worker_pids(&all, "jobs"), jobs0, "jobs untouched");
    let masters1: Vec<i64> = all.iter().map(|a| a["pid"].as_i64().unwrap()).collect();
    assert_eq!(masters1, masters, "every app's master the same");

    // scale api 4.
    let (code, out, err) = rrb.ctl(&["scale", "api", "4"]);
    assert_eq!(code, 0, "scale: {out}{err}");
    let all = wait_apps(&rrb, "api at 4", |a| all_ready(a, &[("api", 4)]));
    assert_eq!(worker_pids(&all, "web"), web0);
    assert_eq!(worker_pids(&all, "jobs"), jobs0);
    let (code, out, err) = rrb.ctl(&["top", "-n", "1"]);
    assert_eq!(code, 0, "{err}");
    let api_rows = out.lines().filter(|l| l.starts_with("api ")).count();
    assert!(
        out.contains("APP") && api_rows == 4,
        "one table, an APP column:\n{out}"
    );
    let (code, _, err) = rrb.ctl(&["logs", "--slot", "0"]);
    assert_eq!(code, 1, "a slot is one app's");
    assert!(err.contains("--app"), "{err}");
    let (code, _, err) = rrb.ctl(&["scale", "4"]);
    assert_eq!(code, 1, "several apps: scale names one");
    assert!(err.contains("scale APP N"), "{err}");

    // stop jobs: stopped, and it stays so; the others serve on.
    let (code, out, err) = rrb.ctl(&["stop", "jobs"]);
    assert_eq!(code, 0, "stop jobs: {out}{err}");
    assert!(jobs0.iter().all(|&p| !alive(p as i32)), "jobs' worker gone");
    let stopped_at = file_len(&ticks);
    std::thread::sleep(Duration::from_millis(1500));
    let all = apps(&rrb);
    assert_eq!(app(&all, "jobs")["state"], "stopped", "stays stopped");
    assert_eq!(file_len(&ticks), stopped_at, "the job does not run");
    assert!(http_get(&api).is_ok() && http_get(&web).is_ok());
    let (code, _, err) = rrb.ctl(&["status", "--app", "jobs"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("rrbalancer start jobs"),
        "says how to start it: {err}"
    );
    let (code, out, err) = rrb.ctl(&["start", "jobs"]);
    assert_eq!(code, 0, "start jobs: {out}{err}");
    wait_apps(&rrb, "jobs running", |a| all_ready(a, &[("jobs", 1)]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while file_len(&ticks) == stopped_at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(file_len(&ticks) > stopped_at, "the job runs again");

    // The file read again: web removed, ws added; api and jobs untouched.
    let all = apps(&rrb);
    let (api2, jobs2) = (worker_pids(&all, "api"), worker_pids(&all, "jobs"));
    let web_master = app(&all, "web")["pid"].as_i64().unwrap() as i32;
    // api's part of the file unchanged (it was scaled to 4 since: it stays so).
    let config = apps_config(dir.path(), &api, ("ws", &ws), &metrics);
    std::fs::write(rrb.config_path(), config).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 0, "reload of the file: {out}{err}");
    assert!(
        out.contains("apps started: ws; stopped: web; reloaded: none; unchanged: api, jobs"),
        "{out}"
    );
    let all = wait_apps(&rrb, "ws serving", |a| {
        all_ready(a, &[("ws", 1)]) && a.len() == 3
    });
    let names: Vec<&str> = all.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "ws", "jobs"]);
    assert_eq!(worker_pids(&all, "api"), api2, "api untouched, at 4 still");
    assert_eq!(worker_pids(&all, "jobs"), jobs2, "jobs untouched");
    assert!(http_get(&ws).unwrap().contains("handled by worker"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(web_master) || web0.iter().any(|&p| alive(p as i32))) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(web_master), "web's master gone");
    assert!(http_get(&web).is_err(), "web's port closed");

    // Stop: every process gone.
    let everyone = every_pid(&all);
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "stop: {out}{err}");
    let status = rrb
        .wait_exit(Duration::from_secs(10))
        .expect("the master exited");
    assert!(status.success(), "{status:?}");
    let left: Vec<i32> = everyone.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_crash_looping_app_is_given_up_while_the_others_serve_every_request() {
    let (api, bad, metrics) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
[metrics]
listen = "{metrics}"

[[app]]
name = "api"
listen = "{api}"
workers = 2

[[app]]
name = "bad"
listen = "{bad}"
workers = 2
[app.worker]
exec = "sh"
args = ["-c", "exit 3"]
[app.restart]
max_restarts = 3
backoff_initial = "10ms"
on_all_given_up = "exit"
"#
    );
    let rrb = Rrb::start(&config, 2);
    // Requests to api, one after another, all the while.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (stop, api) = (stop.clone(), api.clone());
        std::thread::spawn(move || {
            let (mut served, mut failed) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                match http_get(&api) {
                    Ok(body) if body.contains("handled by worker") => served += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (served, failed)
        })
    };
    let all = wait_apps(&rrb, "bad given up", |a| {
        app(a, "bad")["state"] == "given up"
    });
    assert!(
        app(&all, "bad")["why"]
            .as_str()
            .unwrap()
            .contains("its master exited: gave up: no worker could be kept running"),
        "{all:#?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let all = apps(&rrb);
    assert_eq!(app(&all, "bad")["state"], "given up", "not started again");
    assert!(all_ready(&all, &[("api", 2)]), "api serves on: {all:#?}");
    let (code, body) = http_status(&metrics, "/readyz/api");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_status(&metrics, "/readyz");
    assert_eq!(code, 503, "bad does not serve: {body}");
    assert!(body.contains("\"bad\": given up"), "{body}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (served, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        served + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served > 50, "served {served}");
    assert!(rrb.count_log("app bad: master pid=") >= 1);
    assert!(alive(rrb.pid()), "the master of all serves on");
}

/// `GET path`: status code and body.
fn http_status(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    (code, response.split_once("\r\n\r\n").unwrap().1.to_owned())
}

#[test]
fn metrics_label_every_series_with_its_app_and_count_each_apps_connections_exactly() {
    let (api, web, metrics) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
[metrics]
listen = "{metrics}"

[[app]]
name = "api"
listen = "{api}"
workers = 2

[[app]]
name = "web"
listen = "{web}"
workers = 1
"#
    );
    let rrb = Rrb::start(&config, 3);
    wait_apps(&rrb, "serving", |a| all_ready(a, &[("api", 2), ("web", 1)]));
    for _ in 0..7 {
        http_get(&api).unwrap();
    }
    for _ in 0..3 {
        http_get(&web).unwrap();
    }
    let (code, text) = http_status(&metrics, "/metrics");
    assert_eq!(code, 200);
    let samples = prometheus::parsed(&text);
    assert!(samples.len() > 50, "{text}");
    for sample in &samples {
        assert!(
            sample.contains("('app', '"),
            "a series without its app: {sample}"
        );
    }
    let handed = |app: &str| -> f64 {
        (samples.iter())
            .filter(|s| s.starts_with("rrbalancer_connections_handed_total "))
            .filter(|s| s.contains(&format!("('app', '{app}')")))
            .map(|s| s.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!((handed("api"), handed("web")), (7.0, 3.0), "{text}");
    // Each family once, as the format wants.
    let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut unique = types.clone();
    unique.dedup();
    assert_eq!(types.len(), unique.len());
    assert!(text.contains("rrbalancer_app_up{app=\"web\"} 1"), "{text}");
    let (code, json) = http_status(&metrics, "/status.json");
    assert_eq!(code, 200);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(all.len(), 2);
    let (code, page) = http_status(&metrics, "/app/web/");
    assert_eq!(code, 200);
    assert!(
        page.contains("status.json"),
        "the one-app page, reading its app's JSON"
    );
    let (code, json) = http_status(&metrics, "/app/web/status.json");
    assert_eq!(code, 200, "{json}");
    let web: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(web["workers"].as_array().unwrap().len(), 1);
    // The same through the control socket.
    let (code, out, err) = rrb.ctl(&["metrics"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rrbalancer_connections_handed_total{app=\"api\""));
    let (code, out, err) = rrb.ctl(&["--app", "web", "metrics"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("app=\""), "one app's own master: no label");
}

#[test]
fn the_shipped_apps_toml_runs_a_node_cluster_app_gunicorn_and_a_job() {
    let Some(venv) = pypi_venv() else {
        return;
    };
    let (api, web, metrics) = (free_addr(), free_addr(), free_addr());
    // As shipped, but on free ports and with the repository as the apps' directory.
    let text = std::fs::read_to_string(repo().join("config/apps.toml"))
        .unwrap()
        .replace("127.0.0.1:3000", &api)
        .replace("127.0.0.1:3001", &web)
        .replace("127.0.0.1:9100", &metrics)
        .replace(
            "cwd = \"..\"",
            &format!("cwd = {:?}", repo().display().to_string()),
        )
        // The workers' output captured, as the file's comment says how.
        .replace(
            "# [log]\n# stdout = \"/var/log/rrbalancer/apps.out.log\"",
            "[log]\nstdout = \"out.log\"",
        );
    assert!(
        text.contains("[log]\nstdout"),
        "the shipped file says how to capture output"
    );
    let path = format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut rrb = Rrb::start_with(Start {
        config: &text,
        env: &[("PATH", &path)],
        ..Start::default()
    });
    let all = wait_apps(&rrb, "serving", |a| {
        all_ready(a, &[("api", 2), ("web", 2), ("jobs", 1)])
    });
    assert!(http_get(&api).unwrap().contains("handled by worker"));
    assert!(
        http_get(&web)
            .unwrap()
            .contains("handled by gunicorn worker")
    );
    let captured = rrb.dir.path().join("out.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let batch = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("[app jobs] [slot 0 pid ") && l.contains("jobs: batch 1 done"))
    };
    while !batch(&std::fs::read_to_string(&captured).unwrap_or_default())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        batch(&std::fs::read_to_string(&captured).unwrap_or_default()),
        "the job's output, its app named"
    );
    let (code, logs, err) = rrb.ctl(&["logs", "--app", "jobs", "-n", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(logs.contains("jobs: batch"), "{logs}");
    // Every app's, each line naming its app.
    let (code, logs, err) = rrb.ctl(&["logs", "-n", "50"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        logs.contains("[jobs slot 0 pid ") && logs.contains("jobs: batch"),
        "{logs}"
    );
    let (web0, jobs0) = (worker_pids(&all, "web"), worker_pids(&all, "jobs"));
    let (code, out, err) = rrb.ctl(&["reload", "api"]);
    assert_eq!(code, 0, "{out}{err}");
    let after = apps(&rrb);
    assert!(
        worker_pids(&after, "api")
            .iter()
            .all(|p| !worker_pids(&all, "api").contains(p))
    );
    assert_eq!(
        (worker_pids(&after, "web"), worker_pids(&after, "jobs")),
        (web0, jobs0)
    );
    assert!(http_get(&api).unwrap().contains("handled by worker"));
    let (code, out, err) = rrb.ctl(&["send", "--app", "jobs", "{\"hello\":1}"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let told = || {
        std::fs::read_to_string(&captured)
            .unwrap_or_default()
            .contains("jobs: message {\"hello\":1}")
    };
    while !told() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        told(),
        "the job got the message: {}",
        std::fs::read_to_string(&captured).unwrap_or_default()
    );
    let everyone = every_pid(&after);
    let (code, out, err) = rrb.ctl(&["stop"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        rrb.wait_exit(Duration::from_secs(40))
            .expect("exited")
            .success()
    );
    assert!(
        std::fs::read_to_string(&captured)
            .unwrap()
            .contains("jobs: stopping ("),
        "stopped cleanly"
    );
    let left: Vec<i32> = everyone.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

/// HAProxy's agent-check answer, sending `name` first (`agent-send`) if given.
fn agent(addr: &str, name: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Some(name) = name {
        s.write_all(format!("{name}\n").as_bytes()).unwrap();
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn systemd_and_haproxys_agent_are_told_of_every_app() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (api, metrics, agent_at) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        r#"
[metrics]
listen = "{metrics}"
haproxy_agent = "{agent_at}"

[[app]]
name = "api"
listen = "{api}"
workers = 2

[[app]]
name = "jobs"
[app.worker]
exec = "sh"
args = ["-c", "exec sleep 600"]
ready_delay = "100ms"
"#
    );
    let rrb = Rrb::start_with(Start {
        config: &config,
        env: &[("NOTIFY_SOCKET", &path.display().to_string())],
        ..Start::default()
    });
    let mut said = Vec::new();
    let mut next = || {
        let mut buf = [0u8; 4096];
        let n = notify.recv(&mut buf).expect("a notification in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        said.push(text.clone());
        text
    };
    while !next().contains("READY=1") {}
    let all = apps(&rrb);
    assert!(
        all_ready(&all, &[("api", 2)]),
        "READY=1 once api serves: {all:#?}"
    );
    assert_eq!(agent(&agent_at, None), "up ready 100%\n");
    assert_eq!(agent(&agent_at, Some("api")), "up ready 100%\n");
    assert_eq!(agent(&agent_at, Some("nope")), "down\n");
    let (code, out, err) = rrb.ctl(&["stop", "jobs"]);
    assert_eq!(code, 0, "{out}{err}");
    while !next().contains("STATUS=2 apps: api running, jobs stopped") {}
    assert_eq!(
        agent(&agent_at, None),
        "up ready 100%\n",
        "jobs listens nowhere"
    );
    assert_eq!(agent(&agent_at, Some("jobs")), "down\n");
    let (code, out, err) = rrb.ctl(&["stop", "api"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(agent(&agent_at, None), "down\n", "api does not serve");
    rrb.signal(libc::SIGTERM);
    while !next().contains("STOPPING=1") {}
    // Only the master of all speaks to systemd: no app's master said anything of its own.
    assert!(
        !said.iter().any(|m| m.contains("workers ready")),
        "an app's master told systemd: {said:?}"
    );
}

#[test]
fn an_apps_master_killed_is_started_again_and_its_workers_do_not_outlive_it() {
    let (api, web) = (free_addr(), free_addr());
    let config = format!(
        "[[app]]\nname = \"api\"\nlisten = \"{api}\"\nworkers = 2\n\n\
         [[app]]\nname = \"web\"\nlisten = \"{web}\"\nworkers = 2\n"
    );
    let rrb = Rrb::start(&config, 4);
    let all = wait_apps(&rrb, "serving", |a| all_ready(a, &[("api", 2), ("web", 2)]));
    let web_master = app(&all, "web")["pid"].as_i64().unwrap() as i32;
    let (web0, api0) = (worker_pids(&all, "web"), worker_pids(&all, "api"));
    // SAFETY: a process this test started (through the master).
    unsafe { libc::kill(web_master, libc::SIGKILL) };
    let all = wait_apps(&rrb, "web started again", |a| {
        app(a, "web")["pid"].as_i64() != Some(web_master as i64) && all_ready(a, &[("web", 2)])
    });
    assert_eq!(app(&all, "web")["restarts"], 1);
    assert!(
        web0.iter().all(|&p| !alive(p as i32)),
        "the killed master's workers are gone"
    );
    assert_eq!(worker_pids(&all, "api"), api0, "api untouched");
    assert!(http_get(&web).unwrap().contains("handled by worker"));
    assert!(rrb.count_log("app web: master pid=") >= 1);
}

#[test]
fn a_drain_is_each_apps_and_stop_now_cuts_it_short() {
    let (api, web) = (free_addr(), free_addr());
    let config = format!(
        "[shutdown]\ndrain = \"30s\"\n\n[[app]]\nname = \"api\"\nlisten = \"{api}\"\nworkers = 1\n\n\
         [[app]]\nname = \"web\"\nlisten = \"{web}\"\nworkers = 1\n"
    );
    let mut rrb = Rrb::start(&config, 2);
    wait_apps(&rrb, "serving", |a| all_ready(a, &[("api", 1), ("web", 1)]));
    // stop api: it drains (30 s), serving on, reported not ready; web untouched.
    let stopping = {
        let (bin, config, dir) = (BIN, rrb.config_path(), rrb.dir.path().to_owned());
        std::thread::spawn(move || {
            std::process::Command::new(bin)
                .arg("--config")
                .arg(config)
                .args(["stop", "api"])
                .env("XDG_RUNTIME_DIR", &dir)
                .output()
                .unwrap()
        })
    };
    let all = wait_apps(&rrb, "api draining", |a| {
        app(a, "api")["status"]["drain_left_ms"].as_u64().is_some()
    });
    assert_eq!(app(&all, "web")["state"], "running");
    assert!(http_get(&api).is_ok(), "a draining app serves on");
    let t0 = Instant::now();
    let (code, out, err) = rrb.ctl(&["stop", "api", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the drain cut short: {:?}",
        t0.elapsed()
    );
    let first = stopping.join().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(app(&apps(&rrb), "api")["state"], "stopped");
    // stop: it says at once that the apps drain first; stop --now then skips the drains.
    let draining = {
        let (config, dir) = (rrb.config_path(), rrb.dir.path().to_owned());
        std::thread::spawn(move || {
            std::process::Command::new(BIN)
                .arg("--config")
                .arg(config)
                .arg("stop")
                .env("XDG_RUNTIME_DIR", &dir)
                .output()
                .unwrap()
        })
    };
    rrb.wait_for_log("app=web] draining for", Duration::from_secs(10));
    let t0 = Instant::now();
    let (code, out, err) = rrb.ctl(&["stop", "--now"]);
    assert_eq!(code, 0, "{out}{err}");
    let said = draining.join().unwrap();
    let said = String::from_utf8_lossy(&said.stderr).into_owned();
    assert!(
        said.contains("stopping 1 app, each draining first (30s at most)"),
        "{said}"
    );
    assert!(
        rrb.wait_exit(Duration::from_secs(10))
            .expect("exited")
            .success()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "no drain: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        rrb.count_log("stop asked on the control socket: graceful stop of every app"),
        2
    );
}

#[test]
fn garbage_and_crowds_on_its_listeners_stop_nothing() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let (api, metrics, agent_at) = (free_addr(), free_addr(), free_addr());
    let config = format!(
        "[metrics]\nlisten = \"{metrics}\"\nhaproxy_agent = \"{agent_at}\"\n\n\
         [[app]]\nname = \"api\"\nlisten = \"{api}\"\nworkers = 2\n"
    );
    let rrb = Rrb::start(&config, 2);
    wait_apps(&rrb, "serving", |a| all_ready(a, &[("api", 2)]));
    let socket = std::fs::read_dir(rrb.dir.path().join("rrbalancer"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .unwrap();
    // Garbage on the control socket: answered as such.
    for garbage in [
        &b"\xff\xfe\n"[..],
        b"{\"cmd\":\"rm\"}\n",
        b"[]\n",
        &vec![b'x'; 100_000][..],
    ] {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(garbage);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.contains("\"ok\":false"), "{answer}");
    }
    // A crowd of silent clients on the metrics and agent ports, more than each serves at once.
    let crowd: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(&metrics).unwrap())
        .chain((0..100).map(|_| std::net::TcpStream::connect(&agent_at).unwrap()))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The control socket answers all the while, and the apps serve.
    let t0 = Instant::now();
    assert!(all_ready(&apps(&rrb), &[("api", 2)]));
    assert!(http_get(&api).is_ok());
    // A newcomer takes a silent client's place: answered at once, the crowd still there.
    let (code, body) = http_status(&metrics, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(agent(&agent_at, Some("api")), "up ready 100%\n");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "answered in {:?}",
        t0.elapsed()
    );
    drop(crowd);
    // HTTP garbage.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&vec![b'A'; 20_000]);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(alive(rrb.pid()));
    assert_eq!(agent(&agent_at, None), "up ready 100%\n");
}

#[test]
fn one_app_of_the_file_runs_alone_with_app_and_is_asked_by_its_name() {
    let (api, web) = (free_addr(), free_addr());
    let config = format!(
        "[[app]]\nname = \"api\"\nlisten = \"{api}\"\n\n[[app]]\nname = \"web\"\nlisten = \"{web}\"\nworkers = 2\n"
    );
    let mut rrb = Rrb::start_with(Start {
        config: &config,
        args: &["--app", "web"],
        ready: 2,
        ..Start::default()
    });
    assert!(http_get(&web).is_ok());
    assert!(http_get(&api).is_err(), "web alone");
    let (code, out, err) = rrb.ctl(&["status", "--app", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("listening on {web}")), "{out}");
    let (code, out, err) = rrb.ctl(&["scale", "web", "3"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = rrb.ctl(&["stop", "web"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        rrb.wait_exit(Duration::from_secs(10))
            .expect("exited")
            .success()
    );
}

#[test]
fn an_app_that_cannot_start_is_said_with_its_reason_at_start_reload_and_start_app() {
    let (api, taken, metrics) = (free_addr(), free_addr(), free_addr());
    let holder = std::net::TcpListener::bind(&taken).unwrap();
    let one = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\n[[app]]\nname = \"api\"\nlisten = \"{api}\"\n"
    );
    let busy = format!("\n[[app]]\nname = \"busy\"\nlisten = \"{taken}\"\n");
    // At start: the whole start fails, naming the app and why; nothing is left running.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("apps.toml");
    std::fs::write(&file, format!("{one}{busy}")).unwrap();
    /// Kills whatever runs this file, whatever the test's outcome.
    struct Reaper(String);
    impl Drop for Reaper {
        fn drop(&mut self) {
            for (pid, _) in command_lines()
                .into_iter()
                .filter(|(_, l)| l.contains(&self.0))
            {
                // SAFETY: a process of this test's file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _reaper = Reaper(file.display().to_string());
    let xdg = dir.path().display().to_string();
    let (code, out) = run_to_exit(
        &["--config", &file.display().to_string(), "start", "--daemon"],
        dir.path(),
        &[("XDG_RUNTIME_DIR", &xdg)],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot start: app busy: given up: its master exited: cannot listen on")
            && out.contains(&taken),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while command_lines()
        .iter()
        .any(|(_, line)| line.contains(&file.display().to_string()))
    {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            command_lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A reload that adds it: exit 1, its reason; one that changes [metrics]: named.
    // (On fresh ports: the failed start's were just let go.)
    let (api, metrics) = (free_addr(), free_addr());
    let one = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\n[[app]]\nname = \"api\"\nlisten = \"{api}\"\n"
    );
    let rrb = Rrb::start(&one, 1);
    std::fs::write(rrb.config_path(), format!("{one}{busy}")).unwrap();
    let (code, out, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("busy: did not start: given up: its master exited: cannot listen on"),
        "{err}"
    );
    let (code, out, err) = rrb.ctl(&["start", "busy"]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("app busy did not start: given up"), "{err}");
    drop(holder);
    let (code, out, err) = rrb.ctl(&["start", "busy"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("listening on {taken}")), "{out}");
    let (code, out, _) = rrb.ctl(&["start", "busy"]);
    assert_eq!(code, 0);
    assert!(out.contains("is running already"), "{out}");
    let moved = format!("{one}{busy}").replace(&metrics, &free_addr());
    std::fs::write(rrb.config_path(), moved).unwrap();
    let (code, _, err) = rrb.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("[metrics]: unchanged until the master restarts"),
        "{err}"
    );
}
