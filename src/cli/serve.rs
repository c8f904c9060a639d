//! `run` and `start`: the master, in the foreground or detached (`--daemon`, its first process
//! waiting for the detached one's report); started by an upgrade, the new master.

use std::io::Write;
use std::os::fd::AsFd;
use std::process::ExitCode;

use super::{Cli, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, load_config_or_why, overrides};
use crate::{config, logging, master, sys};

/// Runs the master, in the foreground or detached. Started by an upgrade, it takes over from
/// the old master instead (and does not detach again: it is detached already, or not).
/// A file with `[[app]]` sections (and no `--app`): the master of all its apps.
pub(super) fn serve(cli: &Cli, daemon: bool) -> ExitCode {
    let predecessor = match master::Predecessor::from_env() {
        Ok(p) => p,
        Err(e) => {
            log::error!("upgrade: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    // The file read once: one app (or an upgrade's, which takes over one), or several.
    let loaded = match predecessor {
        Some(_) => load_config_or_why(cli),
        None => match config::load_any(cli.config.as_deref(), &overrides(cli)) {
            Ok(config::Loaded::Apps(apps)) => {
                return super::serve_apps::serve_apps(cli, *apps, daemon);
            }
            Ok(config::Loaded::One(config)) => {
                config.warnings().iter().for_each(|w| log::warn!("{w}"));
                Ok(*config)
            }
            Err(e) => Err(e.to_string()),
        },
    };
    serve_one(cli, daemon, predecessor, loaded)
}

fn serve_one(
    cli: &Cli,
    daemon: bool,
    predecessor: Option<master::Predecessor>,
    loaded: Result<config::Config, String>,
) -> ExitCode {
    let reporter = predecessor.as_ref().map(master::Predecessor::reporter);
    let mut config = match loaded {
        Ok(config) => config,
        Err(e) => {
            log::error!("{e}");
            last_words(&e);
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
        let pid_file = &config.control.pid_file;
        match detach(pid_file, &log_path, config.master_user.as_ref()) {
            Ok(pipe) => report = Some(pipe),
            Err(code) => return code,
        }
    } else if let Some(path) = &config.log.master_log {
        match log_to(path) {
            Ok(terminal) => report = terminal,
            Err(code) => return code,
        }
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
            last_words(&text);
            if let Some(mut out) = report.take() {
                let prefix = if daemon { "err " } else { "rrbalancer: " };
                let _ = writeln!(out, "{prefix}{text}");
            }
            ExitCode::from(code)
        }
    }
}

/// The master of one app of several fails: why, for the master of all (`RRB_EXIT_REASON`).
fn last_words(why: &str) {
    if let Some(path) = std::env::var_os(crate::wire::env::EXIT_REASON) {
        let _ = std::fs::write(path, format!("{why}\n"));
    }
}

/// `start --daemon`: refuses if a master holds `pid_file`, makes its directory private (the
/// user's, when the master drops to `owner`), opens `log_path` (that user's to write and reopen),
/// and detaches, stderr to it. In the detached process, where to report how the start went; in
/// the original one (`Err`), its exit once the detached one has reported.
pub(super) fn detach(
    pid_file: &std::path::Path,
    log_path: &std::path::Path,
    owner: Option<&crate::config::Identity>,
) -> Result<Box<dyn Write>, ExitCode> {
    let refuse = |e: &dyn std::fmt::Display| {
        log::error!("{e}");
        ExitCode::from(EXIT_RUNTIME)
    };
    master::PidFile::check_free(pid_file).map_err(|e| refuse(&e))?;
    // Beside the pid file by default: that directory is made private before anything in it.
    let made = match owner {
        Some(id) => master::create_dir_for(pid_file, id.uid, id.gid),
        None => master::create_private_dir(pid_file),
    };
    made.map_err(|e| refuse(&e))?;
    let log = master::open_log(log_path).and_then(|log| match owner {
        Some(id) => std::os::unix::fs::fchown(&log, Some(id.uid), Some(id.gid)).map(|()| log),
        None => Ok(log),
    });
    let log = log.map_err(|e| {
        refuse(&format!(
            "cannot open the log file (key `log.master_log`): {e}"
        ))
    })?;
    match sys::daemonize(&log) {
        Ok(sys::Daemon::Parent { child, report }) => Err(wait_for_daemon(child, report, log_path)),
        Ok(sys::Daemon::Child { report: pipe }) => Ok(Box::new(pipe)),
        Err(e) => Err(refuse(&format!("cannot detach: {e}"))),
    }
}

/// A master in the foreground with `[log] master_log`: its log to `path`, said on the terminal
/// first; the terminal, for a fatal error.
pub(super) fn log_to(path: &std::path::Path) -> Result<Option<Box<dyn Write>>, ExitCode> {
    let terminal = std::io::stderr().as_fd().try_clone_to_owned().ok();
    eprintln!("rrbalancer: logging to {}", path.display());
    if let Err(e) = master::redirect_stderr(path) {
        log::error!("cannot open the log file (key `log.master_log`): {e}");
        return Err(ExitCode::from(EXIT_RUNTIME));
    }
    Ok(terminal.map(|fd| Box::new(std::fs::File::from(fd)) as Box<dyn Write>))
}

/// The original process of `start --daemon`: wait for the detached master's report.
pub(super) fn wait_for_daemon(
    child: i32,
    report: std::fs::File,
    log: &std::path::Path,
) -> ExitCode {
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
