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

/// A reading, and when it was taken.
type Reading<T> = Option<(Instant, T)>;

/// The last readings, shared by the threads that answer.
#[derive(Default)]
pub struct Recent {
    /// Every app's status, with the apps' states it was taken in ([`recent_statuses`]).
    all: Mutex<Reading<(Vec<AppView>, Vec<AppStatus>)>>,
    /// Each app's own status page's JSON ([`recent_app_status`]), each behind a lock of its
    /// own, so that a slow app's master holds up the viewers of its page only.
    pages: Mutex<HashMap<String, Arc<Mutex<Reading<String>>>>>,
}

/// The reading in `last` if it is younger than [`REUSE`] and `still` holds of it, else a new
/// one from `read`, kept if it succeeded. Called with `last`'s lock held: those asking
/// meanwhile wait for this reading, and share it.
fn reuse<T: Clone, E>(
    last: &mut Reading<T>,
    still: impl Fn(&T) -> bool,
    read: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if let Some((_, value)) = last
        .as_ref()
        .filter(|(at, v)| at.elapsed() < REUSE && still(v))
    {
        return Ok(value.clone());
    }
    let value = read()?;
    *last = Some((Instant::now(), value.clone()));
    Ok(value)
}

/// [`statuses`], taken at most once per [`REUSE`] however many ask, and again at once when an
/// app's state changed (started, stopped, given up …).
pub fn recent_statuses(link: &Link) -> Vec<AppStatus> {
    let snapshot = link.snapshot();
    let Ok(mut last) = link.recent.all.lock() else {
        return statuses(&snapshot);
    };
    let read = || Ok::<_, std::convert::Infallible>((snapshot.apps.clone(), statuses(&snapshot)));
    let Ok((_, read)) = reuse(&mut last, |(apps, _)| *apps == snapshot.apps, read);
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
    let mut last = page.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    reuse(
        &mut last,
        |_| true,
        || {
            let reply =
                ask::ask(socket, &Request::Status, STATUS_WAIT).map_err(|e| e.to_string())?;
            let status = reply
                .status
                .ok_or_else(|| reply.message.unwrap_or_default())?;
            Ok(serde_json::to_string(&status).unwrap_or_default())
        },
    )
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
