//! The status page (`GET /` on the metrics listener, issue 29, part 5), loaded in a real
//! headless Chromium while the master serves a load: one row per worker with its pid, the
//! numbers moving from one reading of `/status.json` to the next, and a screenshot.
//!
//! Needs Chromium (the distribution's `chromium` or `chromium-headless-shell`): without it the
//! test skips, saying so (a failure in CI, whose `.ci/run` installs it).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Rrb;

/// The first Chromium found on PATH; without one, the test skips, saying so.
fn chromium() -> Option<String> {
    let found = [
        "chromium",
        "chromium-headless-shell",
        "chromium-browser",
        "google-chrome",
    ]
    .into_iter()
    .find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(str::to_owned);
    if found.is_none() {
        common::skip("no Chromium on PATH (apt-get install chromium-headless-shell)");
    }
    found
}

/// A master with `workers` demo workers and the metrics listener, both on free ports.
fn with_metrics(workers: usize) -> Rrb {
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = {workers}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
    );
    Rrb::start(&config, workers)
}

/// Runs headless Chromium on `url` with `args`, for `budget_ms` of the page's (virtual) time:
/// what it printed.
fn headless(browser: &str, url: &str, budget_ms: u32, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{browser}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A proxy in front of `upstream` that answers each `/status.json` `delay` late: headless
/// Chromium runs the page's timers on virtual time, so without it a minute of readings comes
/// milliseconds apart. Its address.
fn slow_proxy(upstream: String, delay: Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().take(10_000) {
            let Ok(mut client) = client else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16_384 {
                    match client.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                if head.starts_with(b"GET /status.json") {
                    std::thread::sleep(delay);
                }
                let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                    return;
                };
                let mut answer = Vec::new();
                if server.write_all(&head).is_ok() && server.read_to_end(&mut answer).is_ok() {
                    let _ = client.write_all(&answer);
                }
            });
        }
    });
    addr
}

/// The value of `attr="…"` in the first tag of `html` that has it.
/// The pids of the page's rows of current workers, sorted.
fn row_pids(dom: &str) -> Vec<i32> {
    let mut pids: Vec<i32> = (dom.split("<tr class=\"current\"").skip(1))
        .map(|row| attr(row, "data-pid").unwrap().parse().unwrap())
        .collect();
    pids.sort();
    pids
}

fn attr<'a>(html: &'a str, attr: &str) -> Option<&'a str> {
    let at = html.find(&format!(" {attr}=\""))? + attr.len() + 3;
    html[at..].split('"').next()
}

#[test]
fn the_status_page_shows_every_worker_and_its_numbers_move_under_load() {
    let Some(browser) = chromium() else {
        return;
    };
    let rrb = with_metrics(4);
    let page = format!(
        "http://{}/",
        slow_proxy(rrb.metrics_addr(), Duration::from_millis(500))
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::close_load(rrb.addr.clone(), 4, usize::MAX, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    let dom = headless(&browser, &page, 6_000, &["--dump-dom"]);
    let updates: u32 = attr(&dom, "data-updates").unwrap().parse().unwrap();
    assert!(updates >= 3, "the page read status.json {updates} time(s)");
    let first: u64 = attr(&dom, "data-handed-first").unwrap().parse().unwrap();
    let last: u64 = attr(&dom, "data-handed").unwrap().parse().unwrap();
    assert!(
        last > first,
        "handed did not move under load: {first} → {last}"
    );
    // One row per worker, with its pid.
    let shown = row_pids(&dom);
    // The rows were written in place reading after reading: each shows the last reading, as
    // the total does (handed is the 11th cell).
    let handed_cells: u64 = dom
        .split("<tr class=\"current\"")
        .skip(1)
        .map(|row| {
            let cell = row.split("<td").nth(11).unwrap_or_default();
            let text = cell.split('>').nth(1).unwrap_or_default();
            let text = text.split('<').next().unwrap_or_default().replace(',', "");
            text.parse::<u64>()
                .unwrap_or_else(|e| panic!("{e}: {text:?} in {row}"))
        })
        .sum();
    assert_eq!(handed_cells, last, "the rows' handed against the total");
    let mut workers = rrb.workers();
    workers.sort();
    assert_eq!(shown, workers, "rows against the master's workers");
    assert!(dom.contains("4 of 4 ready"), "the title counts them");
    assert!(dom.contains("<polyline"), "sparklines drawn");
    let state = dom.split("id=\"state\"").nth(1).unwrap_or_default();
    assert!(
        state.contains("class=\"state serving\"") || state.starts_with(">serving<"),
        "the page's state: {}",
        &state[..state.len().min(120)]
    );

    // The screenshot README shows: target/status-page.png.
    let shot = common::repo().join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        &page,
        16_000,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,520",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    stop.store(true, Ordering::Relaxed);
    let (ok, failed, why) = load.join().unwrap();
    assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed: {why:?}");
}

/// `/status.json` is what `status --json` prints, and one reading serves every client of the
/// same second (making it reads `/proc` for every worker): two fetches in a row are the same
/// answer, one a second later is newer.
#[test]
fn status_json_is_the_status_projection_made_once_a_second() {
    let rrb = with_metrics(2);
    let metrics = rrb.metrics_addr();
    let fetch = || -> serde_json::Value {
        let body = common::http_get_path(&metrics, "/status.json").unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let first = fetch();
    let (code, out, err) = rrb.ctl(&["status", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&first), keys(&status), "the same projection");
    let pids = |v: &serde_json::Value| -> Vec<i64> {
        let mut p: Vec<i64> = (v["workers"].as_array().unwrap().iter())
            .map(|w| w["pid"].as_i64().unwrap())
            .collect();
        p.sort();
        p
    };
    assert_eq!(pids(&first), pids(&status));
    assert_eq!(
        fetch(),
        first,
        "a second client within the second shares the reading"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let later = fetch();
    let uptime = |v: &serde_json::Value| v["workers"][0]["uptime_secs"].as_f64().unwrap();
    assert!(
        uptime(&later) > uptime(&first),
        "a new reading after a second"
    );
}

/// What an operator must see at once: a slot given up puts the header in `degraded`, its row
/// first with why; a stop's drain shows as `draining` (it showed `serving` before).
#[test]
fn a_given_up_slot_comes_first_and_a_drain_says_draining() {
    let Some(browser) = chromium() else {
        return;
    };
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 3\n[worker]\nexec = \"sh\"\n\
         args = [\"-c\", \"if [ \\\"$RRB_WORKER_ID\\\" = 2 ]; then exit 1; fi; exec '{}' demo-worker\"]\n\
         [restart]\nmax_restarts = 1\nbackoff_initial = \"10ms\"\nbackoff_max = \"10ms\"\n\
         retry_after = \"1h\"\n[shutdown]\ndrain = \"30s\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        common::BIN
    );
    let rrb = Rrb::start(&config, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let given_up = || {
        let (_, json, _) = rrb.ctl(&["status", "--json"]);
        json.contains("\"state\": \"given up")
    };
    while !given_up() {
        assert!(std::time::Instant::now() < deadline, "slot 2 never gave up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let page = format!("http://{}/", rrb.metrics_addr());
    let dom = headless(&browser, &page, 3_000, &["--dump-dom"]);
    let header = dom.split("id=\"state\"").nth(1).unwrap_or_default();
    assert!(
        header.starts_with(">degraded (1 slot given up)<"),
        "{}",
        &header[..header.len().min(100)]
    );
    let rows = dom.split("<tbody id=\"rows\">").nth(1).unwrap_or_default();
    assert!(
        rows.starts_with("<tr class=\"problem\" data-slot=\"2\""),
        "the given-up slot first: {}",
        &rows[..rows.len().min(200)]
    );

    // `rrbalancer stop` waits for the drain: in the background, killed at the end.
    let mut stop = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(rrb.config_path())
        .arg("stop")
        .env("XDG_RUNTIME_DIR", rrb.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    rrb.wait_for_log("draining for", Duration::from_secs(10));
    // The reading the first page took serves for up to 0.9 s more.
    std::thread::sleep(Duration::from_secs(1));
    let dom = headless(&browser, &page, 3_000, &["--dump-dom"]);
    let header = dom.split("id=\"state\"").nth(1).unwrap_or_default();
    assert!(
        header.starts_with(">draining ("),
        "{}",
        &header[..header.len().min(100)]
    );
    let _ = stop.kill();
    let _ = stop.wait();
}

/// A master that stops answering (SIGSTOP) is shown as such within seconds — `no answer`, the
/// page greyed, how old its last reading is — and the page recovers when it answers again.
/// Watched in real time over the DevTools protocol (tests/support/cdp.js): headless virtual
/// time stands still while a fetch waits.
#[test]
fn a_master_that_stops_answering_is_shown_as_no_answer_then_recovers() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::process::CommandExt;
    let Some(browser) = chromium() else {
        return;
    };
    let rrb = with_metrics(2);
    let page = format!("http://{}/", rrb.metrics_addr());
    let mut driver = Command::new("node")
        .arg("--experimental-websocket")
        .arg(common::repo().join("tests/support/cdp.js"))
        .args([&browser, &page])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    /// The driver's process group and Chromium's, killed whatever happens; the driver reaped.
    struct Driver(std::process::Child, Option<i32>);
    impl Drop for Driver {
        fn drop(&mut self) {
            drop(self.0.stdin.take()); // its end: the driver kills Chromium and exits
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            for group in [Some(self.0.id() as i32), self.1].into_iter().flatten() {
                // SAFETY: process groups this test started (the driver's, Chromium's).
                unsafe { libc::killpg(group, libc::SIGKILL) };
            }
            let _ = self.0.wait();
        }
    }
    let mut output = BufReader::new(driver.stdout.take().unwrap());
    let mut driver = Driver(driver, None);
    let mut first = String::new();
    output.read_line(&mut first).unwrap();
    let started: serde_json::Value = serde_json::from_str(&first).unwrap();
    driver.1 = started["chromium"].as_i64().map(|pid| pid as i32);
    let mut ask = |command: &str| -> serde_json::Value {
        let input = driver.0.stdin.as_mut().unwrap();
        writeln!(input, "{command}").unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?} for {command}"))
    };
    let state = "document.getElementById('state').textContent";
    let serving = ask(&format!(
        "wait 15000 document.body.dataset.updates >= 2 && {state} === 'serving' && {state}"
    ));
    assert_eq!(serving["value"], "serving", "{serving}");

    rrb.signal(libc::SIGSTOP);
    let stale = ask(&format!(
        "wait 8000 document.body.classList.contains('stale') && {state}"
    ));
    let fresh = ask("eval document.getElementById('fresh').textContent");
    rrb.signal(libc::SIGCONT);
    assert_eq!(stale["value"], "no answer", "{stale}");
    let said = fresh["value"].as_str().unwrap_or_default();
    assert!(
        said.contains("no answer") && said.contains("last reading"),
        "{said}"
    );

    let back = ask(&format!(
        "wait 8000 !document.body.classList.contains('stale') && {state}"
    ));
    assert_eq!(back["value"], "serving", "{back}");
}

/// Several apps (`[[app]]`): `/` lists them, each linking to its own page at `/app/NAME/`,
/// which reads that app's `status.json` (relative to the page) and shows its workers.
#[test]
fn each_app_of_several_has_its_page_and_the_overview_links_each() {
    let Some(browser) = chromium() else {
        return;
    };
    let (api, metrics) = (common::free_addr(), common::free_addr());
    let config = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\n[[app]]\nname = \"api\"\nlisten = \"{api}\"\n\
         workers = 3\n\n[[app]]\nname = \"jobs\"\n[app.worker]\nexec = \"sh\"\n\
         args = [\"-c\", \"exec sleep 600\"]\nready_delay = \"100ms\"\n"
    );
    let rrb = Rrb::start(&config, 4);
    let dom = headless(
        &browser,
        &format!("http://{metrics}/"),
        1_000,
        &["--dump-dom"],
    );
    for app in ["api", "jobs"] {
        let row = dom
            .split(&format!("<a href=\"app/{app}/\">{app}</a>"))
            .nth(1)
            .unwrap_or_else(|| panic!("no row linking to {app}'s page: {dom}"));
        assert!(
            row.starts_with("</td><td>running</td>"),
            "{app}: {}",
            &row[..row.len().min(80)]
        );
    }
    let dom = headless(
        &browser,
        &format!("http://{metrics}/app/api/"),
        3_000,
        &["--dump-dom"],
    );
    let shown = row_pids(&dom);
    let (_, json, _) = rrb.ctl(&["status", "--json", "--app", "api"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut pids: Vec<i32> = (status["workers"].as_array().unwrap().iter())
        .map(|w| w["pid"].as_i64().unwrap() as i32)
        .collect();
    pids.sort();
    assert_eq!(shown, pids, "api's page: a row per api worker");
    assert!(
        dom.contains("3 of 3 ready"),
        "the title counts api's workers"
    );
}

/// An app's page (several apps) reads `/app/APP/status.json`, its master's status: one reading
/// serves every viewer of the same moment (each reading makes the app's master read `/proc` for
/// every worker; 16 viewers cost a 64-worker app's master 2.8 % of a core when each asked):
/// fetches in a row are the same answer, one a second later is newer.
#[test]
fn an_apps_status_json_is_read_once_for_every_viewer_of_the_moment() {
    let (api, metrics) = (common::free_addr(), common::free_addr());
    let config = format!(
        "[metrics]\nlisten = \"{metrics}\"\n\n[[app]]\nname = \"api\"\nlisten = \"{api}\"\n\
         workers = 2\n"
    );
    let _rrb = Rrb::start(&config, 2);
    let at = metrics.clone();
    let fetch = move || common::http_get_path(&at, "/app/api/status.json").unwrap();
    let first = fetch();
    let status: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    let viewers: Vec<_> = (0..8).map(|_| std::thread::spawn(fetch.clone())).collect();
    for viewer in viewers {
        assert_eq!(viewer.join().unwrap(), first, "the same reading");
    }
    std::thread::sleep(Duration::from_millis(1100));
    let uptime = |body: &str| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["workers"][0]["uptime_secs"].as_f64().unwrap()
    };
    assert!(uptime(&fetch()) > uptime(&first), "a new reading later");
    assert_eq!(
        common::http_get_path(&metrics, "/app/nope/status.json").unwrap(),
        "no such app\n"
    );
}
