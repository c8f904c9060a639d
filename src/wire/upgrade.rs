//! The in-place upgrade's channel, between the old master and the new one.
//!
//! The old master starts the new one with one end of a `SOCK_SEQPACKET` channel (fd 3,
//! `RRB_UPGRADE_FD`) and sends it, in the first message, its listening sockets (`SCM_RIGHTS`).
//! Then, one message per packet, JSON:
//!
//! ```text
//! old → new  hello {listeners, checks, …} + fds
//!                                         the sockets, how they were configured, the scale;
//!                                         then the balancer-check listeners
//! new → old  starting {ready_timeout_ms}  configuration read, listeners taken, workers starting
//! new → old  ready {workers}              every worker ready (both masters now serve)
//!            failed {reason}              it gives up and stops; the old master serves on
//! old → new  take_over                    the old master has told systemd MAINPID=new
//! new → old  took_over                    pid file and control socket renamed into place
//! old → new  adopt {conns} + fds          after the handover: sockets no old worker could take
//! old → new  abort {reason}               the old master gives up on it (it is stopping, or
//!                                         the new one took too long): stop
//! ```
//!
//! An upgrade is also from one version to the next: a field may be added to a message in a later
//! version, so unknown fields are ignored (an unknown message is still an error).
//!
//! The decisions on either side are `master::upgrade`'s; the I/O `master::handover`'s.

use serde::{Deserialize, Serialize};

/// Most sockets attached to one `adopt` message (the kernel's limit per message is 253).
pub const ADOPT_BATCH: usize = 200;
/// Longest message on the channel.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// One message on the upgrade channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Message {
    Hello {
        /// The old master's pid.
        pid: i32,
        /// The attached sockets, in order.
        listeners: Vec<Carried>,
        /// The sockets are in blocking mode (`none` mode for socket-activation servers).
        blocking: bool,
        /// Workers running, and the configuration's count when last read: the new master keeps a
        /// `scale` made since, as a reload does.
        workers: usize,
        configured_workers: usize,
        /// The listeners balancers check (`[metrics] listen`, `haproxy_agent`), attached after
        /// the listening sockets: a new master on the same address serves the same socket, so
        /// that no check is queued on a socket that closes at the handover (absent from a
        /// master that predates them: the new one binds beside it).
        #[serde(default)]
        checks: Vec<CarriedCheck>,
    },
    Starting {
        pid: i32,
        ready_timeout_ms: u64,
        /// Its version (`CARGO_PKG_VERSION`), for the outcome.
        #[serde(default)]
        version: String,
        /// The check listeners of `hello` it took (the old master closes its copies without
        /// answering what waits on them: this one does).
        #[serde(default)]
        checks: Vec<CheckKind>,
    },
    Ready {
        workers: usize,
    },
    Failed {
        reason: String,
    },
    TakeOver,
    TookOver,
    Adopt {
        /// For each attached socket, the index (in `hello`'s order) of the listener it came
        /// from.
        listeners: Vec<usize>,
    },
    Abort {
        reason: String,
    },
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("upgrade messages serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not an upgrade message: {e}"))
    }
}

/// A listening socket passed to the new master: the `listen` entry as the old master's
/// configuration wrote it (`127.0.0.1:0`), and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub configured: String,
    pub local: String,
    /// Its socket file (Unix) was created by the old master, to be removed by whichever master
    /// exits last (not one systemd passed).
    pub owned: bool,
}

/// Which listener a balancer checks: `[metrics] listen` or `[metrics] haproxy_agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Metrics,
    Agent,
}

/// A balancer-check listener passed to the new master, and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedCheck {
    pub kind: CheckKind,
    pub local: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let hello = Message::Hello {
            pid: 1,
            listeners: vec![Carried {
                configured: "127.0.0.1:0".into(),
                local: "127.0.0.1:4000".into(),
                owned: false,
            }],
            blocking: false,
            workers: 3,
            configured_workers: 2,
            checks: vec![CarriedCheck {
                kind: CheckKind::Agent,
                local: "127.0.0.1:5555".into(),
            }],
        };
        for m in [
            hello,
            Message::TakeOver,
            Message::Adopt {
                listeners: vec![0, 0],
            },
            Message::Failed { reason: "x".into() },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
        assert_eq!(
            String::from_utf8(Message::TookOver.encode()).unwrap(),
            r#"{"msg":"took_over"}"#
        );
        assert!(Message::decode(b"{\"msg\":\"launch_missiles\"}").is_err());
        // An earlier version's hello passes no check listeners.
        let Ok(Message::Hello { checks, .. }) = Message::decode(
            br#"{"msg":"hello","pid":1,"listeners":[],"blocking":false,"workers":1,"configured_workers":1}"#,
        ) else {
            panic!("an earlier version's hello is read");
        };
        assert!(checks.is_empty());
        // A later version's extra field is ignored; an earlier one's missing version is empty.
        assert_eq!(
            Message::decode(br#"{"msg":"ready","workers":2,"color":"blue"}"#),
            Ok(Message::Ready { workers: 2 })
        );
        assert_eq!(
            Message::decode(br#"{"msg":"starting","pid":1,"ready_timeout_ms":5}"#),
            Ok(Message::Starting {
                pid: 1,
                ready_timeout_ms: 5,
                version: String::new(),
                checks: Vec::new(),
            })
        );
        assert!(Message::decode(b"\xff\x00").is_err());
    }

    /// The channel's buffer holds the largest messages: a `hello` carrying 100 listeners at
    /// the longest Unix paths, an `adopt` of a full batch.
    #[test]
    fn the_largest_messages_fit_the_channel() {
        let path = format!("/{}", "p".repeat(106));
        let hello = Message::Hello {
            pid: i32::MAX,
            listeners: (0..100)
                .map(|_| Carried {
                    configured: path.clone(),
                    local: path.clone(),
                    owned: true,
                })
                .collect(),
            blocking: false,
            workers: 1024,
            configured_workers: 1024,
            checks: [CheckKind::Metrics, CheckKind::Agent]
                .map(|kind| CarriedCheck {
                    kind,
                    local: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".into(),
                })
                .into(),
        };
        let adopt = Message::Adopt {
            listeners: vec![usize::MAX; ADOPT_BATCH],
        };
        for message in [hello, adopt] {
            let bytes = message.encode();
            assert!(bytes.len() <= MAX_MESSAGE, "{} bytes", bytes.len());
            assert_eq!(Message::decode(&bytes), Ok(message));
        }
    }
}
