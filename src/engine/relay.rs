//! Messages between workers, the agent and the control socket, relayed by the master (the seeds'
//! "notification process": one process watches for changes and every worker is told). Pure:
//! what a message is, where it may go, the retained values, and the bound on what waits for one
//! receiver. The wires encode it (docs/PROTOCOL.md `send`/`message`; Node's `process.send`).
//!
//! The body is one JSON value, kept as compact text: Node's `process.send` speaks JSON, so a
//! message crosses between Node and native processes unchanged (keys keep their order), and
//! compact text is one line (Node's IPC is line-framed) that a native worker can read as it is.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest body, in bytes of compact JSON.
pub const MAX_BODY: usize = crate::wire::control::MAX_MESSAGE;
/// Retained keys at most, and their bodies' bytes in all.
pub const MAX_RETAINED_KEYS: usize = 64;
pub const MAX_RETAINED_BYTES: usize = 1024 * 1024;
/// Flow control. Bytes of messages waiting for one receiver beyond what its socket buffer holds
/// are counted with [`MESSAGE_OVERHEAD`] each. Past [`HIGH_WATER`] for any receiver, the master
/// stops reading the channels of the processes that send messages (their senders wait in
/// their own socket buffers) until every backlog is back under [`LOW_WATER`]: a flood is paced
/// by the slowest receiver, and nothing waits in the master without bound.
pub const HIGH_WATER: usize = 128 * 1024;
pub const LOW_WATER: usize = 32 * 1024;
/// A backlog that makes no progress for this long (its receiver reads nothing) gets its
/// receiver replaced: the senders it holds back go on.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The hard bound per receiver: reached only if a single read brought more than the room
/// between the marks; the receiver is replaced then too.
pub const MAX_BACKLOG_BYTES: usize = 1024 * 1024;
/// What a message costs the master besides its body (its shared record and allocations, a
/// receiver's queue slot): many small messages weigh what they really take.
pub const MESSAGE_OVERHEAD: usize = 128;
/// A retained key's longest name.
pub const MAX_KEY_LEN: usize = 64;

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// The worker of a slot.
    Slot(usize),
    /// The agent (`[agent]`).
    Agent,
    /// `rrbalancer send`.
    Control,
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Slot(slot) => write!(f, "{slot}"),
            Sender::Agent => f.write_str("agent"),
            Sender::Control => f.write_str("control"),
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every worker (but the sender).
    All,
    Agent,
    /// The worker serving a slot.
    Slot(usize),
}

impl Target {
    /// `all`, `agent` or a slot number.
    pub fn parse(text: &str) -> Option<Target> {
        match text {
            "all" => Some(Target::All),
            "agent" => Some(Target::Agent),
            n if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().ok().map(Target::Slot)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Agent => f.write_str("agent"),
            Target::Slot(slot) => write!(f, "slot {slot}"),
        }
    }
}

/// What a sender asked to send, before the master knows who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// `None`: the sender's default (the agent's messages go to every worker, a worker's to the
    /// agent).
    pub to: Option<Target>,
    pub retain: Option<String>,
    /// Compact JSON.
    pub body: Box<str>,
}

/// A message on its way: one allocation, shared by every receiver's backlog.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub from: Sender,
    /// The key it is the current value of, if retained.
    pub retain: Option<String>,
    pub body: Box<str>,
}

/// A retained key's name: 1 to 64 of `A-Z a-z 0-9 _ . : -`.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok = (1..=MAX_KEY_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a retained key is 1 to {MAX_KEY_LEN} of A-Z a-z 0-9 _ . : - (got {})",
            crate::text::quoted(key)
        ))
    }
}

/// The compact JSON text of `value`, within [`MAX_BODY`].
pub fn body_of(value: &Value) -> Result<Box<str>, String> {
    let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
    if text.len() > MAX_BODY {
        return Err(format!(
            "a message is at most {MAX_BODY} bytes of JSON (this one: {})",
            text.len()
        ));
    }
    Ok(text.into_boxed_str())
}

/// A message's JSON from a worker's bytes: valid JSON, made compact, within [`MAX_BODY`].
pub fn body_from_text(text: &str) -> Result<Box<str>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    body_of(&value)
}

/// The latest value of each retained key, delivered to every worker that starts later, before
/// its first connection. Bounded in keys and bytes.
#[derive(Debug, Default)]
pub struct Retained {
    values: BTreeMap<String, Rc<Message>>,
    bytes: usize,
}

impl Retained {
    /// Keeps `message` as the value of its key (replacing the one before); `Err` if a new key
    /// would pass [`MAX_RETAINED_KEYS`] or the bytes [`MAX_RETAINED_BYTES`] (nothing changes).
    pub fn keep(&mut self, message: &Rc<Message>) -> Result<(), String> {
        let Some(key) = &message.retain else {
            return Ok(());
        };
        let before = self.values.get(key).map_or(0, |m| m.body.len());
        if !self.values.contains_key(key) && self.values.len() >= MAX_RETAINED_KEYS {
            return Err(format!(
                "{MAX_RETAINED_KEYS} keys are retained already; not keeping {key:?}"
            ));
        }
        let bytes = self.bytes - before + message.body.len();
        if bytes > MAX_RETAINED_BYTES {
            return Err(format!(
                "retained values would take {bytes} bytes (at most {MAX_RETAINED_BYTES}); not \
                 keeping {key:?}"
            ));
        }
        self.bytes = bytes;
        self.values.insert(key.clone(), Rc::clone(message));
        Ok(())
    }

    /// Whether `message` would replace, with another value, one that an operator set with
    /// `rrbalancer send --retain` (a worker or the agent re-sending its own at a reload): worth
    /// a line in the log, since the operator's value is gone.
    pub fn overrides_operator(&self, message: &Message) -> bool {
        let Some(key) = &message.retain else {
            return false;
        };
        self.values.get(key).is_some_and(|old| {
            old.from == Sender::Control
                && message.from != Sender::Control
                && old.body != message.body
        })
    }

    /// Every retained message, by key.
    pub fn values(&self) -> impl Iterator<Item = &Rc<Message>> {
        self.values.values()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Messages waiting for one receiver, in order, within [`MAX_BACKLOG_BYTES`].
#[derive(Debug, Default)]
pub struct Backlog {
    queue: VecDeque<Rc<Message>>,
    bytes: usize,
    /// It overflowed once: the receiver is being replaced and gets nothing more.
    overflowed: bool,
    /// Its last progress while not empty: when it last became non-empty, or last sent one.
    moved: Option<Instant>,
}

/// The receiver is not keeping up.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow {
    pub bytes: usize,
}

impl Backlog {
    /// Queues `message`; the first push past the bound drops it and says so (once: later ones
    /// are dropped quietly, the receiver is on its way out).
    pub fn push(&mut self, message: &Rc<Message>, now: Instant) -> Result<(), Overflow> {
        if self.overflowed {
            return Ok(());
        }
        if self.queue.is_empty() {
            self.moved = Some(now);
        }
        let bytes = self.bytes + message.body.len() + MESSAGE_OVERHEAD;
        if bytes > MAX_BACKLOG_BYTES {
            self.overflowed = true;
            self.queue.clear();
            self.bytes = 0;
            return Err(Overflow { bytes });
        }
        self.bytes = bytes;
        self.queue.push_back(Rc::clone(message));
        Ok(())
    }

    pub fn front(&self) -> Option<&Rc<Message>> {
        self.queue.front()
    }

    /// The front message was sent at `now`.
    pub fn pop(&mut self, now: Instant) {
        if let Some(m) = self.queue.pop_front() {
            self.bytes -= m.body.len() + MESSAGE_OVERHEAD;
        }
        self.moved = (!self.queue.is_empty()).then_some(now);
    }

    /// Bytes waiting, overhead included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When it counts as stalled if nothing moves before: its receiver is to be replaced.
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.moved.map(|t| t + STALL_TIMEOUT)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(key: Option<&str>, body: &str) -> Rc<Message> {
        Rc::new(Message {
            from: Sender::Control,
            retain: key.map(str::to_owned),
            body: body.into(),
        })
    }

    /// The flow-control marks: a pause begins past the high mark and ends under the low one, a
    /// receiver is replaced past the hard bound, which keeps what the master holds per receiver
    /// under the 1 MiB README measures. Tuning values: a change to one is deliberate, here too.
    #[test]
    #[allow(clippy::assertions_on_constants)] // the constants are what is checked
    fn the_marks_are_ordered_and_bounded() {
        assert_eq!((LOW_WATER, HIGH_WATER), (32 * 1024, 128 * 1024));
        assert!(HIGH_WATER < MAX_BACKLOG_BYTES && MAX_BACKLOG_BYTES <= 1024 * 1024);
        let names: Vec<String> = [Sender::Slot(3), Sender::Agent, Sender::Control]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["3", "agent", "control"], "as the log says them");
        let targets: Vec<String> = [Target::All, Target::Agent, Target::Slot(2)]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            targets,
            ["all", "agent", "slot 2"],
            "as `send`'s errors say them"
        );
    }

    #[test]
    fn bodies_are_compact_json_in_their_key_order_and_bounded() {
        assert_eq!(
            &*body_from_text("{ \"b\" : 1,\n \"a\": [1, 2] }").unwrap(),
            "{\"b\":1,\"a\":[1,2]}"
        );
        assert_eq!(&*body_from_text(" \"x\\ny\" ").unwrap(), "\"x\\ny\"");
        assert!(body_from_text("{").unwrap_err().starts_with("not JSON"));
        assert!(body_from_text("1 2").is_err());
        let big = json!("x".repeat(MAX_BODY - 2));
        assert_eq!(body_of(&big).unwrap().len(), MAX_BODY);
        let bigger = json!("x".repeat(MAX_BODY - 1));
        assert!(
            body_of(&bigger)
                .unwrap_err()
                .contains("at most 65536 bytes")
        );
    }

    #[test]
    fn targets_and_keys() {
        assert_eq!(Target::parse("all"), Some(Target::All));
        assert_eq!(Target::parse("agent"), Some(Target::Agent));
        assert_eq!(Target::parse("12"), Some(Target::Slot(12)));
        for bad in ["", "-1", "+1", "slot", "1a", "99999999999999999999999"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
        assert!(check_key("feature-flags").is_ok());
        assert!(check_key("app.config:v2_x").is_ok());
        assert!(check_key(&"k".repeat(64)).is_ok());
        for bad in ["", "a b", "é", "a/b", &"k".repeat(65)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_latest_value_per_key_is_kept_within_the_bounds() {
        let mut r = Retained::default();
        r.keep(&message(Some("config"), "1")).unwrap();
        r.keep(&message(Some("config"), "22")).unwrap();
        r.keep(&message(Some("flags"), "[]")).unwrap();
        r.keep(&message(None, "not retained")).unwrap();
        let bodies: Vec<&str> = r.values().map(|m| &*m.body).collect();
        assert_eq!(bodies, ["22", "[]"], "by key, latest value");
        assert_eq!((r.len(), r.bytes()), (2, 4));
        for i in 2..MAX_RETAINED_KEYS {
            r.keep(&message(Some(&format!("k{i}")), "0")).unwrap();
        }
        assert!(r.keep(&message(Some("one-more"), "0")).is_err());
        r.keep(&message(Some("config"), "3"))
            .expect("an existing key may change");
        let huge = "x".repeat(MAX_BODY);
        let mut big = Retained::default();
        for i in 0..(MAX_RETAINED_BYTES / MAX_BODY) {
            big.keep(&message(Some(&format!("k{i}")), &huge)).unwrap();
        }
        let err = big.keep(&message(Some("over"), "12")).unwrap_err();
        assert!(err.contains("at most 1048576"), "{err}");
        assert_eq!(big.bytes(), MAX_RETAINED_BYTES, "unchanged");
        big.keep(&message(Some("k0"), "1"))
            .expect("a smaller value fits");
    }

    #[test]
    fn a_backlog_counts_overhead_overflows_once_then_drops_quietly() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        let chunk = message(None, &"x".repeat(MAX_BODY));
        let fits = MAX_BACKLOG_BYTES / (MAX_BODY + MESSAGE_OVERHEAD);
        for _ in 0..fits {
            b.push(&chunk, t0).unwrap();
        }
        assert_eq!(b.bytes(), fits * (MAX_BODY + MESSAGE_OVERHEAD));
        assert!(b.push(&chunk, t0).is_err());
        assert!(
            b.is_empty(),
            "what waited is dropped: the receiver is replaced"
        );
        assert_eq!(b.push(&chunk, t0), Ok(()));
        assert!(b.is_empty());
        // Many small messages weigh their overhead: a million one-byte bodies do not fit.
        let mut small = Backlog::default();
        let one = message(None, "1");
        let n = (0..1_000_000)
            .take_while(|_| small.push(&one, t0).is_ok())
            .count();
        assert_eq!(n, MAX_BACKLOG_BYTES / (1 + MESSAGE_OVERHEAD));
        // The bound itself fits: 1,024 messages of 896 + 128 bytes make exactly 1 MiB.
        let mut full = Backlog::default();
        let kib = message(None, &"y".repeat(1024 - MESSAGE_OVERHEAD));
        for i in 0..1024 {
            assert_eq!(full.push(&kib, t0), Ok(()), "message {i}");
        }
        assert_eq!(full.bytes(), MAX_BACKLOG_BYTES);
        assert!(full.push(&one, t0).is_err());
    }

    #[test]
    fn a_backlog_stalls_when_nothing_moves_for_the_timeout() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Backlog::default();
        assert_eq!(b.stall_deadline(), None, "empty: nothing to wait for");
        b.push(&message(None, "1"), at(1)).unwrap();
        b.push(&message(None, "2"), at(3)).unwrap();
        assert_eq!(b.stall_deadline(), Some(at(1) + STALL_TIMEOUT));
        assert_eq!((b.len(), b.is_empty()), (2, false));
        assert_eq!(b.front().map(|m| &*m.body), Some("1"), "in order");
        b.pop(at(4));
        assert_eq!(b.stall_deadline(), Some(at(4) + STALL_TIMEOUT), "it moved");
        assert_eq!(b.front().map(|m| &*m.body), Some("2"));
        assert_eq!(b.bytes(), 1 + MESSAGE_OVERHEAD, "what is left");
        b.pop(at(5));
        assert_eq!((b.stall_deadline(), b.bytes()), (None, 0));
    }

    #[test]
    fn an_operators_retained_value_replaced_by_a_workers_is_noticed() {
        let mut r = Retained::default();
        r.keep(&message(Some("config"), "1")).unwrap();
        let from_agent = |body: &str| Message {
            from: Sender::Agent,
            retain: Some("config".into()),
            body: body.into(),
        };
        assert!(r.overrides_operator(&from_agent("2")));
        assert!(
            !r.overrides_operator(&from_agent("1")),
            "the same value: nothing lost"
        );
        assert!(
            !r.overrides_operator(&message(Some("config"), "3")),
            "the operator's own"
        );
        assert!(!r.overrides_operator(&message(None, "3")), "not retained");
        r.keep(&Rc::new(from_agent("2"))).unwrap();
        assert!(
            !r.overrides_operator(&from_agent("4")),
            "the agent's own value"
        );
    }
}
