//! The names the core and the shell share: where a process belongs ([`Place`]), what a worker
//! is to its slot ([`Role`]), and who waits for an outcome ([`Waiter`]). A leaf: it imports
//! nothing of the crate.

/// Where a process belongs: a slot (`RRB_WORKER_ID`), which serves connections, or the agent
/// (`[agent]`), which serves none and only sends and receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Place {
    Slot(usize),
    Agent,
}

impl Place {
    /// The slot number, if it is a slot.
    pub fn slot(self) -> Option<usize> {
        match self {
            Place::Slot(i) => Some(i),
            Place::Agent => None,
        }
    }
}

/// As the log lines say it: `slot=3`, `agent`.
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Slot(i) => write!(f, "slot={i}"),
            Place::Agent => f.write_str("agent"),
        }
    }
}

/// What a worker is to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves the slot.
    Current,
    /// Started by a reload to replace the current one once ready.
    Candidate,
    /// Neither: on its way out.
    Detached,
}

/// A control connection waiting for the outcome of a reload (its key in the control socket's
/// table).
pub type Waiter = usize;
