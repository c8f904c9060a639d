//! What crosses a process boundary, as names and bytes, with no socket in sight. Both sides use
//! it — the master that writes a message or sets a variable and the worker library, the control
//! client or the other master that reads it — so each format and name is written once:
//!
//! - [`protocol`]: the native worker channel (docs/PROTOCOL.md);
//! - `node_ipc`: Node's IPC channel (JSON lines, the `NODE_HANDLE` messages of `cluster`);
//! - `control`: the control socket's requests and replies; `apps_control`: those of the master
//!   of several apps (`[[app]]`);
//! - `upgrade`: the messages between an old and a new master during an in-place upgrade;
//! - `env`: the environment a worker, a hook or a new master is started with;
//! - `registry`: the entries by which a bare control command finds every running master.
//!
//! Imports nothing of the crate but `text` (quoting untrusted text).

pub mod apps_control;
pub mod control;
pub mod env;
pub mod node_ipc;
pub mod protocol;
pub mod registry;
pub mod upgrade;
