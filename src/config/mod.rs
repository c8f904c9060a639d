//! Configuration: `cluster.toml` → [`FileConfig`] (serde, unknown keys denied) → [`validate`] →
//! [`Config`], the only shape the rest of the program sees.
//!
//! Two steps, because a TOML file can be well-formed and still wrong (a program that does not
//! exist, a policy we do not know). Every error names the file, the line and column, the key and
//! what is allowed, on one line, so an operator can fix it without reading our source. Values that
//! have a syntax of their own (addresses, durations, worker counts) are parsed while deserializing,
//! so their errors point at the exact spot in the file.
//!
//! Defaults are written once, in the `Default` impls and `default_*` functions below; the
//! embedded default configuration (no `--config`) is simply an empty file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::text::quoted;
use ipnet::IpNet;
use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

pub mod host;

pub use host::default_runtime_dir;

/// How accepted connections reach workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SchedPolicy {
    /// The master accepts and hands each connection to the next worker in turn (`SCHED_RR`).
    Rr,
    /// Every worker accepts on the shared listeners itself (`SCHED_NONE`).
    None,
}

impl SchedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SchedPolicy::Rr => "rr",
            SchedPolicy::None => "none",
        }
    }
}

impl FromStr for SchedPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rr" => Ok(SchedPolicy::Rr),
            "none" => Ok(SchedPolicy::None),
            other => Err(format!(
                "unknown policy {} (allowed: \"rr\", \"none\")",
                quoted(other)
            )),
        }
    }
}

/// Which protocol the worker speaks on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// rrbalancer's own seqpacket protocol (`docs/PROTOCOL.md`).
    Native,
    /// Node's `child_process` IPC: each connection arrives as `process.on('message', (m,
    /// socket) => …)`.
    Node,
    /// Node's `cluster` protocol: rrbalancer is the primary of an unmodified cluster app.
    NodeCluster,
}

impl Protocol {
    pub fn is_node(self) -> bool {
        matches!(self, Protocol::Node | Protocol::NodeCluster)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Node => "node",
            Protocol::NodeCluster => "node-cluster",
        }
    }
}

/// `sched_policy` × `protocol`, resolved once: what the master does with its listeners and how
/// it talks to workers. The master asks these questions, not the two settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    policy: SchedPolicy,
    protocol: Protocol,
}

impl Mode {
    pub fn new(policy: SchedPolicy, protocol: Protocol) -> Mode {
        Mode { policy, protocol }
    }

    /// The master accepts every connection and hands it to a worker (`rr`).
    pub fn master_accepts(self) -> bool {
        self.policy == SchedPolicy::Rr
    }

    /// Every worker accepts on the listeners itself (`none`).
    pub fn workers_accept(self) -> bool {
        self.policy == SchedPolicy::None
    }

    /// Workers inherit the listeners at fd 3… with `LISTEN_FDS` (systemd socket activation):
    /// `none` with the native protocol. Such servers expect blocking listeners; Node workers
    /// get theirs as handles over the channel instead, and non-blocking.
    pub fn socket_activation(self) -> bool {
        self.workers_accept() && !self.node()
    }

    /// The channel speaks Node's IPC (over a stream pair), not the native protocol (seqpacket).
    pub fn node(self) -> bool {
        self.protocol.is_node()
    }

    /// Node's cluster protocol: rrbalancer is the primary.
    pub fn cluster(self) -> bool {
        self.protocol == Protocol::NodeCluster
    }
}

/// Whether a client keeps going to the same worker slot (`[dispatch] affinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Every connection goes to the next free worker in turn.
    #[default]
    None,
    /// Connections from one client address go to one slot (rendezvous hashing over the
    /// slots) while its worker can take them, else to the next free worker in turn.
    ClientIp,
}

impl Affinity {
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::None => "none",
            Affinity::ClientIp => "client-ip",
        }
    }
}

/// What the master does once every slot has given up (`[restart] on_all_given_up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllGivenUp {
    /// Stay up: the listeners stay open (clients wait in the backlog), `/readyz` says 503, and
    /// each slot is tried again `retry_after` after it was given up. An outage is never the
    /// default reaction to workers that cannot be kept running (load, a database down).
    #[default]
    Wait,
    /// Stop and exit 1, for a supervisor above (systemd, a container runtime) to act on.
    Exit,
}

impl AllGivenUp {
    pub fn as_str(self) -> &'static str {
        match self {
            AllGivenUp::Wait => "wait",
            AllGivenUp::Exit => "exit",
        }
    }
}

/// How long a slot given up stays empty before it is tried again, unless configured.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The longest duration any key may have (a day): deadlines computed from it cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The native window when the config does not set `max_unacked` (see bench/README.md for the
/// measurements it was chosen by).
pub const DEFAULT_MAX_UNACKED: usize = 4;

/// When a started worker counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// When it sends `ready` on its channel.
    Message,
    /// `ready_delay` after it starts (for programs that speak no protocol).
    Delay,
    /// As soon as it is started (`protocol = "node"`: Node buffers what arrives before the
    /// script's top level has run, so its `message` listener sees everything).
    Start,
}

impl Readiness {
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Message => "message",
            Readiness::Delay => "delay",
            Readiness::Start => "start",
        }
    }
}

/// One address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => addr.fmt(f),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, as in \"unix:/run/app.sock\"".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!(
                "invalid listen address {} (allowed: \"IP:PORT\" such as \"127.0.0.1:3000\", \
                 \"[::1]:3000\", or \"unix:/path/to.sock\")",
                quoted(s)
            )
        })
    }
}

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes with the final NUL).
const MAX_UNIX_PATH: usize = 107;

/// Addresses that cannot all be bound: the same one twice (port 0 excepted: each picks its
/// own), a Unix socket path longer than the kernel takes or where none can be bound
/// ([`host::unix_listen_problem`]).
fn check_listen(listen: &[ListenAddr]) -> Result<(), String> {
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

fn check_unix_path(path: &Path) -> Result<(), String> {
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
fn check_exec_strings(
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

/// Whether a worker's arguments and environment (with the master's own, which it inherits) fit
/// in what `execve` accepts: the system's `ARG_MAX` in all, and 128 KiB per string on Linux.
fn check_exec_size(
    section: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    const MAX_ARG_STRLEN: usize = 128 * 1024;
    let arg_max = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .map_or(2 * 1024 * 1024, |n| n as usize);
    let pointer = std::mem::size_of::<usize>();
    if let Some(long) = args.iter().find(|a| a.len() >= MAX_ARG_STRLEN) {
        return Err(format!(
            "key `{section}.args`: an argument of {} bytes ({}) is longer than one argument may be \
             ({MAX_ARG_STRLEN} bytes)",
            long.len(),
            quoted(long)
        ));
    }
    if let Some((k, v)) = env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 1 >= MAX_ARG_STRLEN)
    {
        return Err(format!(
            "key `{section}.env`: {} is {} bytes, longer than one variable may be ({MAX_ARG_STRLEN} \
             bytes)",
            quoted(k),
            k.len() + v.len() + 1
        ));
    }
    let inherited: usize = std::env::vars_os()
        .map(|(k, v)| k.len() + v.len() + 2 + pointer)
        .sum();
    let ours: usize = args.iter().map(|a| a.len() + 1 + pointer).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| k.len() + v.len() + 2 + pointer)
            .sum::<usize>();
    if inherited + ours > arg_max {
        return Err(format!(
            "keys `{section}.args` and `{section}.env`: {} arguments and {} variables take {} bytes \
             with rrbalancer's own environment ({inherited} bytes); the system starts no program \
             with more than {arg_max} (ARG_MAX)",
            args.len(),
            env.len(),
            inherited + ours
        ));
    }
    Ok(())
}

/// `workers`: a count, or `"auto"` for one per CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerCount {
    #[default]
    Auto,
    Exactly(usize),
}

impl WorkerCount {
    pub fn resolve(self) -> usize {
        match self {
            WorkerCount::Exactly(n) => n,
            WorkerCount::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// The most workers one master runs; more is almost certainly a typo.
pub const MAX_WORKERS: usize = 1024;

/// The shortest `[restart] window`.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The shortest `[restart] backoff_initial` and `backoff_max`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(10);

/// The bound of `[restart] max_restarts`: the master remembers each exit within the window, so
/// a slot's history stays below some 160 KB.
pub const MAX_RESTARTS: u32 = 10_000;

impl FromStr for WorkerCount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(WorkerCount::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(WorkerCount::Exactly(n)),
            _ => Err(format!(
                "invalid worker count {} (allowed: 1 to {MAX_WORKERS}, or \"auto\")",
                quoted(s)
            )),
        }
    }
}

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            de::Error::custom(format!(
                "expected an integer from 1 to {MAX_WORKERS} or \"auto\""
            ))
        })? {
            Raw::Int(n) => n.to_string().parse().map_err(de::Error::custom),
            Raw::Str(s) => s.parse().map_err(de::Error::custom),
        }
    }
}

/// A duration written as a string: `"500ms"`, `"5s"`, `"1m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            de::Error::custom("expected a duration string such as \"500ms\", \"5s\" or \"1m\"")
        })?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {}: {e} (write e.g. \"500ms\", \"5s\", \"1m\")",
                    quoted(&s)
                ))
            })
    }
}

fn from_str_de<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str_de(d)
    }
}

/// The file as written. Every field has a default, so an empty file is a complete config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// Addresses to accept on: `"IP:PORT"`, `"[IPv6]:PORT"`, `"unix:/path"`.
    pub listen: Spanned<Vec<ListenAddr>>,
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
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: Spanned::new(0..0, vec![ListenAddr::Tcp(([127, 0, 0, 1], 3000).into())]),
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
}

impl Default for FileShutdown {
    fn default() -> Self {
        FileShutdown {
            kill_timeout: Spanned::new(0..0, HumanDuration(Duration::from_secs(5))),
            signal: Spanned::new(0..0, "auto".into()),
            disconnect: Spanned::new(0..0, true),
        }
    }
}

/// `[shutdown] signal`: what a worker gets when it is asked to stop (stop, reload,
/// scale-down), before SIGKILL at `kill_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM, except for a native-protocol worker, which gets its `stop` message alone.
    Auto,
    /// No signal beside the channel's `stop` (Node: `disconnect`). A worker that cannot be told
    /// on its channel (it never spoke the protocol) still gets SIGTERM: nothing else would ask
    /// it to stop.
    None,
    /// This signal: after `stop` (Node: `disconnect`) for a worker that speaks a protocol.
    Signal(Signal),
}

impl StopSignal {
    /// The signal for a worker that was sent `stop` or `disconnect` on its channel (`node`:
    /// that worker speaks Node's IPC), if any.
    pub fn after_stop(self, node: bool) -> Option<Signal> {
        match self {
            StopSignal::Auto if node => Some(Signal::SIGTERM),
            StopSignal::Auto | StopSignal::None => None,
            StopSignal::Signal(signal) => Some(signal),
        }
    }

    /// The signal for a worker that cannot be told on a channel (it never spoke, or its
    /// channel is gone): always one, or nothing would ask it to stop before SIGKILL.
    pub fn alone(self) -> Signal {
        match self {
            StopSignal::Auto | StopSignal::None => Signal::SIGTERM,
            StopSignal::Signal(signal) => signal,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopSignal::Auto => "auto",
            StopSignal::None => "none",
            StopSignal::Signal(signal) => signal.as_str(),
        }
    }

    /// `"auto"`, `"none"`, or a signal by name, with or without `SIG`, in any case
    /// (`"SIGINT"`, `"INT"`, `"sigint"`). SIGKILL and SIGSTOP ask nothing of a worker: refused.
    fn parse(name: &str) -> Result<StopSignal, String> {
        let upper = name.to_ascii_uppercase();
        match upper.as_str() {
            "AUTO" => return Ok(StopSignal::Auto),
            "NONE" => return Ok(StopSignal::None),
            _ => {}
        }
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match full.parse::<Signal>() {
            Ok(Signal::SIGKILL | Signal::SIGSTOP) => Err(format!(
                "{} cannot be handled, so it asks nothing of a worker (SIGKILL follows at \
                 kill_timeout anyway); use a signal the worker handles, such as \"SIGTERM\"",
                quoted(name)
            )),
            Ok(Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGURG) => Err(format!(
                "{} is ignored unless handled and means something else; use a signal the \
                 worker stops on, such as \"SIGTERM\"",
                quoted(name)
            )),
            Ok(Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE) => Err(format!(
                "{} reports a fault: a worker would take it for a crash; use a signal the \
                 worker stops on, such as \"SIGTERM\"",
                quoted(name)
            )),
            Ok(signal) => Ok(StopSignal::Signal(signal)),
            Err(_) => Err(format!(
                "{} is not a signal (use \"auto\", \"none\", or a name such as \"SIGTERM\", \
                 \"SIGINT\", \"SIGQUIT\", \"SIGUSR2\")",
                quoted(name)
            )),
        }
    }
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
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
    /// The networks clients may connect from (an address is a network of one); `None`: any.
    pub allow: Option<Vec<IpNet>>,
}

impl MetricsConfig {
    /// Whether a client at `ip` may connect (an IPv4 address mapped into IPv6 is taken as the
    /// IPv4 address it is).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        (self.allow.as_ref()).is_none_or(|nets| nets.iter().any(|net| net.contains(&ip)))
    }
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

/// How the master writes its own log (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[time LEVEL pid target] message`.
    #[default]
    Text,
    /// One JSON object per line: time, level, pid, target, event, message, and the message's
    /// `key=value` fields as keys.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
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

/// The most `[recycle] jitter` may spread the limits: ± 50 %.
pub const MAX_JITTER: f64 = 0.5;
/// The smallest `[recycle] max_memory`: below this a worker is recycled as soon as it starts.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The shortest `[recycle] max_age`.
pub const MIN_AGE: Duration = Duration::from_secs(1);
/// The longest `[recycle] max_age` (weekly recycling fits; deadlines from it cannot overflow).
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

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
    pub kill_timeout: Duration,
    pub stop_signal: StopSignal,
    /// Node workers get Node's `disconnect` when asked to stop (`[shutdown] disconnect`).
    pub disconnect: bool,
    pub restart: RestartConfig,
    pub recycle: RecycleConfig,
    pub on_giveup: Option<String>,
    pub control: ControlConfig,
    /// `[metrics]`: the monitoring listener, if any, and who may use it.
    pub metrics: Option<MetricsConfig>,
    pub log: LogConfig,
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

/// Which setting chose the scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    Flag,
    RrbEnv,
    NodeEnv,
    File,
    Default,
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicySource::Flag => "--sched-policy",
            PolicySource::RrbEnv => crate::wire::env::SCHED_POLICY,
            PolicySource::NodeEnv => crate::wire::env::NODE_SCHED_POLICY,
            PolicySource::File => "the config file",
            PolicySource::Default => "the default",
        })
    }
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
        warnings
    }

    /// How connections reach workers and what their channel speaks.
    pub fn mode(&self) -> Mode {
        Mode::new(self.sched_policy, self.worker.protocol)
    }

    /// The effective settings as a config file that loads back to the same settings (what
    /// `rrbalancer check` prints): defaults written out, flags and environment applied, paths
    /// made absolute.
    pub fn to_toml(&self) -> String {
        use toml::{Table, Value};
        let text = |s: &str| Value::String(s.to_owned());
        let path = |p: &Path| {
            let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            Value::String(p.display().to_string())
        };
        let duration = |d: Duration| Value::String(humantime::format_duration(d).to_string());
        let int = |n: u64| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));

        let mut top = Table::new();
        let listen = self.listen.iter().map(|a| text(&a.to_string())).collect();
        top.insert("listen".into(), Value::Array(listen));
        top.insert("workers".into(), int(self.workers as u64));
        top.insert("sched_policy".into(), text(self.sched_policy.as_str()));
        top.insert("backlog".into(), int(self.backlog.into()));

        // `exec`, `args`, `env`, `cwd`; the built-in demo worker is written as what selects it:
        // no `exec`.
        let command = |c: &Command| {
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
            table
        };

        let w = &self.worker;
        let mut worker = command(&w.command);
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
        top.insert("worker".into(), Value::Table(worker));

        if let Some(a) = &self.agent {
            let mut agent = command(&a.command);
            agent.insert("protocol".into(), text(a.protocol.as_str()));
            agent.insert("ready".into(), text(a.ready.as_str()));
            agent.insert("ready_delay".into(), duration(a.ready_delay));
            agent.insert("ready_timeout".into(), duration(a.ready_timeout));
            top.insert("agent".into(), Value::Table(agent));
        }

        let mut dispatch = Table::new();
        dispatch.insert("affinity".into(), text(self.affinity.as_str()));
        top.insert("dispatch".into(), Value::Table(dispatch));

        let mut shutdown = Table::new();
        shutdown.insert("kill_timeout".into(), duration(self.kill_timeout));
        shutdown.insert("signal".into(), text(self.stop_signal.as_str()));
        shutdown.insert("disconnect".into(), Value::Boolean(self.disconnect));
        top.insert("shutdown".into(), Value::Table(shutdown));

        let r = &self.restart;
        let mut restart = Table::new();
        restart.insert("max_restarts".into(), int(r.max_restarts.into()));
        restart.insert("window".into(), duration(r.window));
        restart.insert("backoff_initial".into(), duration(r.backoff_initial));
        restart.insert("backoff_max".into(), duration(r.backoff_max));
        restart.insert("min_uptime".into(), duration(r.min_uptime));
        if let Some(command) = &self.on_giveup {
            restart.insert("on_giveup".into(), text(command));
        }
        restart.insert("retry_after".into(), duration(r.retry_after));
        restart.insert("on_all_given_up".into(), text(r.on_all_given_up.as_str()));
        top.insert("restart".into(), Value::Table(restart));

        let c = &self.recycle;
        let mut recycle = Table::new();
        recycle.insert(
            "max_connections".into(),
            int(c.max_connections.unwrap_or(0)),
        );
        if let Some(bytes) = c.max_memory {
            recycle.insert("max_memory".into(), text(&bytes.to_string()));
        }
        if let Some(age) = c.max_age {
            recycle.insert("max_age".into(), duration(age));
        }
        recycle.insert("jitter".into(), Value::Float(c.jitter));
        top.insert("recycle".into(), Value::Table(recycle));

        let mut control = Table::new();
        control.insert("pid_file".into(), path(&self.control.pid_file));
        control.insert("socket".into(), path(&self.control.socket));
        top.insert("control".into(), Value::Table(control));

        let mut metrics = Table::new();
        if let Some(m) = &self.metrics {
            metrics.insert("listen".into(), text(&m.listen.to_string()));
            if let Some(allow) = &m.allow {
                let allow = allow.iter().map(|net| text(&net.to_string())).collect();
                metrics.insert("allow".into(), Value::Array(allow));
            }
        }
        top.insert("metrics".into(), Value::Table(metrics));

        let mut log = Table::new();
        let l = &self.log;
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
        top.insert("log".into(), Value::Table(log));
        toml::to_string(&top).unwrap_or_default()
    }
}

/// The settings that may override the file, gathered by the CLI.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub sched_policy: Option<SchedPolicy>,
    pub rrb_env_policy: Option<String>,
    pub node_env_policy: Option<String>,
    pub workers: Option<WorkerCount>,
    pub listen: Vec<ListenAddr>,
}

/// A configuration that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", location(file, *line, *column))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Setting(String),
}

fn location(file: &str, line: usize, column: usize) -> String {
    if line == 0 {
        file.to_owned()
    } else {
        format!("{file}:{line}:{column}")
    }
}

/// Reads and validates a config file; `None` gives the embedded default.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (text, name, dir) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                path: path.to_owned(),
                error,
            })?;
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            (text, path.display().to_string(), Some(dir))
        }
        None => (String::new(), "<embedded default config>".to_owned(), None),
    };
    let file = parse(&text, &name)?;
    let mut config = validate(file, &text, &name, dir.as_deref(), overrides)?;
    // Absolute, as `status` shows it: usable from any directory.
    config.source = path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    Ok(config)
}

/// Where the master started with the config file at `path` is found, and its `kill_timeout`:
/// what `status`, `reload`, `scale` and `stop` need, read without the rest of the checks (a
/// control command run from a shell whose PATH lacks the worker's program must still reach the
/// master that found it).
pub fn load_control(path: &Path) -> Result<(ControlConfig, Duration), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let name = path.display().to_string();
    let file = parse(&text, &name)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let kill_timeout = file.shutdown.kill_timeout.into_inner().0.min(MAX_DURATION);
    Ok((
        control_config(file.control, &name, Some(&dir)),
        kill_timeout,
    ))
}

/// `[control]`: its paths, relative ones taken from the config file's directory, or the
/// defaults named after the file.
fn control_config(control: FileControl, name: &str, dir: Option<&Path>) -> ControlConfig {
    let relative = |p: Spanned<PathBuf>| match dir {
        Some(dir) if p.get_ref().is_relative() => dir.join(p.into_inner()),
        _ => p.into_inner(),
    };
    let (pid_file, socket) = default_control_paths(dir.is_some().then_some(name));
    ControlConfig {
        pid_file: control.pid_file.map(relative).unwrap_or(pid_file),
        socket: control.socket.map(relative).unwrap_or(socket),
    }
}

/// Step one: TOML text to [`FileConfig`], with the key path in every error.
pub fn parse(text: &str, name: &str) -> Result<FileConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        let mut error = toml_error(e, text, name, "");
        if let ConfigError::Invalid { message, .. } = &mut error {
            *message = format!("invalid TOML: {message}");
        }
        error
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // toml's Spanned<T> shows up in the path as a private segment; users never wrote it.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        toml_error(e.into_inner(), text, name, &path)
    })
}

fn toml_error(error: toml::de::Error, text: &str, name: &str, path: &str) -> ConfigError {
    let (line, column) = error
        .span()
        .map_or((0, 0), |span| line_and_column(text, span));
    // Both may hold what the file holds (an unknown key of a megabyte): cut each.
    const SHOWN: usize = 300;
    let mut message = crate::text::cut(&error.message().trim().replace('\n', " "), SHOWN);
    if !path.is_empty() && path != "." {
        message = format!("key `{}`: {message}", crate::text::cut(path, SHOWN));
    }
    ConfigError::Invalid {
        file: name.to_owned(),
        line,
        column,
        message,
    }
}

fn line_and_column(text: &str, span: Range<usize>) -> (usize, usize) {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
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

/// `[metrics]`: the listener's address, and who may connect, each entry checked at its line.
fn metrics_config(
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
fn parse_net(text: &str) -> Result<IpNet, String> {
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
fn command_config(
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
fn working_dir(
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
type CheckDuration<'a> = dyn Fn(Spanned<HumanDuration>, &str) -> Result<Duration, ConfigError> + 'a;

/// `[agent]`, checked as `[worker]` is: the program found, `cwd` a directory, the durations in
/// bounds; and a protocol an agent can speak.
fn agent_config(
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
fn its_default(span: &Option<Range<usize>>) -> &'static str {
    if span.is_some() { "" } else { "its default, " }
}

/// A file the master creates, for the rules it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    /// Opened without following a link, in a directory no other user controls.
    PidFile,
    /// In a directory no other user controls.
    Socket,
    /// Appended to, links followed; its directories made as needed.
    Log,
}

/// Why the master could not create the file at `path`, as it will meet it at start: a name that
/// is a directory, or under something that is not one; a pid file or control socket in a
/// directory another user controls ([`host::check_control_dir`]); a pid file that is a symbolic
/// link. What depends on the user `check` runs as (a directory it may not read) is the master's
/// to report.
fn created_path_problem(path: &Path, what: Created) -> Option<String> {
    let shown = || quoted(&path.display().to_string());
    if host::names_a_directory(path) {
        return Some(format!("{} is a directory; name a file", shown()));
    }
    if let Some(blocker) = host::not_a_directory_above(path) {
        return Some(format!(
            "{} cannot be created: {} is not a directory",
            shown(),
            blocker.display()
        ));
    }
    if what == Created::Log {
        return None;
    }
    if let Err(unsafe_dir @ host::DirError::Unsafe { .. }) =
        host::check_control_dir(host::parent_dir(path))
    {
        return Some(format!("{}: {unsafe_dir}", shown()));
    }
    let is_link = host::facts(path, false).is_ok_and(|f| f.kind == host::Kind::Symlink);
    (what == Created::PidFile && is_link).then(|| {
        format!(
            "refusing {}: it is a symbolic link (the pid file is never written through one)",
            shown()
        )
    })
}

/// `[recycle]`, checked: sizes parsed, limits within bounds, and `max_connections` only where
/// the master hands out the connections (`rr`).
fn recycle_config(
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

/// The default pid file and control socket: in the user's runtime directory, named after the
/// config file and a hash of its full path (`cluster-1a2b3c4d.sock`), or `default` for the
/// embedded one. They depend on nothing else (not on `--listen` or `--workers`): the file names
/// the master, so two files never collide, one file runs one master, and `rrbalancer status
/// --config F` finds it whatever flags started it.
pub fn default_control_paths(file: Option<&str>) -> (PathBuf, PathBuf) {
    let base = default_runtime_dir();
    let name = match file {
        Some(name) => {
            let path = Path::new(name);
            let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            let stem = path
                .file_stem()
                .map_or("rrbalancer".into(), |s| s.to_string_lossy().into_owned());
            // FNV-1a: stable across runs and builds (std's hasher is not).
            let hash = full
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .fold(0xcbf29ce484222325u64, |h, &b| {
                    (h ^ b as u64).wrapping_mul(0x100000001b3)
                });
            format!("{stem}-{:08x}", hash as u32)
        }
        None => "default".to_owned(),
    };
    (
        base.join(format!("{name}.pid")),
        base.join(format!("{name}.sock")),
    )
}

/// A regular file (links followed) with an execute bit: what `execvp` would try.
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the program the way `execvp` would, so a typo fails at start with the file's line
/// rather than as a restart storm. A relative path with a `/` is taken from `base` (the worker's
/// `cwd`, else the config file's directory), so a config file works from anywhere.
fn resolve_program(exec: &str, base: Option<&Path>) -> Result<PathBuf, String> {
    if exec.is_empty() {
        return Err("is empty: name a program".into());
    }
    if exec.contains('/') {
        let path = Path::new(exec);
        let path = match base {
            Some(base) if path.is_relative() => base.join(path),
            _ => std::env::current_dir().unwrap_or_default().join(path),
        };
        return if is_executable_file(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!(
                "{} is not an executable file",
                quoted(&path.to_string_lossy())
            ))
        } else {
            Err(format!(
                "{} does not exist",
                quoted(&path.to_string_lossy())
            ))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(exec))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| format!("program {} not found on PATH", quoted(exec)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_cluster_toml_is_the_embedded_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
        let mut shipped = load(Some(&path), &Overrides::default()).unwrap();
        let embedded = load(None, &Overrides::default()).unwrap();
        // Only where it came from may differ (and what is named after that).
        shipped.source = None;
        shipped.control = embedded.control.clone();
        shipped.policy_source = embedded.policy_source;
        assert_eq!(format!("{shipped:?}"), format!("{embedded:?}"));
    }

    #[test]
    fn the_window_is_native_only_and_the_ack_deadline_is_bounded() {
        let native = load_str("").unwrap();
        assert_eq!(native.worker.max_unacked, DEFAULT_MAX_UNACKED);
        assert_eq!(native.worker.ack_timeout, Duration::from_secs(10));
        assert_eq!(native.affinity, Affinity::None);
        let node = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n").unwrap();
        assert_eq!(node.worker.max_unacked, 1, "Node's rule: one in flight");
        let e = error_of("[worker]\nexec = \"sh\"\nprotocol = \"node\"\nmax_unacked = 8\n");
        assert!(
            e.starts_with("cluster.toml:4:15: key `worker.max_unacked`") && e.contains("Node"),
            "{e}"
        );
        let e = error_of("[worker]\nack_timeout = \"1ms\"\n");
        assert!(
            e.starts_with("cluster.toml:2:15: key `worker.ack_timeout`") && e.contains("10ms"),
            "{e}"
        );
        let sticky = load_str("[dispatch]\naffinity = \"client-ip\"\n").unwrap();
        assert_eq!(sticky.affinity, Affinity::ClientIp);
        let e = error_of("[dispatch]\naffinity = \"cookie\"\n");
        assert!(
            e.contains("dispatch.affinity") && e.contains("client-ip"),
            "{e}"
        );
    }

    #[test]
    fn the_effective_settings_print_as_toml_that_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let configs = [
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml"),
            )
            .unwrap(),
            format!(
                "listen = [\"[::1]:0\", \"unix:/tmp/x.sock\"]\nworkers = 3\nsched_policy = \"none\"\n\
                 [worker]\nexec = \"sh\"\nargs = [\"-c\", \"echo 'hi' \\\"there\\\"\"]\n\
                 env = {{ A = \"1\" }}\ncwd = {:?}\nprotocol = \"node-cluster\"\n\
                 ready_timeout = \"1m 30s 5ms\"\n[worker.node]\nleaving_message = {{ bye = [1, 2] }}\n\
                 [dispatch]\naffinity = \"client-ip\"\n[restart]\non_giveup = \"true\"\n\
                 [metrics]\nlisten = \"[::]:9100\"\nallow = [\"10.9.0.0/16\", \"::1\"]\n\
                 [log]\nstdout = {:?}\ndate_format = \"%H:%M\"\n",
                dir.path().display(),
                dir.path().join("out.log").display()
            ),
        ];
        for text in configs {
            let first = load_str(&text).unwrap();
            let printed = first.to_toml();
            let again = load_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
            let mut first = first;
            first.policy_source = again.policy_source; // now written in the file
            // `exec` is printed as the program's absolute path (so the text loads from any
            // directory), which then is also its argv[0].
            first.worker.command.arg0 = again.worker.command.arg0.clone();
            assert_eq!(format!("{first:?}"), format!("{again:?}"), "{printed}");
        }
    }

    #[test]
    fn arguments_the_system_cannot_exec_are_refused_at_validation() {
        let many = vec!["\"x\""; 2_000_000].join(",");
        let e = error_of(&format!("[worker]\nargs = [{many}]\n"));
        assert!(e.contains("worker.args") && e.contains("ARG_MAX"), "{e}");
        let long = "y".repeat(200_000);
        let e = error_of(&format!("[worker]\nargs = [\"{long}\"]\n"));
        assert!(
            e.contains("longer than one argument") && e.len() < 500,
            "{e}"
        );
        assert!(load_str("[worker]\nargs = [\"--max-requests\", \"1000\"]\n").is_ok());
    }

    #[test]
    fn a_huge_bad_value_is_quoted_short() {
        let huge = "x".repeat(10_000_000);
        let e = error_of(&format!("listen = [\"{huge}\"]\n"));
        assert!(e.len() < 500, "{} bytes of error", e.len());
        assert!(
            e.contains("`listen") && e.contains("(10000000 bytes)"),
            "{e}"
        );
    }

    #[test]
    fn giving_up_waits_and_retries_by_default_and_exit_is_a_choice() {
        let config = load_str("").unwrap();
        assert_eq!(config.restart.on_all_given_up, AllGivenUp::Wait);
        assert_eq!(config.restart.retry_after, DEFAULT_RETRY_AFTER);
        let exit =
            load_str("[restart]\non_all_given_up = \"exit\"\nretry_after = \"5m\"\n").unwrap();
        assert_eq!(exit.restart.on_all_given_up, AllGivenUp::Exit);
        assert_eq!(exit.restart.retry_after, Duration::from_secs(300));
        let e = error_of("[restart]\non_all_given_up = \"never\"\n");
        assert!(
            e.starts_with("cluster.toml:2:")
                && e.contains("restart.on_all_given_up")
                && e.contains("wait")
                && e.contains("exit"),
            "{e}"
        );
        let e = error_of("[restart]\nretry_after = \"100ms\"\n");
        assert!(
            e.contains("`restart.retry_after`") && e.contains("at least 1s"),
            "{e}"
        );
    }

    #[test]
    fn every_duration_is_bounded_so_no_deadline_can_overflow() {
        for (table, key) in [
            ("worker", "ready_delay"),
            ("worker", "ready_timeout"),
            ("worker", "ack_timeout"),
            ("shutdown", "kill_timeout"),
            ("restart", "window"),
            ("restart", "backoff_initial"),
            ("restart", "backoff_max"),
            ("restart", "min_uptime"),
            ("restart", "retry_after"),
        ] {
            // What an issue found `check` accepting, and the master then panicking on.
            let e = error_of(&format!("[{table}]\n{key} = \"18446744073709551615s\"\n"));
            assert!(
                e.starts_with("cluster.toml:2:") && e.contains(&format!("`{table}.{key}`")),
                "{e}"
            );
            assert!(e.contains("at most") || e.contains("to 1h"), "{e}");
            let ok = format!("[{table}]\n{key} = \"1day\"\n");
            assert_eq!(
                load_str(&ok).is_ok(),
                key != "ack_timeout",
                "{key}: a day is the bound (ack_timeout: an hour)"
            );
        }
    }

    #[test]
    fn the_mode_answers_what_the_master_asks_of_policy_and_protocol() {
        use Protocol::*;
        use SchedPolicy::{None as Shared, Rr};
        // (policy, protocol): master accepts, socket activation, node, cluster
        let table = [
            (Rr, Native, (true, false, false, false)),
            (Rr, Node, (true, false, true, false)),
            (Rr, NodeCluster, (true, false, true, true)),
            (Shared, Native, (false, true, false, false)),
            (Shared, Node, (false, false, true, false)),
            (Shared, NodeCluster, (false, false, true, true)),
        ];
        for (policy, protocol, want) in table {
            let m = Mode::new(policy, protocol);
            let got = (
                m.master_accepts(),
                m.socket_activation(),
                m.node(),
                m.cluster(),
            );
            assert_eq!(got, want, "{policy:?} {protocol:?}");
            assert_eq!(m.workers_accept(), !m.master_accepts());
        }
    }

    #[test]
    fn the_restart_count_is_bounded_so_a_slots_history_stays_small() {
        let ok = load_str(&format!("[restart]\nmax_restarts = {MAX_RESTARTS}\n")).unwrap();
        assert_eq!(ok.restart.max_restarts, MAX_RESTARTS);
        let e = error_of(&format!("[restart]\nmax_restarts = {}\n", MAX_RESTARTS + 1));
        assert!(
            e.starts_with("cluster.toml:2:")
                && e.contains("`restart.max_restarts`")
                && e.contains("0 to 10000"),
            "{e}"
        );
    }

    #[test]
    fn readiness_defaults_per_protocol_and_start_is_for_node_only() {
        let node = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node\"\n").unwrap();
        assert_eq!(node.worker.ready, Readiness::Start);
        let cluster = load_str("[worker]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n").unwrap();
        assert_eq!(cluster.worker.ready, Readiness::Message);
        let e = load_str("[worker]\nexec = \"sh\"\nready = \"start\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cluster.toml:3:9: key `worker.ready`")
                && e.contains("protocol = \"node\""),
            "{e}"
        );
        let e = load_str("[log]\ndate_format = \"%Q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.date_format"), "{e}");
        let e = load_str("[worker.node]\nsocket_msg = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("socket_msg") && e.contains("socket_message"),
            "{e}"
        );
    }

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let file = parse(text, "cluster.toml")?;
        validate(file, text, "cluster.toml", None, &Overrides::default())
    }

    fn error_of(text: &str) -> String {
        load_str(text).unwrap_err().to_string()
    }

    #[test]
    fn a_file_that_cannot_be_created_under_a_non_directory_is_refused_naming_its_key() {
        let e = error_of("[log]\nmaster_log = \"/dev/null/dir/master.log\"\n");
        assert!(
            e.contains("key `log.master_log`") && e.contains("/dev/null is not a directory"),
            "{e}"
        );
        let e = error_of("[control]\npid_file = \"/dev/null/x.pid\"\n");
        assert!(e.contains("key `control.pid_file`"), "{e}");
        // A directory still to be made is the master's to make.
        assert!(load_str("[log]\nstdout = \"/tmp/rrb-not-yet/a/b/out.log\"\n").is_ok());
    }

    #[test]
    fn a_listening_socket_where_none_can_be_bound_is_refused_naming_the_key_and_line() {
        let e = error_of("workers = 1\nlisten = [\"unix:/dev/null/dir/x.sock\"]\n");
        assert!(
            e.starts_with("cluster.toml:2:") && e.contains("key `listen`"),
            "{e}"
        );
        assert!(e.contains("/dev/null is not a directory"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // The master makes no directory for a listening socket, and replaces only a socket.
        let e = error_of(&format!("listen = [\"unix:{d}/missing/x.sock\"]\n"));
        assert!(e.contains("its directory does not exist"), "{e}");
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = error_of(&format!("listen = [\"unix:{d}/file\"]\n"));
        assert!(e.contains("is not a socket"), "{e}");
        assert!(load_str(&format!("listen = [\"unix:{d}/x.sock\"]\n")).is_ok());
        // The same for --listen, which names itself.
        let overrides = Overrides {
            listen: vec!["unix:/dev/null/dir/x.sock".parse().unwrap()],
            ..Overrides::default()
        };
        let file = parse("", "cluster.toml").unwrap();
        let e = validate(file, "", "cluster.toml", None, &overrides).unwrap_err();
        assert!(e.to_string().starts_with("--listen: "), "{e}");
    }

    /// A directory of `dir` that another user owns (uid 65534, "nobody"): `None` if we may not
    /// give one away (not root).
    fn foreign_dir(dir: &Path) -> Option<PathBuf> {
        let theirs = dir.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))
            .ok()
            .map(|()| theirs)
    }

    #[test]
    fn control_paths_in_a_directory_another_user_controls_are_refused_naming_key_and_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let text = format!(
            "workers = 1\n[control]\nsocket = \"{}/x.sock\"\n",
            open.display()
        );
        let e = error_of(&text);
        assert!(
            e.starts_with("cluster.toml:3:10: key `control.socket`")
                && e.contains("anyone may write in it (mode 1777)"),
            "{e}"
        );
        match foreign_dir(dir.path()) {
            Some(theirs) => {
                let text = format!("[control]\npid_file = \"{}/x.pid\"\n", theirs.display());
                let e = error_of(&text);
                assert!(
                    e.starts_with("cluster.toml:2:12: key `control.pid_file`")
                        && e.contains("belongs to uid 65534"),
                    "{e}"
                );
            }
            None => eprintln!("SKIPPED: a directory another user owns needs root to make"),
        }
        // A pid file is never written through a link.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("x.pid")).unwrap();
        let text = format!("[control]\npid_file = \"{}/x.pid\"\n", dir.path().display());
        let e = error_of(&text);
        assert!(
            e.contains("key `control.pid_file`") && e.contains("it is a symbolic link"),
            "{e}"
        );
        // One of ours, or one still to be made (the master makes it private), is fine.
        let ours = format!("[control]\nsocket = \"{}/x.sock\"\n", dir.path().display());
        assert!(load_str(&ours).is_ok());
        let later = format!("[control]\nsocket = \"{}/new/x.sock\"\n", open.display());
        assert!(load_str(&later).is_ok());
    }

    #[test]
    fn an_agent_needs_a_program_and_speaks_native_or_node_not_node_cluster() {
        let e = error_of("workers = 2\n[agent]\nargs = [\"x\"]\n");
        assert!(e.contains("key `agent.exec`"), "{e}");
        let e = error_of("[agent]\nexec = \"sh\"\nprotocol = \"node-cluster\"\n");
        assert!(
            e.starts_with("cluster.toml:3:12: key `agent.protocol`") && e.contains("\"node\""),
            "{e}"
        );
        let e = error_of("[agent]\nexec = \"sh\"\nready = \"start\"\n");
        assert!(e.contains("key `agent.ready`"), "{e}");
        let e = error_of("[agent]\nexec = \"no-such-program-rrb\"\n");
        assert!(e.contains("key `agent.exec`"), "{e}");
        let e = error_of("[agent]\nexec = \"sh\"\nargs = [\"a\\u0000b\"]\n");
        assert!(e.contains("key `agent.args`"), "{e}");
        let e = error_of("[agent]\nexec = \"sh\"\ncwd = \"/dev/null/dir\"\n");
        assert!(e.contains("key `agent.cwd`"), "{e}");
        let node = load_str("[agent]\nexec = \"sh\"\nprotocol = \"node\"\n").unwrap();
        let agent = node.agent.clone().unwrap();
        assert_eq!(
            (agent.protocol, agent.ready),
            (Protocol::Node, Readiness::Start)
        );
        // `check` prints it, and what it prints loads back the same.
        let text = node.to_toml();
        assert!(text.contains("[agent]"), "{text}");
        let mut back = load_str(&text).unwrap().agent.unwrap();
        // (`exec` is written as the absolute path it resolved to: argv[0] says that.)
        back.command.arg0 = agent.command.arg0.clone();
        assert_eq!(back, agent);
        assert!(load_str("").unwrap().agent.is_none());
    }

    #[test]
    fn what_exec_cannot_pass_is_refused_naming_the_key() {
        for (text, key) in [
            ("[worker]\nargs = [\"ok\", \"a\\u0000b\"]\n", "worker.args"),
            ("[worker]\nenv = { \"A=B\" = \"x\" }\n", "worker.env"),
            ("[worker]\nenv = { \"\" = \"x\" }\n", "worker.env"),
            ("[worker]\nenv = { A = \"a\\u0000b\" }\n", "worker.env"),
            (
                "[restart]\non_giveup = \"echo \\u0000\"\n",
                "restart.on_giveup",
            ),
        ] {
            let e = error_of(text);
            let what = e.contains("NUL") || e.contains("variable name");
            assert!(e.contains(&format!("`{key}`")) && what, "{e}");
        }
    }

    #[test]
    fn listen_addresses_that_cannot_all_be_bound_are_refused() {
        let e = error_of("listen = [\"127.0.0.1:3000\", \"127.0.0.1:3000\"]\n");
        assert!(
            e.starts_with("cluster.toml:1:") && e.contains("appears twice"),
            "{e}"
        );
        // Port 0 twice is two ports.
        assert!(load_str("listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n").is_ok());
        let long = format!("/tmp/{}", "s".repeat(120));
        let e = error_of(&format!("listen = [\"unix:{long}\"]\n"));
        assert!(e.contains("at most 107"), "{e}");
        let e = error_of(&format!("[control]\nsocket = \"{long}\"\n"));
        assert!(
            e.contains("`control.socket`") && e.contains("at most 107"),
            "{e}"
        );
    }

    #[test]
    fn restart_storm_protection_cannot_be_switched_off() {
        for (key, value) in [
            ("window", "500ms"),
            ("backoff_initial", "0s"),
            ("backoff_max", "1ms"),
        ] {
            let e = error_of(&format!("[restart]\n{key} = \"{value}\"\n"));
            assert!(
                e.starts_with("cluster.toml:2:")
                    && e.contains(&format!("`restart.{key}`"))
                    && e.contains("too short"),
                "{e}"
            );
        }
        assert!(load_str("[restart]\nwindow = \"1s\"\nbackoff_initial = \"10ms\"\n").is_ok());
    }

    #[test]
    fn a_megabyte_where_a_word_goes_is_cut_in_every_message() {
        let big = "z".repeat(1_000_000);
        for text in [
            format!("[shutdown]\nkill_timeout = \"{big}\"\n"),
            format!("{big} = 1\n"),
            format!("[log]\ndate_format = \"%Q{big}\"\n"),
            format!("[worker]\nexec = \"{big}\"\n"),
        ] {
            let e = error_of(&text);
            assert!(e.len() < 1_000, "{} bytes: {}", e.len(), &e[..200]);
        }
    }

    #[test]
    fn an_empty_file_is_the_documented_default() {
        let config = load_str("").unwrap();
        assert_eq!(config.listen, vec!["127.0.0.1:3000".parse().unwrap()]);
        assert_eq!(config.sched_policy, SchedPolicy::Rr);
        assert_eq!(config.policy_source, PolicySource::Default);
        assert_eq!(config.backlog, 511);
        assert_eq!(config.kill_timeout, Duration::from_secs(5));
        assert_eq!(config.worker.command.args, vec!["demo-worker"]);
        assert!(config.workers >= 1);
    }

    #[test]
    fn every_key_parses() {
        let config = load_str(
            r#"
            listen = ["127.0.0.1:8080", "[::1]:8080", "unix:/tmp/x.sock"]
            workers = 3
            sched_policy = "none"
            backlog = 128
            [worker]
            exec = "sh"
            args = ["-c", "true"]
            env = { A = "1" }
            protocol = "native"
            max_unacked = 16
            [shutdown]
            kill_timeout = "500ms"
            [restart]
            max_restarts = 3
            window = "10s"
            backoff_initial = "50ms"
            backoff_max = "2s"
            min_uptime = "2s"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.len(), 3);
        assert_eq!(config.listen[2], ListenAddr::Unix("/tmp/x.sock".into()));
        assert_eq!(config.workers, 3);
        assert_eq!(config.sched_policy, SchedPolicy::None);
        assert_eq!(config.policy_source, PolicySource::File);
        assert_eq!(config.kill_timeout, Duration::from_millis(500));
        assert!(config.worker.command.program.is_absolute());
        assert_eq!(config.worker.command.env, vec![("A".into(), "1".into())]);
        assert_eq!(config.restart.max_restarts, 3);
    }

    #[test]
    fn unknown_keys_name_the_key_line_and_allowed_keys() {
        let e = error_of("workers = 2\n[worker]\nexcec = \"x\"\n");
        assert!(e.starts_with("cluster.toml:3:1: "), "{e}");
        assert!(e.contains("excec"), "{e}");
        assert!(e.contains("exec"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn wrong_types_and_bad_values_name_the_key() {
        let e = error_of("backlog = \"big\"\n");
        assert!(
            e.contains("cluster.toml:1:11") && e.contains("`backlog`"),
            "{e}"
        );
        let e = error_of("sched_policy = \"fair\"\n");
        assert!(
            e.contains("`sched_policy`") && e.contains("rr") && e.contains("none"),
            "{e}"
        );
        let e = error_of("[shutdown]\nkill_timeout = \"soon\"\n");
        assert!(
            e.contains("cluster.toml:2:") && e.contains("shutdown.kill_timeout"),
            "{e}"
        );
        let e = error_of("workers = 0\n");
        assert!(e.contains("`workers`") && e.contains("auto"), "{e}");
        let e = error_of("listen = [\"localhost\"]\n");
        assert!(e.contains("`listen") && e.contains("IP:PORT"), "{e}");
        let e = error_of("[worker]\nprotocol = \"grpc\"\n");
        assert!(e.contains("worker.protocol") && e.contains("native"), "{e}");
    }

    #[test]
    fn a_missing_program_is_reported_at_its_line() {
        let e = error_of("[worker]\nexec = \"no-such-program-rrb\"\n");
        assert!(e.starts_with("cluster.toml:2:8: key `worker.exec`"), "{e}");
        let e = error_of("[worker]\nexec = \"/nonexistent/bin\"\n");
        assert!(e.contains("does not exist"), "{e}");
    }

    #[test]
    fn the_stop_signal_is_auto_none_or_a_signal_a_worker_can_handle() {
        let signal = |text: &str| load_str(&format!("[shutdown]\nsignal = {text}\n"));
        assert_eq!(load_str("").unwrap().stop_signal, StopSignal::Auto);
        for (text, want) in [
            ("\"auto\"", StopSignal::Auto),
            ("\"none\"", StopSignal::None),
            ("\"SIGINT\"", StopSignal::Signal(Signal::SIGINT)),
            ("\"INT\"", StopSignal::Signal(Signal::SIGINT)),
            ("\"SIGQUIT\"", StopSignal::Signal(Signal::SIGQUIT)),
            ("\"sigterm\"", StopSignal::Signal(Signal::SIGTERM)),
        ] {
            assert_eq!(signal(text).unwrap().stop_signal, want, "{text}");
        }
        for text in [
            "\"SIGKILL\"",
            "\"STOP\"",
            "\"TERMINATE\"",
            "\"\"",
            "\"SIGCHLD\"",
            "\"SEGV\"",
        ] {
            let e = signal(text).unwrap_err().to_string();
            assert!(
                e.starts_with("cluster.toml:2:") && e.contains("key `shutdown.signal`"),
                "{text}: {e}"
            );
        }
        // A Node worker asked nothing at all is refused.
        let e = load_str(
            "[worker]\nexec = \"sh\"\nprotocol = \"node\"\n[shutdown]\nsignal = \"none\"\ndisconnect = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("cluster.toml:6:") && e.contains("shutdown.disconnect"),
            "{e}"
        );
        assert!(
            !load_str("[shutdown]\ndisconnect = false\n")
                .unwrap()
                .disconnect
        );
        // What each kind of worker gets.
        let auto = StopSignal::Auto;
        assert_eq!(
            auto.after_stop(true),
            Some(Signal::SIGTERM),
            "Node: disconnect, SIGTERM"
        );
        assert_eq!(auto.after_stop(false), None, "native: `stop` alone");
        assert_eq!(auto.alone(), Signal::SIGTERM, "a plain program");
        assert_eq!(
            StopSignal::None.alone(),
            Signal::SIGTERM,
            "nothing else would ask it"
        );
        let int = StopSignal::Signal(Signal::SIGINT);
        assert_eq!(
            (int.after_stop(false), int.alone()),
            (Some(Signal::SIGINT), Signal::SIGINT)
        );
    }

    #[test]
    fn a_file_setting_that_names_a_directory_is_refused() {
        for (text, key) in [
            ("[control]\npid_file = \"/tmp/\"\n", "control.pid_file"),
            ("[control]\nsocket = \"/tmp\"\n", "control.socket"),
            ("[log]\nstdout = \"/tmp/\"\n", "log.stdout"),
            ("[log]\nmaster_log = \"/\"\n", "log.master_log"),
        ] {
            let e = error_of(text);
            assert!(
                e.contains(&format!("key `{key}`")) && e.contains("is a directory"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn a_descriptor_in_the_args_of_a_socket_activated_worker_is_warned_about() {
        let config = |policy: &str| {
            load_str(&format!(
                "sched_policy = \"{policy}\"\n[worker]\nexec = \"sh\"\nargs = [\"--bind\", \"fd://3\"]\nready = \"delay\"\n"
            ))
            .unwrap()
        };
        let warnings = config("none").warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("key `worker.args`") && warnings[0].contains("\"fd://3\""),
            "{warnings:?}"
        );
        assert!(config("rr").warnings().is_empty(), "no LISTEN_FDS in rr");
    }

    #[test]
    fn metrics_allow_takes_addresses_and_networks_and_names_a_bad_entry_at_its_line() {
        let config = load_str(
            "[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.1.2.3/8\", \"192.0.2.7\", \"::1\", \"fd00::/8\"]\n",
        )
        .unwrap();
        let m = config.metrics.clone().unwrap();
        let shown: Vec<String> = m.allow.iter().flatten().map(IpNet::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32", "::1/128", "fd00::/8"]);
        assert!(config.warnings().is_empty(), "restricted: no warning");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for allowed in [
            "10.200.0.1",
            "192.0.2.7",
            "::1",
            "fd12::5",
            "::ffff:10.0.0.9",
        ] {
            assert!(m.allows(ip(allowed)), "{allowed}");
        }
        for refused in ["11.0.0.1", "192.0.2.8", "127.0.0.1", "::2", "fe80::1"] {
            assert!(!m.allows(ip(refused)), "{refused}");
        }
        let anyone = MetricsConfig { allow: None, ..m };
        assert!(anyone.allows(ip("203.0.113.1")));

        let e = error_of(
            "[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
        );
        assert!(
            e.starts_with("cluster.toml:3:24: key `metrics.allow`: \"10.0.0.0/33\" is neither"),
            "{e}"
        );
        let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = [\"localhost\"]\n");
        assert!(
            e.contains("key `metrics.allow`") && e.contains("\"10.0.0.0/8\""),
            "{e}"
        );
        let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = []\n");
        assert!(
            e.starts_with("cluster.toml:3:9: key `metrics.allow`: an empty list"),
            "{e}"
        );
        let e = error_of("[metrics]\nallow = [\"::1\"]\n");
        assert!(
            e.contains("key `metrics.allow`: means nothing without"),
            "{e}"
        );
        let e = error_of("[metrics]\nlisten = \"0.0.0.0:9100\"\nallow = \"::1\"\n");
        assert!(
            e.contains("cluster.toml:3:9") && e.contains("metrics.allow"),
            "{e}"
        );
    }

    #[test]
    fn a_metrics_listener_reachable_beyond_this_host_without_allow_is_warned_about() {
        for (listen, warned) in [
            ("127.0.0.1:9100", false),
            ("[::1]:9100", false),
            ("0.0.0.0:9100", true),
            ("[::]:9100", true),
            ("192.0.2.1:9100", true),
        ] {
            let config = load_str(&format!("[metrics]\nlisten = \"{listen}\"\n")).unwrap();
            let warnings = config.warnings();
            assert_eq!(warnings.len(), warned as usize, "{listen}: {warnings:?}");
            if warned {
                assert!(
                    warnings[0].contains("key `metrics.listen`")
                        && warnings[0].contains("`metrics.allow` is unset"),
                    "{warnings:?}"
                );
            }
        }
    }

    #[test]
    fn recycle_limits_are_parsed_and_bounded() {
        let c = load_str(
            "[recycle]\nmax_connections = 1000\nmax_memory = \"64MiB\"\nmax_age = \"1h\"\njitter = 0.2\n",
        )
        .unwrap()
        .recycle;
        assert_eq!(c.max_connections, Some(1000));
        assert_eq!(c.max_memory, Some(64 << 20));
        assert_eq!(c.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(c.jitter, 0.2);
        let weekly = load_str("[recycle]\nmax_age = \"7days\"\n")
            .unwrap()
            .recycle;
        assert_eq!(weekly.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        let off = load_str("").unwrap().recycle;
        assert_eq!(
            (off.max_connections, off.max_memory, off.max_age),
            (None, None, None)
        );
        for (text, key) in [
            ("max_memory = \"lots\"", "recycle.max_memory"),
            ("max_memory = \"100KiB\"", "recycle.max_memory"),
            ("max_age = \"10ms\"", "recycle.max_age"),
            ("max_age = \"31days\"", "recycle.max_age"),
            ("jitter = 0.9", "recycle.jitter"),
            ("jitter = -0.1", "recycle.jitter"),
        ] {
            let e = error_of(&format!("[recycle]\n{text}\n"));
            assert!(
                e.starts_with("cluster.toml:2:") && e.contains(&format!("key `{key}`")),
                "{text}: {e}"
            );
        }
        let e = error_of("sched_policy = \"none\"\n[recycle]\nmax_connections = 10\n");
        assert!(
            e.contains("recycle.max_connections") && e.contains("\"rr\""),
            "{e}"
        );
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let e = error_of("workers = \n");
        assert!(e.starts_with("cluster.toml:1:"), "{e}");
    }

    #[test]
    fn empty_listen_is_refused() {
        let e = error_of("listen = []\n");
        assert!(e.starts_with("cluster.toml:1:10: key `listen`"), "{e}");
    }

    #[test]
    fn policy_precedence_is_flag_then_envs_then_file() {
        use PolicySource::*;
        use SchedPolicy::{None as N, Rr};
        let p = effective_policy;
        assert_eq!(p(Some(N), Some("rr"), Some("rr"), Some(Rr)), Ok((N, Flag)));
        assert_eq!(p(None, Some("none"), Some("rr"), Some(Rr)), Ok((N, RrbEnv)));
        assert_eq!(p(None, None, Some("none"), Some(Rr)), Ok((N, NodeEnv)));
        assert_eq!(p(None, None, None, Some(N)), Ok((N, File)));
        assert_eq!(p(None, None, None, None), Ok((Rr, Default)));
        assert_eq!(p(None, Some(""), Some("bogus"), None), Ok((Rr, Default)));
        assert!(p(None, Some("bogus"), None, None).is_err());
    }
}
