//! The value types of the configuration and their syntax: the policy, the protocol and the mode
//! they make, listen addresses, worker counts, durations, stop signals, log formats, and the
//! bounds every value is held to. Parsed while deserializing, so an error points at its spot.

use super::*;

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
                 \"[::1]:3000\", \"HOST:PORT\" such as \"localhost:3000\", or \
                 \"unix:/path/to.sock\")",
                quoted(s)
            )
        })
    }
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

pub(super) fn from_str_de<'de, D, T>(d: D) -> Result<T, D::Error>
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
    pub(super) fn parse(name: &str) -> Result<StopSignal, String> {
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

/// The most `[recycle] jitter` may spread the limits: ± 50 %.
pub const MAX_JITTER: f64 = 0.5;
/// The smallest `[recycle] max_memory`: below this a worker is recycled as soon as it starts.
pub const MIN_MEMORY: u64 = 1 << 20;
/// The shortest `[recycle] max_age`.
pub const MIN_AGE: Duration = Duration::from_secs(1);
/// The longest `[recycle] max_age` (weekly recycling fits; deadlines from it cannot overflow).
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

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
