//! What the master counts, and its rendering in the Prometheus text exposition format (0.0.4):
//! served on `[metrics] listen` at `/metrics` and printed by `rrbalancer metrics`. Core: no
//! I/O, no clock (the master's own `/proc` figures are read by the shell's `memory.rs`).
//!
//! - `counters.rs`: the counts kept for the master's life, and the labels of their causes.
//! - `families.rs`: every family's name, type and help, each written once.
//! - `apps.rs`: several apps' expositions as one, each sample with its `app` label.
//! - `render.rs`: a scrape's [`Snapshot`] rendered as text, one small function per group.
//!
//! Imports: `stats` (what a slot served), `apps` (the apps' states) and nothing else.

pub mod apps;
mod counters;
pub mod families;
pub mod render;

pub use counters::*;
pub use render::{Process, Slot, Snapshot, render};

#[cfg(test)]
mod tests;
