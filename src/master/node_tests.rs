//! Unit tests of the Node wire, over real socket pairs.

use super::*;
use crate::engine::relay::{Outgoing, Target};
use crate::master::channel::{Channel, Pair};
use crate::master::node_servers::SharedListener;
use crate::master::wire_shared::Handoff;
use crate::wire::protocol::Peer;
use serde_json::Value;
use std::os::fd::OwnedFd;

fn messages() -> NodeMessages {
    NodeMessages {
        socket: json!("socket"),
        server: json!("server"),
        leaving: json!({"act": "suicide"}),
    }
}

/// A master-side channel speaking `node` (or `node-cluster`), and the worker's end.
fn pair(cluster: bool) -> (Pair, OwnedFd) {
    let (master, worker) = sys::stream_pair().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let shared = SharedListener {
        addr: listener.local_addr().ok(),
        fd: Some(listener.into()),
    };
    let wire = NodeWire::new(cluster, false, messages(), vec![shared]);
    // A wide window: what is checked here is the wire's own rule, one handle at a time.
    (Pair::new(Channel::node(master, wire).unwrap(), 8), worker)
}

fn conn() -> (Handoff, OwnedFd) {
    let (a, b) = sys::stream_pair().unwrap();
    let handoff = Handoff {
        socket: a,
        listener: ListenerId(0),
        peer: Peer::Unix,
        accepted: std::time::Instant::now(),
        sent: None,
    };
    (handoff, b)
}

/// What the worker reads: the text and how many fds came with it.
fn read(worker: &OwnedFd) -> (String, usize) {
    let mut buf = [0u8; 4096];
    let mut fds = Vec::new();
    let mut cmsg = vec![0; sys::cmsg_space(4)];
    let got = sys::recv_with_fds(worker.as_fd(), &mut buf, &mut fds, &mut cmsg, true)
        .unwrap_or_else(|e| panic!("nothing to read: {e}"));
    (
        String::from_utf8_lossy(&buf[..got.len]).into_owned(),
        fds.len(),
    )
}

fn write(worker: &OwnedFd, line: &str) {
    send(worker.as_fd(), line.as_bytes(), None, &mut Vec::new()).unwrap();
}

fn incoming(ch: &mut Pair) -> Vec<Incoming> {
    let mut out = Vec::new();
    ch.read(&mut out);
    out
}

#[test]
fn one_handle_in_flight_until_its_ack() {
    let (mut ch, worker) = pair(false);
    let (c1, _p1) = conn();
    let (c2, _p2) = conn();
    ch.assign(c1);
    ch.assign(c2);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let (text, fds) = read(&worker);
    assert_eq!(
        text,
        "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":\"socket\"}\n"
    );
    assert_eq!(fds, 1);
    // The second waits for the first one's ACK.
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let mut buf = [0u8; 16];
    assert!(
        nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(&worker),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT
        )
        .is_err()
    );
    assert_eq!(ch.in_flight(), 2);
    write(&worker, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
    assert_eq!(
        incoming(&mut ch),
        [Incoming::Message(WorkerMessage::Ack(1))]
    );
    assert_eq!(ch.in_flight(), 1);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert_eq!(read(&worker).1, 1);
}

#[test]
fn a_nack_resends_the_same_handle_and_after_a_fourth_it_goes_to_another_worker() {
    let (mut ch, worker) = pair(false);
    let (c1, _p1) = conn();
    ch.assign(c1);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let first = read(&worker);
    for _ in 0..3 {
        write(&worker, "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
        assert_eq!(incoming(&mut ch), []);
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        assert_eq!(read(&worker), first, "the same line, with an fd again");
    }
    // Node NACKs a handle that did not come with its message: the kernel dropped it, the
    // worker is at its open-file limit. Load, not a fault: given back, like `full 1`.
    write(&worker, "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
    assert_eq!(
        incoming(&mut ch),
        [Incoming::Message(WorkerMessage::Full(1))]
    );
    assert_eq!(ch.unacked(), 0);
    assert_eq!(ch.ledger.requeue_returned(ch.key), 1, "for another worker");
    assert!(!ch.has_room(), "nothing more to it for now");
    // It may take one again after a while (it never says `idle`).
    ch.ledger
        .retry_full(Instant::now() + crate::engine::ledger::FULL_RETRY);
    assert!(ch.has_room());
    let (c2, _p2) = conn();
    ch.assign(c2);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    assert_eq!(read(&worker).1, 1, "a new handle, with its fd");
    write(&worker, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
    assert_eq!(
        incoming(&mut ch),
        [Incoming::Message(WorkerMessage::Ack(1))]
    );
}

#[test]
fn cluster_connections_are_kept_until_accepted_and_refused_ones_come_back() {
    let (mut ch, worker) = pair(true);
    // Before the worker has a server, nothing can be sent.
    let query = json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,
        "address":null,"port":3000,"addressType":4,"backlog":0,"seq":1});
    write(&worker, &format!("{query}\n"));
    assert_eq!(incoming(&mut ch), []);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let (reply, fds) = read(&worker);
    let reply: Value = serde_json::from_str(reply.trim()).unwrap();
    assert_eq!((reply["ack"].as_u64(), fds), (Some(1), 0));
    // The app's port, on our listener's address: Node checks the port it asked for.
    assert_eq!(reply["sockname"]["port"], 3000);
    assert_eq!(reply["sockname"]["address"], "127.0.0.1");
    let (c1, _p1) = conn();
    let (c2, _p2) = conn();
    ch.assign(c1);
    ch.assign(c2);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let (line, fds) = read(&worker);
    let first: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!((first["msg"]["act"].as_str(), fds), (Some("newconn"), 1));
    // NODE_HANDLE_ACK frees the pipe for the next handle, but ownership waits.
    write(&worker, "{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
    assert_eq!(incoming(&mut ch), []);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let (line, _) = read(&worker);
    let second: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(ch.in_flight(), 2);
    let answer = |seq: &Value, accepted: bool| {
        format!("{{\"cmd\":\"NODE_CLUSTER\",\"ack\":{seq},\"accepted\":{accepted},\"seq\":9}}\n")
    };
    write(&worker, &answer(&second["msg"]["seq"], false));
    write(&worker, &answer(&first["msg"]["seq"], true));
    assert_eq!(
        incoming(&mut ch),
        [Incoming::Message(WorkerMessage::Ack(1))]
    );
    assert_eq!(
        ch.ledger.requeue_returned(ch.key),
        1,
        "the refused one, for another"
    );
    assert_eq!(ch.in_flight(), 0);
}

#[test]
fn a_server_beyond_our_listeners_is_refused_and_a_closed_one_makes_room() {
    let (mut ch, worker) = pair(true);
    let query = |seq: u64, port: i64| {
        format!(
            "{}\n",
            json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,
                "address":"10.9.9.9","port":port,"addressType":4,"backlog":0,"seq":seq})
        )
    };
    let reply = |ch: &mut Pair| {
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        let (line, fds) = read(&worker);
        assert_eq!(fds, 0);
        serde_json::from_str::<Value>(line.trim()).unwrap()
    };
    // One listener: the first server gets it, whatever address it names.
    write(&worker, &query(1, 3000));
    assert_eq!(incoming(&mut ch), []);
    assert_eq!(reply(&mut ch)["errno"], Value::Null);
    // A second (and a thousandth) has none: refused, and nothing is kept for it.
    for seq in 2..1000 {
        write(&worker, &query(seq, 4000));
        match incoming(&mut ch).as_slice() {
            [Incoming::Warning(note)] => {
                assert!(
                    note.contains("port 4000") && note.contains("1 listener(s)"),
                    "{note}"
                )
            }
            other => panic!("{other:?}"),
        }
        let refused = reply(&mut ch);
        assert_eq!(
            (refused["errno"].as_i64(), refused["ack"].as_u64()),
            (Some(-99), Some(seq))
        );
    }
    // Closing the first (none of the refused ones was kept) makes room for another.
    let key = "10.9.9.9:3000:4:undefined:0";
    write(
        &worker,
        &format!("{{\"cmd\":\"NODE_CLUSTER\",\"act\":\"close\",\"key\":\"{key}\",\"seq\":1000}}\n"),
    );
    let _ = incoming(&mut ch);
    write(&worker, &query(1001, 5000));
    assert_eq!(incoming(&mut ch), []);
    assert_eq!(reply(&mut ch)["errno"], Value::Null);
}

#[test]
fn each_server_keeps_its_listener_matched_by_port_whatever_the_order() {
    let (master, worker) = sys::stream_pair().unwrap();
    let listeners: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let shared = listeners
        .into_iter()
        .map(|l| SharedListener {
            addr: l.local_addr().ok(),
            fd: Some(l.into()),
        })
        .collect();
    let wire = NodeWire::new(true, false, messages(), shared);
    // Ids are not places: a reload may have added and removed listeners before.
    let channel = Channel::node(master, wire).unwrap();
    let mut ch = Pair::new(channel.knowing(vec![ListenerId(10), ListenerId(11)]), 8);
    let query = |seq: u64, port: u16| {
        format!(
            "{}\n",
            json!({"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,
                "address":null,"port":port,"addressType":4,"backlog":0,"seq":seq})
        )
    };
    // The app listens on our second port first, then on the first.
    write(&worker, &query(1, ports[1]));
    write(&worker, &query(2, ports[0]));
    assert_eq!(incoming(&mut ch), []);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let _ = read(&worker);
    // A connection on each listener goes to the server with its port.
    let key_for = |ch: &mut Pair, listener: usize| {
        let (mut h, _peer) = conn();
        h.listener = ListenerId(10 + listener as u32);
        ch.assign(h);
        assert!(matches!(ch.flush(Instant::now()), Flush::Done));
        let (line, fds) = read(&worker);
        assert_eq!(fds, 1);
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        let key = v["msg"]["key"].as_str().unwrap().to_owned();
        // Take it, so the next one can go.
        let ack = format!(
            "{{\"cmd\":\"NODE_HANDLE_ACK\"}}\n{{\"cmd\":\"NODE_CLUSTER\",\"ack\":{},\"accepted\":true,\"seq\":9}}\n",
            v["msg"]["seq"]
        );
        write(&worker, &ack);
        let _ = incoming(ch);
        key
    };
    assert!(key_for(&mut ch, 0).contains(&format!(":{}:", ports[0])));
    assert!(key_for(&mut ch, 1).contains(&format!(":{}:", ports[1])));
    // A listener it does not know (a removed one's queue, handed on): the first one's server.
    assert!(key_for(&mut ch, 90).contains(&format!(":{}:", ports[0])));
    // The first server closes and listens again: it gets its listener back, the other
    // keeps its own.
    let closed = format!("null:{}:4:undefined:0", ports[1]);
    write(
        &worker,
        &format!("{{\"cmd\":\"NODE_CLUSTER\",\"act\":\"close\",\"key\":\"{closed}\",\"seq\":3}}\n"),
    );
    write(&worker, &query(4, ports[1]));
    assert_eq!(incoming(&mut ch), []);
    assert!(matches!(ch.flush(Instant::now()), Flush::Done));
    let _ = read(&worker);
    assert!(key_for(&mut ch, 0).contains(&format!(":{}:", ports[0])));
    assert!(key_for(&mut ch, 1).contains(&format!(":{}:", ports[1])));
}

#[test]
fn user_messages_leaving_ready_and_others() {
    let (mut ch, worker) = pair(false);
    write(&worker, "{\"act\":\"suicide\"}\n\"ready\"\n{\"hello\":1}\n");
    let got = incoming(&mut ch);
    assert_eq!(got[0], Incoming::Message(WorkerMessage::Leaving));
    assert_eq!(got[1], Incoming::Message(WorkerMessage::Ready));
    // Its own messages go where its messages go by default (the agent), whole and in their
    // key order; `rrbalancer:send` says where, and what.
    assert_eq!(
        got[2],
        Incoming::Relay(Outgoing {
            to: None,
            retain: None,
            body: "{\"hello\":1}".into()
        })
    );
    write(
        &worker,
        "{\"cmd\":\"rrbalancer:send\",\"to\":\"all\",\"retain\":\"cfg\",\"data\":{\"z\":1,\"a\":[2]}}\n\
         {\"cmd\":\"rrbalancer:send\",\"to\":3,\"data\":\"x\"}\n\
         {\"cmd\":\"rrbalancer:send\",\"to\":\"nobody\",\"data\":1}\n\
         {\"cmd\":\"rrbalancer:send\",\"retain\":\"bad key\",\"data\":1}\n\
         {\"cmd\":\"rrbalancer:send\",\"to\":\"all\"}\n",
    );
    let got = incoming(&mut ch);
    assert_eq!(
        got[0],
        Incoming::Relay(Outgoing {
            to: Some(Target::All),
            retain: Some("cfg".into()),
            body: "{\"z\":1,\"a\":[2]}".into()
        })
    );
    assert_eq!(
        got[1],
        Incoming::Relay(Outgoing {
            to: Some(Target::Slot(3)),
            retain: None,
            body: "\"x\"".into()
        })
    );
    // Malformed ones are refused with a warning, not a violation: the worker stays.
    assert!(
        matches!(&got[2], Incoming::Warning(w) if w.contains("\"nobody\"")),
        "{got:?}"
    );
    assert!(
        matches!(&got[3], Incoming::Warning(w) if w.contains("bad key")),
        "{got:?}"
    );
    assert!(
        matches!(&got[4], Incoming::Warning(w) if w.contains("no \"data\"")),
        "{got:?}"
    );
    write(&worker, "{oops\n");
    assert!(matches!(
        incoming(&mut ch).as_slice(),
        [Incoming::Violation(v)] if v.contains("not Node IPC")
    ));
}
