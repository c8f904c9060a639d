//! Validation of the sections that have their own rules: `[metrics]`, a command (`[worker]`,
//! `[agent]`), its working directory, `[agent]`, `[recycle]`.

use super::*;

/// `[metrics]`: the listener's address, and who may connect, each entry checked at its line.
pub(super) fn metrics_config(
    metrics: FileMetrics,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let allow = match metrics.allow {
        Some(list) => {
            let span = list.span();
            let list = list.into_inner();
            if metrics.listen.is_none() {
                let why = "means nothing without `metrics.listen`: set listen, or remove allow";
                return Err(invalid(span, "metrics.allow", why.into()));
            }
            if list.is_empty() {
                let why = "an empty list would let no one in; remove the key to let in anyone \
                           who can reach `metrics.listen`";
                return Err(invalid(span, "metrics.allow", why.into()));
            }
            let nets = list.into_iter().map(|entry| {
                let span = entry.span();
                parse_net(entry.get_ref()).map_err(|why| invalid(span, "metrics.allow", why))
            });
            Some(nets.collect::<Result<Vec<_>, _>>()?)
        }
        None => None,
    };
    let Some(listen) = metrics.listen else {
        return Ok(None);
    };
    let span = listen.span();
    let text = listen.into_inner();
    let listen: SocketAddr = text.parse().map_err(|_| {
        invalid(
            span,
            "metrics.listen",
            format!(
                "{} is not IP:PORT (e.g. \"127.0.0.1:9100\", \"[::1]:9100\")",
                quoted(&text)
            ),
        )
    })?;
    Ok(Some(MetricsConfig { listen, allow }))
}

/// A `[metrics] allow` entry: a network in CIDR notation (host bits dropped: `10.1.2.3/8` is
/// `10.0.0.0/8`), or one address (a network of one).
pub(super) fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{} is neither an address nor a network (write e.g. \"10.0.0.0/8\", \"192.0.2.7\", \
         \"::1\", \"fd00::/8\")",
        quoted(text)
    ))
}

/// `[worker]`'s or `[agent]`'s program, arguments, environment and directory, checked: what
/// `execve` cannot pass is refused, the program is found (from `cwd`, else the config file's
/// directory, else `PATH`). `[worker]` without `exec` runs the built-in demo worker.
pub(super) fn command_config(
    section: &str,
    exec: Option<Spanned<String>>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: Option<Spanned<PathBuf>>,
    (name, dir): (&str, Option<&Path>),
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<Command, ConfigError> {
    let cwd = working_dir(cwd, dir, &format!("{section}.cwd"), invalid)?;
    check_exec_strings(section, &args, &env)
        .and_then(|()| check_exec_size(section, &args, &env))
        .map_err(|e| ConfigError::Setting(format!("{name}: {e}")))?;
    let (program, arg0, args) = match exec {
        Some(exec) => {
            let span = exec.span();
            let exec = exec.into_inner();
            if exec.is_empty() && section == "worker" {
                let why = "is empty (name a program, or remove the key for the demo worker)";
                return Err(invalid(span, "worker.exec", why.into()));
            }
            let program = resolve_program(&exec, cwd.as_deref().or(dir))
                .map_err(|message| invalid(span, &format!("{section}.exec"), message))?;
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
    })
}

/// A `cwd` key: relative to the config file's directory, and a directory.
pub(super) fn working_dir(
    cwd: Option<Spanned<PathBuf>>,
    dir: Option<&Path>,
    key: &str,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<Option<PathBuf>, ConfigError> {
    let Some(cwd) = cwd else {
        return Ok(None);
    };
    let span = cwd.span();
    let cwd = cwd.into_inner();
    let cwd = match dir {
        Some(dir) if cwd.is_relative() => dir.join(cwd),
        _ => cwd,
    };
    if !cwd.is_dir() {
        return Err(invalid(
            span,
            key,
            format!("{} is not a directory", cwd.display()),
        ));
    }
    Ok(Some(cwd))
}

/// Reads a duration key, checked against its bounds.
pub(super) type CheckDuration<'a> =
    dyn Fn(Spanned<HumanDuration>, &str) -> Result<Duration, ConfigError> + 'a;

/// `[agent]`, checked as `[worker]` is: the program found, `cwd` a directory, the durations in
/// bounds; and a protocol an agent can speak.
pub(super) fn agent_config(
    file: FileAgent,
    span: Range<usize>,
    name: &str,
    dir: Option<&Path>,
    duration: &CheckDuration<'_>,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<AgentConfig, ConfigError> {
    let protocol_span = file.protocol.span();
    let protocol = file.protocol.into_inner();
    if protocol == Protocol::NodeCluster {
        return Err(invalid(
            protocol_span,
            "agent.protocol",
            "an agent is no cluster worker (it serves no connection): use \"node\" for a Node \
             script (`process.send`, `process.on('message')`) or \"native\""
                .into(),
        ));
    }
    if file.exec.is_none() {
        return Err(invalid(
            span,
            "agent.exec",
            "[agent] needs the program to run (e.g. exec = \"node\", args = [\"agent.js\"])".into(),
        ));
    }
    let command = command_config(
        "agent",
        file.exec,
        file.args,
        file.env,
        file.cwd,
        (name, dir),
        invalid,
    )?;
    let ready = match file.ready {
        None if protocol == Protocol::Node => Readiness::Start,
        None => Readiness::Message,
        Some(r) if *r.get_ref() == Readiness::Start && protocol != Protocol::Node => {
            return Err(invalid(
                r.span(),
                "agent.ready",
                "\"start\" needs protocol = \"node\" (a native agent says when it is ready; \
                 use \"delay\" for a program that does not)"
                    .into(),
            ));
        }
        Some(r) => r.into_inner(),
    };
    Ok(AgentConfig {
        command,
        protocol,
        ready,
        ready_delay: duration(file.ready_delay, "agent.ready_delay")?,
        ready_timeout: duration(file.ready_timeout, "agent.ready_timeout")?,
    })
}

/// How an error about a path that took its default begins (the key is not in the file).
pub(super) fn its_default(span: &Option<Range<usize>>) -> &'static str {
    if span.is_some() { "" } else { "its default, " }
}

/// `[recycle]`, checked: sizes parsed, limits within bounds, and `max_connections` only where
/// the master hands out the connections (`rr`).
pub(super) fn recycle_config(
    file: FileRecycle,
    policy: SchedPolicy,
    invalid: &dyn Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<RecycleConfig, ConfigError> {
    let span = file.max_connections.span();
    let max_connections = Some(file.max_connections.into_inner()).filter(|&n| n > 0);
    if max_connections.is_some() && policy != SchedPolicy::Rr {
        return Err(invalid(
            span,
            "recycle.max_connections",
            "counts the connections rrbalancer hands to each worker, which it does with \
             sched_policy = \"rr\" only (with \"none\" the workers accept themselves)"
                .into(),
        ));
    }
    let max_memory = match file.max_memory {
        None => None,
        Some(text) => {
            let span = text.span();
            let bytes = text
                .get_ref()
                .trim()
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| {
                    invalid(
                        span.clone(),
                        "recycle.max_memory",
                        format!(
                            "{} is not a size (e.g. \"512MiB\", \"1.5GB\", \"800000000\")",
                            quoted(text.get_ref())
                        ),
                    )
                })?;
            if bytes < MIN_MEMORY {
                return Err(invalid(
                    span,
                    "recycle.max_memory",
                    format!(
                        "{} is too small (at least 1MiB: below that every worker is recycled \
                         as it starts)",
                        quoted(text.get_ref())
                    ),
                ));
            }
            Some(bytes)
        }
    };
    let max_age = match file.max_age {
        None => None,
        Some(d) => {
            let span = d.span();
            let age = d.into_inner().0;
            if !(MIN_AGE..=MAX_AGE).contains(&age) {
                return Err(invalid(
                    span,
                    "recycle.max_age",
                    format!(
                        "{} is out of range (allowed: 1s to 30days)",
                        humantime::format_duration(age)
                    ),
                ));
            }
            Some(age)
        }
    };
    let span = file.jitter.span();
    let jitter = file.jitter.into_inner();
    if !(0.0..=MAX_JITTER).contains(&jitter) {
        return Err(invalid(
            span,
            "recycle.jitter",
            format!("{jitter} is out of range (0 to {MAX_JITTER}: 0.1 is ± 10 %)"),
        ));
    }
    Ok(RecycleConfig {
        max_connections,
        max_memory,
        max_age,
        jitter,
    })
}
