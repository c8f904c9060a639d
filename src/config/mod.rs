//! Configuration: `cluster.toml` → [`FileConfig`] (serde, unknown keys denied) → [`validate`] →
//! [`Config`], the only shape the rest of the program sees.
//!
//! Two steps, because a TOML file can be well-formed and still wrong (a program that does not
//! exist, a policy we do not know). Every error names the file, the line and column, the key and
//! what is allowed, on one line, so an operator can fix it without reading our source. Values that
//! have a syntax of their own (addresses, durations, worker counts) are parsed while deserializing,
//! so their errors point at the exact spot in the file.
//!
//! Defaults are written once, in the `Default` impls and `default_*` functions of `schema.rs`;
//! the embedded default configuration (no `--config`) is simply an empty file.
//!
//! One concept a file: `values` (value types and bounds), `schema` (what serde reads), `model`
//! (the validated [`Config`]), `load` (reading, error positions), `check` (what every rule
//! needs: the file's name and lines, the bounds of durations, relative paths), `validate` (one
//! section after another; listen, backlog, paths), `command` (`[worker]`, `[agent]`) and
//! `sections` (`[restart]`, `[shutdown]`, `[recycle]`, `[metrics]`, `[watch]`), `probe` and
//! `host` (what the machine and the file system say), `program` (a worker named on the command
//! line), `print` (`check`'s output), `wording` (serde's messages in the file's terms: no Rust
//! type names; "did you mean" for a mistyped key). A new key: its field in `schema` and
//! `model`, a line in its section's function, a line in `print`, a row in README.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::text::quoted;
use ipnet::IpNet;
use nix::sys::signal::Signal;
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

mod apps;
mod check;
mod command;
mod environments;
pub mod host;
mod load;
mod model;
mod print;
mod probe;
mod program;
mod schema;
mod sections;
mod validate;
mod values;
mod wording;

pub use apps::{AppsConfig, Loaded, app_control, valid_app_name};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use apps::{has_apps, load_apps};
use check::*;
use command::*;
pub use host::default_runtime_dir;
pub use load::*;
pub use model::*;
pub use probe::*;
pub use schema::*;
use sections::*;
pub use validate::*;
pub use values::*;

#[cfg(test)]
mod apps_tests;
#[cfg(test)]
mod edges_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod tests;
