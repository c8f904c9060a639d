//! rrbalancer: the master process of a pre-fork server, for workers in any language.
//!
//! The master owns the listening sockets. In `rr` mode it accepts every connection without
//! reading it and passes the socket itself (`SCM_RIGHTS` over a per-worker Unix channel) to the
//! next worker in strict rotation, keeping its copy until the worker acks, so a worker's death
//! loses no connection. In `none` mode every worker inherits the listeners (systemd socket
//! activation) and accepts itself. Either way the master supervises the workers: starts them,
//! restarts them within limits, stops them gracefully, and never leaves one behind.
//!
//! The layout follows the architecture:
//!
//! - [`cli`] → [`config`] → `master` (the event loop: listeners, dispatch, channels, fleet,
//!   restart policy, signals);
//! - [`protocol`]: the wire format of the worker channel, shared by both sides;
//! - [`worker`]: the library a Rust worker uses; [`demo_worker`] is one;
//! - `sys`: every `unsafe` block and raw fd.

pub mod cli;
pub mod config;
pub mod demo_worker;
mod master;
pub mod protocol;
mod sys;
pub mod worker;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit code for a clean stop.
pub const EXIT_OK: u8 = 0;
/// Exit code for a failure at run time (a port in use, every worker given up).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// Runs what the command line asks for; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Some(Command::DemoWorker(args)) => match demo_worker::run(args) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                log::error!("demo worker: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        },
        Some(Command::Check) => match load_config(&cli) {
            Ok(config) => {
                println!("{config:#?}");
                ExitCode::from(EXIT_OK)
            }
            Err(code) => code,
        },
        Some(Command::Run) | None => {
            let config = match load_config(&cli) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match master::run(config) {
                Ok(()) => ExitCode::from(EXIT_OK),
                Err(e) => {
                    log::error!("{}", error_chain(&e));
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}

fn load_config(cli: &Cli) -> Result<config::Config, ExitCode> {
    let overrides = config::Overrides {
        sched_policy: cli.sched_policy,
        rrb_env_policy: std::env::var("RRB_SCHED_POLICY").ok(),
        node_env_policy: std::env::var("NODE_CLUSTER_SCHED_POLICY").ok(),
        workers: cli.workers,
        listen: cli.listen.clone(),
    };
    config::load(cli.config.as_deref(), &overrides).map_err(|e| {
        log::error!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// An error and its causes on one line: `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
