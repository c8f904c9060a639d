//! Entry points for `cargo fuzz` (feature `fuzzing`, never in a normal build): the master's
//! readers of untrusted bytes, driven exactly as the event loop drives them, over real socket
//! pairs. Each returns normally for any input; a panic, a hang or an unbounded allocation is a
//! finding. `fuzz/fuzz_targets/` calls them.

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::time::Instant;

use serde_json::json;

use super::channel::{Channel, Handoff, Incoming};
use super::node::NodeWire;
use crate::config::NodeMessages;
use crate::protocol::Peer;
use crate::sys;

/// Sockets handed to the worker before it speaks, so acks and refusals have something to act on.
const HANDED: usize = 3;

fn handoffs(channel: &mut Channel) -> Vec<std::os::fd::OwnedFd> {
    let mut peers = Vec::new();
    for _ in 0..HANDED {
        let Ok((socket, peer)) = sys::stream_pair() else {
            break;
        };
        channel.assign(Handoff {
            socket,
            listener: 0,
            peer: Peer::Unix,
            sent: None,
        });
        peers.push(peer);
    }
    let _ = channel.flush(Instant::now());
    peers
}

/// Reads everything waiting, as the master does (budget by budget), then flushes what the
/// reading queued; returns what was read.
fn drain(channel: &mut Channel) -> Vec<Incoming> {
    let mut out = Vec::new();
    loop {
        channel.read(&mut out);
        if !channel.has_unread() {
            break;
        }
    }
    let _ = channel.flush(Instant::now());
    let _ = channel.take_unsent().count();
    out
}

/// A native worker sends `data` as messages: each 0xFF byte ends one (seqpacket keeps them apart).
pub fn native_channel(data: &[u8]) {
    let Ok((master, worker)) = sys::seqpacket_pair() else {
        return;
    };
    let Ok(mut channel) = Channel::new(master, 8) else {
        return;
    };
    let _peers = handoffs(&mut channel);
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
    let out = drain(&mut channel);
    assert!(channel.in_flight() <= HANDED, "acks never add sockets");
    let _ = channel.take_unacked().count();
    drop(out);
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
    let Ok(mut channel) = Channel::node(master, wire) else {
        return;
    };
    let _peers = handoffs(&mut channel);
    let _ = sys::set_nonblocking(worker.as_fd(), true);
    for chunk in data.chunks(4096) {
        if sys::send_with_fds(worker.as_fd(), &[IoSlice::new(chunk)], [], &mut Vec::new()).is_err()
        {
            break; // our replies fill the pipe: read them below
        }
        let _ = drain(&mut channel);
        let mut sink = [0u8; 65536];
        let _ = nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&worker),
            &mut sink,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        );
    }
    drop(worker);
    let _ = drain(&mut channel);
    assert!(channel.in_flight() <= HANDED, "answers never add sockets");
    let _ = channel.take_unacked().count();
}
