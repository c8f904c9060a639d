//! The processes the master starts: `[worker]` and `[agent]`, each a command (program,
//! arguments, environment, directory) with a protocol, a readiness and its timeouts.

use super::*;

/// `[worker]`: its command, and how the master talks to it, hands it connections and knows it
/// is ready.
pub(super) fn worker_config(
    c: &Checker<'_>,
    file: FileWorker,
) -> Result<WorkerConfig, ConfigError> {
    let protocol = file.protocol;
    let max_unacked = match file.max_unacked {
        None if protocol.is_node() => 1,
        None => DEFAULT_MAX_UNACKED,
        Some(n) if protocol.is_node() => {
            return Err(c.invalid(
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
                return Err(c.invalid(
                    span,
                    "worker.max_unacked",
                    format!("{n} is out of range (allowed: 1 to 65536)"),
                ));
            }
            n
        }
    };
    let span = file.ack_timeout.span();
    let ack_timeout = file.ack_timeout.into_inner().0;
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&ack_timeout) {
        return Err(c.invalid(
            span,
            "worker.ack_timeout",
            format!(
                "{} is out of range (allowed: 10ms to 1h)",
                humantime::format_duration(ack_timeout)
            ),
        ));
    }
    let identity = probe::identity(c, "worker", file.user, file.group)?;
    let command = command_config(c, "worker", file.exec, file.args, file.env, file.cwd)?;
    let command = Command {
        identity,
        ..command
    };
    let ready_delay = c.duration(file.ready_delay, "worker.ready_delay")?;
    let ready_timeout = c.duration(file.ready_timeout, "worker.ready_timeout")?;
    let other = "other workers say when they are ready";
    let ready = readiness(c, "worker.ready", file.ready, protocol, other)?;
    let json = |v: toml::Value| serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    let node = NodeMessages {
        socket: json(file.node.socket_message),
        server: json(file.node.server_message),
        leaving: json(file.node.leaving_message),
    };
    Ok(WorkerConfig {
        command,
        protocol,
        max_unacked,
        ack_timeout,
        ready,
        ready_delay,
        ready_timeout,
        node,
    })
}

/// `[agent]`, checked as `[worker]` is: the program found, `cwd` a directory, the durations in
/// bounds; and a protocol an agent can speak. `span`: the section's.
pub(super) fn agent_config(
    c: &Checker<'_>,
    file: FileAgent,
    span: Range<usize>,
) -> Result<AgentConfig, ConfigError> {
    let protocol_span = file.protocol.span();
    let protocol = file.protocol.into_inner();
    if protocol == Protocol::NodeCluster {
        return Err(c.invalid(
            protocol_span,
            "agent.protocol",
            "an agent is no cluster worker (it serves no connection): use \"node\" for a Node \
             script (`process.send`, `process.on('message')`) or \"native\""
                .into(),
        ));
    }
    if file.exec.is_none() {
        return Err(c.invalid(
            span,
            "agent.exec",
            "[agent] needs the program to run (e.g. exec = \"node\", args = [\"agent.js\"])".into(),
        ));
    }
    let identity = probe::identity(c, "agent", file.user, file.group)?;
    let command = command_config(c, "agent", file.exec, file.args, file.env, file.cwd)?;
    let command = Command {
        identity,
        ..command
    };
    let native = "a native agent says when it is ready";
    let ready = readiness(c, "agent.ready", file.ready, protocol, native)?;
    Ok(AgentConfig {
        command,
        protocol,
        ready,
        ready_delay: c.duration(file.ready_delay, "agent.ready_delay")?,
        ready_timeout: c.duration(file.ready_timeout, "agent.ready_timeout")?,
    })
}

/// A `ready` key: by default `"start"` for a `node` program (Node's `fork` has no readiness),
/// else `"message"`; `"start"` only for `node` (`others`: why the rest do not need it).
fn readiness(
    c: &Checker<'_>,
    key: &str,
    ready: Option<Spanned<Readiness>>,
    protocol: Protocol,
    others: &str,
) -> Result<Readiness, ConfigError> {
    Ok(match ready {
        None if protocol == Protocol::Node => Readiness::Start,
        None => Readiness::Message,
        Some(r) if *r.get_ref() == Readiness::Start && protocol != Protocol::Node => {
            return Err(c.invalid(
                r.span(),
                key,
                format!(
                    "\"start\" needs protocol = \"node\" ({others}; use \"delay\" for a \
                     program that does not)"
                ),
            ));
        }
        Some(r) => r.into_inner(),
    })
}

/// `[worker]`'s or `[agent]`'s program, arguments, environment and directory, checked: what
/// `execve` cannot pass is refused, the program is found (from `cwd`, else the config file's
/// directory, else `PATH`). `[worker]` without `exec` runs the built-in demo worker.
pub(super) fn command_config(
    c: &Checker<'_>,
    section: &str,
    exec: Option<Spanned<String>>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<Spanned<PathBuf>>,
) -> Result<Command, ConfigError> {
    let cwd = working_dir(c, cwd, &format!("{section}.cwd"))?;
    check_exec_strings(section, &args, &env)
        .and_then(|()| check_exec_size(section, &args, &env))
        .map_err(|e| ConfigError::Setting(format!("{}: {e}", c.name)))?;
    let (program, arg0, args) = match exec {
        Some(exec) => {
            let span = exec.span();
            let exec = exec.into_inner();
            if exec.is_empty() && section == "worker" {
                let why = "is empty (name a program, or remove the key for the demo worker)";
                return Err(c.invalid(span, "worker.exec", why.into()));
            }
            let program = resolve_program(&exec, cwd.as_deref().or(c.dir))
                .map_err(|message| c.invalid(span, &format!("{section}.exec"), message))?;
            (program, OsString::from(&exec), args)
        }
        None => {
            let me = std::env::current_exe().map_err(|e| {
                ConfigError::Setting(format!("cannot find rrbalancer's own binary: {e}"))
            })?;
            let mut demo = vec!["demo-worker".to_owned()];
            demo.extend(args);
            (me, OsString::from("rrbalancer"), demo)
        }
    };
    Ok(Command {
        program,
        arg0,
        args,
        env: env.into_iter().collect(),
        cwd,
        identity: None,
    })
}

/// A `cwd` key: relative to the config file's directory, and a directory.
pub(super) fn working_dir(
    c: &Checker<'_>,
    cwd: Option<Spanned<PathBuf>>,
    key: &str,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(cwd) = cwd else {
        return Ok(None);
    };
    let span = cwd.span();
    let cwd = c.relative(cwd);
    if !cwd.is_dir() {
        return Err(c.invalid(span, key, format!("{} is not a directory", cwd.display())));
    }
    // `config/..` as the directory it is (what `check` prints, what the log says).
    Ok(Some(cwd.canonicalize().unwrap_or(cwd)))
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
