//! The control protocol: what `rrbalancer status|reload|scale|stop` send to a running master
//! over its control socket, and what it answers. One JSON object per line each way, one request
//! per connection:
//!
//! ```text
//! → {"cmd":"status"}              ← {"ok":true,"status":{…}}
//! → {"cmd":"reload"}              ← {"ok":true,"message":"reload complete: …"}  (new workers ready)
//! → {"cmd":"reload","wait":true}  ← the same, once the old workers have exited too
//! → {"cmd":"scale","workers":4}   ← {"ok":true,"message":"scaled from 2 to 4 worker(s)"}
//! → {"cmd":"stop"}                ← {"ok":true,"message":"stopping …"}, then EOF when it exits
//! → {"cmd":"stop","now":true}     ← the same, without (or cutting short) the drain
//! → {"cmd":"metrics"}             ← {"ok":true,"message":"# HELP rrbalancer_build_info …"}
//! → {"cmd":"upgrade"}             ← {"ok":true,"message":"upgraded: pid … serves …"}  (handed over)
//! → {"cmd":"upgrade","binary":"/usr/local/bin/rrbalancer.new"}
//! → {"cmd":"upgrade","wait":true}  ← the same answer, then EOF once the old master has exited
//! → {"cmd":"logs","lines":50,"slot":1} ← {"ok":true,"logs":[{"seq":7,"time_ms":…,"slot":1,…}]}
//! → {"cmd":"logs","lines":1000,"after":7} ← the lines after line 7 (`logs -f` asks this way)
//! ```
//!
//! A refused or failed request answers `{"ok":false,"message":"…why…"}`. A request is at most
//! [`MAX_REQUEST`] bytes; a client that closes its side after its request may leave out the
//! final newline (`printf '{"cmd":"status"}'`). A longer request is answered `request too long
//! (limit …)` — the master reads (and drops) the rest up to a bound so that the client reads
//! the answer, and a client whose write still fails (`EPIPE`) finds the answer in its socket.

use serde::{Deserialize, Serialize};

/// What [`Status::config`] starts with for a master whose worker program was named on its
/// command line (`rrbalancer -- node app.js`), no file.
pub const PROGRAM: &str = "-- ";

/// The longest message `rrbalancer send` (or a worker) may send: its JSON text, compact.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    /// `wait`: answer once the old workers have exited, not as soon as the new ones are ready.
    Reload {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
    },
    Scale {
        workers: usize,
    },
    /// `now`: without the drain `[shutdown] drain` asks for (or cutting one short).
    Stop {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        now: bool,
    },
    /// The metrics, in the Prometheus text format (the `message`).
    Metrics,
    /// Relay `message` to `to` (`all`, `agent` or a slot number), retained under `retain`.
    Send {
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retain: Option<String>,
        message: serde_json::Value,
    },
    /// The workers' recent captured output: the last `lines` of `slot` (or the agent's, or
    /// everyone's), after line `after` if given (`logs -f` asks again with the last it got).
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<usize>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        agent: bool,
        lines: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// In-place upgrade: start `binary` (default: the running master's own path) as a new
    /// master and hand over to it. Answered once it took over, or with why it did not.
    Upgrade {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<std::path::PathBuf>,
        /// Once handed over, keep the connection open until the old master has exited.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
    },
}

/// Longest request a master reads (a `send` of the longest message); anything longer is not
/// one of ours.
pub const MAX_REQUEST: usize = 65 * 1024;

/// Why what a client sent is not a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// No end of line within [`MAX_REQUEST`] bytes.
    #[error("request too long (limit {MAX_REQUEST} bytes: one JSON object on one line)")]
    TooLong,
    /// The line is not a request (not JSON, an unknown `cmd`, a missing field).
    #[error("{0}")]
    Invalid(String),
}

/// The request in what a client has sent so far: `None` while its line is incomplete (and
/// short enough to wait for), else the request or why it is not one. `ended`: the client closed
/// its side, so what it sent is all there is — a last line without its newline is a request
/// still (`echo -n`, `printf`), and nothing at all is `None`.
pub fn parse_request(input: &[u8], ended: bool) -> Option<Result<Request, BadRequest>> {
    let line = match input.iter().position(|&b| b == b'\n') {
        Some(end) if end <= MAX_REQUEST => &input[..end],
        Some(_) => return Some(Err(BadRequest::TooLong)),
        None if input.len() > MAX_REQUEST => return Some(Err(BadRequest::TooLong)),
        None if ended && !input.trim_ascii().is_empty() => input,
        None => return None,
    };
    Some(serde_json::from_slice(line).map_err(|e| BadRequest::Invalid(e.to_string())))
}

/// The master's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    /// The master's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `stop`: how long the master's stop may take from now (what is left of its drain, then
    /// `kill_timeout`), in milliseconds; the client waits that long at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_ms: Option<u64>,
    /// `stop`: the master began its `[shutdown] drain`, this long, before the graceful stop
    /// (the client says so at once rather than when it is over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `logs`: the lines, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<LogLine>>,
    /// `status` of the master of several apps: every app, in the file's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apps: Option<Vec<super::apps_control::AppStatus>>,
}

/// One line of a worker's captured output, as `logs` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its number over all workers, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The slot; `None` for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    pub pid: i32,
    pub stream: String,
    pub line: String,
    /// The app, in the lines of every app a master of several gives (`logs` without `--app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

impl Reply {
    pub fn ok(message: String) -> Reply {
        Reply {
            ok: true,
            pid: None,
            message: Some(message),
            within_ms: None,
            drain_ms: None,
            status: None,
            logs: None,
            apps: None,
        }
    }

    pub fn error(message: String) -> Reply {
        Reply {
            ok: false,
            pid: None,
            message: Some(message),
            within_ms: None,
            drain_ms: None,
            status: None,
            logs: None,
            apps: None,
        }
    }

    pub fn status(status: Status) -> Reply {
        Reply {
            ok: true,
            pid: None,
            message: None,
            within_ms: None,
            drain_ms: None,
            status: Some(status),
            logs: None,
            apps: None,
        }
    }

    pub fn logs(lines: Vec<LogLine>) -> Reply {
        Reply {
            ok: true,
            pid: None,
            message: None,
            within_ms: None,
            drain_ms: None,
            status: None,
            logs: Some(lines),
            apps: None,
        }
    }
}

impl From<Result<String, String>> for Reply {
    fn from(outcome: Result<String, String>) -> Reply {
        match outcome {
            Ok(message) => Reply::ok(message),
            Err(message) => Reply::error(message),
        }
    }
}

/// The state of the master and its workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: i32,
    pub version: String,
    /// The configuration file; or, for a master started with a program on its command line
    /// and no file, [`PROGRAM`] and that program (`-- node app.js`); `None`: the embedded
    /// default.
    pub config: Option<String>,
    /// The `[env.<name>]` block applied (`--env`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub sched_policy: String,
    pub listeners: Vec<String>,
    pub workers_wanted: usize,
    pub stopping: bool,
    /// A graceful stop is draining (`[shutdown] drain`): how many milliseconds of it are left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_left_ms: Option<u64>,
    pub reload_in_progress: bool,
    /// The worker being recycled and why (`[recycle]`), if one is.
    #[serde(default)]
    pub recycling: Option<String>,
    /// An in-place upgrade this master started, and where it stands, if one is under way.
    #[serde(default)]
    pub upgrade: Option<String>,
    /// Every live worker process, including those on their way out.
    pub workers: Vec<WorkerStatus>,
    /// Slots with no serving worker right now (restarting, given up).
    pub empty_slots: Vec<SlotStatus>,
    /// `[agent]`, if one is configured.
    #[serde(default)]
    pub agent: Option<AgentStatus>,
}

impl Status {
    /// The workers ready in their slots (not a reload's candidates, not retiring ones).
    pub fn ready_workers(&self) -> impl Iterator<Item = &WorkerStatus> {
        (self.workers.iter()).filter(|w| w.role == "current" && w.state.starts_with("ready"))
    }

    /// Whether the master serves (`status --ready`): at least one worker ready in its slot, and not
    /// stopping. The line to print either way.
    pub fn readiness(&self) -> Result<String, String> {
        let s = self;
        let ready = s.ready_workers().count();
        let wanted = s.workers_wanted;
        if s.stopping {
            Err(format!("not ready: pid {} is stopping", s.pid))
        } else if let Some(ms) = s.drain_left_ms {
            Err(format!(
                "not ready: pid {} is draining before it stops ({:.1}s left)",
                s.pid,
                ms as f64 / 1000.0
            ))
        } else if ready == 0 {
            Err(format!(
                "not ready: 0/{wanted} workers ready (pid {})",
                s.pid
            ))
        } else {
            Ok(format!(
                "ready: {ready}/{wanted} workers ready (pid {})",
                s.pid
            ))
        }
    }
}

/// The agent: its current process, if one runs, and its place's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    /// starting, ready, restarting in …, given up, stopping.
    pub state: String,
    pub pid: Option<i32>,
    pub uptime_secs: Option<f64>,
    pub restarts: u64,
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    /// Why its recent processes exited, oldest first.
    pub last_causes: Vec<String>,
    /// Its other processes still alive: a reload's candidate, or one finishing.
    pub others: Vec<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub slot: usize,
    pub pid: i32,
    /// starting, ready, ready (candidate), draining, stuck (killed: no ack within
    /// `ack_timeout`).
    pub state: String,
    /// current (serves its slot), candidate (a reload's successor), retiring.
    pub role: String,
    pub uptime_secs: f64,
    /// Restarts of its slot so far.
    pub restarts: u64,
    /// Workers of its slot recycled so far (`[recycle]`), apart from restarts.
    #[serde(default)]
    pub recycled: u64,
    /// Its resident memory: its process group's when last measured (with `[recycle]
    /// max_memory`), else its own process's now.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// CPU time its process has used (user and system), when readable.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Connections sent to it per second over the last 10 whole seconds (rr mode; none in its
    /// first second).
    #[serde(default)]
    pub conn_per_sec: Option<f64>,
    /// Connections handed to it.
    pub handed: u64,
    /// Connections sent and not yet acknowledged.
    pub unacked: usize,
    /// How long the oldest of them has waited for its ack.
    #[serde(default)]
    pub oldest_unacked_secs: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: usize,
    pub state: String,
    pub restarts: u64,
    pub last_causes: Vec<String>,
}

#[cfg(test)]
mod request_tests {
    use super::*;

    #[test]
    fn a_request_is_one_json_line_and_nothing_else_is() {
        assert_eq!(
            parse_request(b"{\"cmd\":\"stat", false),
            None,
            "incomplete: wait"
        );
        assert_eq!(
            parse_request(b"{\"cmd\":\"scale\",\"workers\":3}\n", false),
            Some(Ok(Request::Scale { workers: 3 }))
        );
        assert!(matches!(
            parse_request(b"{\"cmd\":\"rm\"}\n", false),
            Some(Err(BadRequest::Invalid(_)))
        ));
        assert!(matches!(
            parse_request(b"\xff\n", false),
            Some(Err(BadRequest::Invalid(_)))
        ));
    }

    #[test]
    fn a_last_line_without_its_newline_is_read_once_the_client_has_closed() {
        let status = b"{\"cmd\":\"status\"}";
        assert_eq!(parse_request(status, false), None, "more may come");
        assert_eq!(parse_request(status, true), Some(Ok(Request::Status)));
        assert!(matches!(
            parse_request(b"{\"cmd\":\"stat", true),
            Some(Err(BadRequest::Invalid(_)))
        ));
        // Nothing sent: nothing to answer.
        assert_eq!(parse_request(b"", true), None);
        assert!(matches!(
            parse_request(b" \r\n", false),
            Some(Err(BadRequest::Invalid(_)))
        ));
        assert_eq!(parse_request(b"  ", true), None);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_too_long_wherever_its_newline_is() {
        let long = vec![b' '; MAX_REQUEST + 1];
        assert_eq!(parse_request(&long, false), Some(Err(BadRequest::TooLong)));
        assert_eq!(parse_request(&long, true), Some(Err(BadRequest::TooLong)));
        let mut late = long.clone();
        late.push(b'\n');
        assert_eq!(parse_request(&late, false), Some(Err(BadRequest::TooLong)));
        // At the limit exactly: still a line (here not a request).
        let mut edge = vec![b' '; MAX_REQUEST];
        edge.push(b'\n');
        assert!(matches!(
            parse_request(&edge, false),
            Some(Err(BadRequest::Invalid(_)))
        ));
        assert!(
            BadRequest::TooLong
                .to_string()
                .starts_with(&format!("request too long (limit {MAX_REQUEST} bytes"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let scale: Request = serde_json::from_str(r#"{"cmd":"scale","workers":4}"#).unwrap();
        assert_eq!(scale, Request::Scale { workers: 4 });
        assert_eq!(
            serde_json::to_string(&Request::Reload { wait: false }).unwrap(),
            r#"{"cmd":"reload"}"#
        );
        let wait: Request = serde_json::from_str(r#"{"cmd":"reload","wait":true}"#).unwrap();
        assert_eq!(wait, Request::Reload { wait: true });
        let plain: Request = serde_json::from_str(r#"{"cmd":"reload"}"#).unwrap();
        assert_eq!(plain, Request::Reload { wait: false });
        assert_eq!(
            serde_json::to_string(&Request::Upgrade {
                binary: None,
                wait: false
            })
            .unwrap(),
            r#"{"cmd":"upgrade"}"#
        );
        let to: Request =
            serde_json::from_str(r#"{"cmd":"upgrade","binary":"/opt/rrb/new"}"#).unwrap();
        assert_eq!(
            to,
            Request::Upgrade {
                binary: Some("/opt/rrb/new".into()),
                wait: false
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"rm -rf"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"scale"}"#).is_err());
    }

    #[test]
    fn a_refusal_carries_its_reason() {
        let reply: Reply = Err::<String, String>("busy".into()).into();
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"ok":false,"message":"busy"}"#
        );
    }
}
