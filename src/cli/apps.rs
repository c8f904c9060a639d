//! The control commands for a master of several apps (`[[app]]`): `status` of all of them,
//! `--app` (the app's own master asked: status, logs, top, send, metrics), and `reload`,
//! `scale`, `stop`, `start` of one app (asked of the master of all, which keeps the apps).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::client::{self, ClientError, format_status};
use crate::wire::apps_control::{AppStatus, request_line};
use crate::wire::control::Request;

/// `status` of a master of several apps: each app's line, then its master's table.
pub fn format_apps(apps: &[AppStatus]) -> String {
    let mut out = String::new();
    for app in apps {
        let pid = app
            .pid
            .map_or(String::new(), |p| format!(", master pid {p}"));
        let restarts = match app.restarts {
            0 => String::new(),
            1 => ", restarted once".to_owned(),
            n => format!(", restarted {n} times"),
        };
        let why = app.why.as_ref().map_or(String::new(), |w| format!(": {w}"));
        let listens = if app.listens { "" } else { " (no listen)" };
        out.push_str(&format!(
            "== app {}{listens}: {}{pid}{restarts}{why}\n",
            app.name, app.state
        ));
        if let Some(status) = &app.status {
            out.push_str(&format_status(status));
        }
        out.push('\n');
    }
    out
}

/// `status --ready` of a master of several apps: a line per app, and whether all serve.
pub fn readiness(apps: &[AppStatus]) -> Result<String, String> {
    let mut lines = Vec::new();
    let mut ready = true;
    for app in apps {
        match app.readiness() {
            Ok(line) => lines.push(line),
            // An app that does not listen need only run.
            Err(line) if !app.listens && app.state == "running" => lines.push(line),
            Err(line) => {
                ready = false;
                lines.push(line);
            }
        }
    }
    if ready {
        Ok(lines.join("\n"))
    } else {
        Err(lines.join("\n"))
    }
}

/// The control socket of `app`'s own master, as the master of all at `top` says.
pub fn app_socket(top: &Path, app: &str) -> Result<PathBuf, ClientError> {
    let reply = client::request(top, &Request::Status, Duration::from_secs(10))?;
    let Some(apps) = reply.apps else {
        return Err(ClientError::Refused(format!(
            "--app {app}: the master at {} runs one app (--app is for a file with [[app]] \
             sections)",
            top.display()
        )));
    };
    let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    match apps.iter().find(|a| a.name == app) {
        Some(a) if a.state == "running" || a.state == "stopping" => Ok(a.socket.clone()),
        Some(a) => Err(ClientError::Refused(format!(
            "app {app} is {}{}: its master does not run (rrbalancer start {app})",
            a.state,
            a.why.as_ref().map_or(String::new(), |w| format!(" ({w})"))
        ))),
        None => Err(ClientError::Refused(format!(
            "no app named {}: this master runs {}",
            crate::text::quoted(app),
            names.join(", ")
        ))),
    }
}

/// `--app NAME` given to `run` or `start` (by an operator, not by the master of all starting
/// the app's master), while the master of all this file's apps runs.
pub fn master_of_all_runs(cli: &super::Cli) -> bool {
    if cli.app.is_none() || std::env::var_os(crate::wire::env::APP).is_some() {
        return false;
    }
    let Some(socket) = (cli.config.as_deref())
        .and_then(|path| crate::config::load_control(path).ok())
        .map(|(control, _)| control.socket)
    else {
        return false;
    };
    client::request(&socket, &Request::Status, Duration::from_secs(5))
        .is_ok_and(|reply| reply.apps.is_some())
}

/// Where app `app`'s master is when the master of all at `top` does not run: one run alone
/// (`run --app`) listens there.
pub fn alone(top: &Path, app: &str) -> PathBuf {
    let control = crate::config::ControlConfig {
        pid_file: PathBuf::new(),
        socket: top.to_owned(),
    };
    crate::config::app_control(&control, app).socket
}

/// `reload APP`, `scale APP N`, `start APP` (`request` `None`): asked of the master of all.
pub fn ask_for_app(
    top: &Path,
    app: &str,
    request: Option<&Request>,
    wait: Duration,
) -> Result<String, ClientError> {
    let reply = client::request_line(top, &request_line(Some(app), request), wait)?;
    let message = reply.message.unwrap_or_default();
    if reply.ok {
        Ok(message)
    } else {
        Err(ClientError::Refused(message))
    }
}

/// `stop APP`: once its master has exited.
pub fn stop_app(top: &Path, app: &str, now: bool, wait: Duration) -> Result<String, ClientError> {
    let line = request_line(Some(app), Some(&Request::Stop { now }));
    client::until_exit_line(top, &line, wait).map(|m| format!("{m}; stopped"))
}
