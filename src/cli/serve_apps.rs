//! `run` and `start` of a file with `[[app]]` sections: the master of all its apps, in the
//! foreground or detached (`--daemon`), as `serve` does for one app.

use std::io::Write;
use std::process::ExitCode;

use super::serve::{detach, log_to};
use super::{Cli, EXIT_OK, EXIT_RUNTIME, overrides};
use crate::config::{AppsConfig, WorkerCount};
use crate::{config, logging, master};

/// Runs the master of `apps`' apps.
pub(super) fn serve_apps(cli: &Cli, mut apps: AppsConfig, daemon: bool) -> ExitCode {
    logging::set_format(apps.log.format);
    if daemon && apps.log.master_log.is_none() {
        apps.log.master_log = Some(apps.control.pid_file.with_extension("log"));
    }
    let mut report: Option<Box<dyn Write>> = None;
    if daemon {
        let log_path = apps.log.master_log.clone().expect("set above");
        match detach(&apps.control.pid_file, &log_path, None) {
            Ok(pipe) => report = Some(pipe),
            Err(code) => return code,
        }
    } else if let Some(path) = &apps.log.master_log {
        match log_to(path) {
            Ok(terminal) => report = terminal,
            Err(code) => return code,
        }
    }
    for app in &apps.apps {
        for warning in app.config.warnings() {
            log::warn!("[[app]] {}: {warning}", app.name);
        }
    }
    let loader = {
        let path = apps.source.clone();
        let overrides = overrides(cli);
        Box::new(move || config::load_any(Some(&path), &overrides).map_err(|e| e.to_string()))
    };
    let mut started = |listening: &[String]| {
        if let Some(mut out) = report.take() {
            let prefix = if daemon { "ok " } else { "" };
            if daemon {
                let _ = writeln!(
                    out,
                    "{prefix}{} {}",
                    std::process::id(),
                    listening.join(" ")
                );
            } else {
                report = Some(out);
            }
        }
    };
    match master::run_apps(apps, loader, passthrough(cli), &mut started) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            let text = e.to_string();
            log::error!("{text}");
            if let Some(mut out) = report.take() {
                let prefix = if daemon { "err " } else { "rrbalancer: " };
                let _ = writeln!(out, "{prefix}{text}");
            }
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The flags each app's master is started with, as given to the master of all.
fn passthrough(cli: &Cli) -> master::Passthrough {
    let mut args = Vec::new();
    if let Some(env) = &cli.env {
        args.extend(["--env".to_owned(), env.clone()]);
    }
    match cli.workers {
        Some(WorkerCount::Exactly(n)) => args.extend(["--workers".to_owned(), n.to_string()]),
        Some(WorkerCount::Auto) => args.extend(["--workers".to_owned(), "auto".to_owned()]),
        None => {}
    }
    if let Some(policy) = cli.sched_policy {
        args.extend(["--sched-policy".to_owned(), policy.as_str().to_owned()]);
    }
    if cli.watch {
        args.push("--watch".to_owned());
    }
    master::Passthrough { args }
}
