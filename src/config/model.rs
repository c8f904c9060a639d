//! The validated configuration, the only shape the rest of the program sees: [`Config`] and its
//! sections.

use super::*;

/// `[metrics]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// The networks clients may connect from (an address is a network of one); `None`: any.
    pub allow: Option<Vec<IpNet>>,
    /// `haproxy_agent`: where HAProxy's agent-check is answered, if anywhere (`allow` applies).
    pub haproxy_agent: Option<SocketAddr>,
}

impl MetricsConfig {
    /// Whether a client at `ip` may connect (an IPv4 address mapped into IPv6 is taken as the
    /// IPv4 address it is).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.allow.as_ref()).is_none_or(|nets| nets.iter().any(|net| net.contains(&ip)))
    }
}

/// The validated `[recycle]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecycleConfig {
    pub max_connections: Option<u64>,
    /// Bytes.
    pub max_memory: Option<u64>,
    pub max_age: Option<Duration>,
    /// 0 to [`MAX_JITTER`].
    pub jitter: f64,
}

/// The validated configuration the program runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages: a path, or `None` for the embedded default.
    pub source: Option<PathBuf>,
    pub listen: Vec<ListenAddr>,
    pub workers: usize,
    pub sched_policy: SchedPolicy,
    /// Which setting decided `sched_policy`, for the start-up log.
    pub policy_source: PolicySource,
    pub backlog: u32,
    pub worker: WorkerConfig,
    /// `[agent]`, if configured.
    pub agent: Option<AgentConfig>,
    pub affinity: Affinity,
    /// `[dispatch] batch`: a worker takes up to its window of one turn's connections at once.
    pub batch: bool,
    pub kill_timeout: Duration,
    pub stop_signal: StopSignal,
    /// Node workers get Node's `disconnect` when asked to stop (`[shutdown] disconnect`).
    pub disconnect: bool,
    /// `[shutdown] drain`: how long a graceful stop first serves on, reported not ready.
    pub drain: Duration,
    pub restart: RestartConfig,
    pub recycle: RecycleConfig,
    pub on_giveup: Option<String>,
    pub control: ControlConfig,
    /// `[metrics]`: the monitoring listener, if any, and who may use it.
    pub metrics: Option<MetricsConfig>,
    pub log: LogConfig,
    /// `[watch]` (or `--watch`): reload on changes, if any path is watched.
    pub watch: Option<WatchConfig>,
    /// `[master] user`/`group`: whom the master becomes once its listeners are bound.
    pub master_user: Option<Identity>,
    /// The `[env.<name>]` block `--env` selected (merged into the workers' and the agent's
    /// environment), and every block the file has.
    pub environment: Option<String>,
    pub environments: Vec<String>,
    /// The `[[app]]` this is, when it is one of several apps of a file (`--app`): its master
    /// is run by the master of all of them, and registers nowhere else.
    pub app: Option<String>,
}

/// `[watch]`, validated: existing paths, absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    pub paths: Vec<PathBuf>,
    pub ignore: Vec<String>,
    pub debounce: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub command: Command,
    pub protocol: Protocol,
    /// The window: sockets the worker may hold un-acked (1 for Node workers).
    pub max_unacked: usize,
    pub ack_timeout: Duration,
    pub ready: Readiness,
    pub ready_delay: Duration,
    pub ready_timeout: Duration,
    pub node: NodeMessages,
}

/// What a process is started with: `[worker]`'s or `[agent]`'s `exec`, `args`, `env`, `cwd`,
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// `argv[0]` and `argv[1..]`.
    pub arg0: OsString,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// The user and group it runs as (`user`, `group`); `None`: the master's.
    pub identity: Option<Identity>,
}

/// A user and group a process is started as, resolved when the file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// As written (a name or a number), for `check` and the log.
    pub user: String,
    pub uid: u32,
    /// As written, or the user's primary group's name (its number if it has none).
    pub group: String,
    pub gid: u32,
    /// The user's name and home directory from the user database, when it has an entry.
    pub login: Option<(String, PathBuf)>,
}

impl Command {
    /// The built-in demo worker (`[worker]` without `exec`).
    pub fn is_demo(&self) -> bool {
        self.arg0 == "rrbalancer" && self.args.first().is_some_and(|a| a == "demo-worker")
    }
}

/// `[agent]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub command: Command,
    /// `Native` or `Node`.
    pub protocol: Protocol,
    pub ready: Readiness,
    pub ready_delay: Duration,
    pub ready_timeout: Duration,
}

/// The messages of the Node protocols, as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMessages {
    pub socket: serde_json::Value,
    pub server: serde_json::Value,
    pub leaving: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartConfig {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub min_uptime: Duration,
    /// A slot given up is started again after this.
    pub retry_after: Duration,
    pub on_all_given_up: AllGivenUp,
}

/// Where the running master is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub pid_file: PathBuf,
    pub socket: PathBuf,
}

/// Where output goes; relative paths were resolved against the config file's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogConfig {
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
    pub date_format: Option<String>,
    pub master_log: Option<PathBuf>,
    pub format: LogFormat,
}

impl Config {
    /// What the file allows but is most likely a mistake, for the log (at start and by
    /// `check`), each naming the key.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let name = self
            .source
            .as_ref()
            .map_or("<embedded default config>".into(), |p| {
                p.display().to_string()
            });
        if self.mode().socket_activation() {
            if let Some(arg) = (self.worker.command.args.iter()).find(|a| a.contains("fd://")) {
                warnings.push(format!(
                    "{name}: key `worker.args`: {} names a descriptor, while the workers also \
                     get LISTEN_FDS: a server that reads LISTEN_FDS itself (gunicorn) then opens \
                     that descriptor twice and dies at start with EBADF; give such a server no \
                     --bind (see config/servers/gunicorn.toml)",
                    quoted(arg)
                ));
            }
        }
        if let Some(m) = self.metrics.as_ref().filter(|m| m.allow.is_none()) {
            if !m.listen.ip().is_loopback() {
                warnings.push(format!(
                    "{name}: key `metrics.listen`: {} is reachable from beyond this host and \
                     `metrics.allow` is unset: anyone who can connect reads the metrics; name \
                     who may (allow = [\"10.0.0.0/8\"]), or listen on 127.0.0.1",
                    m.listen
                ));
            }
        }
        let mode = self.mode();
        let batch_void = if !self.batch {
            None
        } else if !mode.master_accepts() {
            Some("in `none` mode the workers accept their connections themselves")
        } else if mode.node() {
            Some("Node workers take one connection at a time")
        } else if self.worker.max_unacked <= 1 {
            Some("with `worker.max_unacked = 1` a worker holds one connection at a time")
        } else {
            None
        };
        if let Some(why) = batch_void {
            warnings.push(format!(
                "{name}: key `dispatch.batch`: true has no effect here: {why}"
            ));
        }
        warnings
    }

    /// How connections reach workers and what their channel speaks.
    pub fn mode(&self) -> Mode {
        Mode::new(self.sched_policy, self.worker.protocol)
    }
}
