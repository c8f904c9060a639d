//! What crosses a process boundary, as names and bytes, with no socket in sight: the
//! environment a worker, a hook or a new master is started with ([`env`]). Both sides use it —
//! the master that sets a variable and the worker library that reads it — so a name is written
//! once. Imports nothing of the crate.

pub mod env;
