//! The binary's side of rrbalancer: the command line ([`flags`]) and what each command does —
//! `run`/`start` serve ([`serve`]); `status`, `reload`, `scale`, `stop`, `send`, `metrics`,
//! `top`, `upgrade` ask a running master over its control socket ([`ask`], with [`client`]
//! speaking the control protocol and [`top`] the live view). `check` prints the effective
//! configuration. Imports `config`, `master`, `wire`; nothing imports it but `lib.rs`.

mod apps;
mod ask;
mod client;
mod flags;
mod serve;
mod serve_apps;
mod top;

use std::io::Write;
use std::process::ExitCode;

pub use flags::Cli;
use flags::Command;
use flags::ProtocolChoice;

use crate::wire::control;
use crate::{config, demo, wire};
use ask::{Ask, control_command};
use serve::serve;

/// Exit code for a clean stop.
const EXIT_OK: u8 = 0;
/// Exit code for a failure at run time (a port in use, every worker given up).
const EXIT_RUNTIME: u8 = 1;
/// Exit code for a usage or configuration error.
const EXIT_USAGE: u8 = 2;

/// Parses the command line and runs it; returns the process exit code.
pub fn main() -> ExitCode {
    match flags::demo_worker_args() {
        Some(args) => demo_worker(args),
        None => run(<Cli as clap::Parser>::parse()),
    }
}

fn demo_worker(args: demo::DemoArgs) -> ExitCode {
    match demo::run(args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            log::error!("demo worker: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// `restart`: stop what runs, then start it again in the background.
fn restart(mut cli: Cli, now: bool) -> ExitCode {
    // Named by nothing: start again what runs — its file; a program named on its
    // command line must be named again (its flags are not known here).
    if cli.config.is_none() && cli.program.is_empty() && cli.control.is_none() {
        let running = client::discover(&config::default_runtime_dir()).ok();
        if let Some(config) = running.and_then(|f| f.config) {
            if let Some(program) = config.strip_prefix(control::PROGRAM) {
                eprintln!(
                    "rrbalancer restart: the running master runs `{program}` from its command \
                     line; name it again: rrbalancer restart [FLAGS] {config}"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            cli.config = Some(config.into());
        }
    }
    // The environment it runs in stays, unless another is named.
    if cli.env.is_none() {
        cli.env = ask::running_environment(&cli);
        if let Some(name) = &cli.env {
            eprintln!(
                "rrbalancer restart: keeping the running master's environment: --env {}",
                crate::text::quoted(name)
            );
        }
    }
    // The flags that shape a master are for the one started next, not the one stopped.
    let (workers, listen, policy, env) = (
        cli.workers.take(),
        std::mem::take(&mut cli.listen),
        cli.sched_policy.take(),
        cli.env.take(),
    );
    let stopped = control_command(&cli, Ask::Stop { now });
    (cli.workers, cli.listen, cli.sched_policy, cli.env) = (workers, listen, policy, env);
    // With no file named, a failed stop (none running, several) leaves nothing to
    // restart; with one, the pid file refuses a second master if the first still runs.
    if stopped != ExitCode::from(EXIT_OK) && cli.config.is_none() {
        return stopped;
    }
    serve(&cli, true)
}

/// Runs what the command line asks for; returns the process exit code.
pub fn run(mut cli: Cli) -> ExitCode {
    match cli.command.take() {
        Some(Command::DemoWorker(args)) => demo_worker(args),
        Some(Command::Check) => check(&cli),
        Some(Command::Run) | None if apps::master_of_all_runs(&cli) => {
            let app = cli.app.as_deref().unwrap_or_default();
            eprintln!(
                "rrbalancer: the master of this file's apps runs: `rrbalancer start {app}` starts \
                 {app} in it (`run --app` runs an app alone, without it)"
            );
            ExitCode::from(EXIT_RUNTIME)
        }
        Some(Command::Run) | None => serve(&cli, false),
        Some(Command::Start {
            app_name: Some(app),
            ..
        }) => control_command(&cli, Ask::ForApp { app, request: None }),
        // `start --app NAME` where the master of all runs this file: start it there.
        Some(Command::Start { .. }) if apps::master_of_all_runs(&cli) => {
            let app = cli.app.clone().expect("checked");
            control_command(&cli, Ask::ForApp { app, request: None })
        }
        Some(Command::Start { daemon, .. }) => serve(&cli, daemon),
        Some(Command::Status { json, ready }) => control_command(&cli, Ask::Status { json, ready }),
        Some(Command::Reload { app_name, wait }) => {
            let request = control::Request::Reload { wait };
            match app_name.or_else(|| cli.app.clone()) {
                Some(app) => control_command(
                    &cli,
                    Ask::ForApp {
                        app,
                        request: Some(request),
                    },
                ),
                None => control_command(&cli, Ask::Request(request)),
            }
        }
        Some(Command::Scale { ref args }) => scale(&cli, args),
        Some(Command::Logs {
            slot,
            agent,
            lines,
            follow,
        }) => control_command(
            &cli,
            Ask::Logs {
                slot,
                agent,
                lines,
                follow,
            },
        ),
        Some(Command::Stop { app_name, now }) => match app_name.or_else(|| cli.app.clone()) {
            Some(app) => control_command(&cli, Ask::StopApp { app, now }),
            None => control_command(&cli, Ask::Stop { now }),
        },
        Some(Command::Restart { now }) => restart(cli, now),
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
            let size = serde_json::to_string(&message).map_or(0, |t| t.len());
            if size > control::MAX_MESSAGE {
                eprintln!(
                    "rrbalancer send: the message is {size} bytes of JSON; at most {} (64 KiB)",
                    control::MAX_MESSAGE
                );
                return ExitCode::from(EXIT_USAGE);
            }
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

/// `check`: the effective configuration, one app or several, printed as a file.
fn check(cli: &Cli) -> ExitCode {
    match config::load_any(cli.config.as_deref(), &overrides(cli)) {
        Ok(loaded) => {
            let text = match loaded {
                config::Loaded::One(config) => {
                    config.warnings().iter().for_each(|w| log::warn!("{w}"));
                    config.to_toml()
                }
                config::Loaded::Apps(apps) => {
                    for app in &apps.apps {
                        for w in app.config.warnings() {
                            log::warn!("[[app]] {}: {w}", app.name);
                        }
                    }
                    apps.to_toml()
                }
            };
            let _ = write!(std::io::stdout(), "{text}");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `scale N`, `scale APP N` (or `--app APP scale N`).
fn scale(cli: &Cli, args: &[String]) -> ExitCode {
    let (app, count) = match args {
        [count] => (cli.app.clone(), count),
        [app, count] => (Some(app.clone()), count),
        _ => unreachable!("clap takes 1 or 2"),
    };
    let Ok(workers) = count.parse::<usize>() else {
        eprintln!("rrbalancer scale: {count:?} is not a number of workers (scale [APP] N)");
        return ExitCode::from(EXIT_USAGE);
    };
    let request = control::Request::Scale { workers };
    match app {
        Some(app) => control_command(
            cli,
            Ask::ForApp {
                app,
                request: Some(request),
            },
        ),
        None => control_command(cli, Ask::Request(request)),
    }
}

fn overrides(cli: &Cli) -> config::Overrides {
    config::Overrides {
        sched_policy: cli.sched_policy,
        rrb_env_policy: std::env::var(wire::env::SCHED_POLICY).ok(),
        node_env_policy: std::env::var(wire::env::NODE_SCHED_POLICY).ok(),
        workers: cli.workers,
        listen: cli.listen.clone(),
        program: cli.program.clone(),
        watch: cli.watch,
        env: cli.env.clone(),
        app: cli.app.clone(),
        protocol: match cli.protocol {
            None | Some(ProtocolChoice::Auto) => None,
            Some(ProtocolChoice::Native) => Some(config::Protocol::Native),
            Some(ProtocolChoice::Node) => Some(config::Protocol::Node),
            Some(ProtocolChoice::NodeCluster) => Some(config::Protocol::NodeCluster),
        },
    }
}

/// The configuration (its warnings logged), or why it does not load.
fn load_config_or_why(cli: &Cli) -> Result<config::Config, String> {
    let config = config::load(cli.config.as_deref(), &overrides(cli)).map_err(|e| e.to_string())?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    Ok(config)
}
