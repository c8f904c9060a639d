//! Validation: [`FileConfig`] → [`Config`], the policy in force, and the checks of listen
//! addresses and command lines.

use super::*;

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes with the final NUL).
pub(super) const MAX_UNIX_PATH: usize = 107;

/// Addresses that cannot all be bound: the same one twice (port 0 excepted: each picks its
/// own), a Unix socket path longer than the kernel takes or where none can be bound
/// ([`host::unix_listen_problem`]).
pub(super) fn check_listen(listen: &[ListenAddr]) -> Result<(), String> {
    for (i, addr) in listen.iter().enumerate() {
        if let ListenAddr::Unix(path) = addr {
            check_unix_path(path)?;
            if let Some(problem) = host::unix_listen_problem(path) {
                return Err(problem);
            }
        }
        let fixed = !matches!(addr, ListenAddr::Tcp(sa) if sa.port() == 0);
        if fixed && listen[..i].contains(addr) {
            return Err(format!("{} appears twice", quoted(&addr.to_string())));
        }
    }
    Ok(())
}

pub(super) fn check_unix_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_UNIX_PATH {
        return Err(format!(
            "the Unix socket path {} is {len} bytes; the system takes at most {MAX_UNIX_PATH}",
            quoted(&path.to_string_lossy())
        ));
    }
    Ok(())
}

/// Strings that `execve` cannot pass: a NUL byte anywhere, an environment name that is empty
/// or holds `=` (the worker would see another variable).
pub(super) fn check_exec_strings(
    section: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(format!(
            "key `{section}.args`: argument {} ({}) contains a NUL byte, which no program can \
             be given",
            i + 1,
            quoted(&args[i])
        ));
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!(
                "key `{section}.env`: {} is not a variable name (empty, or with `=` or a NUL byte)",
                quoted(k)
            ));
        }
        if v.contains('\0') {
            return Err(format!(
                "key `{section}.env`: the value of {} contains a NUL byte, which no program can \
                 be given",
                quoted(k)
            ));
        }
    }
    Ok(())
}

/// Step two: the checks serde cannot make, and the overrides from flags and environment.
pub fn validate(
    file: FileConfig,
    text: &str,
    name: &str,
    dir: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let invalid = |span: Range<usize>, key: &str, message: String| {
        let (line, column) = if span.is_empty() && span.start == 0 {
            (0, 0)
        } else {
            line_and_column(text, span)
        };
        ConfigError::Invalid {
            file: name.to_owned(),
            line,
            column,
            message: format!("key `{key}`: {message}"),
        }
    };

    let listen = if overrides.listen.is_empty() {
        let span = file.listen.span();
        let listen = file.listen.into_inner();
        if listen.is_empty() {
            return Err(invalid(span, "listen", "needs at least one address".into()));
        }
        check_listen(&listen).map_err(|e| invalid(span, "listen", e))?;
        listen
    } else {
        check_listen(&overrides.listen)
            .map_err(|e| ConfigError::Setting(format!("--listen: {e}")))?;
        overrides.listen.clone()
    };
    let max_unacked = match file.worker.max_unacked {
        None if file.worker.protocol.is_node() => 1,
        None => DEFAULT_MAX_UNACKED,
        Some(n) if file.worker.protocol.is_node() => {
            return Err(invalid(
                n.span(),
                "worker.max_unacked",
                "Node workers take one connection at a time (Node's own rule: one handle in \
                 flight until it is taken); remove this key"
                    .into(),
            ));
        }
        Some(n) => {
            let span = n.span();
            let n = n.into_inner();
            if !(1..=65536).contains(&n) {
                return Err(invalid(
                    span,
                    "worker.max_unacked",
                    format!("{n} is out of range (allowed: 1 to 65536)"),
                ));
            }
            n
        }
    };
    let ack_timeout_span = file.worker.ack_timeout.span();
    let ack_timeout = file.worker.ack_timeout.into_inner().0;
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&ack_timeout) {
        return Err(invalid(
            ack_timeout_span,
            "worker.ack_timeout",
            format!(
                "{} is out of range (allowed: 10ms to 1h)",
                humantime::format_duration(ack_timeout)
            ),
        ));
    }
    let backlog_span = file.backlog.span();
    let backlog = file.backlog.into_inner();
    if backlog == 0 || backlog > i32::MAX as u32 {
        return Err(invalid(
            backlog_span,
            "backlog",
            format!("{backlog} is out of range (allowed: 1 to {})", i32::MAX),
        ));
    }

    let command = command_config(
        "worker",
        file.worker.exec,
        file.worker.args,
        file.worker.env,
        file.worker.cwd,
        (name, dir),
        &invalid,
    )?;
    if let Some(command) = file
        .restart
        .on_giveup
        .as_deref()
        .filter(|c| c.contains('\0'))
    {
        return Err(ConfigError::Setting(format!(
            "{name}: key `restart.on_giveup`: {} contains a NUL byte, which no shell can be given",
            quoted(command)
        )));
    }

    let metrics = metrics_config(file.metrics, &invalid)?;

    let (sched_policy, policy_source) = effective_policy(
        overrides.sched_policy,
        overrides.rrb_env_policy.as_deref(),
        overrides.node_env_policy.as_deref(),
        file.sched_policy,
    )
    .map_err(ConfigError::Setting)?;

    // Every duration has an upper bound, so that no deadline computed from one can overflow.
    let duration = |d: Spanned<HumanDuration>, key: &str| {
        let span = d.span();
        let value = d.into_inner().0;
        if value > MAX_DURATION {
            return Err(invalid(
                span,
                key,
                format!(
                    "{} is too long (at most {})",
                    humantime::format_duration(value),
                    humantime::format_duration(MAX_DURATION)
                ),
            ));
        }
        Ok(value)
    };
    let max_restarts_span = file.restart.max_restarts.span();
    let max_restarts = file.restart.max_restarts.into_inner();
    if max_restarts > MAX_RESTARTS {
        return Err(invalid(
            max_restarts_span,
            "restart.max_restarts",
            format!("{max_restarts} is out of range (allowed: 0 to {MAX_RESTARTS})"),
        ));
    }
    // Restart storm protection cannot be switched off by accident: a window shorter than a
    // second never holds two exits of a worker that takes any time to start, and restarts
    // closer than 10 ms apart only burn CPU.
    let floor = |d: Spanned<HumanDuration>, key: &str, min: Duration, why: &str| {
        let span = d.span();
        let value = duration(d, key)?;
        if value < min {
            return Err(invalid(
                span,
                key,
                format!(
                    "{} is too short (at least {}: {why})",
                    humantime::format_duration(value),
                    humantime::format_duration(min)
                ),
            ));
        }
        Ok(value)
    };
    let storm = "a shorter window never sees a restart storm";
    let spin = "faster restarts only burn CPU";
    let restart = RestartConfig {
        max_restarts,
        window: floor(file.restart.window, "restart.window", MIN_WINDOW, storm)?,
        backoff_initial: floor(
            file.restart.backoff_initial,
            "restart.backoff_initial",
            MIN_BACKOFF,
            spin,
        )?,
        backoff_max: floor(
            file.restart.backoff_max,
            "restart.backoff_max",
            MIN_BACKOFF,
            spin,
        )?,
        min_uptime: duration(file.restart.min_uptime, "restart.min_uptime")?,
        retry_after: floor(
            file.restart.retry_after,
            "restart.retry_after",
            MIN_WINDOW,
            "a slot that cannot run would only be restarted in a loop",
        )?,
        on_all_given_up: file.restart.on_all_given_up,
    };
    let recycle = recycle_config(file.recycle, sched_policy, &invalid)?;
    let agent = match file.agent {
        Some(agent) => {
            let span = agent.span();
            let agent = agent.into_inner();
            Some(agent_config(agent, span, name, dir, &duration, &invalid)?)
        }
        None => None,
    };
    let ready_delay = duration(file.worker.ready_delay, "worker.ready_delay")?;
    let ready_timeout = duration(file.worker.ready_timeout, "worker.ready_timeout")?;
    let kill_timeout = duration(file.shutdown.kill_timeout, "shutdown.kill_timeout")?;
    let signal_span = file.shutdown.signal.span();
    let stop_signal = StopSignal::parse(file.shutdown.signal.get_ref())
        .map_err(|message| invalid(signal_span.clone(), "shutdown.signal", message))?;
    let disconnect_span = file.shutdown.disconnect.span();
    let disconnect = file.shutdown.disconnect.into_inner();
    if !disconnect && stop_signal == StopSignal::None && file.worker.protocol.is_node() {
        return Err(invalid(
            disconnect_span,
            "shutdown.disconnect",
            "false with signal = \"none\" would ask nothing of a Node worker: it would run \
             until SIGKILL at kill_timeout; keep the disconnect or name a signal"
                .into(),
        ));
    }

    let protocol = file.worker.protocol;
    let ready = match file.worker.ready {
        None if protocol == Protocol::Node => Readiness::Start,
        None => Readiness::Message,
        Some(r) if *r.get_ref() == Readiness::Start && protocol != Protocol::Node => {
            return Err(invalid(
                r.span(),
                "worker.ready",
                "\"start\" needs protocol = \"node\" (other workers say when they are ready; \
                 use \"delay\" for a program that does not)"
                    .into(),
            ));
        }
        Some(r) => r.into_inner(),
    };
    let json = |v: toml::Value| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    let node = NodeMessages {
        socket: json(file.worker.node.socket_message),
        server: json(file.worker.node.server_message),
        leaving: json(file.worker.node.leaving_message),
    };

    let relative = |p: Spanned<PathBuf>| match dir {
        Some(dir) if p.get_ref().is_relative() => dir.join(p.into_inner()),
        _ => p.into_inner(),
    };
    // Where each path the master creates is written (a default is written nowhere: its error
    // names the file alone).
    let written = |p: &Option<Spanned<PathBuf>>| p.as_ref().map(Spanned::span);
    let pid_at = written(&file.control.pid_file);
    let socket_at = written(&file.control.socket);
    let logs_at = [
        written(&file.log.stdout),
        written(&file.log.stderr),
        written(&file.log.master_log),
    ];
    let control = control_config(file.control, name, dir);
    check_unix_path(&control.socket).map_err(|e| {
        invalid(
            socket_at.clone().unwrap_or_default(),
            "control.socket",
            format!("{}{e}; name a shorter one", its_default(&socket_at)),
        )
    })?;
    if let Some(format) = &file.log.date_format {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(ConfigError::Setting(format!(
                "{name}: key `log.date_format`: {} is not a valid strftime format \
                 (e.g. \"%Y-%m-%dT%H:%M:%S%.3f\")",
                quoted(format)
            )));
        }
    }
    let log = LogConfig {
        stdout: file.log.stdout.map(relative),
        stderr: file.log.stderr.map(relative),
        date_format: file.log.date_format,
        master_log: file.log.master_log.map(relative),
        format: file.log.format,
    };
    let [stdout_at, stderr_at, own_log_at] = logs_at;
    for (key, path, span, what) in [
        (
            "control.pid_file",
            Some(&control.pid_file),
            pid_at,
            Created::PidFile,
        ),
        (
            "control.socket",
            Some(&control.socket),
            socket_at,
            Created::Socket,
        ),
        ("log.stdout", log.stdout.as_ref(), stdout_at, Created::Log),
        ("log.stderr", log.stderr.as_ref(), stderr_at, Created::Log),
        (
            "log.master_log",
            log.master_log.as_ref(),
            own_log_at,
            Created::Log,
        ),
    ] {
        let Some(path) = path else { continue };
        if let Some(problem) = created_path_problem(path, what) {
            return Err(invalid(
                span.clone().unwrap_or_default(),
                key,
                format!("{}{problem}", its_default(&span)),
            ));
        }
    }

    Ok(Config {
        source: None,
        listen,
        workers: overrides.workers.unwrap_or(file.workers).resolve(),
        sched_policy,
        policy_source,
        backlog,
        worker: WorkerConfig {
            command,
            protocol: file.worker.protocol,
            max_unacked,
            ack_timeout,
            ready,
            ready_delay,
            ready_timeout,
            node,
        },
        agent,
        affinity: file.dispatch.affinity,
        kill_timeout,
        stop_signal,
        disconnect,
        restart,
        recycle,
        on_giveup: file.restart.on_giveup,
        control,
        metrics,
        log,
    })
}

/// The policy in force and which setting chose it. Highest first: the flag, `RRB_SCHED_POLICY`,
/// `NODE_CLUSTER_SCHED_POLICY`, the file, the default (`rr`).
///
/// `NODE_CLUSTER_SCHED_POLICY` is shared with Node apps, and Node ignores values it does not
/// know, so we do too (with a warning); a bad `RRB_SCHED_POLICY` is ours alone and is an error.
pub fn effective_policy(
    flag: Option<SchedPolicy>,
    rrb_env: Option<&str>,
    node_env: Option<&str>,
    file: Option<SchedPolicy>,
) -> Result<(SchedPolicy, PolicySource), String> {
    if let Some(policy) = flag {
        return Ok((policy, PolicySource::Flag));
    }
    if let Some(value) = rrb_env.filter(|v| !v.is_empty()) {
        return value
            .parse()
            .map(|p| (p, PolicySource::RrbEnv))
            .map_err(|e| format!("RRB_SCHED_POLICY: {e}"));
    }
    if let Some(value) = node_env.filter(|v| !v.is_empty()) {
        match value.parse() {
            Ok(policy) => return Ok((policy, PolicySource::NodeEnv)),
            Err(_) => log::warn!(
                "ignoring NODE_CLUSTER_SCHED_POLICY={value:?} (Node knows only \"rr\" and \"none\")"
            ),
        }
    }
    Ok(match file {
        Some(policy) => (policy, PolicySource::File),
        None => (SchedPolicy::Rr, PolicySource::Default),
    })
}
