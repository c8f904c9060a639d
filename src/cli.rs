//! The command line: what each flag and subcommand means. Parsing only; `lib.rs` runs it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{ListenAddr, SchedPolicy, WorkerCount};
use crate::demo_worker::DemoArgs;

/// A round-robin accepting TCP load balancer: a cluster master for any worker program.
///
/// rrbalancer accepts every connection itself, never reads it, and hands the socket (the file
/// descriptor, over a Unix channel) to the next worker process in strict rotation — or, with
/// `--sched-policy none`, lets every worker accept on the shared listeners. It starts, restarts
/// and stops the workers, and none outlives it.
///
/// With no --config it runs the embedded default: listen on 127.0.0.1:3000, one built-in demo
/// worker per CPU, round-robin.
#[derive(Debug, Parser)]
#[command(name = "rrbalancer", version, max_term_width = 100)]
#[command(after_help = "\
Signals: TERM/INT graceful stop (a second one: quick), QUIT quick stop, HUP reload,
TTIN/TTOU one worker more/fewer, USR1 reopen logs.

Environment: RRB_SCHED_POLICY, NODE_CLUSTER_SCHED_POLICY (rr|none) choose the policy when
--sched-policy is not given; RUST_LOG sets the log level (default: info).

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.")]
pub struct Cli {
    /// Configuration file (TOML). See config/cluster.toml for every key and its default.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// rr: the master hands out connections in turn; none: workers accept themselves.
    /// Overrides RRB_SCHED_POLICY, NODE_CLUSTER_SCHED_POLICY and the file.
    #[arg(long, value_name = "POLICY", global = true)]
    pub sched_policy: Option<SchedPolicy>,

    /// Number of workers (or "auto": one per CPU), overriding the file.
    #[arg(short, long, value_name = "N", value_parser = parse_workers, global = true)]
    pub workers: Option<WorkerCount>,

    /// Address to listen on, overriding the file's `listen` (repeat for several):
    /// 127.0.0.1:3000, [::1]:3000, unix:/path/to.sock.
    #[arg(short, long, value_name = "ADDR", value_parser = parse_listen, global = true)]
    pub listen: Vec<ListenAddr>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the master in the foreground (the default when no subcommand is given).
    Run,
    /// Check the configuration, print the effective settings, and exit.
    Check,
    /// The built-in demo worker: an HTTP/1.1 server answering "handled by worker <id>, pid
    /// <pid>". rrbalancer starts it when the config names no `exec`.
    DemoWorker(DemoArgs),
}

fn parse_workers(s: &str) -> Result<WorkerCount, String> {
    s.parse()
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
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
}
