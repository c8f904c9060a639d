//! The worker channel's tests: a fake master on the other end of a seqpacket pair.

use super::*;
use nix::sys::socket::{MsgFlags, recv, send};

fn say(master: &OwnedFd, bytes: &[u8]) {
    send(master.as_raw_fd(), bytes, MsgFlags::empty()).unwrap();
}

fn heard(master: &OwnedFd) -> Vec<u8> {
    let mut buf = vec![0; 128 * 1024];
    let n = recv(master.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_subscribed_worker_gets_messages_up_to_the_bound_and_sends_them_framed() {
    let (master, worker) = sys::seqpacket_pair().unwrap();
    let mut channel = Channel::from_fd(worker);
    // Unasked, a message breaks the protocol.
    say(&master, b"message agent config\n{\"a\":1}");
    assert!(matches!(channel.recv(), Err(WorkerError::Protocol(_))));

    channel.subscribe().unwrap();
    assert_eq!(heard(&master), b"subscribe\n");
    // The largest body the master relays (64 KiB) fits.
    let body = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    say(&master, format!("message 2 big\n{body}").as_bytes());
    match channel.recv().unwrap() {
        Event::Message {
            from,
            retain,
            body: got,
        } => assert_eq!(
            (from.as_str(), retain.as_deref(), got),
            ("2", Some("big"), body)
        ),
        other => panic!("{other:?}"),
    }
    say(&master, b"message control\n[1,2]");
    assert!(matches!(
        channel.recv().unwrap(),
        Event::Message { retain: None, .. }
    ));
    say(&master, b"subscribed\n");
    assert!(matches!(channel.recv().unwrap(), Event::Subscribed));

    channel
        .send_message("all", Some("config"), r#"{"v":1}"#)
        .unwrap();
    let sent = heard(&master);
    let request = protocol::parse_send(&sent).unwrap().unwrap();
    assert_eq!(
        (request.to, request.retain, request.body),
        ("all", Some("config"), r#"{"v":1}"#)
    );
    channel.send_message("agent", None, "42").unwrap();
    assert_eq!(heard(&master), b"send agent\n42");
}
