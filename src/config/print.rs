//! `rrbalancer check`'s output: the effective configuration printed as a file that loads.

use super::*;
use toml::{Table, Value};

impl Config {
    /// The effective settings as a config file that loads back to the same settings (what
    /// `rrbalancer check` prints): defaults written out, flags and environment applied, paths
    /// made absolute.
    pub fn to_toml(&self) -> String {
        self.environment_comment() + &toml::to_string(&self.to_table()).unwrap_or_default()
    }

    /// [`Config::to_toml`]'s table, without the comment.
    pub(super) fn to_table(&self) -> Table {
        let mut top = Table::new();
        let listen = self.listen.iter().map(|a| text(&a.to_string())).collect();
        top.insert("listen".into(), Value::Array(listen));
        top.insert("workers".into(), int(self.workers as u64));
        top.insert("sched_policy".into(), text(self.sched_policy.as_str()));
        top.insert("backlog".into(), int(self.backlog.into()));
        top.insert("worker".into(), Value::Table(worker_table(&self.worker)));
        if let Some(a) = &self.agent {
            let mut agent = command_table(&a.command);
            agent.insert("protocol".into(), text(a.protocol.as_str()));
            agent.insert("ready".into(), text(a.ready.as_str()));
            agent.insert("ready_delay".into(), duration(a.ready_delay));
            agent.insert("ready_timeout".into(), duration(a.ready_timeout));
            top.insert("agent".into(), Value::Table(agent));
        }
        let mut dispatch = Table::new();
        dispatch.insert("affinity".into(), text(self.affinity.as_str()));
        dispatch.insert("batch".into(), Value::Boolean(self.batch));
        top.insert("dispatch".into(), Value::Table(dispatch));
        let mut shutdown = Table::new();
        shutdown.insert("kill_timeout".into(), duration(self.kill_timeout));
        shutdown.insert("signal".into(), text(self.stop_signal.as_str()));
        shutdown.insert("disconnect".into(), Value::Boolean(self.disconnect));
        shutdown.insert("drain".into(), duration(self.drain));
        top.insert("shutdown".into(), Value::Table(shutdown));
        let restart = restart_table(&self.restart, self.on_giveup.as_deref());
        top.insert("restart".into(), Value::Table(restart));
        top.insert("recycle".into(), Value::Table(recycle_table(&self.recycle)));
        let mut control = Table::new();
        control.insert("pid_file".into(), path(&self.control.pid_file));
        control.insert("socket".into(), path(&self.control.socket));
        top.insert("control".into(), Value::Table(control));
        let metrics = self.metrics.as_ref().map(metrics_table).unwrap_or_default();
        top.insert("metrics".into(), Value::Table(metrics));
        top.insert("log".into(), Value::Table(log_table(&self.log)));
        if let Some(id) = &self.master_user {
            let mut master = Table::new();
            master.insert("user".into(), text(&id.user));
            master.insert("group".into(), text(&id.group));
            top.insert("master".into(), Value::Table(master));
        }
        if let Some(w) = &self.watch {
            let mut watch = Table::new();
            watch.insert(
                "paths".into(),
                Value::Array(w.paths.iter().map(|p| path(p)).collect()),
            );
            watch.insert(
                "ignore".into(),
                Value::Array(w.ignore.iter().map(|i| text(i)).collect()),
            );
            watch.insert("debounce".into(), duration(w.debounce));
            top.insert("watch".into(), Value::Table(watch));
        }
        top
    }

    /// Which `[env.<name>]` block is applied, and which the file has: comment lines (the
    /// variables themselves are merged into `[worker] env` and `[agent] env` below).
    pub(super) fn environment_comment(&self) -> String {
        let names: Vec<String> = self.environments.iter().map(|n| quoted(n)).collect();
        match &self.environment {
            Some(name) => format!(
                "# environment {} (--env): [env] and its block are merged into each process's \
                 env below; the file's environments: {}\n",
                quoted(name),
                names.join(", ")
            ),
            None if names.is_empty() => String::new(),
            None => format!(
                "# no environment selected (--env NAME): the file's environments: {}\n",
                names.join(", ")
            ),
        }
    }
}

impl AppsConfig {
    /// `check`'s output for a file with apps: the master-wide sections, then every app as an
    /// `[[app]]` with its effective settings.
    pub fn to_toml(&self) -> String {
        let mut top = toml::Table::new();
        let mut control = toml::Table::new();
        let path = |p: &Path| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            toml::Value::String(p.display().to_string())
        };
        control.insert("pid_file".into(), path(&self.control.pid_file));
        control.insert("socket".into(), path(&self.control.socket));
        top.insert("control".into(), toml::Value::Table(control));
        let mut metrics = toml::Table::new();
        if let Some(m) = &self.metrics {
            metrics = print::metrics_table(m);
        }
        top.insert("metrics".into(), toml::Value::Table(metrics));
        let mut log = toml::Table::new();
        if let Some(p) = &self.log.master_log {
            log.insert("master_log".into(), path(p));
        }
        log.insert(
            "format".into(),
            toml::Value::String(self.log.format.as_str().into()),
        );
        top.insert("log".into(), toml::Value::Table(log));
        let mut apps = Vec::new();
        let mut envs = Vec::new();
        for app in &self.apps {
            let mut table = toml::Table::new();
            table.insert("name".into(), toml::Value::String(app.name.clone()));
            for (k, v) in app.config.to_table() {
                if !["control", "metrics"].contains(&k.as_str()) {
                    table.insert(k, v);
                }
            }
            if let Some(log) = table.get_mut("log").and_then(toml::Value::as_table_mut) {
                log.remove("master_log");
                log.remove("format");
            }
            apps.push(toml::Value::Table(table));
            envs.push((quoted(&app.name), app.config.environment_comment()));
        }
        top.insert("app".into(), toml::Value::Array(apps));
        // Which environment each app applied: once when it is the same for all.
        let all = envs.windows(2).all(|w| w[0].1 == w[1].1);
        let mut comments = String::new();
        for (name, env) in envs.iter().filter(|(_, env)| !env.is_empty()) {
            let whose = if all {
                "every [[app]]".into()
            } else {
                format!("[[app]] {name}")
            };
            comments.push_str(&format!("# {whose}: {}", &env[2..]));
            if all {
                break;
            }
        }
        comments + &toml::to_string(&top).unwrap_or_default()
    }
}

/// `[metrics]`.
pub(super) fn metrics_table(m: &MetricsConfig) -> Table {
    let mut metrics = Table::new();
    metrics.insert("listen".into(), text(&m.listen.to_string()));
    if let Some(agent) = m.haproxy_agent {
        metrics.insert("haproxy_agent".into(), text(&agent.to_string()));
    }
    if let Some(allow) = &m.allow {
        let allow = allow.iter().map(|net| text(&net.to_string())).collect();
        metrics.insert("allow".into(), Value::Array(allow));
    }
    metrics
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

/// A path, made absolute (the printed file may be read from another directory).
fn path(p: &Path) -> Value {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    Value::String(p.display().to_string())
}

fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// `exec`, `args`, `env`, `cwd`; the built-in demo worker is written as what selects it: no
/// `exec`.
fn command_table(c: &Command) -> Table {
    let mut table = Table::new();
    let args = if c.is_demo() {
        &c.args[1..]
    } else {
        table.insert("exec".into(), path(&c.program));
        &c.args[..]
    };
    let args = args.iter().map(|a| text(a)).collect();
    table.insert("args".into(), Value::Array(args));
    let env = c.env.iter().map(|(k, v)| (k.clone(), text(v))).collect();
    table.insert("env".into(), Value::Table(env));
    if let Some(cwd) = &c.cwd {
        table.insert("cwd".into(), path(cwd));
    }
    if let Some(id) = &c.identity {
        table.insert("user".into(), text(&id.user));
        table.insert("group".into(), text(&id.group));
    }
    table
}

fn worker_table(w: &WorkerConfig) -> Table {
    let mut worker = command_table(&w.command);
    worker.insert("protocol".into(), text(w.protocol.as_str()));
    if !w.protocol.is_node() {
        worker.insert("max_unacked".into(), int(w.max_unacked as u64));
    }
    worker.insert("ack_timeout".into(), duration(w.ack_timeout));
    worker.insert("ready".into(), text(w.ready.as_str()));
    worker.insert("ready_delay".into(), duration(w.ready_delay));
    worker.insert("ready_timeout".into(), duration(w.ready_timeout));
    let mut node = Table::new();
    for (key, message) in [
        ("socket_message", &w.node.socket),
        ("server_message", &w.node.server),
        ("leaving_message", &w.node.leaving),
    ] {
        // JSON's null has no TOML form; such a message came from no config file.
        if let Ok(value) = Value::try_from(message) {
            node.insert(key.into(), value);
        }
    }
    worker.insert("node".into(), Value::Table(node));
    worker
}

fn restart_table(r: &RestartConfig, on_giveup: Option<&str>) -> Table {
    let mut restart = Table::new();
    restart.insert("max_restarts".into(), int(r.max_restarts.into()));
    restart.insert("window".into(), duration(r.window));
    restart.insert("backoff_initial".into(), duration(r.backoff_initial));
    restart.insert("backoff_max".into(), duration(r.backoff_max));
    restart.insert("min_uptime".into(), duration(r.min_uptime));
    if let Some(command) = on_giveup {
        restart.insert("on_giveup".into(), text(command));
    }
    restart.insert("retry_after".into(), duration(r.retry_after));
    restart.insert("on_all_given_up".into(), text(r.on_all_given_up.as_str()));
    restart
}

fn recycle_table(c: &RecycleConfig) -> Table {
    let mut recycle = Table::new();
    let max_connections = int(c.max_connections.unwrap_or(0));
    recycle.insert("max_connections".into(), max_connections);
    if let Some(bytes) = c.max_memory {
        recycle.insert("max_memory".into(), text(&bytes.to_string()));
    }
    if let Some(age) = c.max_age {
        recycle.insert("max_age".into(), duration(age));
    }
    recycle.insert("jitter".into(), Value::Float(c.jitter));
    recycle
}

fn log_table(l: &LogConfig) -> Table {
    let mut log = Table::new();
    for (key, value) in [
        ("stdout", &l.stdout),
        ("stderr", &l.stderr),
        ("master_log", &l.master_log),
    ] {
        if let Some(p) = value {
            log.insert(key.into(), path(p));
        }
    }
    if let Some(format) = &l.date_format {
        log.insert("date_format".into(), text(format));
    }
    log.insert("format".into(), text(l.format.as_str()));
    log
}
