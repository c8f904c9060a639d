//! The file's schema: what serde reads from the TOML (unknown keys denied), with every default
//! written once in the `Default` impls. Spanned where an error must point at a value.

use super::*;

/// The file as written. Every field has a default, so an empty file is a complete config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Addresses to accept on: `"IP:PORT"`, `"[IPv6]:PORT"`, `"HOST:PORT"` (every address the
    /// name resolves to), `"unix:/path"`; one, or a list.
    pub listen: Spanned<ListenEntries>,
    /// How many workers to run: an integer or `"auto"` (one per CPU).
    pub workers: WorkerCount,
    /// `"rr"` (the master hands out connections in turn) or `"none"` (workers accept).
    pub sched_policy: Option<SchedPolicy>,
    /// Listen backlog: the kernel queue that holds clients while every worker is busy.
    pub backlog: Spanned<u32>,
    pub worker: FileWorker,
    /// `[agent]`: an optional process that serves no connections, only messages.
    pub agent: Option<Spanned<FileAgent>>,
    pub dispatch: FileDispatch,
    pub shutdown: FileShutdown,
    pub restart: FileRestart,
    pub recycle: FileRecycle,
    pub control: FileControl,
    pub metrics: FileMetrics,
    pub log: FileLog,
    pub watch: FileWatch,
    pub master: FileMaster,
    /// `[env]`: variables for the workers and the agent, and `[env.<name>]` blocks `--env`
    /// selects (`environments.rs`).
    pub env: environments::FileEnv,
    /// `[[app]]`: several apps in one file (`apps.rs` reads them; a file with them is never
    /// read whole as one app).
    #[serde(default)]
    pub app: Option<toml::Value>,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: Spanned::new(0..0, ListenEntries(vec!["127.0.0.1:3000".into()])),
            workers: WorkerCount::Auto,
            sched_policy: None,
            backlog: Spanned::new(0..0, 511),
            worker: FileWorker::default(),
            agent: None,
            dispatch: FileDispatch::default(),
            shutdown: FileShutdown::default(),
            restart: FileRestart::default(),
            recycle: FileRecycle::default(),
            control: FileControl::default(),
            metrics: FileMetrics::default(),
            log: FileLog::default(),
            watch: FileWatch::default(),
            master: FileMaster::default(),
            env: BTreeMap::new(),
            app: None,
        }
    }
}

/// `[worker]`: what to run and how it talks to the master.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileWorker {
    /// Program to run; looked up on `PATH` unless it contains a `/` (then relative to `cwd`, or
    /// to the config file's directory). Unset: the built-in demo worker (`rrbalancer
    /// demo-worker`).
    pub exec: Option<Spanned<String>>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Extra environment variables, on top of the master's own.
    pub env: BTreeMap<String, String>,
    /// Working directory; relative paths are taken from the config file's directory.
    pub cwd: Option<Spanned<PathBuf>>,
    /// The user to run it as (a name or a uid), set between fork and exec; needs root. Unset:
    /// the master's.
    pub user: Option<Spanned<String>>,
    /// Its group (a name or a gid); unset: `user`'s primary group.
    pub group: Option<Spanned<String>>,
    /// `"native"`: rrbalancer's channel protocol (docs/PROTOCOL.md).
    pub protocol: Protocol,
    /// Sockets a native worker may hold un-acked (its window); a worker with a full window
    /// is skipped. Node workers take one at a time (Node's rule) and must not set it.
    pub max_unacked: Option<Spanned<usize>>,
    /// A worker holding a socket un-acked this long is stuck: it is killed, and its sockets go
    /// to other workers once it is dead.
    pub ack_timeout: Spanned<HumanDuration>,
    /// `"message"`: ready when it says so; `"delay"`: `ready_delay` after it starts;
    /// `"start"`: at once. Default: "start" for `node`, "message" otherwise.
    pub ready: Option<Spanned<Readiness>>,
    /// With `ready = "delay"`: how long after start a worker counts as ready.
    pub ready_delay: Spanned<HumanDuration>,
    /// A worker not ready this long after start is killed; it counts as a failed start.
    pub ready_timeout: Spanned<HumanDuration>,
    /// `[worker.node]`: the messages of the Node protocols.
    pub node: FileNode,
}

/// `[agent]`: the seeds' notification process. Supervised like a worker (restart policy,
/// readiness, graceful stop, captured output); it gets no connection, starts before the workers
/// and stops after them, and its messages go to every worker (docs/PROTOCOL.md "Messages").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table of [agent] keys")]
pub struct FileAgent {
    /// Program to run, found as `[worker] exec` is. Required.
    pub exec: Option<Spanned<String>>,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<Spanned<PathBuf>>,
    /// As `[worker] user` and `group`.
    pub user: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    /// `"native"` or `"node"` (`process.send` / `process.on('message')`); not `"node-cluster"`:
    /// an agent is no cluster worker.
    pub protocol: Spanned<Protocol>,
    /// As `[worker] ready`: default "start" for `node`, "message" otherwise.
    pub ready: Option<Spanned<Readiness>>,
    pub ready_delay: Spanned<HumanDuration>,
    pub ready_timeout: Spanned<HumanDuration>,
}

impl Default for FileAgent {
    fn default() -> Self {
        let worker = FileWorker::default();
        FileAgent {
            exec: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            group: None,
            protocol: Spanned::new(0..0, Protocol::Native),
            ready: None,
            ready_delay: worker.ready_delay,
            ready_timeout: worker.ready_timeout,
        }
    }
}

/// `[worker.node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileNode {
    /// The message each connection comes with (`process.on('message', (m, socket))`).
    pub socket_message: toml::Value,
    /// The message the listening server comes with in `none` mode.
    pub server_message: toml::Value,
    /// The user message that means "leaving" (the seeds' `{act: 'suicide'}`).
    pub leaving_message: toml::Value,
}

impl Default for FileNode {
    fn default() -> Self {
        let mut suicide = toml::Table::new();
        suicide.insert("act".into(), "suicide".into());
        FileNode {
            socket_message: "socket".into(),
            server_message: "server".into(),
            leaving_message: toml::Value::Table(suicide),
        }
    }
}

impl Default for FileWorker {
    fn default() -> Self {
        FileWorker {
            exec: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            group: None,
            protocol: Protocol::Native,
            max_unacked: None,
            ack_timeout: Spanned::new(0..0, HumanDuration(Duration::from_secs(10))),
            ready: None,
            ready_delay: Spanned::new(0..0, HumanDuration(Duration::from_secs(1))),
            ready_timeout: Spanned::new(0..0, HumanDuration(Duration::from_secs(30))),
            node: FileNode::default(),
        }
    }
}

/// `[dispatch]`: how the master picks the worker for a connection (`rr` mode).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileDispatch {
    /// `"none"` or `"client-ip"` (a client address sticks to one slot).
    pub affinity: Affinity,
    /// Connections accepted together go to one worker, up to its window, before the next
    /// worker's turn (one message, one wake-up); `false` (the default): one per worker per
    /// loop turn.
    pub batch: bool,
}

/// `[shutdown]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileShutdown {
    /// How long workers get to finish after `stop` before they are killed.
    pub kill_timeout: Spanned<HumanDuration>,
    /// The signal a worker is asked to stop with: `"auto"`, `"none"` or a name (`"SIGTERM"`).
    pub signal: Spanned<String>,
    /// Node workers: send Node's `disconnect` when asking them to stop (else the signal alone).
    pub disconnect: Spanned<bool>,
    /// How long a graceful stop first serves on while reporting itself not ready.
    pub drain: Spanned<HumanDuration>,
}

impl Default for FileShutdown {
    fn default() -> Self {
        FileShutdown {
            kill_timeout: Spanned::new(0..0, HumanDuration(Duration::from_secs(5))),
            signal: Spanned::new(0..0, "auto".into()),
            disconnect: Spanned::new(0..0, true),
            drain: Spanned::new(0..0, HumanDuration(Duration::ZERO)),
        }
    }
}

/// `[master]`: the master process itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileMaster {
    /// The user the master drops to once it has bound its listeners (a name or a uid); needs
    /// root to start. Unset: it stays who started it.
    pub user: Option<Spanned<String>>,
    /// Its group; unset: `user`'s primary group.
    pub group: Option<Spanned<String>>,
}

/// `[control]`: where the running master can be found.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileControl {
    /// The master's pid file. Default: `$XDG_RUNTIME_DIR/rrbalancer/<name>.pid` (or
    /// `/tmp/rrbalancer-<uid>/…`), `<name>` from the config file's name and path only.
    pub pid_file: Option<Spanned<PathBuf>>,
    /// The control socket (`rrbalancer status|reload|scale|stop`). Default: beside the pid
    /// file, `<name>.sock`.
    pub socket: Option<Spanned<PathBuf>>,
}

/// `[metrics]`: an HTTP listener for monitoring, served by the master's own event loop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileMetrics {
    /// Where to serve `/metrics` (Prometheus text format), `/healthz` and `/readyz`, e.g.
    /// `"127.0.0.1:9100"`. Default: none (`rrbalancer metrics` still prints the metrics).
    pub listen: Option<Spanned<String>>,
    /// Who may connect to `listen`: addresses (`"192.0.2.7"`, `"::1"`) and networks in CIDR
    /// notation (`"10.0.0.0/8"`, `"fd00::/8"`); a client from elsewhere is closed at once.
    /// Unset: anyone who can reach `listen`.
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// Where to answer HAProxy's `agent-check` (`"127.0.0.1:9101"`): one line per connection
    /// saying how much of this host is free. Default: none.
    pub haproxy_agent: Option<Spanned<String>>,
}

/// `[log]`: where output goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileLog {
    /// File that receives the workers' stdout, each line prefixed with slot and pid. Unset:
    /// workers inherit rrbalancer's stdout.
    pub stdout: Option<Spanned<PathBuf>>,
    /// The same for the workers' stderr.
    pub stderr: Option<Spanned<PathBuf>>,
    /// strftime-style timestamp put before each captured line (e.g. "%Y-%m-%dT%H:%M:%S%.3f").
    pub date_format: Option<String>,
    /// File for the master's own log. Unset: stderr.
    pub master_log: Option<Spanned<PathBuf>>,
    /// The master's own log lines: `"text"` (default) or `"json"` (one object per line).
    pub format: LogFormat,
}

/// `[watch]`: reload when files change (PM2's `--watch`, gunicorn's `--reload`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileWatch {
    /// Files and directories (watched with everything under them) whose changes reload the
    /// workers; relative to the config file's directory. Empty: no watching.
    pub paths: Vec<Spanned<PathBuf>>,
    /// Names left out: a name, `*.suffix` or `prefix*` (`node_modules`, `*.log`, `.git*`).
    pub ignore: Vec<String>,
    /// A burst of changes reloads once, this long after its last change.
    pub debounce: Spanned<HumanDuration>,
}

impl Default for FileWatch {
    fn default() -> Self {
        FileWatch {
            paths: Vec::new(),
            ignore: [
                ".git",
                "node_modules",
                "__pycache__",
                "*.log",
                "*.swp",
                "*~",
            ]
            .map(String::from)
            .to_vec(),
            debounce: Spanned::new(0..0, HumanDuration(Duration::from_millis(500))),
        }
    }
}

/// `[restart]`: what happens when a worker exits unasked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileRestart {
    /// This many unasked exits of one slot within `window` is a restart storm: give up the slot.
    pub max_restarts: Spanned<u32>,
    /// The sliding window `max_restarts` counts in.
    pub window: Spanned<HumanDuration>,
    /// First delay before restarting a slot; grows by 1.5× per consecutive failure.
    pub backoff_initial: Spanned<HumanDuration>,
    /// The delay never grows beyond this.
    pub backoff_max: Spanned<HumanDuration>,
    /// A worker that stayed up this long resets the back-off.
    pub min_uptime: Spanned<HumanDuration>,
    /// Shell command run when a slot is given up (`sh -c`), with RRB_GIVEUP_SLOT,
    /// RRB_GIVEUP_PID and RRB_GIVEUP_REASON in its environment.
    pub on_giveup: Option<String>,
    /// A slot given up is started again after this, with a fresh window.
    pub retry_after: Spanned<HumanDuration>,
    /// What the master does once every slot has given up: wait for `retry_after` with its
    /// listeners open, or exit.
    pub on_all_given_up: AllGivenUp,
}

impl Default for FileRestart {
    fn default() -> Self {
        FileRestart {
            max_restarts: Spanned::new(0..0, 10),
            window: Spanned::new(0..0, HumanDuration(Duration::from_secs(60))),
            backoff_initial: Spanned::new(0..0, HumanDuration(Duration::from_millis(100))),
            backoff_max: Spanned::new(0..0, HumanDuration(Duration::from_secs(15))),
            min_uptime: Spanned::new(0..0, HumanDuration(Duration::from_secs(1))),
            on_giveup: None,
            retry_after: Spanned::new(0..0, HumanDuration(DEFAULT_RETRY_AFTER)),
            on_all_given_up: AllGivenUp::Wait,
        }
    }
}

/// `[recycle]`: replacing a healthy worker before it has served too much, grown too big or
/// lived too long (PM2's `max_memory_restart`, gunicorn's `max_requests` and its jitter).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileRecycle {
    /// Connections handed to one worker (± `jitter`) before it is replaced. 0: no limit.
    pub max_connections: Spanned<u64>,
    /// Resident memory of the worker's process group ("512MiB", "1GB") beyond which it is
    /// replaced. Unset: no limit.
    pub max_memory: Option<Spanned<String>>,
    /// Age (± `jitter`) at which a worker is replaced. Unset: no limit.
    pub max_age: Option<Spanned<HumanDuration>>,
    /// How far each worker's own `max_connections` and `max_age` are moved, at random, from
    /// the configured value, so that workers do not all recycle together: 0.1 is ± 10 %.
    pub jitter: Spanned<f64>,
}

impl Default for FileRecycle {
    fn default() -> Self {
        FileRecycle {
            max_connections: Spanned::new(0..0, 0),
            max_memory: None,
            max_age: None,
            jitter: Spanned::new(0..0, 0.1),
        }
    }
}

/// `listen` as written: one address, or a list of them, each still text (a host name is
/// resolved when the file is validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEntries(pub Vec<String>);

impl<'de> Deserialize<'de> for ListenEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = ListenEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address such as \"127.0.0.1:3000\", or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ListenEntries, E> {
                Ok(ListenEntries(vec![s.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ListenEntries, A::Error> {
                let mut all = Vec::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    all.push(entry);
                }
                Ok(ListenEntries(all))
            }
        }
        d.deserialize_any(Entries)
    }
}
