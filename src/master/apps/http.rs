//! `[metrics] listen` of the master of several apps: a thread a connection (bounded), each
//! answered from the apps' masters, asked at once over their control sockets.
//!
//! | path                       | answer                                                      |
//! |----------------------------|-------------------------------------------------------------|
//! | `/metrics`                 | every app's series with its `app` label, and each app's state |
//! | `/healthz`                 | 200 unless no app runs                                      |
//! | `/readyz`                  | 200 when every app that listens serves (each one's line)    |
//! | `/readyz/APP`              | 200 when that app serves                                    |
//! | `/status.json`             | `status --json`: every app and its master's status           |
//! | `/`                        | the apps, each linking to its status page                   |
//! | `/app/APP/`, `…/status.json` | that app's status page and the JSON it reads              |

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use log::warn;

use super::fan_out::{recent_app_status, recent_statuses};
use super::seats::Seats;
use super::seats::Taken;
use super::{Link, ask};
use crate::config::MetricsConfig;
use crate::engine::apps::Phase;
use crate::engine::metrics;
use crate::wire::control::Request;

/// How long a client has to send its request head, and its largest size.
const HEAD_WAIT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8 * 1024;
/// How long an app's master has to answer a scrape.
const ASK_WAIT: Duration = Duration::from_secs(2);

/// Serves the listener on a thread of its own, a thread per connection.
pub fn serve(listener: TcpListener, config: MetricsConfig, link: Link) {
    let seats = std::sync::Arc::new(Seats::default());
    let mut id = 0u64;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Some(mut stream) = super::accepted(stream) else {
                continue;
            };
            let allowed = stream.peer_addr().is_ok_and(|a| config.allows(a.ip()));
            if !allowed {
                let _ = respond(&mut stream, "403 Forbidden", "text/plain", "forbidden\n");
                continue;
            }
            id += 1;
            let Some(admitted) = Seats::take(&seats, &stream, super::MAX_CONNECTIONS, id) else {
                let _ = respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "busy\n",
                );
                continue;
            };
            let link = link.clone();
            std::thread::spawn(move || {
                if let Err(e) = handle(&mut stream, &link, &admitted) {
                    log::debug!("metrics client: {e}");
                }
            });
        }
        warn!("metrics listener: stopped accepting");
    });
}

fn handle(stream: &mut TcpStream, link: &Link, seat: &Taken) -> io::Result<()> {
    stream.set_read_timeout(Some(HEAD_WAIT))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too long\n",
            );
        }
    }
    seat.heard();
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(stream, "405 Method Not Allowed", "text/plain", "GET only\n");
    }
    let (status, kind, body) = route(target.split('?').next().unwrap_or(""), link);
    respond(stream, status, kind, &body)
}

/// Answers `status` with `body`; a redirect (301) has its target as its body.
fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) -> io::Result<()> {
    let location = if status.starts_with("301") {
        format!("Location: {body}\r\n")
    } else {
        String::new()
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{location}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

const TEXT: &str = "text/plain; charset=utf-8";

fn route(target: &str, link: &Link) -> (&'static str, &'static str, String) {
    match target {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(link),
        ),
        "/healthz" => {
            let running =
                (link.snapshot().apps.iter()).any(|a| matches!(a.phase, Phase::Running { .. }));
            if running {
                ("200 OK", TEXT, "ok\n".into())
            } else {
                ("503 Service Unavailable", TEXT, "no app runs\n".into())
            }
        }
        "/readyz" => readyz(link, None),
        "/status.json" => {
            let apps = recent_statuses(link);
            let json = serde_json::to_string(&apps).unwrap_or_default();
            ("200 OK", "application/json", json)
        }
        "/" => ("200 OK", "text/html; charset=utf-8", overview(link)),
        _ => {
            if let Some(app) = target.strip_prefix("/readyz/") {
                return readyz(link, Some(app));
            }
            if let Some(rest) = target.strip_prefix("/app/") {
                return app_page(link, rest);
            }
            (
                "404 Not Found",
                TEXT,
                "not found: /metrics, /healthz, /readyz, /readyz/APP, /status.json, /, \
                 /app/APP/\n"
                    .into(),
            )
        }
    }
}

/// Every app's series, each with its `app` label, and each app's state.
pub fn metrics(link: &Link) -> String {
    let snapshot = link.snapshot();
    let texts: Vec<(String, Option<String>)> = std::thread::scope(|scope| {
        let asked: Vec<_> = (snapshot.apps.iter())
            .map(|app| {
                let socket = snapshot.places.get(&app.name).map(|p| p.socket.clone());
                let running = app.phase.pid().is_some();
                let handle = (socket.filter(|_| running)).map(|socket| {
                    scope.spawn(move || ask::ask(&socket, &Request::Metrics, ASK_WAIT))
                });
                (app.name.clone(), handle)
            })
            .collect();
        (asked.into_iter())
            .map(|(name, handle)| {
                let text = (handle.and_then(|h| h.join().ok()))
                    .and_then(Result::ok)
                    .filter(|r| r.ok)
                    .and_then(|r| r.message);
                (name, text)
            })
            .collect()
    });
    let texts: Vec<(&str, Option<&str>)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_deref()))
        .collect();
    metrics::apps::merge(&texts, &snapshot.apps)
}

/// `/readyz`: every listening app serves (`app`: that one).
fn readyz(link: &Link, app: Option<&str>) -> (&'static str, &'static str, String) {
    let snapshot = link.snapshot();
    if let Some(name) = app {
        if !snapshot.apps.iter().any(|a| a.name == name) {
            return ("404 Not Found", TEXT, format!("no app named {name}\n"));
        }
    }
    let apps = recent_statuses(link);
    let mut lines = Vec::new();
    let mut ready = !snapshot.stopping;
    for status in apps.iter().filter(|s| app.is_none_or(|a| a == s.name)) {
        if app.is_none() && !status.listens {
            continue;
        }
        match status.readiness() {
            Ok(line) => lines.push(line),
            Err(line) => {
                ready = false;
                lines.push(line);
            }
        }
    }
    if snapshot.stopping {
        lines.insert(0, "stopping".into());
    }
    let body = lines.join("\n") + "\n";
    if ready {
        ("200 OK", TEXT, body)
    } else {
        ("503 Service Unavailable", TEXT, body)
    }
}

/// `/app/APP/` (the one-app status page) and `/app/APP/status.json` (what it reads).
fn app_page(link: &Link, rest: &str) -> (&'static str, &'static str, String) {
    let (name, what) = rest.split_once('/').unwrap_or((rest, ""));
    let snapshot = link.snapshot();
    let Some(place) = snapshot.places.get(name) else {
        return ("404 Not Found", TEXT, "no such app\n".into());
    };
    if !rest.contains('/') {
        // The page reads `status.json` beside it: it must be at `/app/NAME/`.
        return ("301 Moved Permanently", TEXT, format!("/app/{name}/"));
    }
    match what {
        "" => (
            "200 OK",
            "text/html; charset=utf-8",
            super::super::STATUS_PAGE.to_owned(),
        ),
        "status.json" => match recent_app_status(link, name, &place.socket) {
            Ok(json) => ("200 OK", "application/json", json),
            Err(e) => (
                "503 Service Unavailable",
                TEXT,
                format!("app {name}: {e}\n"),
            ),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}

/// `/`: one row per app, linking to its page; read again every 2 seconds.
fn overview(link: &Link) -> String {
    let apps = recent_statuses(link);
    let mut rows = String::new();
    for app in &apps {
        let (ready, wanted, handed) = app.status.as_ref().map_or((0, 0, 0), |s| {
            let ready = s.ready_workers().count();
            let handed: u64 = s.workers.iter().map(|w| w.handed).sum();
            (ready, s.workers_wanted, handed)
        });
        let serving = app.readiness().is_ok();
        let listen = app
            .status
            .as_ref()
            .map_or(String::new(), |s| s.listeners.join(" "));
        rows.push_str(&format!(
            "<tr class=\"{}\"><td><a href=\"app/{name}/\">{name}</a></td><td>{state}</td>\
             <td>{pid}</td><td>{ready}/{wanted}</td><td>{handed}</td><td>{restarts}</td>\
             <td>{listen}</td><td>{why}</td></tr>\n",
            if serving { "ok" } else { "bad" },
            name = html(&app.name),
            state = html(&app.state),
            pid = app.pid.map_or("–".into(), |p| p.to_string()),
            restarts = app.restarts,
            listen = html(if app.listens { &listen } else { "(none)" }),
            why = html(app.why.as_deref().unwrap_or("")),
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"2\"><title>rrbalancer: {n} apps</title><style>body{{font:14px system-ui,\
         sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{padding:.3em .8em;\
         border-bottom:1px solid #ddd;text-align:left}}tr.bad td{{background:#fde8e8}}\
         tr.ok td:nth-child(2){{color:#176c2e}}</style></head><body><h1>rrbalancer: {n} apps\
         </h1><table><tr><th>app</th><th>state</th><th>master pid</th><th>workers ready</th>\
         <th>handed</th><th>restarts</th><th>listen</th><th>why</th></tr>\n{rows}</table>\
         <p>Each app's page shows its workers. Read again every 2 s; \
         <a href=\"status.json\">status.json</a>, <a href=\"metrics\">metrics</a>.</p>\
         </body></html>\n",
        n = apps.len()
    )
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
