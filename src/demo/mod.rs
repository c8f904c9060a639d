//! `rrbalancer demo-worker`: the built-in HTTP/1.1 worker of the default configuration.
//!
//! It answers every request with `handled by worker <id>, pid <pid>\n`, honours keep-alive and
//! `Connection: close`, and shows how an event-loop worker uses [`crate::worker`]: the channel is
//! one more fd in its mio `Poll`. It gets connections from the channel (`rr`), accepts on
//! inherited listeners (`none`), or — outside rrbalancer, as the benchmark's reference — binds
//! its own `SO_REUSEPORT` listener (`--standalone ADDR`). It stops gracefully on `stop` or SIGTERM
//! ([`worker::Drain`]): no new connections, finish each request in progress, answer the next
//! request on each keep-alive connection with `Connection: close`, and close those still idle
//! after `--drain-grace` (2s) — never one whose client may be sending its next request.
//!
//! Load never makes it exit. A connection that sends nothing for `--idle-timeout` (5s) while it
//! is owed no answer — an idle keep-alive client, one that stopped in its request — is closed,
//! and a request not whole within `--request-timeout` (10s) of its first byte is answered 408
//! and closed, so idle and slow clients cannot hold its file descriptors forever. At its open-file limit (a
//! `conn` message cut short by the kernel) it gives the connections back to the master
//! (`full N`), which hands them to other workers, and says `idle` again once a connection of
//! its own has closed; in `none` mode it stops accepting until then.
//!
//! Here: the event loop and its server (`server.rs`) and its clients (`clients.rs`), connections and HTTP/1.1 answers
//! (`http.rs`), the benchmark's slow requests (`slow.rs`). Imports `worker` (and `wire`).
//!
//! For the benchmark's uneven-work scenario, `--slow-every N --slow-ms M` makes every Nth
//! request this process answers hold its only thread for M ms of CPU before the answer — a
//! blocking `JSON.parse` or synchronous call in an event-loop worker, during which the worker
//! accepts, reads and answers nothing else.

use std::net::SocketAddr;
use std::time::Duration;

mod clients;
mod http;
mod server;
mod slow;

pub use server::run;

/// Options of `rrbalancer demo-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Exit (after saying `leaving`) once this many requests have been served, like
    /// gunicorn's `max_requests`. 0: never.
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,
    /// Standalone mode, outside rrbalancer: bind this address itself with SO_REUSEPORT, so
    /// several copies share the port (the benchmark's no-balancer reference).
    #[arg(long, value_name = "ADDR")]
    pub standalone: Option<SocketAddr>,
    /// Wait this long before saying `ready` (to show readiness at work).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ready_delay: Option<Duration>,
    /// Uneven work: every Nth request this process answers (the Nth, 2Nth, …) first keeps its
    /// event loop busy for --slow-ms of CPU, like a blocking JSON.parse. 0: never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slow_every: u64,
    /// With --slow-every: how many milliseconds each slow request burns (a busy loop, not a
    /// sleep: the worker does nothing else meanwhile).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub slow_ms: u64,
    /// After `stop`: how long a keep-alive connection may stay idle before it is closed (each
    /// one's next request is answered with `Connection: close` meanwhile).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "2s")]
    pub drain_grace: Duration,
    /// Close a connection that has sent nothing for this long while it is owed no answer: an
    /// idle keep-alive connection, or a client that stopped in the middle of its request
    /// (Node's `keepAliveTimeout` is 5s too). Idle clients cannot pin the worker's file
    /// descriptors. 0: never.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "5s")]
    pub idle_timeout: Duration,
    /// A request must arrive whole (head and body) within this long of its first byte; else it
    /// is answered 408 and the connection closed, so a client that trickles its headers cannot
    /// hold a descriptor for good (slowloris). 0: never.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub request_timeout: Duration,
}
