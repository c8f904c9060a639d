//! The channel's tests: a worker's end of a seqpacket pair, driven by hand.

use std::io::IoSlice;

use super::*;
use crate::master::native::READ_BUDGET;
use crate::master::wire_shared::Handoff;
use crate::wire::protocol::{MAX_FDS_PER_MESSAGE, Peer, WorkerMessage};

fn handoff() -> (Handoff, OwnedFd) {
    let (a, b) = sys::stream_pair().unwrap();
    (
        Handoff {
            socket: a,
            listener: crate::master::listeners::ListenerId(0),
            peer: Peer::Unix,
            accepted: Instant::now(),
            sent: None,
        },
        b,
    )
}

fn pair(window: usize) -> (Pair, OwnedFd) {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    (Pair::new(Channel::native(master).unwrap(), window), worker)
}

fn send(worker: &OwnedFd, text: &str) {
    sys::send_with_fds(
        worker.as_fd(),
        &[IoSlice::new(text.as_bytes())],
        [],
        &mut Vec::new(),
    )
    .unwrap();
}

fn recv(worker: &OwnedFd) -> (String, usize) {
    let mut buf = [0u8; 4096];
    let mut fds = Vec::new();
    let mut cmsg = vec![0; sys::cmsg_space(MAX_FDS_PER_MESSAGE)];
    let got = sys::recv_with_fds(worker.as_fd(), &mut buf, &mut fds, &mut cmsg, true).unwrap();
    (
        String::from_utf8_lossy(&buf[..got.len]).into_owned(),
        fds.len(),
    )
}

#[test]
fn a_batch_goes_as_one_message_and_waits_for_its_ack() {
    let (mut ch, worker) = pair(8);
    let mut peers = Vec::new();
    for _ in 0..3 {
        let (h, p) = handoff();
        ch.assign(h);
        peers.push(p);
    }
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert_eq!(
        recv(&worker),
        ("conn 3\n0 unix\n0 unix\n0 unix\n".into(), 3)
    );
    assert_eq!(ch.in_flight(), 3);
    send(&worker, "ack 2\n");
    let mut out = Vec::new();
    ch.read(&mut out);
    assert_eq!(out, [Incoming::Message(WorkerMessage::Ack(2))]);
    assert_eq!(ch.in_flight(), 1);
}

#[test]
fn last_words_are_read_even_when_the_worker_died_with_our_messages_unread() {
    // The kernel reports ECONNRESET first in this case; `leaving` must still come through.
    let (mut ch, worker) = pair(8);
    let (h, _p) = handoff();
    ch.assign(h);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    send(&worker, "leaving\n");
    drop(worker); // exits with our `conn` unread
    let mut out = Vec::new();
    ch.read(&mut out);
    assert_eq!(
        out,
        [Incoming::Message(WorkerMessage::Leaving), Incoming::Closed]
    );
    assert_eq!(ch.unacked(), 1, "the unread one goes to another");
}

#[test]
fn a_dead_worker_gives_back_what_it_had_not_acked() {
    let (mut ch, worker) = pair(8);
    let (h1, _p1) = handoff();
    let (h2, _p2) = handoff();
    ch.assign(h1);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    ch.assign(h2);
    drop(worker);
    let mut out = Vec::new();
    ch.read(&mut out);
    assert_eq!(out, [Incoming::Closed]);
    assert_eq!((ch.unacked(), ch.account().outbox().len()), (1, 1));
    // The queued one goes to another at once, the sent one once the worker is dead.
    ch.ledger.close(ch.key);
    assert_eq!(ch.ledger.queued(), 1);
    assert_eq!(ch.ledger.remove(ch.key), 1);
    assert_eq!(ch.ledger.queued(), 2);
}

#[test]
fn room_is_the_window_and_for_a_pulled_worker_being_idle() {
    let (mut ch, worker) = pair(2);
    assert!(
        ch.has_room(),
        "a worker that never said idle has its window"
    );
    let (h1, _p1) = handoff();
    ch.assign(h1);
    let t0 = Instant::now();
    assert!(matches!(ch.flush(t0), Flush::Done));
    assert_eq!(ch.oldest_unacked(), Some(t0));
    assert!(ch.has_room());
    let (h2, _p2) = handoff();
    ch.assign(h2);
    assert!(
        !ch.has_room() && !ch.has_window_room(),
        "window of 2 is full"
    );
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    send(&worker, "ack 2\n");
    send(&worker, "idle\n");
    let mut out = Vec::new();
    ch.read(&mut out);
    assert_eq!(out, [Incoming::Message(WorkerMessage::Ack(2))]);
    assert_eq!(ch.oldest_unacked(), None);
    assert!(ch.has_room(), "idle");
    // Once given something, a pulled worker is busy until it says idle again, even with
    // room in its window; affinity may still queue on it.
    let (h3, _p3) = handoff();
    ch.assign(h3);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert!(!ch.has_room() && ch.has_window_room());
    send(&worker, "ack 1");
    send(&worker, "idle");
    ch.read(&mut out);
    assert!(ch.has_room());
}

#[test]
fn ready_and_leaving_twice_are_violations_idle_any_number_of_times_is_not() {
    let (mut ch, worker) = pair(8);
    for m in ["ready", "idle", "idle", "leaving", "idle"] {
        send(&worker, m);
    }
    let mut out = Vec::new();
    ch.read(&mut out);
    assert_eq!(
        out,
        [
            Incoming::Message(WorkerMessage::Ready),
            Incoming::Message(WorkerMessage::Leaving)
        ]
    );
    for again in ["ready", "leaving"] {
        send(&worker, again);
        out.clear();
        ch.read(&mut out);
        assert!(
            matches!(&out[..], [Incoming::Violation(v)] if v.contains(again)),
            "{again}: {out:?}"
        );
    }
}

#[test]
fn a_flood_is_read_one_budget_per_turn() {
    let (mut ch, worker) = pair(8);
    for _ in 0..READ_BUDGET + 10 {
        send(&worker, "idle");
    }
    let mut out = Vec::new();
    ch.read(&mut out);
    assert!(ch.ch.has_unread(), "stopped at the budget, more waits");
    ch.read(&mut out);
    assert!(!ch.ch.has_unread(), "drained");
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_full_channel_blocks_and_keeps_what_it_could_not_send() {
    let (mut ch, _worker) = pair(1 << 16);
    // A small send buffer fills after a few messages the worker does not read.
    nix::sys::socket::setsockopt(&ch.ch.as_fd(), nix::sys::socket::sockopt::SndBuf, &4096).unwrap();
    let mut keep = Vec::new();
    let result = loop {
        for _ in 0..MAX_FDS_PER_MESSAGE {
            let (h, p) = handoff();
            ch.assign(h);
            keep.push(p);
        }
        match ch.flush(Instant::now()) {
            Flush::Done if keep.len() < 2_000 => continue,
            other => break other,
        }
    };
    assert!(matches!(result, Flush::Blocked), "{result:?}");
    assert!(!ch.has_window_room(), "nothing more for a blocked channel");
    assert!(
        ch.ledger.requeue_unsent(ch.key) > 0,
        "the unsent ones, for another worker"
    );
    ch.on_writable();
    assert!(ch.has_window_room());
}

#[test]
fn over_acking_and_garbage_are_violations() {
    let (mut ch, worker) = pair(8);
    send(&worker, "ack 1");
    let mut out = Vec::new();
    ch.read(&mut out);
    assert!(matches!(out[0], Incoming::Violation(_)), "{out:?}");

    let (mut ch, worker) = pair(8);
    send(&worker, "\u{0}\u{1}hello");
    let mut out = Vec::new();
    ch.read(&mut out);
    assert!(matches!(out[0], Incoming::Violation(_)), "{out:?}");
}

#[test]
fn stop_follows_the_sockets_already_assigned() {
    let (mut ch, worker) = pair(8);
    let (h, _p) = handoff();
    ch.assign(h);
    ch.ch.queue_stop();
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert_eq!(recv(&worker).0, "conn 1\n0 unix\n");
    assert_eq!(recv(&worker).0, "stop\n");
    assert!(!ch.wants_flush());
}

#[test]
fn more_than_a_message_holds_is_split_into_batches() {
    let (mut ch, worker) = pair(256);
    let mut keep = Vec::new();
    for _ in 0..(MAX_FDS_PER_MESSAGE + 5) {
        let (h, p) = handoff();
        ch.assign(h);
        keep.push(p);
    }
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert_eq!(recv(&worker).1, MAX_FDS_PER_MESSAGE);
    assert_eq!(recv(&worker).1, 5);
}

#[test]
fn a_connection_line_names_its_listener_by_its_place_among_those_the_worker_knows() {
    use crate::master::listeners::ListenerId;
    // Started after a reload: it knows listeners 7 and 3, in that order.
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let channel = Channel::native(master)
        .unwrap()
        .knowing(vec![ListenerId(7), ListenerId(3)]);
    assert!(channel.knows_listener(ListenerId(3)) && !channel.knows_listener(ListenerId(0)));
    let mut ch = Pair::new(channel, 8);
    let mut peers = Vec::new();
    for id in [3, 7, 0] {
        let (mut h, p) = handoff();
        h.listener = ListenerId(id);
        ch.assign(h);
        peers.push(p);
    }
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    // One it does not know (a removed listener's queue, handed on) is called its first.
    assert_eq!(
        recv(&worker),
        ("conn 3\n1 unix\n0 unix\n0 unix\n".into(), 3)
    );
}

#[test]
fn messages_read_several_at_a_time_are_all_read_in_order_and_a_later_one_is_read_next_time() {
    // The kernel is asked for several at a time: fewer, as many and more waiting are all read,
    // in order, each once; one sent after a read that found nothing more is read by the next.
    for waiting in [1usize, 2, 3, 4, 5, 9] {
        let (mut ch, worker) = pair(64);
        let mut peers = Vec::new();
        for _ in 0..waiting + 1 {
            let (h, p) = handoff();
            ch.assign(h);
            peers.push(p);
        }
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        let _ = recv(&worker);
        for i in 1..=waiting {
            send(&worker, &format!("ack {}", i.min(1)));
        }
        let mut out = Vec::new();
        ch.read(&mut out);
        assert!(!ch.ch.has_unread(), "{waiting}: all read in one go");
        assert_eq!(out.len(), waiting, "{waiting}: {out:?}");
        assert_eq!(
            ch.in_flight(),
            1,
            "{waiting}: acked {waiting} of {}",
            waiting + 1
        );
        out.clear();
        ch.read(&mut out);
        assert!(out.is_empty(), "{waiting}: nothing more: {out:?}");
        send(&worker, "ack 1");
        ch.read(&mut out);
        assert_eq!(out, [Incoming::Message(WorkerMessage::Ack(1))], "{waiting}");
        assert_eq!(ch.in_flight(), 0, "{waiting}");
    }
}
