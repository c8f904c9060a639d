//! Entry points for `cargo fuzz` (feature `fuzzing`, never in a normal build): the master's
//! readers of untrusted bytes, driven exactly as the event loop drives them, over real socket
//! pairs. Each returns normally for any input; a panic, a hang or an unbounded allocation is a
//! finding. `fuzz/fuzz_targets/` calls them, and `cargo test` replays every seed in
//! `fuzz/seeds/` through them on stable, so they cannot rot where no nightly toolchain is.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::time::Instant;

use serde_json::json;

use super::channel::Channel;
use super::node::NodeWire;
use super::wire_shared::{Handoff, Incoming};
use crate::config::NodeMessages;
use crate::engine::ledger::Ledger;
use crate::sys;
use crate::wire::protocol::Peer;

/// Sockets handed to the worker before it speaks, so acks and refusals have something to act on.
const HANDED: usize = 3;

/// A channel and its worker's account, in a ledger of its own, as the master holds them.
struct Held {
    channel: Channel,
    ledger: Ledger<Handoff>,
    key: usize,
}

impl Held {
    fn new(channel: Channel, window: usize) -> Held {
        let mut ledger = Ledger::default();
        let key = ledger.open(window);
        Held {
            channel,
            ledger,
            key,
        }
    }

    fn flush(&mut self) {
        if let Some(account) = self.ledger.account_mut(self.key) {
            let _ = self.channel.flush(account, Instant::now());
        }
        self.ledger.requeue_unsent(self.key);
    }

    /// Hands it [`HANDED`] sockets; the peers' ends, to keep them open.
    fn handoffs(&mut self) -> Vec<std::os::fd::OwnedFd> {
        let mut peers = Vec::new();
        for _ in 0..HANDED {
            let Ok((socket, peer)) = sys::stream_pair() else {
                break;
            };
            let handoff = Handoff {
                socket,
                listener: super::listeners::ListenerId(0),
                peer: Peer::Unix,
                accepted: Instant::now(),
                sent: None,
            };
            let key = self.key;
            if self
                .ledger
                .admit(
                    handoff,
                    1,
                    |_| Some(key),
                    crate::engine::dispatch::Placement::default(),
                )
                .is_some()
            {
                peers.push(peer);
            }
        }
        self.flush();
        peers
    }

    /// Reads everything waiting, as the master does (budget by budget), then flushes what the
    /// reading queued; returns what was read.
    fn drain(&mut self) -> Vec<Incoming> {
        let mut out = Vec::new();
        while let Some(account) = self.ledger.account_mut(self.key) {
            self.channel.read(account, Instant::now(), &mut out);
            if !self.channel.has_unread() {
                break;
            }
        }
        self.ledger.requeue_returned(self.key);
        self.flush();
        out
    }

    /// Acks and answers never add sockets: everything handed is still in the ledger, or acked.
    fn check(&mut self) {
        let in_flight = self.ledger.account(self.key).map_or(0, |a| a.in_flight());
        assert!(
            in_flight + self.ledger.queued() <= HANDED,
            "acks never add sockets"
        );
        self.ledger.remove(self.key);
    }
}

/// A native worker sends `data` as messages: each 0xFF byte ends one (seqpacket keeps them apart).
pub fn native_channel(data: &[u8]) {
    let Ok((master, worker)) = sys::seqpacket_pair() else {
        return;
    };
    let Ok(channel) = Channel::native(master) else {
        return;
    };
    let mut held = Held::new(channel, 8);
    let _peers = held.handoffs();
    for message in data.split(|&b| b == 0xff).take(512) {
        if message.is_empty() {
            continue;
        }
        let sent = sys::send_with_fds(
            worker.as_fd(),
            &[IoSlice::new(message)],
            [],
            &mut Vec::new(),
        );
        if sent.is_err() {
            break;
        }
    }
    drop(worker); // the end of the channel, after everything it said
    let out = held.drain();
    held.check();
    drop(out);
}

/// The `node_channel` target's input: a first byte choosing `node` (even) or `node-cluster`
/// (odd), then what the worker writes.
pub fn node_channel_input(data: &[u8]) {
    if let Some((&kind, rest)) = data.split_first() {
        node_channel(rest, kind % 2 == 1);
    }
}

/// A Node worker (`node` or, with `cluster`, `node-cluster`) writes `data` on its IPC stream.
pub fn node_channel(data: &[u8], cluster: bool) {
    let Ok((master, worker)) = sys::stream_pair() else {
        return;
    };
    let messages = NodeMessages {
        socket: json!("socket"),
        server: json!("server"),
        leaving: json!({"act": "suicide"}),
    };
    let wire = NodeWire::new(cluster, false, messages, Vec::new());
    let Ok(channel) = Channel::node(master, wire) else {
        return;
    };
    // The window is wide so that the wire's own rule (one handle at a time) is what holds.
    let mut held = Held::new(channel, 8);
    let _peers = held.handoffs();
    let _ = sys::set_nonblocking(worker.as_fd(), true);
    for chunk in data.chunks(4096) {
        if sys::send_with_fds(worker.as_fd(), &[IoSlice::new(chunk)], [], &mut Vec::new()).is_err()
        {
            break; // our replies fill the pipe: read them below
        }
        let _ = held.drain();
        let mut sink = [0u8; 65536];
        let _ = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&worker),
            &mut sink,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        );
    }
    drop(worker);
    let _ = held.drain();
    held.check();
}

/// A config file: parsed, then validated with no overrides (one with `[[app]]` sections: every
/// app merged over the top level and validated). Any outcome but a panic is fine.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if crate::config::has_apps(text) {
        let path = std::path::Path::new("/nonexistent/fuzz.toml");
        let overrides = crate::config::Overrides::default();
        let _ = crate::config::load_apps(text, "fuzz.toml", path, &overrides);
        return;
    }
    let Ok(file) = crate::config::parse(text, "fuzz.toml") else {
        return;
    };
    let overrides = crate::config::Overrides::default();
    let _ = crate::config::validate(file, text, "fuzz.toml", None, &overrides);
}

/// What a client sends on the control socket, as the master frames and parses it: while the
/// client may send more, and once it has closed its side. Whatever it sent, the framing is
/// decided within the bound: past [`MAX_REQUEST`](crate::wire::control::MAX_REQUEST) bytes nothing is
/// left to wait for, and once the client closed only silence is.
pub fn control_request(data: &[u8]) {
    use crate::wire::control::{MAX_REQUEST, parse_request};
    let open = parse_request(data, false);
    let ended = parse_request(data, true);
    if data.len() > MAX_REQUEST {
        assert!(open.is_some(), "past the bound a request is decided");
    }
    if open.is_some() {
        assert_eq!(
            open, ended,
            "a complete line reads the same once the client closed"
        );
    }
    assert_eq!(
        ended.is_none(),
        data.trim_ascii().is_empty() && open.is_none()
    );
    // The master of several apps reads the same line: a request without `app` is the same
    // request for it.
    use crate::wire::apps_control::{AppsCommand, parse_apps_request};
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let apps = parse_apps_request(line);
    if let (Some(Ok(request)), Ok(parsed)) = (&ended, &apps) {
        if parsed.app.is_none() && line.len() <= MAX_REQUEST {
            assert_eq!(&parsed.command, &AppsCommand::Request(request.clone()));
        }
    }
}

/// What a new master says on the upgrade channel (packets: the input split at NUL bytes), read
/// as the old master reads it and fed to its [`Handover`](crate::engine::upgrade::Handover) as the clock
/// moves. Whatever it says, the upgrade ends at most once, and stays decidable (something is
/// always due while it is under way).
pub fn upgrade_channel(data: &[u8]) {
    use crate::engine::upgrade::{Handover, UpgradeStep};
    use crate::wire::upgrade::Message;
    use std::time::Duration;
    let t0 = Instant::now();
    let kill = Duration::from_secs(5);
    let mut h = Handover::new(
        nix::unistd::Pid::from_raw(i32::MAX),
        "/x".into(),
        vec![1],
        t0,
    );
    let mut outcomes = 0;
    for (i, packet) in data.split(|&b| b == 0).enumerate().take(64) {
        let now = t0 + Duration::from_millis(i as u64 * 700);
        let step = match Message::decode(packet) {
            Ok(message) => h.on_message(message, now, kill),
            Err(_) => {
                h.on_channel_closed(now);
                UpgradeStep::Nothing
            }
        };
        let ticked = h.tick(now, kill);
        for step in [step, ticked] {
            if matches!(
                step,
                UpgradeStep::HandedOver(_) | UpgradeStep::Failed { .. }
            ) {
                outcomes += 1;
            }
        }
        assert!(outcomes <= 1, "an upgrade ends once");
        assert!(
            !h.in_progress() || h.deadline().is_some(),
            "{:?}",
            h.describe()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A fuzz target's name and its entry point.
    type Target = (&'static str, fn(&[u8]));

    /// Every target of `fuzz/fuzz_targets/`.
    const TARGETS: [Target; 5] = [
        ("native_channel", super::native_channel),
        ("node_channel", super::node_channel_input),
        ("control_request", super::control_request),
        ("config", super::config),
        ("upgrade_channel", super::upgrade_channel),
    ];

    #[test]
    fn every_fuzz_target_replays_its_seeds_on_stable() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut names: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
            .unwrap()
            .flatten()
            .filter_map(|e| Some(e.path().file_stem()?.to_str()?.to_owned()))
            .collect();
        names.sort();
        let mut listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        listed.sort();
        assert_eq!(
            names, listed,
            "a fuzz target without a replay here, or one gone"
        );
        for (name, run) in TARGETS {
            let mut seeds = 0;
            for entry in std::fs::read_dir(fuzz.join("seeds").join(name)).unwrap() {
                let path = entry.unwrap().path();
                run(&std::fs::read(&path).unwrap());
                seeds += 1;
            }
            assert!(seeds > 0, "{name} has no seed");
        }
    }
}
