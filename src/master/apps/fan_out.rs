//! What every app's master is asked at once, for the master of all: their statuses, their
//! captured lines, a message for all of them — each asked on its own thread, within a time, so
//! that a hung app's master costs an answer its wait and no more.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::control::{STATUS_WAIT, answer};
use super::{Link, Snapshot, ask};
use crate::engine::apps::{AppView, Phase};
use crate::wire::apps_control::AppStatus;
use crate::wire::control::{Reply, Request};

/// How long one reading of every app's status serves the HTTP listener and the HAProxy agent
/// (checked several times a second by each balancer): each reading asks every app's master,
/// which reads `/proc` for each of its workers.
const REUSE: Duration = Duration::from_millis(500);

/// A reading of every app's status: when, and the apps' states it was taken in.
pub struct Reading {
    at: Instant,
    apps: Vec<AppView>,
    statuses: Vec<AppStatus>,
}

/// The last readings, shared by the threads that answer.
#[derive(Default)]
pub struct Recent {
    /// Every app's status ([`recent_statuses`]).
    all: Mutex<Option<Reading>>,
    /// Each app's own status page's JSON ([`recent_app_status`]), each behind a lock of its
    /// own, so that a slow app's master holds up the viewers of its page only.
    pages: Mutex<HashMap<String, Arc<Mutex<Option<Page>>>>>,
}

/// One app's status as JSON, and when it was read.
type Page = (Instant, String);

/// [`statuses`], taken at most once per [`REUSE`] however many ask, and again at once when an
/// app's state changed (started, stopped, given up …).
pub fn recent_statuses(link: &Link) -> Vec<AppStatus> {
    let snapshot = link.snapshot();
    // Held while reading: those asking meanwhile wait for this reading, and share it.
    let Ok(mut recent) = link.recent.all.lock() else {
        return statuses(&snapshot);
    };
    let fresh = |r: &Reading| r.at.elapsed() < REUSE && r.apps == snapshot.apps;
    if let Some(reading) = recent.as_ref().filter(|r| fresh(r)) {
        return reading.statuses.clone();
    }
    let read = statuses(&snapshot);
    *recent = Some(Reading {
        at: Instant::now(),
        apps: snapshot.apps.clone(),
        statuses: read.clone(),
    });
    read
}

/// The status (`status --json`) of the app whose master listens at `socket`, as JSON, asked
/// at most once per [`REUSE`] however many view its page (each view asked its master, which
/// reads `/proc` for each of its workers: 16 viewers of a 64-worker app cost its master 2.8 %
/// of a core). `Err`: why it has none.
pub fn recent_app_status(link: &Link, name: &str, socket: &Path) -> Result<String, String> {
    let page = match link.recent.pages.lock() {
        Ok(mut pages) => pages.entry(name.to_owned()).or_default().clone(),
        Err(_) => Arc::default(),
    };
    // Held while asking: those asking meanwhile share this answer.
    let mut page = page.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, json)) = page.as_ref().filter(|(at, _)| at.elapsed() < REUSE) {
        return Ok(json.clone());
    }
    let reply = ask::ask(socket, &Request::Status, STATUS_WAIT).map_err(|e| e.to_string())?;
    let status = reply
        .status
        .ok_or_else(|| reply.message.unwrap_or_default())?;
    let json = serde_json::to_string(&status).unwrap_or_default();
    *page = Some((Instant::now(), json.clone()));
    Ok(json)
}

/// Every app's status: each running master asked at once, within [`STATUS_WAIT`].
pub fn statuses(snapshot: &Snapshot) -> Vec<AppStatus> {
    std::thread::scope(|scope| {
        let asked: Vec<_> = (snapshot.apps.iter())
            .map(|app| {
                let place = snapshot.places.get(&app.name);
                let socket = place.map(|p| p.socket.clone()).unwrap_or_default();
                let running = app.phase.pid().is_some();
                let asking = socket.clone();
                let answer = running
                    .then(|| scope.spawn(move || ask::ask(&asking, &Request::Status, STATUS_WAIT)));
                (app, socket, answer)
            })
            .collect();
        (asked.into_iter())
            .map(|(app, socket, answer)| {
                let answered = answer.map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())));
                let (status, trouble) = match answered {
                    Some(Ok(reply)) => match reply.status {
                        Some(status) => (Some(status), None),
                        None => (None, reply.message),
                    },
                    Some(Err(e)) => (None, Some(e)),
                    None => (None, None),
                };
                let why = match &app.phase {
                    Phase::GivenUp { why } => Some(why.clone()),
                    _ => trouble,
                };
                let pid = app.phase.pid();
                AppStatus {
                    name: app.name.clone(),
                    state: app.phase.word().to_owned(),
                    pid,
                    restarts: app.restarts,
                    why,
                    listens: app.listens,
                    socket,
                    status,
                }
            })
            .collect()
    })
}

/// `logs` without `app`: every running app's lines, each naming its app, in time order; the
/// last `lines`, or those after `after`. Their `seq` is made of the time, the app's place in the
/// file and its own `seq`, so that `logs -f` asks for what follows across apps.
pub fn every_apps_logs(link: &Link, lines: usize, after: Option<u64>) -> Reply {
    let snapshot = link.snapshot();
    let asked: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (snapshot.apps.iter().enumerate())
            .filter(|(_, a)| matches!(a.phase, Phase::Running { .. }))
            .filter_map(|(i, a)| Some((i, a.name.clone(), snapshot.places.get(&a.name)?)))
            .map(|(i, name, place)| {
                let request = Request::Logs {
                    slot: None,
                    agent: false,
                    lines: 1000,
                    after: None,
                };
                let socket = place.socket.clone();
                (
                    i,
                    name,
                    scope.spawn(move || ask::ask(&socket, &request, STATUS_WAIT)),
                )
            })
            .collect();
        (handles.into_iter())
            .map(|(i, name, h)| (i, name, h.join().ok().and_then(Result::ok)))
            .collect()
    });
    let mut all = Vec::new();
    for (i, name, reply) in asked {
        for mut line in reply.and_then(|r| r.logs).unwrap_or_default() {
            line.seq = (line.time_ms << 20) | ((i as u64 & 0x3f) << 14) | (line.seq & 0x3fff);
            line.app = Some(name.clone());
            all.push(line);
        }
    }
    all.sort_by_key(|l| l.seq);
    all.retain(|l| after.is_none_or(|a| l.seq > a));
    let keep = all.len().saturating_sub(lines.min(1000));
    Reply::logs(all.split_off(keep))
}

/// `send` without `app`: to every app's master that runs; one answer.
pub fn for_each_app(stream: &mut UnixStream, link: &Link, request: &Request) {
    let snapshot = link.snapshot();
    let mut told = Vec::new();
    let mut failed = Vec::new();
    for app in &snapshot.apps {
        let Some(place) = snapshot.places.get(&app.name) else {
            continue;
        };
        if !matches!(app.phase, Phase::Running { .. }) {
            continue;
        }
        match ask::ask(&place.socket, request, STATUS_WAIT) {
            Ok(r) if r.ok => told.push(format!("{}: {}", app.name, r.message.unwrap_or_default())),
            Ok(r) => failed.push(format!("{}: {}", app.name, r.message.unwrap_or_default())),
            Err(e) => failed.push(format!("{}: {e}", app.name)),
        }
    }
    let reply = if failed.is_empty() {
        Reply::ok(told.join("; "))
    } else {
        Reply::error(
            told.into_iter()
                .chain(failed)
                .collect::<Vec<_>>()
                .join("; "),
        )
    };
    let _ = answer(stream, reply);
}
