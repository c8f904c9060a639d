//! The rules of the sections that are not a process to start: `[restart]`, `[shutdown]`,
//! `[recycle]`, `[metrics]`.

use super::*;

/// `[metrics]`: the listener's address, and who may connect, each entry checked at its line.
pub(super) fn metrics_config(
    c: &Checker<'_>,
    metrics: FileMetrics,
) -> Result<Option<MetricsConfig>, ConfigError> {
    let allow = match metrics.allow {
        Some(list) => {
            let span = list.span();
            let list = list.into_inner();
            if metrics.listen.is_none() {
                let why = "means nothing without `metrics.listen`: set listen, or remove allow";
                return Err(c.invalid(span, "metrics.allow", why.into()));
            }
            if list.is_empty() {
                let why = "an empty list would let no one in; remove the key to let in anyone \
                           who can reach `metrics.listen`";
                return Err(c.invalid(span, "metrics.allow", why.into()));
            }
            let nets = list.into_iter().map(|entry| {
                let span = entry.span();
                parse_net(entry.get_ref()).map_err(|why| c.invalid(span, "metrics.allow", why))
            });
            Some(nets.collect::<Result<Vec<_>, _>>()?)
        }
        None => None,
    };
    let Some(listen) = metrics.listen else {
        if let Some(agent) = metrics.haproxy_agent {
            let why = "needs `metrics.listen` too (its `allow` applies to both): set listen";
            return Err(c.invalid(agent.span(), "metrics.haproxy_agent", why.into()));
        }
        return Ok(None);
    };
    let listen = socket_addr(c, listen, "metrics.listen", "9100")?;
    let haproxy_agent = (metrics.haproxy_agent)
        .map(|a| socket_addr(c, a, "metrics.haproxy_agent", "9101"))
        .transpose()?;
    Ok(Some(MetricsConfig {
        listen,
        allow,
        haproxy_agent,
    }))
}

/// `IP:PORT` at `key` (`port`: the example's).
fn socket_addr(
    c: &Checker<'_>,
    value: Spanned<String>,
    key: &str,
    port: &str,
) -> Result<SocketAddr, ConfigError> {
    let span = value.span();
    let text = value.into_inner();
    text.parse().map_err(|_| {
        c.invalid(
            span,
            key,
            format!(
                "{} is not IP:PORT (e.g. \"127.0.0.1:{port}\", \"[::1]:{port}\")",
                quoted(&text)
            ),
        )
    })
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

/// `[recycle]`, checked: sizes parsed, limits within bounds, and `max_connections` only where
/// the master hands out the connections (`rr`).
pub(super) fn recycle_config(
    c: &Checker<'_>,
    file: FileRecycle,
    policy: SchedPolicy,
) -> Result<RecycleConfig, ConfigError> {
    let span = file.max_connections.span();
    let max_connections = Some(file.max_connections.into_inner()).filter(|&n| n > 0);
    if max_connections.is_some() && policy != SchedPolicy::Rr {
        return Err(c.invalid(
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
                    c.invalid(
                        span.clone(),
                        "recycle.max_memory",
                        format!(
                            "{} is not a size (e.g. \"512MiB\", \"1.5GB\", \"800000000\")",
                            quoted(text.get_ref())
                        ),
                    )
                })?;
            if bytes < MIN_MEMORY {
                return Err(c.invalid(
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
                return Err(c.invalid(
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
        return Err(c.invalid(
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

/// `[restart]`: the restart policy and its storm protection, which cannot be switched off by
/// accident (a window shorter than a second never holds two exits of a worker that takes any
/// time to start, and restarts closer than 10 ms apart only burn CPU); and the `on_giveup`
/// command, which a shell must be able to take.
pub(super) fn restart_config(
    c: &Checker<'_>,
    file: FileRestart,
) -> Result<(RestartConfig, Option<String>), ConfigError> {
    if let Some(command) = file.on_giveup.as_deref().filter(|c| c.contains('\0')) {
        return Err(c.setting(
            "restart.on_giveup",
            format!(
                "{} contains a NUL byte, which no shell can be given",
                quoted(command)
            ),
        ));
    }
    let span = file.max_restarts.span();
    let max_restarts = file.max_restarts.into_inner();
    if max_restarts > MAX_RESTARTS {
        return Err(c.invalid(
            span,
            "restart.max_restarts",
            format!("{max_restarts} is out of range (allowed: 0 to {MAX_RESTARTS})"),
        ));
    }
    let storm = "a shorter window never sees a restart storm";
    let spin = "faster restarts only burn CPU";
    let looping = "a slot that cannot run would only be restarted in a loop";
    let restart = RestartConfig {
        max_restarts,
        window: c.at_least(file.window, "restart.window", MIN_WINDOW, storm)?,
        backoff_initial: c.at_least(
            file.backoff_initial,
            "restart.backoff_initial",
            MIN_BACKOFF,
            spin,
        )?,
        backoff_max: c.at_least(file.backoff_max, "restart.backoff_max", MIN_BACKOFF, spin)?,
        min_uptime: c.duration(file.min_uptime, "restart.min_uptime")?,
        retry_after: c.at_least(file.retry_after, "restart.retry_after", MIN_WINDOW, looping)?,
        on_all_given_up: file.on_all_given_up,
    };
    Ok((restart, file.on_giveup))
}

/// `[shutdown]`: how long a worker has to stop, the signal it is sent, and whether a Node
/// worker gets Node's `disconnect` — one of the two must ask a Node worker to stop; and how
/// long a graceful stop drains first.
pub(super) fn shutdown_config(
    c: &Checker<'_>,
    file: FileShutdown,
    protocol: Protocol,
) -> Result<(Duration, StopSignal, bool, Duration), ConfigError> {
    let kill_timeout = c.duration(file.kill_timeout, "shutdown.kill_timeout")?;
    let drain = c.duration(file.drain, "shutdown.drain")?;
    let span = file.signal.span();
    let stop_signal = StopSignal::parse(file.signal.get_ref())
        .map_err(|message| c.invalid(span, "shutdown.signal", message))?;
    let span = file.disconnect.span();
    let disconnect = file.disconnect.into_inner();
    if !disconnect && stop_signal == StopSignal::None && protocol.is_node() {
        return Err(c.invalid(
            span,
            "shutdown.disconnect",
            "false with signal = \"none\" would ask nothing of a Node worker: it would run \
             until SIGKILL at kill_timeout; keep the disconnect or name a signal"
                .into(),
        ));
    }
    Ok((kill_timeout, stop_signal, disconnect, drain))
}

/// `[watch]`: each path existing, relative ones from the config file's directory; with
/// `--watch` and no paths, the worker's directory (else the current one). `None`: no watching.
pub(super) fn watch_config(
    c: &Checker<'_>,
    file: FileWatch,
    cli_watch: bool,
    worker_dir: Option<&Path>,
) -> Result<Option<WatchConfig>, ConfigError> {
    let debounce = c.duration(file.debounce, "watch.debounce")?;
    let mut paths = Vec::new();
    for (i, path) in file.paths.into_iter().enumerate() {
        let span = path.span();
        let path = c.relative(path);
        if !path.exists() {
            let why = format!("{} does not exist", path.display());
            return Err(c.invalid(span, &format!("watch.paths[{i}]"), why));
        }
        paths.push(path);
    }
    if paths.is_empty() && cli_watch {
        let here = std::env::current_dir().unwrap_or_default();
        let dir = worker_dir.map_or(here, Path::to_path_buf);
        if dir.parent().is_none() {
            return Err(ConfigError::Setting(
                "--watch would watch / (the worker's directory): name what to watch in \
                 [watch] paths, or start from the app's directory"
                    .into(),
            ));
        }
        paths.push(dir);
    }
    Ok((!paths.is_empty()).then_some(WatchConfig {
        paths,
        ignore: file.ignore,
        debounce,
    }))
}
