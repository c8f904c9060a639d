//! The control protocol of the master of several apps (`[[app]]`): the requests of
//! [`control`](super::control) with an `app` key naming the app meant, and `start`; the status
//! of every app.
//!
//! ```text
//! → {"cmd":"status"}                      ← {"ok":true,"apps":[{"name":"api","state":"running",…,"status":{…}}]}
//! → {"cmd":"reload"}                      ← the file read again: apps added, removed, changed
//! → {"cmd":"reload","app":"api"}          ← api's master reloads (its new workers ready)
//! → {"cmd":"scale","app":"api","workers":4}
//! → {"cmd":"stop","app":"jobs"}           ← {"ok":true,…}, then EOF once its master exited
//! → {"cmd":"start","app":"jobs"}          ← once its master runs
//! → {"cmd":"stop"}                        ← every app, then the master: EOF when it exits
//! → {"cmd":"metrics"}                     ← every app's series, each with its `app` label
//! ```
//!
//! `status`, `logs`, `top`, `send` and `metrics` for one app go to that app's own master,
//! whose control socket `status` names (`socket`).

use serde::{Deserialize, Serialize};

use super::control::{BadRequest, Request, Status};

/// What the master of several apps is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppsCommand {
    /// A request of the one-app protocol: for the app named, or for all.
    Request(Request),
    /// `start`: an app stopped (or given up) is started again.
    Start,
}

/// A request to the master of several apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsRequest {
    /// The app meant; `None`: every app (or the master itself).
    pub app: Option<String>,
    pub command: AppsCommand,
}

/// The request on `line` (one JSON object).
pub fn parse_apps_request(line: &[u8]) -> Result<AppsRequest, BadRequest> {
    let invalid = |e: String| BadRequest::Invalid(e);
    let mut value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| invalid(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| invalid("a request is a JSON object".into()))?;
    let app = match object.remove("app") {
        None => None,
        Some(serde_json::Value::String(app)) => Some(app),
        Some(_) => return Err(invalid("`app` is the name of an app: a string".into())),
    };
    if object.get("cmd").and_then(|c| c.as_str()) == Some("start") {
        if object.len() != 1 {
            return Err(invalid("`start` takes only `app`".into()));
        }
        return match app {
            Some(_) => Ok(AppsRequest {
                app,
                command: AppsCommand::Start,
            }),
            None => Err(invalid("`start` names the app to start (`app`)".into())),
        };
    }
    let request = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    Ok(AppsRequest {
        app,
        command: AppsCommand::Request(request),
    })
}

/// `request` for `app` (or, for `start`, `None`), as a line to send.
pub fn request_line(app: Option<&str>, request: Option<&Request>) -> Vec<u8> {
    let mut value = match request {
        Some(r) => serde_json::to_value(r).expect("requests serialize"),
        None => serde_json::json!({"cmd": "start"}),
    };
    if let (Some(app), Some(object)) = (app, value.as_object_mut()) {
        object.insert("app".into(), app.into());
    }
    let mut line = serde_json::to_vec(&value).expect("JSON serializes");
    line.push(b'\n');
    line
}

/// One app, as the master of all answers `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    /// starting, running, restarting, stopping, stopped, given up.
    pub state: String,
    /// Its master's pid, while it runs.
    pub pid: Option<i32>,
    /// Times its master was started again after exiting unasked.
    pub restarts: u64,
    /// Why it was given up, or why its master did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Whether it listens (an app without `listen` serves no connection).
    pub listens: bool,
    /// Its master's control socket (`status`, `logs`, `top`, `send` of this app ask there).
    pub socket: std::path::PathBuf,
    /// Its master's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl AppStatus {
    /// Whether the app serves: a listening app needs a serving master; one that does not
    /// listen, a running one.
    pub fn readiness(&self) -> Result<String, String> {
        let name = crate::text::quoted(&self.name);
        match (&self.status, self.state.as_str()) {
            (Some(status), "running") if self.listens => status
                .readiness()
                .map(|ok| format!("{name}: {ok}"))
                .map_err(|e| format!("{name}: {e}")),
            (Some(status), "running") => Ok(format!("{name}: running (pid {})", status.pid)),
            (None, "running") => Err(format!(
                "{name}: its master did not answer: {}",
                self.why.as_deref().unwrap_or("no answer")
            )),
            (_, state) => Err(format!("{name}: {state}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_request_is_a_request_with_an_app() {
        let parsed = parse_apps_request(br#"{"cmd":"scale","workers":4,"app":"api"}"#).unwrap();
        assert_eq!(parsed.app.as_deref(), Some("api"));
        assert_eq!(
            parsed.command,
            AppsCommand::Request(Request::Scale { workers: 4 })
        );
        let line = request_line(Some("api"), Some(&Request::Scale { workers: 4 }));
        assert_eq!(parse_apps_request(&line).unwrap(), parsed, "round trip");
        let start = parse_apps_request(&request_line(Some("jobs"), None)).unwrap();
        assert_eq!(start.command, AppsCommand::Start);
        assert!(
            parse_apps_request(br#"{"cmd":"start"}"#).is_err(),
            "start names its app"
        );
        assert!(parse_apps_request(br#"{"cmd":"status","app":7}"#).is_err());
        assert!(parse_apps_request(b"[1]").is_err());
        assert_eq!(
            parse_apps_request(br#"{"cmd":"status"}"#).unwrap(),
            AppsRequest {
                app: None,
                command: AppsCommand::Request(Request::Status)
            }
        );
    }
}
