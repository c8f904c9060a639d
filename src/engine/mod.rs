//! The engine: rrbalancer's sans-I/O core. Facts in, effects out, `now` and seeds arguments;
//! no socket, file, process, environment or clock (`tests/tidy.rs` fails on any, and on any
//! import of `master`, the shell that drives it). What it may import: `config` (setting
//! types), `wire` (message types), `text`, and nix's `Pid`/`Signal` values.
//!
//! - leaves: `ids` (place, worker key, waiter), `effect` (what the supervisor asks the shell
//!   to do);
//! - connections: `ledger` (who owns each accepted socket until its ack, the rotation) with
//!   `dispatch`, `client_limits`, `mix`, `stats` (served, latency, rates);
//! - workers: `supervisor` (the only orchestrator: lives, reload, scaling, recycling, stop,
//!   `next_deadline`) over `fleet` (the core's worker record: pid, place, state, timers — no
//!   fd) and `timers` (when to look at which of them), `restart`, `lifecycle`, `limits`,
//!   `reload`, `recycle`, `reconfigure`, `relisten`, `stop_signal`;
//! - views and messages: `log_ring` (the workers' recent output, for `logs`), `projection`
//!   (the one slot/worker/agent state every view reads), `metrics` (counters, the family
//!   table, the renderer), `relay` (worker-to-worker messages, bounded), `upgrade` (the
//!   master-to-master upgrade's state machine), `watch` (watch mode's debounce), `drain`
//!   (what a graceful stop request does: drain first, or stop now);
//! - several apps: `apps` (which app's master runs, is restarted, stopped, reloaded);
//! - in tests, `sim`: the seeded simulators of the hand-off and of supervision.

pub mod agent_check;
pub mod apps;
pub mod client_limits;
pub mod dispatch;
pub mod drain;
pub mod effect;
pub mod fleet;
pub mod ids;
pub mod ledger;
pub mod lifecycle;
pub mod limits;
pub mod log_ring;
pub mod metrics;
pub mod mix;
pub mod projection;
pub mod reconfigure;
pub mod recycle;
pub mod relay;
pub mod relisten;
pub mod reload;
pub mod restart;
#[cfg(test)]
mod sim;
pub mod stats;
pub mod stop_signal;
pub mod supervisor;
pub mod timers;
pub mod upgrade;
pub mod watch;
