//! rrbalancer: the master process of a pre-fork server, for workers in any language.
//!
//! The master owns the listening sockets. In `rr` mode it accepts every connection without
//! reading it and passes the socket itself (`SCM_RIGHTS` over a per-worker Unix channel) to the
//! next worker in rotation among those free to take it now, keeping its copy until the worker
//! acks, so a worker's death loses no connection. In `none` mode every worker inherits the
//! listeners (systemd socket activation) and accepts itself. Either way the master supervises
//! the workers: starts them, restarts them within limits, stops them gracefully, and never
//! leaves one behind.
//!
//! As a library it offers what workers use: [`worker`] (the channel, acks, the listeners of
//! `none` mode) and [`protocol`] (the wire format both sides speak). The binary calls [`main`].
//!
//! The layout follows the architecture:
//!
//! - `cli`: the binary's commands — the flags, `run`/`start` (→ `config` → `master`), and the
//!   control client (`status`, `reload`, `top` …);
//! - `config`: the TOML file → the validated `Config`;
//! - `master`: the shell — the event loop, every fd and process (see its header);
//! - `engine`: the sans-I/O core the master drives: supervision, the connection ledger, the
//!   upgrade's decisions; no I/O, no clock (`tests/tidy.rs` keeps it so);
//! - `wire`: every byte format and environment name that crosses a process boundary, used by
//!   both sides: [`protocol`] (the worker channel), `node_ipc` (Node's), `control` (the control
//!   socket's), `upgrade` (master to master), `env`;
//! - [`worker`]: the library a Rust worker uses; `demo` is one;
//! - `sys`: every `unsafe` block and raw fd.

mod cli;
mod config;
mod demo;
mod engine;
mod logging;
mod master;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use master::fuzz;
mod sys;
mod text;
mod wire;
pub mod worker;

pub use wire::protocol;

use std::process::ExitCode;

/// The `rrbalancer` binary: parses the command line, sets up logging, runs what it asks for;
/// returns the process exit code.
pub fn main() -> ExitCode {
    logging::init();
    cli::main()
}
