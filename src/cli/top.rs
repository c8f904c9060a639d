//! `rrbalancer top`: a live view of a running master, refreshed every second — one row per
//! slot (state, pid, uptime, connections/s, un-acked, restarts, memory, CPU%), the agent's if
//! there is one, and totals.
//!
//! It asks the master for its `status` each second; rates are differences between two samples
//! of what the status says of each worker (connections handed, CPU time). On a terminal it draws on the alternate screen, reads keys unbuffered and
//! quits on `q` or Ctrl-C, restoring the terminal; otherwise it prints a plain table each
//! second (`--iterations N` to stop after N).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{self, ClientError};
use crate::wire::apps_control::AppStatus;
use crate::wire::control::{Request, Status};

const EVERY: Duration = Duration::from_secs(1);

/// What one worker had at one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    pub handed: u64,
    /// CPU time so far, in seconds, when the master could read it.
    pub cpu: Option<f64>,
}

/// The previous sample: per worker pid, and when.
#[derive(Debug, Default)]
pub struct Sample {
    at: Option<Instant>,
    workers: HashMap<i32, Seen>,
}

/// One row of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `None`: the agent's row.
    pub slot: Option<usize>,
    pub pid: Option<i32>,
    pub state: String,
    pub uptime_secs: Option<f64>,
    pub rate: f64,
    pub unacked: usize,
    pub restarts: u64,
    pub rss: Option<u64>,
    pub cpu_percent: Option<f64>,
}

/// The rows of `status`, taken at `at`, given the previous sample, which becomes this one. A
/// worker not in the previous sample has no rate yet (0); one per slot-and-pid, the slot's
/// empty rows after.
pub fn rows(status: &Status, at: Instant, previous: &mut Sample) -> Vec<Row> {
    let agent = status.agent.as_ref();
    let agent_seen = agent.and_then(|a| {
        let seen = Seen {
            handed: 0,
            cpu: a.cpu_seconds,
        };
        Some((a.pid?, seen))
    });
    let now: HashMap<i32, Seen> = status
        .workers
        .iter()
        .map(|w| {
            let seen = Seen {
                handed: w.handed,
                cpu: w.cpu_seconds,
            };
            (w.pid, seen)
        })
        .chain(agent_seen)
        .collect();
    let elapsed = previous
        .at
        .map(|t| at.saturating_duration_since(t).as_secs_f64())
        .filter(|&e| e > 0.0);
    let mut out: Vec<Row> = status
        .workers
        .iter()
        .map(|w| {
            let seen = now.get(&w.pid).copied();
            let before = previous.workers.get(&w.pid).copied();
            let (rate, cpu_percent) = match (seen, before, elapsed) {
                (Some(n), Some(b), Some(e)) => (
                    n.handed.saturating_sub(b.handed) as f64 / e,
                    n.cpu
                        .zip(b.cpu)
                        .map(|(n, b)| ((n - b).max(0.0) / e) * 100.0),
                ),
                _ => (0.0, None),
            };
            Row {
                slot: Some(w.slot),
                pid: Some(w.pid),
                state: if w.role == "retiring" && w.state != "draining" {
                    format!("{} (retiring)", w.state)
                } else {
                    w.state.clone()
                },
                uptime_secs: Some(w.uptime_secs),
                rate,
                unacked: w.unacked,
                restarts: w.restarts,
                rss: w.rss_bytes,
                cpu_percent,
            }
        })
        .collect();
    out.extend(agent.map(|a| {
        let cpu_percent = (a
            .pid
            .and_then(|p| Some((now.get(&p)?.cpu?, previous.workers.get(&p)?.cpu?))))
        .zip(elapsed)
        .map(|((n, b), e)| ((n - b).max(0.0) / e) * 100.0);
        Row {
            slot: None,
            pid: a.pid,
            state: a.state.clone(),
            uptime_secs: a.uptime_secs,
            rate: 0.0,
            unacked: 0,
            restarts: a.restarts,
            rss: a.rss_bytes,
            cpu_percent,
        }
    }));
    out.extend(status.empty_slots.iter().map(|e| Row {
        slot: Some(e.slot),
        pid: None,
        state: e.state.clone(),
        uptime_secs: None,
        rate: 0.0,
        unacked: 0,
        restarts: e.restarts,
        rss: None,
        cpu_percent: None,
    }));
    // The agent last (it serves no slot).
    out.sort_by_key(|r| (r.slot.unwrap_or(usize::MAX), r.pid.is_none()));
    previous.at = Some(at);
    previous.workers = now;
    out
}

/// The view: a header, the rows, the totals.
pub fn render(status: &Status, rows: &[Row], terminal: bool) -> String {
    let ready = status.ready_workers().count();
    let total: f64 = rows.iter().map(|r| r.rate).sum();
    // (From +0.0: `sum` of nothing is -0.0, shown as "-0.0" on the first sample.)
    let cpu: f64 = (rows.iter().filter_map(|r| r.cpu_percent)).fold(0.0, |a, b| a + b);
    let rss: u64 = rows.iter().filter_map(|r| r.rss).sum();
    let bytes = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
    let mut out = format!(
        "rrbalancer {} pid {}  policy {}  {}\nworkers {ready}/{} ready{}{}\n\n",
        status.version,
        status.pid,
        status.sched_policy,
        status.listeners.join(", "),
        status.workers_wanted,
        client::notes(status),
        // Keys are read on a terminal only.
        if terminal { "  —  q to quit" } else { "" },
    );
    let header = [
        "SLOT", "PID", "STATE", "UPTIME", "CONN/S", "UNACKED", "RESTARTS", "RSS", "CPU%",
    ];
    let mut table: Vec<[String; 9]> = rows.iter().map(cells).collect();
    table.push([
        "total".into(),
        String::new(),
        String::new(),
        String::new(),
        format!("{total:.0}"),
        rows.iter().map(|r| r.unacked).sum::<usize>().to_string(),
        rows.iter().map(|r| r.restarts).sum::<u64>().to_string(),
        bytes(rss),
        format!("{cpu:.1}"),
    ]);
    out.push_str(&client::table(header, &table));
    out
}

/// A row's cells: slot, pid, state, uptime, conn/s, un-acked, restarts, RSS, CPU%.
fn cells(r: &Row) -> [String; 9] {
    let dash = || "-".to_owned();
    let bytes = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
    [
        r.slot.map_or_else(|| "agent".into(), |s| s.to_string()),
        r.pid.map_or_else(dash, |p| p.to_string()),
        r.state.clone(),
        r.uptime_secs.map_or_else(dash, client::uptime),
        format!("{:.0}", r.rate),
        r.unacked.to_string(),
        r.restarts.to_string(),
        r.rss.map_or_else(dash, bytes),
        r.cpu_percent.map_or_else(dash, |c| format!("{c:.1}")),
    ]
}

/// The view of a master of several apps: one table, a row per slot with its app, and the
/// total of each app; an app whose master does not run, one row saying why.
pub fn render_apps(
    apps: &[AppStatus],
    previous: &mut HashMap<String, Sample>,
    terminal: bool,
) -> String {
    let now = Instant::now();
    let dash = || "-".to_owned();
    let mut table: Vec<[String; 10]> = Vec::new();
    // Apps that serve connections, and running apps that listen on nothing (jobs).
    let (mut serving, mut jobs) = (0, 0);
    for app in apps {
        let Some(status) = &app.status else {
            let why = app.why.as_deref().unwrap_or("");
            let state = format!("{} {why}", app.state).trim_end().to_owned();
            table.push([
                app.name.clone(),
                dash(),
                dash(),
                state,
                dash(),
                dash(),
                dash(),
                app.restarts.to_string(),
                dash(),
                dash(),
            ]);
            continue;
        };
        let up = app.readiness().is_ok();
        serving += usize::from(up && app.listens);
        jobs += usize::from(up && !app.listens);
        let rows = rows(status, now, previous.entry(app.name.clone()).or_default());
        for r in &rows {
            let [a, b, c, d, e, f, g, h, i] = cells(r);
            table.push([app.name.clone(), a, b, c, d, e, f, g, h, i]);
        }
    }
    previous.retain(|name, _| apps.iter().any(|a| a.name == *name));
    let header = [
        "APP", "SLOT", "PID", "STATE", "UPTIME", "CONN/S", "UNACKED", "RESTARTS", "RSS", "CPU%",
    ];
    let jobs = match jobs {
        0 => String::new(),
        n => format!(", {n} running without listen"),
    };
    format!(
        "rrbalancer: {} apps, {serving} serving{jobs}{}\n\n{}",
        apps.len(),
        if terminal { "  —  q to quit" } else { "" },
        client::table(header, &table)
    )
}

/// The terminal as it was, restored on drop: raw keys, the alternate screen, no cursor.
struct Screen {
    saved: Option<nix::sys::termios::Termios>,
}

impl Screen {
    fn enter() -> Screen {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            // Keys one by one, not echoed; Ctrl-C arrives as a byte, so we restore before exit.
            raw.local_flags &= !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Screen { saved }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Waits up to `timeout` for a key on stdin: whether it asks to quit (`q`, `Q`, Ctrl-C) or
/// stdin ended.
fn quit_key(timeout: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
        return false;
    }
    let mut buf = [0u8; 16];
    match stdin.lock().read(&mut buf) {
        Ok(0) | Err(_) => true,
        Ok(n) => buf[..n].iter().any(|&b| matches!(b, b'q' | b'Q' | 0x03)),
    }
}

/// Runs the view until `q`/Ctrl-C (a terminal) or `iterations` refreshes.
pub fn run(socket: &Path, iterations: Option<u64>) -> Result<(), ClientError> {
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let _screen = terminal.then(Screen::enter);
    let mut previous = Sample::default();
    let mut per_app: HashMap<String, Sample> = HashMap::new();
    let mut shown = 0u64;
    loop {
        let reply = client::request(socket, &Request::Status, Duration::from_secs(5))?;
        let view = match (reply.apps, reply.status) {
            (Some(apps), _) if reply.ok => render_apps(&apps, &mut per_app, terminal),
            (_, Some(status)) if reply.ok => {
                let rows = rows(&status, Instant::now(), &mut previous);
                render(&status, &rows, terminal)
            }
            _ => return Err(ClientError::Refused(reply.message.unwrap_or_default())),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home, draw, clear what the last frame left below.
            let _ = write!(out, "\x1b[H{}\x1b[J", view.replace('\n', "\x1b[K\r\n"));
        } else {
            let _ = writeln!(out, "{view}");
        }
        let _ = out.flush();
        drop(out);
        shown += 1;
        if iterations.is_some_and(|n| shown >= n) {
            return Ok(());
        }
        if terminal {
            if quit_key(EVERY) {
                return Ok(());
            }
        } else {
            std::thread::sleep(EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::WorkerStatus;

    fn status(handed: [u64; 2], cpu: f64) -> Status {
        let worker = |slot: usize, pid: i32, handed: u64| WorkerStatus {
            slot,
            pid,
            state: "ready".into(),
            role: "current".into(),
            uptime_secs: 10.0,
            restarts: 0,
            recycled: 0,
            rss_bytes: None,
            cpu_seconds: Some(cpu),
            conn_per_sec: None,
            handed,
            unacked: 0,
            oldest_unacked_secs: None,
        };
        Status {
            pid: 1,
            version: "0.1.0".into(),
            config: None,
            environment: None,
            sched_policy: "rr".into(),
            listeners: vec!["127.0.0.1:3000".into()],
            workers_wanted: 2,
            stopping: false,
            drain_left_ms: None,
            reload_in_progress: false,
            recycling: None,
            upgrade: None,
            workers: vec![worker(0, 10, handed[0]), worker(1, 11, handed[1])],
            empty_slots: vec![],
            agent: Some(crate::wire::control::AgentStatus {
                state: "ready".into(),
                pid: Some(12),
                uptime_secs: Some(10.0),
                restarts: 1,
                rss_bytes: Some(1 << 20),
                cpu_seconds: Some(cpu / 2.0),
                last_causes: vec![],
                others: vec![],
            }),
        }
    }

    /// The header counts as serving the apps whose master serves their listeners; an app
    /// without `listen` that runs is counted apart, and one that is down not at all.
    #[test]
    fn the_apps_header_tells_serving_apps_from_jobs() {
        let app = |name: &str, state: &str, listens: bool| AppStatus {
            name: name.into(),
            state: state.into(),
            pid: Some(1),
            restarts: 0,
            why: None,
            listens,
            socket: "/tmp/x.sock".into(),
            status: Some(status([0, 0], 0.0)),
        };
        let apps = [
            app("api", "running", true),
            app("web", "given up", true),
            app("jobs", "running", false),
        ];
        let view = render_apps(&apps, &mut HashMap::new(), false);
        assert!(
            view.starts_with("rrbalancer: 3 apps, 1 serving, 1 running without listen\n"),
            "{view}"
        );
    }

    #[test]
    fn rates_are_differences_over_the_interval_and_start_at_zero() {
        let t0 = Instant::now();
        let mut previous = Sample::default();
        let first = status([100, 50], 1.0);
        let rows0 = rows(&first, t0, &mut previous);
        let piped = render(&first, &rows0, false);
        assert!(
            !piped.contains("q to quit"),
            "no key is read off a terminal: {piped}"
        );
        let total = piped.lines().find(|l| l.starts_with("total")).unwrap();
        assert!(total.ends_with(" 0.0"), "no CPU% yet: {total}");
        assert!(
            rows0
                .iter()
                .all(|r| r.rate == 0.0 && r.cpu_percent.is_none())
        );
        let second = status([300, 150], 1.5);
        let t1 = t0 + Duration::from_secs(2);
        let rows1 = rows(&second, t1, &mut previous);
        assert_eq!(rows1[0].rate, 100.0);
        assert_eq!(rows1[1].rate, 50.0);
        assert_eq!(rows1[0].cpu_percent, Some(25.0));
        // The agent's row last: no slot, no connections, its own CPU.
        assert_eq!((rows1[2].slot, rows1[2].pid), (None, Some(12)));
        assert_eq!((rows1[2].rate, rows1[2].cpu_percent), (0.0, Some(12.5)));
        let view = render(&second, &rows1, true);
        assert!(
            view.lines().any(|l| l.starts_with("agent  12   ready")),
            "{view}"
        );
        assert!(
            view.contains("workers 2/2 ready") && view.contains("q to quit"),
            "{view}"
        );
        let total = view.lines().find(|l| l.starts_with("total")).unwrap();
        assert!(total.contains("150"), "{total}");
    }
}
