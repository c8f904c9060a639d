//! The command line: what each flag and subcommand means. Parsing only; `cli/mod.rs` runs it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{SchedPolicy, WorkerCount};
use crate::demo::DemoArgs;

/// A round-robin accepting TCP load balancer: a cluster master for any worker program.
///
/// rrbalancer accepts every connection itself, never reads it, and hands the socket (the file
/// descriptor, over a Unix channel) to the next worker process in rotation among those free to
/// take it now, never queueing it behind a busy one — or, with
/// `--sched-policy none`, lets every worker accept on the shared listeners. It starts, restarts
/// and stops the workers, and none outlives it.
///
/// With no --config it runs the embedded default: listen on 127.0.0.1:3000, one built-in demo
/// worker per CPU, round-robin. With a program after `--`, that program is the worker, no file
/// needed: `rrbalancer -w 4 -- node app.js` runs an unchanged Node cluster app on 4 workers.
#[derive(Debug, Parser)]
#[command(name = "rrbalancer", version, max_term_width = 100)]
#[command(override_usage = "rrbalancer [OPTIONS] [COMMAND] [-- PROGRAM [ARGS]...]")]
#[command(after_help = "\
Signals: TERM/INT graceful stop (a second one: quick), QUIT quick stop, HUP rolling reload,
TTIN/TTOU one worker more/fewer, USR1 reopen log files, USR2 in-place upgrade.

status, reload, scale, upgrade and stop find the running master through the control socket named by
the --config it was started with (whatever other flags), or by --control; with neither, the one
master running for this user (several: they are listed, to choose from).

A file with [[app]] sections runs several apps, each under a master of its own, from one master:
status shows each; --app NAME (or reload/scale/stop/start APP) acts on one (README: Several apps in
one master).

Environment: RRB_SCHED_POLICY, NODE_CLUSTER_SCHED_POLICY (rr|none) choose the policy when
--sched-policy is not given; RUST_LOG sets the log level (default: info).

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.")]
pub struct Cli {
    /// Configuration file (TOML). Every key and its default: `rrbalancer check` prints them
    /// (with no --config, the built-in defaults); config/cluster.toml in the source explains each.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// rr: the master hands out connections in turn; none: workers accept themselves.
    /// Overrides RRB_SCHED_POLICY, NODE_CLUSTER_SCHED_POLICY and the file (run, start, restart,
    /// check).
    #[arg(long, value_name = "POLICY", global = true)]
    pub sched_policy: Option<SchedPolicy>,

    /// Number of workers (or "auto": one per CPU), overriding the file (run, start, restart,
    /// check; a running master: `rrbalancer scale N`).
    #[arg(short, long, value_name = "N", value_parser = parse_workers, global = true)]
    pub workers: Option<WorkerCount>,

    /// Address to listen on, overriding the file's `listen` (repeat for several):
    /// 127.0.0.1:3000, [::1]:3000, localhost:3000 (every address the name resolves to),
    /// unix:/path/to.sock (run, start, restart, check).
    #[arg(short, long, value_name = "ADDR", global = true)]
    pub listen: Vec<String>,

    /// Control socket of the running master, for status/reload/scale/stop (default: the one
    /// the configuration names, see `[control]`).
    #[arg(long, value_name = "PATH", global = true)]
    pub control: Option<PathBuf>,

    /// How the worker program named after `--` talks to the master: `auto` (the default):
    /// node-cluster for a Node program (`node app.js`, a .js/.mjs/.cjs script), native
    /// otherwise; or native, node, node-cluster (run, start, restart, check).
    #[arg(long, value_name = "PROTOCOL", global = true)]
    pub protocol: Option<ProtocolChoice>,

    /// Reload the workers when files change: the `[watch]` paths, else the worker's directory
    /// (`cwd`, else the current one) — never a stop, once per burst of changes (run, start,
    /// restart, check).
    #[arg(long, global = true)]
    pub watch: bool,

    /// The file's `[env.NAME]` block to apply: its variables go to the workers and the agent,
    /// over `[env]` and their own `env` (PM2's `--env production`; run, start, restart, check;
    /// a reload and an upgrade keep it, and `restart` the running master's unless given).
    #[arg(long, value_name = "NAME", global = true)]
    pub env: Option<String>,

    /// Of a file with `[[app]]` sections, the app meant: `status`, `logs`, `top`, `send`,
    /// `metrics` … of that app alone (`reload`, `scale`, `stop` and `start` also take it as
    /// their first argument); run, start and check: that app alone, as a one-app master.
    #[arg(long, value_name = "NAME", global = true)]
    pub app: Option<String>,

    /// The worker program and its arguments, instead of a file's `[worker]`: `rrbalancer -w 4
    /// -- node app.js` runs app.js clustered on the embedded defaults (run, start, restart,
    /// check; `check` prints the equivalent file).
    #[arg(last = true, global = true, value_name = "PROGRAM")]
    pub program: Vec<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--protocol`: a worker protocol, or `auto` to pick it from the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolChoice {
    /// node-cluster for a Node program, native otherwise.
    Auto,
    /// rrbalancer's own protocol (docs/PROTOCOL.md).
    Native,
    /// Node's child_process IPC (`process.on('message', (m, socket) => …)`).
    Node,
    /// Node's cluster module: an unchanged `http.createServer().listen()` app.
    NodeCluster,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master in the foreground (the default when no subcommand is given).
    Run,
    /// Start the master: in the foreground, or with --daemon in the background. With APP (a
    /// file with [[app]] sections): start that app again in the running master (one stopped by
    /// `stop APP`, or given up).
    Start {
        /// The app to start, in the running master of several apps.
        #[arg(value_name = "APP", id = "app_name")]
        app_name: Option<String>,
        /// Detach (new session, stdin from /dev/null, output to `[log] master_log`, by
        /// default beside the pid file), and return once it listens, or fail with the reason.
        #[arg(short, long)]
        daemon: bool,
    },
    /// Show the running master's workers: slot, pid, state, uptime, restarts, connections.
    ///
    /// One row per worker process: RESTARTS and RECYCLED of its slot, HANDED (connections
    /// handed to it), CONN/S (sent to it per second over the last 10 whole seconds), UNACKED
    /// (sent, not yet acknowledged, with the oldest's age), RSS (its process group's when
    /// `[recycle] max_memory` measures it, else its own), CPU (CPU time it used). For live
    /// rates and CPU% see `rrbalancer top`; for scrapers, `rrbalancer metrics`.
    Status {
        /// Print the status as JSON (with no master named and several running: an array, one
        /// status each).
        #[arg(long)]
        json: bool,
        /// A readiness check (for a container's probe): one line, and exit 1 unless the master
        /// serves — at least one worker ready, neither draining nor stopping (with --json: the
        /// JSON, same exit).
        #[arg(long)]
        ready: bool,
    },
    /// Rolling reload: replace every worker, one at a time, each only once its successor is
    /// ready; re-reads the configuration, `listen` included (new addresses bound first, removed
    /// ones closed once what they queued is handed on). Keeps the current number of workers (a
    /// `scale` stays) unless the configuration's `workers` changed. Answers once the new
    /// workers are ready, saying how many old ones are still finishing their connections, and
    /// exits 1 naming any change only a restart or an upgrade applies.
    ///
    /// With several apps ([[app]]): with APP, that app's workers alone; without, the file is
    /// read again: apps added are started, apps removed stopped, apps changed reloaded, the
    /// others untouched.
    Reload {
        /// Only this app (of a file with [[app]] sections).
        #[arg(value_name = "APP", id = "app_name")]
        app_name: Option<String>,
        /// Answer only once the old workers have exited too (at most `kill_timeout` more).
        #[arg(long)]
        wait: bool,
    },
    /// Set the number of workers (new ones start now, removed ones stop gracefully): `scale N`,
    /// or with several apps `scale APP N`.
    Scale {
        /// [APP] N: the app (of a file with [[app]] sections) and the number of workers wanted.
        #[arg(value_name = "[APP] N", num_args = 1..=2, required = true)]
        args: Vec<String>,
    },
    /// The workers' recent output, as the master captured it (`[log] stdout`/`stderr` set): the
    /// last lines of every worker and the agent, oldest first, each with its time, slot, pid and
    /// stream. The master keeps the last 2,000 lines (1 MiB) over all workers.
    Logs {
        /// Only the worker of slot N.
        #[arg(long, value_name = "N", conflicts_with = "agent")]
        slot: Option<usize>,
        /// Only the agent's.
        #[arg(long)]
        agent: bool,
        /// How many lines (at most 1000).
        #[arg(short = 'n', long, value_name = "LINES", default_value_t = 50)]
        lines: usize,
        /// Keep printing new lines as they come, until interrupted.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop the running master gracefully and wait until it has exited. With `[shutdown]
    /// drain`, it first serves on for that long, reported not ready (`/readyz` 503), so that a
    /// balancer in front sees it leave; asked again while draining, it skips the rest.
    ///
    /// With APP (a file with [[app]] sections): that app alone, which stays stopped until
    /// `start APP` (or the master restarts).
    Stop {
        /// Only this app.
        #[arg(value_name = "APP", id = "app_name")]
        app_name: Option<String>,
        /// Skip the drain (or what is left of one under way): stop gracefully now.
        #[arg(long)]
        now: bool,
    },
    /// Stop the running master (gracefully, waiting until it has exited, after its `[shutdown]
    /// drain` if it has one), then start it again
    /// in the background with the same configuration file and the flags given here, as `start
    /// --daemon` does; with nothing running, just start it. Between the two, nothing listens:
    /// `reload` (new workers) and `upgrade` (a new binary) refuse no connection.
    Restart {
        /// Skip the running master's drain: stop it gracefully now.
        #[arg(long)]
        now: bool,
    },
    /// Send a message to the workers (every worker that takes messages: a Node process's
    /// `process.on('message')`, a native worker that said `subscribe`), to one slot, or to the
    /// agent. MESSAGE is JSON (`'{"color":"blue"}'`, `'"text"'`, `42`); with --text, any text,
    /// sent as a JSON string. With --retain KEY the master keeps it as the current value of
    /// KEY and gives it to every worker that starts later, before its first connection.
    Send {
        /// Only to the worker serving slot N.
        #[arg(long, value_name = "N", conflicts_with_all = ["agent", "retain"])]
        slot: Option<usize>,
        /// Only to the agent (`[agent]`).
        #[arg(long, conflicts_with = "retain")]
        agent: bool,
        /// Keep it as the current value of KEY (1–64 of A-Z a-z 0-9 _ . : -), for workers that
        /// start later too (to all workers only).
        #[arg(long, value_name = "KEY")]
        retain: Option<String>,
        /// MESSAGE is text, sent as a JSON string.
        #[arg(long)]
        text: bool,
        /// The message: JSON (at most 64 KiB), or text with --text.
        #[arg(value_name = "MESSAGE")]
        message: String,
    },
    /// A live view of the running master, refreshed every second: one row per slot (state,
    /// pid, uptime, connections/s, un-acked, restarts, memory, CPU%) and totals. `q` or Ctrl-C
    /// quits. Not on a terminal: a plain table each second.
    Top {
        /// Stop after this many refreshes.
        #[arg(short = 'n', long, value_name = "N")]
        iterations: Option<u64>,
    },
    /// Print the running master's metrics in the Prometheus text format (what `[metrics]
    /// listen` serves at /metrics).
    Metrics,
    /// In-place upgrade: start the binary found at the running master's path (after you
    /// replaced it) as a new master with the same arguments, which re-reads the configuration
    /// and takes the listening sockets over — no client is refused. Once its workers are ready
    /// it takes the pid file and control socket, and the old master stops gracefully. If it
    /// fails or its workers do not become ready, the old master serves on and this exits 1
    /// with the reason. Also on SIGUSR2.
    Upgrade {
        /// Start this binary instead of the one at the running master's path.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Return only once the old master has exited too (its workers done, at most its
        /// `kill_timeout` more): then the old binary is no longer running.
        #[arg(long)]
        wait: bool,
    },
    /// Check the configuration and print the effective settings as a config file that loads
    /// back to the same (defaults written out, flags and environment applied, absolute paths).
    Check,
    /// The built-in demo worker: an HTTP/1.1 server answering "handled by worker <id>, pid
    /// <pid>". rrbalancer starts it when the config names no `exec`.
    DemoWorker(DemoArgs),
}

/// `rrbalancer demo-worker` parsed on its own: the master's flags are global to [`Cli`], and
/// would otherwise fill the demo worker's `--help` although it reads none of them.
#[derive(Debug, Parser)]
#[command(name = "rrbalancer demo-worker", version, max_term_width = 100)]
pub struct DemoCli {
    #[command(flatten)]
    pub args: DemoArgs,
}

/// `rrbalancer demo-worker …` (what the master starts), parsed as [`DemoCli`]; `None` for any
/// other command line.
pub fn demo_worker_args() -> Option<DemoArgs> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_none_or(|a| a != "demo-worker") {
        return None;
    }
    let about = <Cli as clap::CommandFactory>::command()
        .find_subcommand("demo-worker")
        .and_then(|c| c.get_about().map(ToString::to_string))
        .unwrap_or_default();
    let matches = <DemoCli as clap::CommandFactory>::command()
        .about(about)
        .bin_name("rrbalancer demo-worker")
        .get_matches_from(&argv[1..]);
    let demo =
        <DemoCli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Some(demo.args)
}

fn parse_workers(s: &str) -> Result<WorkerCount, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommand_arguments_do_not_collide_with_global_ones() {
        // A subcommand argument named like a global one parses but panics on access.
        for args in [
            &["rrbalancer", "demo-worker", "--standalone", "127.0.0.1:0"][..],
            &["rrbalancer", "-w", "2", "scale", "3"],
            &["rrbalancer", "-l", "127.0.0.1:1", "status", "--json"],
            &["rrbalancer", "status", "--ready"],
            &["rrbalancer", "top", "-n", "2"],
            &["rrbalancer", "start", "--daemon"],
            &[
                "rrbalancer",
                "-c",
                "x.toml",
                "upgrade",
                "--binary",
                "/tmp/rrb",
            ],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
