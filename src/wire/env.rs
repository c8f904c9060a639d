//! Every environment variable that crosses a process boundary, by who reads it. A name is
//! written here once; the master, the worker library and the demo worker use these constants.

/// Set by the master for each worker (and the agent): the fd of its end of the channel.
pub const CHANNEL_FD: &str = "RRB_CHANNEL_FD";
/// The worker's slot number, stable across restarts (`0..workers`).
pub const WORKER_ID: &str = "RRB_WORKER_ID";
/// How many slots there are.
pub const WORKERS: &str = "RRB_WORKERS";
/// `1` for the agent (`[agent]`), which serves no connection.
pub const AGENT: &str = "RRB_AGENT";
/// The log format, `json` or unset (text): read by the master before its configuration, set
/// for the workers when `[log] format = "json"`.
pub const LOG_FORMAT: &str = "RRB_LOG_FORMAT";
/// The new master's end of the upgrade channel (`rrbalancer upgrade`).
pub const UPGRADE_FD: &str = "RRB_UPGRADE_FD";
/// The scheduling policy, `rr` or `none`: ours, above Node's and the file's.
pub const SCHED_POLICY: &str = "RRB_SCHED_POLICY";

/// Node's, read by the master as it is by Node's own cluster module.
pub const NODE_SCHED_POLICY: &str = "NODE_CLUSTER_SCHED_POLICY";
/// Node's IPC channel fd, set for a Node worker (`protocol = "node"` / `"node-cluster"`).
pub const NODE_CHANNEL_FD: &str = "NODE_CHANNEL_FD";
/// Node's IPC serialization (`json`).
pub const NODE_CHANNEL_SERIALIZATION_MODE: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// Node's cluster worker id (slot + 1): its presence makes `cluster.isWorker` true.
pub const NODE_UNIQUE_ID: &str = "NODE_UNIQUE_ID";

/// systemd socket activation: how many listeners start at fd 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// systemd socket activation: the pid they are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// systemd socket activation: their names, `:`-separated.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// systemd's notification socket (the master's alone).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// systemd's watchdog interval (the master's alone).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The pid systemd's watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Set for the master of one app of several (`[[app]]`), by the master of all, and so for its
/// workers: the app's name. Its log lines carry it.
pub const APP: &str = "RRB_APP";
/// Set for the master of one app of several, by the master of all: a file where it writes why,
/// when it exits failing (its last error).
pub const EXIT_REASON: &str = "RRB_EXIT_REASON";
/// Set for an `on_giveup` hook: the slot given up (a number, or `agent`).
pub const GIVEUP_SLOT: &str = "RRB_GIVEUP_SLOT";
/// Set for an `on_giveup` hook: the pid of the slot's last worker.
pub const GIVEUP_PID: &str = "RRB_GIVEUP_PID";
/// Set for an `on_giveup` hook: why it was given up.
pub const GIVEUP_REASON: &str = "RRB_GIVEUP_REASON";

/// What the master's own environment holds for itself alone, or sets itself for each worker:
/// never passed on to a worker as it was.
pub const NOT_INHERITED_BY_WORKERS: &[&str] = &[
    EXIT_REASON,
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    NODE_CHANNEL_FD,
    NODE_CHANNEL_SERIALIZATION_MODE,
    NODE_UNIQUE_ID,
    CHANNEL_FD,
    WORKER_ID,
    WORKERS,
    AGENT,
    NOTIFY_SOCKET,
    WATCHDOG_USEC,
    WATCHDOG_PID,
    UPGRADE_FD,
    LOG_FORMAT,
];

/// Set for a process started as another user (`[worker] user`), as `su` sets them: that user's
/// home and name; and left out: the master's own runtime directory, which is not that user's.
pub const HOME: &str = "HOME";
pub const USER: &str = "USER";
pub const LOGNAME: &str = "LOGNAME";
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";

/// What a new master (`rrbalancer upgrade`) is not given of the old one's environment:
/// systemd's sockets and watchdog pid, meant for the old process, and an upgrade channel of the
/// old one's own start.
pub const NOT_PASSED_TO_SUCCESSOR: &[&str] = &[
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    WATCHDOG_PID,
    UPGRADE_FD,
];
