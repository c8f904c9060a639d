//! rrbalancer: the master process of a pre-fork server, for workers in any language.
//!
//! The master owns the listening sockets. In `rr` mode it accepts every connection without
//! reading it and passes the socket itself (`SCM_RIGHTS` over a per-worker Unix channel) to the
//! next worker in rotation among those free to take it now, keeping its copy until the worker
//! acks, so a worker's death loses no connection. In `none` mode every worker inherits the
//! listeners (systemd socket activation) and accepts itself. Either way the master supervises the workers: starts them,
//! restarts them within limits, stops them gracefully, and never leaves one behind.
//!
//! As a library it offers what workers use: [`worker`] (the channel, acks, the listeners of
//! `none` mode) and [`protocol`] (the wire format both sides speak). The binary calls [`main`].
//!
//! The layout follows the architecture:
//!
//! - `cli` → `config` → `master` (the event loop: listeners, the hand-off ledger, dispatch,
//!   channels and their wires, fleet, restart policy, reload and scaling, control socket,
//!   captured output, signals);
//! - `wire`: every byte format and environment name that crosses a process boundary, used by
//!   both sides: [`protocol`] (the worker channel), `node_ipc` (Node's), `control` (what
//!   `status`/`reload`/`scale`/`stop` send to a running master; `client` sends it and shows the
//!   answer), `upgrade` (master to master), `env`;
//! - [`worker`]: the library a Rust worker uses; `demo_worker` is one;
//! - `sys`: every `unsafe` block and raw fd.

mod cli;
mod client;
mod config;
mod demo_worker;
mod logging;
mod master;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use master::fuzz;
mod sys;
mod text;
mod top;
mod wire;
pub mod worker;

pub use wire::protocol;

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use cli::{Cli, Command};
use wire::control;

/// Exit code for a clean stop.
const EXIT_OK: u8 = 0;
/// Exit code for a failure at run time (a port in use, every worker given up).
const EXIT_RUNTIME: u8 = 1;
/// Exit code for a usage or configuration error.
const EXIT_USAGE: u8 = 2;

/// The `rrbalancer` binary: parses the command line, sets up logging, runs what it asks for;
/// returns the process exit code.
pub fn main() -> ExitCode {
    logging::init();
    run(<Cli as clap::Parser>::parse())
}

/// Runs what the command line asks for; returns the process exit code.
fn run(mut cli: Cli) -> ExitCode {
    match cli.command.take() {
        Some(Command::DemoWorker(args)) => match demo_worker::run(args) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                log::error!("demo worker: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Some(Command::Check) => match load_config(&cli) {
            Ok(config) => {
                let _ = write!(std::io::stdout(), "{}", config.to_toml());
                ExitCode::from(EXIT_OK)
            }
            Err(code) => code,
        },
        Some(Command::Run) | None => serve(&cli, false),
        Some(Command::Start { daemon }) => serve(&cli, daemon),
        Some(Command::Status { json, ready }) => control_command(&cli, Ask::Status { json, ready }),
        Some(Command::Reload { wait }) => {
            control_command(&cli, Ask::Request(control::Request::Reload { wait }))
        }
        Some(Command::Scale { count }) => control_command(
            &cli,
            Ask::Request(control::Request::Scale { workers: count }),
        ),
        Some(Command::Stop) => control_command(&cli, Ask::Stop),
        Some(Command::Send {
            slot,
            agent,
            retain,
            text,
            ref message,
        }) => {
            let message = if text {
                serde_json::Value::String(message.clone())
            } else {
                match serde_json::from_str(message) {
                    Ok(value) => value,
                    Err(e) => {
                        eprintln!(
                            "rrbalancer send: MESSAGE is not JSON ({e}); to send it as text, use \
                             --text"
                        );
                        return ExitCode::from(EXIT_USAGE);
                    }
                }
            };
            let to = match (slot, agent) {
                (Some(slot), _) => slot.to_string(),
                (None, true) => "agent".into(),
                (None, false) => "all".into(),
            };
            let request = control::Request::Send {
                to,
                retain,
                message,
            };
            control_command(&cli, Ask::Request(request))
        }
        Some(Command::Metrics) => control_command(&cli, Ask::Request(control::Request::Metrics)),
        Some(Command::Top { iterations }) => control_command(&cli, Ask::Top { iterations }),
        Some(Command::Upgrade { binary, wait }) => {
            // The master may run elsewhere (`start --daemon`): the path must not depend on our
            // working directory.
            let binary = binary.map(|b| std::path::absolute(&b).unwrap_or(b));
            let request = control::Request::Upgrade { binary, wait };
            if wait {
                control_command(&cli, Ask::UntilExit(request))
            } else {
                control_command(&cli, Ask::Request(request))
            }
        }
    }
}

/// Runs the master, in the foreground or detached. Started by an upgrade, it takes over from
/// the old master instead (and does not detach again: it is detached already, or not).
fn serve(cli: &Cli, daemon: bool) -> ExitCode {
    let predecessor = match master::Predecessor::from_env() {
        Ok(p) => p,
        Err(e) => {
            log::error!("upgrade: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let reporter = predecessor.as_ref().map(master::Predecessor::reporter);
    let mut config = match load_config_or_why(cli) {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            if let Some(reporter) = reporter {
                reporter.fail(&format!("its configuration does not load: {e}"));
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    logging::set_format(config.log.format);
    let upgrading = predecessor.is_some();
    if daemon && config.log.master_log.is_none() {
        config.log.master_log = Some(config.control.pid_file.with_extension("log"));
    }
    // Where a fatal error is shown besides the log: the terminal we were started from.
    let mut report: Option<Box<dyn std::io::Write>> = None;
    if daemon && upgrading {
        // Detached already: our stderr is the log the old master writes to.
        let path = config.log.master_log.clone().expect("set above");
        if let Err(e) = master::redirect_stderr(&path) {
            log::error!("cannot open the log file (key `log.master_log`): {e}");
            if let Some(reporter) = &reporter {
                reporter.fail(&format!(
                    "cannot open the log file (key `log.master_log`): {e}"
                ));
            }
            return ExitCode::from(EXIT_RUNTIME);
        }
    } else if daemon {
        let log_path = config.log.master_log.clone().expect("set above");
        // Beside the pid file by default: that directory is made private before anything in it.
        if let Err(e) = master::create_private_dir(&config.control.pid_file) {
            log::error!("{e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
        let log = match master::open_log(&log_path) {
            Ok(log) => log,
            Err(e) => {
                log::error!("cannot open the log file (key `log.master_log`): {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        match sys::daemonize(&log) {
            Ok(sys::Daemon::Parent { child, report }) => {
                return wait_for_daemon(child, report, &log_path);
            }
            Ok(sys::Daemon::Child { report: pipe }) => report = Some(Box::new(pipe)),
            Err(e) => {
                log::error!("cannot detach: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        }
    } else if let Some(path) = &config.log.master_log {
        let terminal = std::io::stderr().as_fd().try_clone_to_owned().ok();
        eprintln!("rrbalancer: logging to {}", path.display());
        if let Err(e) = master::redirect_stderr(path) {
            log::error!("cannot open the log file (key `log.master_log`): {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
        report = terminal.map(|fd| Box::new(std::fs::File::from(fd)) as Box<dyn std::io::Write>);
    }
    let loader = {
        let path = cli.config.clone();
        let overrides = overrides(cli);
        Box::new(move || config::load(path.as_deref(), &overrides).map_err(|e| e.to_string()))
    };
    let mut started = |listening: &[String]| {
        if daemon {
            if let Some(mut out) = report.take() {
                let _ = writeln!(out, "ok {} {}", std::process::id(), listening.join(" "));
            }
        }
    };
    let result = master::run(config, loader, &mut started, predecessor);
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            let code = if matches!(e, master::MasterError::Inherited(_)) {
                EXIT_USAGE
            } else {
                EXIT_RUNTIME
            };
            let text = e.to_string();
            log::error!("{text}");
            if let Some(mut out) = report.take() {
                let prefix = if daemon { "err " } else { "rrbalancer: " };
                let _ = writeln!(out, "{prefix}{text}");
            }
            ExitCode::from(code)
        }
    }
}

/// The original process of `start --daemon`: wait for the detached master's report.
fn wait_for_daemon(child: i32, report: std::fs::File, log: &std::path::Path) -> ExitCode {
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(report), &mut line);
    if let Some(rest) = line.trim_end().strip_prefix("ok ") {
        let (pid, listening) = rest.split_once(' ').unwrap_or((rest, ""));
        println!(
            "rrbalancer started in the background: pid {pid}, listening on {listening}; log: {}",
            log.display()
        );
        ExitCode::from(EXIT_OK)
    } else if let Some(reason) = line.trim_end().strip_prefix("err ") {
        eprintln!("rrbalancer: cannot start: {reason}");
        ExitCode::from(EXIT_RUNTIME)
    } else {
        eprintln!(
            "rrbalancer: the background master (pid {child}) exited during start-up; see {}",
            log.display()
        );
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// What `status`, `reload`, `scale` and `stop` ask of a running master.
enum Ask {
    Status {
        json: bool,
        /// Exit 1 unless the master serves.
        ready: bool,
    },
    Stop,
    /// `reload`, `scale`, `upgrade`: answered with a message once done.
    Request(control::Request),
    /// `upgrade --wait`: answered, then the connection stays open until the master exits.
    UntilExit(control::Request),
    /// `top`: the live view.
    Top {
        iterations: Option<u64>,
    },
}

/// `status`, `reload`, `scale`, `stop`: ask the running master.
fn control_command(cli: &Cli, ask: Ask) -> ExitCode {
    // Flags that shape a master being started mean nothing to one that runs: say so rather
    // than seem to obey.
    for (given, flag) in [
        (
            cli.workers.is_some(),
            "--workers (for a running master: `rrbalancer scale N`)",
        ),
        (!cli.listen.is_empty(), "--listen"),
        (cli.sched_policy.is_some(), "--sched-policy"),
    ] {
        if given {
            eprintln!(
                "rrbalancer: {flag} is ignored here: it applies to run, start and check (a \
                 running master keeps what it was started with)"
            );
        }
    }
    let (socket, kill_timeout) = match (&cli.control, &cli.config) {
        (Some(path), _) => (path.clone(), None),
        (None, Some(path)) => match config::load_control(path) {
            Ok((control, kill_timeout)) => (control.socket, Some(kill_timeout)),
            // The file exists but does not read (edited since the master started): the master
            // is still where the file's name puts it, unless `[control]` moved it.
            Err(e) if path.is_file() => {
                let (_, socket) = config::default_control_paths(path.to_str());
                eprintln!(
                    "rrbalancer: {e}\nrrbalancer: trying the control socket named after the \
                     file, {} (--control PATH names another)",
                    socket.display()
                );
                (socket, None)
            }
            Err(e) => {
                eprintln!("rrbalancer: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        // No file named: the one master running for this user, whatever started it.
        (None, None) => match client::discover(&config::default_runtime_dir()) {
            Ok(found) => {
                if !matches!(ask, Ask::Status { .. }) {
                    eprintln!("rrbalancer: the running master:{found}");
                }
                (found.socket, None)
            }
            // Several, and JSON asked for: the status of each, for a script to choose.
            Err(client::ClientError::Several(found))
                if matches!(ask, Ask::Status { json: true, .. }) =>
            {
                let all: Vec<_> = found
                    .iter()
                    .filter_map(|f| {
                        let wait = std::time::Duration::from_secs(2);
                        client::request(&f.socket, &control::Request::Status, wait)
                            .ok()?
                            .status
                    })
                    .collect();
                let text = serde_json::to_string_pretty(&all).expect("status serializes");
                let _ = writeln!(std::io::stdout(), "{text}");
                return ExitCode::from(EXIT_OK);
            }
            Err(e) => {
                eprintln!("rrbalancer: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        },
    };
    // A reload replaces every worker, each within its ready_timeout (and with --wait the old
    // ones within kill_timeout); be generous.
    let long = std::time::Duration::from_secs(600) + kill_timeout.unwrap_or_default();
    let outcome = match ask {
        Ask::Status { json, ready } => client::request(&socket, &control::Request::Status, long)
            .and_then(|reply| {
                let Some(status) = reply.status.filter(|_| reply.ok) else {
                    return Err(client::ClientError::Refused(
                        reply.message.unwrap_or_default(),
                    ));
                };
                let serving = client::readiness(&status);
                let text = if json {
                    serde_json::to_string_pretty(&status).expect("status serializes")
                } else if ready {
                    match &serving {
                        Ok(line) | Err(line) => line.clone(),
                    }
                } else {
                    client::format_status(&status)
                };
                match serving {
                    Err(_) if ready => Err(client::ClientError::NotReady(text)),
                    _ => Ok(text),
                }
            }),
        Ask::Stop => {
            let wait = kill_timeout.map_or(long, |t| t + std::time::Duration::from_secs(10));
            client::until_exit(&socket, &control::Request::Stop, wait)
                .map(|m| format!("{m}; stopped"))
        }
        Ask::UntilExit(request) => {
            client::until_exit(&socket, &request, long).map(|m| format!("{m}; it has exited"))
        }
        Ask::Top { iterations } => top::run(&socket, iterations).map(|()| String::new()),
        Ask::Request(request) => client::request(&socket, &request, long).and_then(|reply| {
            let message = reply.message.unwrap_or_default();
            if reply.ok {
                Ok(message)
            } else {
                Err(client::ClientError::Refused(message))
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
        Err(e) => {
            eprintln!("rrbalancer: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn overrides(cli: &Cli) -> config::Overrides {
    config::Overrides {
        sched_policy: cli.sched_policy,
        rrb_env_policy: std::env::var(wire::env::SCHED_POLICY).ok(),
        node_env_policy: std::env::var(wire::env::NODE_SCHED_POLICY).ok(),
        workers: cli.workers,
        listen: cli.listen.clone(),
    }
}

fn load_config(cli: &Cli) -> Result<config::Config, ExitCode> {
    load_config_or_why(cli).map_err(|e| {
        log::error!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// The configuration (its warnings logged), or why it does not load.
fn load_config_or_why(cli: &Cli) -> Result<config::Config, String> {
    let config = config::load(cli.config.as_deref(), &overrides(cli)).map_err(|e| e.to_string())?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    Ok(config)
}
