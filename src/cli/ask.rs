//! Asking a running master: which one (`--control`, `--config`, or the one found in the runtime
//! directory), what (`status`, `reload`, `scale`, `stop`, `send`, `metrics`, `top`, `upgrade`),
//! and the answer printed with the exit code it means.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::client::{self, ClientError};
use super::{Cli, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, apps, top};
use crate::config;
use crate::wire::control::Request;

/// What `status`, `reload`, `scale` and `stop` ask of a running master.
pub(super) enum Ask {
    Status {
        json: bool,
        /// Exit 1 unless the master serves.
        ready: bool,
    },
    /// `now`: without the drain.
    Stop { now: bool },
    /// `reload`, `scale`, `upgrade`: answered with a message once done.
    Request(Request),
    /// `upgrade --wait`: answered, then the connection stays open until the master exits.
    UntilExit(Request),
    /// `top`: the live view.
    Top { iterations: Option<u64> },
    /// `reload APP`, `scale APP N`, `start APP` (`request` `None`): asked of the master of
    /// several apps.
    ForApp {
        app: String,
        request: Option<Request>,
    },
    /// `stop APP`.
    StopApp { app: String, now: bool },
    /// `logs`: the workers' recent output, followed with `follow`.
    Logs {
        slot: Option<usize>,
        agent: bool,
        lines: usize,
        follow: bool,
    },
}

/// Where the master asked is, or what was done instead of asking one.
enum Found {
    /// Its control socket, and its `kill_timeout` where its file says.
    At(PathBuf, Option<Duration>),
    /// Nothing to ask (no master, or several answered already): exit with this.
    Done(ExitCode),
}

/// `status`, `reload`, `scale`, `stop` …: ask the running master, print its answer.
pub(super) fn control_command(cli: &Cli, ask: Ask) -> ExitCode {
    warn_of_ignored_flags(cli);
    let (socket, kill_timeout) = match find_master(cli, &ask) {
        Found::At(socket, kill_timeout) => (socket, kill_timeout),
        Found::Done(code) => return code,
    };
    // --app: that app's own master, of the master of several apps.
    let socket = match (&cli.app, &ask) {
        (Some(app), Ask::Status { .. } | Ask::Top { .. } | Ask::Logs { .. } | Ask::Request(_)) => {
            match apps::app_socket(&socket, app) {
                Ok(socket) => socket,
                // No master of all: the app may run alone (`run --app`), at its own place.
                Err(ClientError::NotRunning(_)) if apps::alone(&socket, app).exists() => {
                    apps::alone(&socket, app)
                }
                Err(e) => {
                    eprintln!("rrbalancer: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
        }
        _ => socket,
    };
    // `stop APP`, `reload APP`, `scale APP N` with no master of all: to the app run alone.
    let alone = match &ask {
        Ask::StopApp { app, .. } | Ask::ForApp { app, .. } if !socket.exists() => {
            Some(apps::alone(&socket, app)).filter(|s| s.exists())
        }
        _ => None,
    };
    let (socket, ask) = match (alone, ask) {
        (Some(alone), Ask::StopApp { now, .. }) => (alone, Ask::Stop { now }),
        (
            Some(alone),
            Ask::ForApp {
                request: Some(request),
                ..
            },
        ) => (alone, Ask::Request(request)),
        (_, ask) => (socket, ask),
    };
    // A reload replaces every worker, each within its ready_timeout (and with --wait the old
    // ones within kill_timeout); be generous.
    let long = Duration::from_secs(600) + kill_timeout.unwrap_or_default();
    let outcome = match ask {
        Ask::Status { json, ready } => status(&socket, json, ready, long),
        Ask::Stop { now } => {
            let wait = kill_timeout.map_or(long, |t| t + Duration::from_secs(10));
            let request = Request::Stop { now };
            client::until_exit(&socket, &request, wait).map(|m| format!("{m}; stopped"))
        }
        Ask::ForApp { app, request } => apps::ask_for_app(&socket, &app, request.as_ref(), long),
        Ask::StopApp { app, now } => apps::stop_app(&socket, &app, now, long),
        Ask::UntilExit(request) => {
            client::until_exit(&socket, &request, long).map(|m| format!("{m}; it has exited"))
        }
        Ask::Top { iterations } => top::run(&socket, iterations).map(|()| String::new()),
        Ask::Logs {
            slot,
            agent,
            lines,
            follow,
        } => client::logs(&socket, slot, agent, lines, follow).map(|()| String::new()),
        Ask::Request(request) => client::request(&socket, &request, long).and_then(|reply| {
            let message = reply.message.unwrap_or_default();
            if reply.ok {
                Ok(message)
            } else {
                Err(ClientError::Refused(message))
            }
        }),
    };
    match outcome {
        Ok(text) => {
            if !text.is_empty() {
                let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            }
            ExitCode::from(EXIT_OK)
        }
        // `status --ready --json`: the JSON as ever, on stdout; the exit says not ready.
        Err(ClientError::NotReady { text, json: true }) => {
            let _ = writeln!(std::io::stdout(), "{}", text.trim_end());
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("rrbalancer: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Flags that shape a master being started mean nothing to one that runs: say so rather than
/// seem to obey.
fn warn_of_ignored_flags(cli: &Cli) {
    for (given, flag) in [
        (
            cli.workers.is_some(),
            "--workers (for a running master: `rrbalancer scale N`)",
        ),
        (!cli.listen.is_empty(), "--listen"),
        (cli.sched_policy.is_some(), "--sched-policy"),
        (cli.env.is_some(), "--env"),
    ] {
        if given {
            eprintln!(
                "rrbalancer: {flag} is ignored here: it applies to run, start and check (a \
                 running master keeps what it was started with)"
            );
        }
    }
}

/// The `--env` the master at `--control` or `--config` runs with, if it answers and has one
/// (`restart` keeps it).
pub(super) fn running_environment(cli: &Cli) -> Option<String> {
    let socket = match (&cli.control, &cli.config) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => config::load_control(path).ok()?.0.socket,
        (None, None) => return None,
    };
    let reply = client::request(&socket, &Request::Status, Duration::from_secs(5)).ok()?;
    reply.status?.environment
}

/// The master to ask: at `--control`, where `--config`'s file puts it, or the one running for
/// this user.
fn find_master(cli: &Cli, ask: &Ask) -> Found {
    match (&cli.control, &cli.config) {
        (Some(path), _) => Found::At(path.clone(), None),
        (None, Some(path)) => match config::load_control(path) {
            Ok((control, kill_timeout)) => Found::At(control.socket, Some(kill_timeout)),
            // The file exists but does not read (edited since the master started): the master
            // is still where the file's name puts it, unless `[control]` moved it.
            Err(e) if path.is_file() => {
                let (_, socket) = config::default_control_paths(path.to_str());
                eprintln!(
                    "rrbalancer: {e}\nrrbalancer: trying the control socket named after the \
                     file, {} (--control PATH names another)",
                    socket.display()
                );
                Found::At(socket, None)
            }
            Err(e) => {
                eprintln!("rrbalancer: {e}");
                Found::Done(ExitCode::from(EXIT_USAGE))
            }
        },
        // No file named: the one master running for this user, whatever started it.
        (None, None) => match client::discover(&config::default_runtime_dir()) {
            Ok(found) => {
                if !matches!(ask, Ask::Status { .. }) {
                    eprintln!("rrbalancer: the running master:{found}");
                }
                Found::At(found.socket, None)
            }
            // Several, and JSON asked for: the status of each, for a script to choose.
            Err(ClientError::Several(found)) if matches!(ask, Ask::Status { json: true, .. }) => {
                let all: Vec<_> = found
                    .iter()
                    .filter_map(|f| {
                        let wait = Duration::from_secs(2);
                        client::request(&f.socket, &Request::Status, wait)
                            .ok()?
                            .status
                    })
                    .collect();
                let text = serde_json::to_string_pretty(&all).expect("status serializes");
                let _ = writeln!(std::io::stdout(), "{text}");
                Found::Done(ExitCode::from(EXIT_OK))
            }
            Err(e) => {
                eprintln!("rrbalancer: {e}");
                Found::Done(ExitCode::from(EXIT_RUNTIME))
            }
        },
    }
}

/// `status`: the table, JSON, or (`--ready`) one line and an error unless the master serves.
fn status(
    socket: &std::path::Path,
    json: bool,
    ready: bool,
    wait: Duration,
) -> Result<String, ClientError> {
    let reply = client::request(socket, &Request::Status, wait)?;
    if let Some(all) = reply.apps.filter(|_| reply.ok) {
        let serving = apps::readiness(&all);
        let text = if json {
            serde_json::to_string_pretty(&all).expect("status serializes")
        } else if ready {
            serving.clone().unwrap_or_else(|e| e)
        } else {
            apps::format_apps(&all)
        };
        return match serving {
            Err(_) if ready => Err(ClientError::NotReady { text, json }),
            _ => Ok(text),
        };
    }
    let Some(status) = reply.status.filter(|_| reply.ok) else {
        return Err(ClientError::Refused(reply.message.unwrap_or_default()));
    };
    let serving = status.readiness();
    let text: String = if json {
        serde_json::to_string_pretty(&status).expect("status serializes")
    } else if ready {
        match &serving {
            Ok(line) | Err(line) => line.clone(),
        }
    } else {
        client::format_status(&status)
    };
    match serving {
        Err(_) if ready => Err(ClientError::NotReady { text, json }),
        _ => Ok(text),
    }
}
