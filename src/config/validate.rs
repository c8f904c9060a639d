//! Validation: [`FileConfig`] → [`Config`], one section after another (the rules of each in
//! its function here, in `command.rs` or in `sections.rs`); the policy in force; the checks of
//! listen addresses and of the paths the master creates.

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

/// Step two: the checks serde cannot make, and the overrides from flags and environment. Each
/// section has its rules in its function; the first error found is returned.
pub fn validate(
    mut file: FileConfig,
    text: &str,
    name: &str,
    dir: Option<&Path>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let c = Checker { text, name, dir };
    if file.app.is_some() {
        // `apps.rs` reads such a file, one app at a time: never whole, as one.
        return Err(c.setting("app", "[[app]] sections are read one app at a time".into()));
    }
    if overrides.protocol.is_some() && overrides.program.is_empty() {
        return Err(ConfigError::Setting(
            "--protocol is for the program named after `--` (a file says [worker] protocol)".into(),
        ));
    }
    program::apply(&mut file.worker, &overrides.program, overrides.protocol);
    let envs = environments::read(&c, std::mem::take(&mut file.env))?;
    let environment = envs.select(&c, overrides.env.as_deref())?;
    file.worker.env = envs.apply(std::mem::take(&mut file.worker.env), environment.as_deref());
    if let Some(agent) = file.agent.as_mut() {
        let agent = agent.get_mut();
        agent.env = envs.apply(std::mem::take(&mut agent.env), environment.as_deref());
    }
    // With no file, a master started for a program is named after it, not `default`.
    let named_after_program = dir
        .is_none()
        .then(|| program::control_name(&overrides.program))
        .flatten();
    let listen = listen_config(&c, file.listen, overrides)?;
    let (sched_policy, policy_source) = effective_policy(
        overrides.sched_policy,
        overrides.rrb_env_policy.as_deref(),
        overrides.node_env_policy.as_deref(),
        file.sched_policy,
    )
    .map_err(ConfigError::Setting)?;
    let protocol = file.worker.protocol;
    let worker = worker_config(&c, file.worker).map_err(|e| match (&e, dir) {
        // No file: the command line named the program, so say that, not a key.
        (ConfigError::Invalid { message, .. }, None) if !overrides.program.is_empty() => {
            let why = message
                .split_once("`: ")
                .map_or(message.as_str(), |(_, why)| why);
            ConfigError::Setting(format!("the program after `--`: {why}"))
        }
        _ => e,
    })?;
    let backlog = backlog_config(&c, file.backlog)?;
    let (restart, on_giveup) = restart_config(&c, file.restart)?;
    let metrics = metrics_config(&c, file.metrics)?;
    let recycle = recycle_config(&c, file.recycle, sched_policy)?;
    let agent = match file.agent {
        Some(agent) => {
            let span = agent.span();
            Some(agent_config(&c, agent.into_inner(), span)?)
        }
        None => None,
    };
    let (kill_timeout, stop_signal, disconnect, drain) =
        shutdown_config(&c, file.shutdown, protocol)?;
    let script_dir = program::script_dir(&overrides.program);
    let watched = worker.command.cwd.as_deref().or(script_dir.as_deref());
    let watch = watch_config(&c, file.watch, overrides.watch, watched)?;
    let master_user = probe::identity(&c, "master", file.master.user, file.master.group)?;
    let owner = master_user.as_ref().map(|id| id.uid);
    let (mut control, log) = paths_config(&c, file.control, file.log, owner)?;
    if let Some((stem, key)) = named_after_program {
        let (pid_file, socket) = control_paths_named(&stem, key.as_bytes());
        control.pid_file = owner.map_or(pid_file.clone(), |uid| host::for_owner(&pid_file, uid));
        control.socket = owner.map_or(socket.clone(), |uid| host::for_owner(&socket, uid));
    }
    let (worker, agent) = as_master_user(&c, master_user.as_ref(), worker, agent)?;
    Ok(Config {
        source: None,
        listen,
        workers: overrides.workers.unwrap_or(file.workers).resolve(),
        sched_policy,
        policy_source,
        backlog,
        worker,
        agent,
        affinity: file.dispatch.affinity,
        batch: file.dispatch.batch,
        kill_timeout,
        stop_signal,
        disconnect,
        drain,
        restart,
        recycle,
        on_giveup,
        control,
        metrics,
        log,
        watch,
        master_user,
        environment,
        environments: envs.names(),
        app: None,
    })
}

/// `[master] user`: the master can start its workers and agent only as that user once it has
/// dropped to it, so that is who they run as (`[worker] user` may name it again, no other).
fn as_master_user(
    c: &Checker<'_>,
    master: Option<&Identity>,
    mut worker: WorkerConfig,
    mut agent: Option<AgentConfig>,
) -> Result<(WorkerConfig, Option<AgentConfig>), ConfigError> {
    let Some(master) = master else {
        return Ok((worker, agent));
    };
    let commands = std::iter::once(("worker", &mut worker.command))
        .chain(agent.as_mut().map(|a| ("agent", &mut a.command)));
    for (section, command) in commands {
        match &command.identity {
            Some(id) if (id.uid, id.gid) != (master.uid, master.gid) => {
                return Err(c.setting(
                    &format!("{section}.user"),
                    format!(
                        "the master drops to {}:{} (`[master] user`) once it listens, and can then \
                         start processes only as that user: remove `{section}.user` and \
                         `{section}.group`, or make them the same",
                        master.user, master.group
                    ),
                ));
            }
            Some(_) => {}
            None => command.identity = Some(master.clone()),
        }
    }
    Ok((worker, agent))
}

/// `listen`, or `--listen` in its place: at least one address, each one bindable; a host name
/// stands for every address it resolves to.
fn listen_config(
    c: &Checker<'_>,
    listen: Spanned<ListenEntries>,
    overrides: &Overrides,
) -> Result<Vec<ListenAddr>, ConfigError> {
    if !overrides.listen.is_empty() {
        let flag = |_, e| ConfigError::Setting(format!("--listen: {e}"));
        return resolve_entries(&overrides.listen, flag);
    }
    let span = listen.span();
    let entries = listen.into_inner().0;
    if entries.is_empty() && overrides.app.is_some() {
        // One of several apps, with no `listen`: it serves no connection.
        return Ok(Vec::new());
    }
    if entries.is_empty() {
        return Err(c.invalid(span, "listen", "needs at least one address".into()));
    }
    let single = entries.len() == 1;
    resolve_entries(&entries, |i, e| {
        let key = match i {
            Some(i) if !single => format!("listen[{i}]"),
            _ => "listen".to_owned(),
        };
        c.invalid(span.clone(), &key, e)
    })
}

/// Every entry's addresses, in order, checked together; `refused(i, why)` words why entry
/// `i` (`None`: the list as a whole) is refused.
fn resolve_entries(
    entries: &[String],
    refused: impl Fn(Option<usize>, String) -> ConfigError,
) -> Result<Vec<ListenAddr>, ConfigError> {
    let mut listen = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        listen.extend(probe::resolve_listen(entry).map_err(|e| refused(Some(i), e))?);
    }
    check_listen(&listen).map_err(|e| refused(None, e))?;
    Ok(listen)
}

/// `backlog`: what `listen(2)` takes (a positive `int`).
fn backlog_config(c: &Checker<'_>, backlog: Spanned<u32>) -> Result<u32, ConfigError> {
    let span = backlog.span();
    let backlog = backlog.into_inner();
    if backlog == 0 || backlog > i32::MAX as u32 {
        return Err(c.invalid(
            span,
            "backlog",
            format!("{backlog} is out of range (allowed: 1 to {})", i32::MAX),
        ));
    }
    Ok(backlog)
}

/// `[control]` and `[log]`: the paths the master creates, each in a place it can create it
/// (an error names the key, or says the path is a default when the key is not in the file),
/// and a date format `strftime` takes.
pub(super) fn paths_config(
    c: &Checker<'_>,
    control: FileControl,
    file: FileLog,
    owner: Option<u32>,
) -> Result<(ControlConfig, LogConfig), ConfigError> {
    let written = |p: &Option<Spanned<PathBuf>>| p.as_ref().map(Spanned::span);
    let pid_at = written(&control.pid_file);
    let socket_at = written(&control.socket);
    let logs_at = [
        written(&file.stdout),
        written(&file.stderr),
        written(&file.master_log),
    ];
    let control = control_config(c, control, owner);
    check_unix_path(&control.socket).map_err(|e| {
        c.invalid(
            socket_at.clone().unwrap_or_default(),
            "control.socket",
            format!("{}{e}; name a shorter one", its_default(&socket_at)),
        )
    })?;
    if let Some(format) = &file.date_format {
        use chrono::format::{Item, StrftimeItems};
        if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
            return Err(c.setting(
                "log.date_format",
                format!(
                    "{} is not a valid strftime format (e.g. \"%Y-%m-%dT%H:%M:%S%.3f\")",
                    quoted(format)
                ),
            ));
        }
    }
    let log = LogConfig {
        stdout: file.stdout.map(|p| c.relative(p)),
        stderr: file.stderr.map(|p| c.relative(p)),
        date_format: file.date_format,
        master_log: file.master_log.map(|p| c.relative(p)),
        format: file.format,
    };
    let [stdout_at, stderr_at, own_log_at] = logs_at;
    let created = [
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
    ];
    for (key, path, span, what) in created {
        let Some(path) = path else { continue };
        if let Some(problem) = created_path_problem(path, what, owner) {
            return Err(c.invalid(
                span.clone().unwrap_or_default(),
                key,
                format!("{}{problem}", its_default(&span)),
            ));
        }
    }
    Ok((control, log))
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
