//! A Node cluster worker's servers: each `listen()` in the app asks the master for a server (a
//! `queryServer`), and gets one of our listeners for the server's life — the free one with the
//! port it asked for, else the first free one — or a refusal its `listen()` reports. Pure: the
//! answer is a line for the wire ([`super::node`]) to send.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use serde_json::json;

use crate::wire::node_ipc::{self, HandleType, QueryServer};

/// uv's `UV_ENOTSUP`: the errno a `queryServer` for a kind of server we do not serve (UDP) is
/// refused with.
const UV_ENOTSUP: i64 = -95;
/// uv's `UV_EADDRNOTAVAIL`: the errno a `queryServer` is refused with when every listener
/// already has its server in that worker. Node 20 reports it as `bind EADDRNOTAVAIL …`.
const UV_EADDRNOTAVAIL: i64 = -99;

/// A listening socket as a Node worker may need it: its fd (for `none` mode) and address.
#[derive(Debug)]
pub struct SharedListener {
    /// The listener itself, when workers accept on it (`none` mode); else only its address.
    pub fd: Option<OwnedFd>,
    /// `None` for a Unix socket.
    pub addr: Option<SocketAddr>,
}

/// One `listen()` of the app, and the listener whose connections it gets.
#[derive(Debug)]
struct Server {
    key: String,
    /// `key`, JSON-encoded, as every `newconn` carries it.
    key_json: String,
    listener: usize,
}

/// The answer to a `queryServer`.
#[derive(Debug)]
pub enum Answer {
    /// The reply line, with the listener whose fd rides along (`none` mode) if any.
    Granted {
        line: Vec<u8>,
        handle: Option<usize>,
    },
    /// The reply line carrying an errno, and why, for the log.
    Refused { line: Vec<u8>, why: String },
}

#[derive(Debug)]
pub struct Servers {
    /// Our listeners' addresses (`None` for a Unix socket), by index.
    addrs: Vec<Option<SocketAddr>>,
    servers: Vec<Server>,
}

impl Servers {
    pub fn new(addrs: Vec<Option<SocketAddr>>) -> Servers {
        Servers {
            addrs,
            servers: Vec::new(),
        }
    }

    /// Answers `query` as the reply numbered `reply_seq`. `shared` (`none` mode): the worker
    /// gets the listener itself; else it gets connections one by one, under the server's key.
    pub fn answer(&mut self, query: &QueryServer, shared: bool, reply_seq: u64) -> Answer {
        let key = query.key();
        let refuse = |errno: i64, why: String| {
            let mut reply = node_ipc::query_server_reply(&key, query.seq, None, reply_seq);
            reply["errno"] = errno.into();
            let line = node_ipc::encode(&reply);
            Answer::Refused { line, why }
        };
        if matches!(query.address_type.as_str(), "udp4" | "udp6") {
            let why = format!(
                "refused a {} server: rrbalancer serves TCP and Unix listeners only",
                crate::text::quoted(&query.address_type)
            );
            return refuse(UV_ENOTSUP, why);
        }
        // With no listener free it would get no connection: its `listen()` fails instead, with
        // Node's own message (`bind EADDRNOTAVAIL`).
        let Some(index) = self.free_listener(query.port) else {
            let why = format!(
                "refused its server on port {}: rrbalancer has {} listener(s), each already given \
                 to one of this worker's {} server(s); add an address to `listen` for it (the \
                 app's listen() fails with EADDRNOTAVAIL)",
                query.port,
                self.addrs.len(),
                self.servers.len()
            );
            return refuse(UV_EADDRNOTAVAIL, why);
        };
        let key_json = serde_json::to_string(&key).unwrap_or_else(|_| "\"\"".into());
        self.servers.push(Server {
            key: key.clone(),
            key_json,
            listener: index,
        });
        if shared {
            let reply = node_ipc::query_server_reply(&key, query.seq, None, reply_seq);
            return Answer::Granted {
                line: node_ipc::handle(HandleType::Native, &reply),
                handle: Some(index),
            };
        }
        // Round-robin: no handle; `sockname` is what `server.address()` shows. It names the
        // port the app asked for (Node checks it against the request), on our listener's IP.
        let sockname = self.addrs[index].map(|addr| {
            let port = if query.port > 0 {
                query.port
            } else {
                addr.port().into()
            };
            json!({
                "address": addr.ip().to_string(),
                "family": if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                "port": port,
            })
        });
        let reply = node_ipc::query_server_reply(&key, query.seq, sockname, reply_seq);
        Answer::Granted {
            line: node_ipc::encode(&reply),
            handle: None,
        }
    }

    /// The app closed the server `key`; `true` if it has none left.
    pub fn close(&mut self, key: &str) -> bool {
        self.servers.retain(|s| s.key != key);
        self.servers.is_empty()
    }

    /// The JSON-encoded key of the server that gets connections from `listener`: the one bound
    /// to it, else (the app listens fewer times than we have addresses) the worker's first;
    /// `None` while it has no server.
    pub fn key_json(&self, listener: usize) -> Option<&str> {
        let server = self.servers.iter().find(|s| s.listener == listener);
        server.or(self.servers.first()).map(|s| s.key_json.as_str())
    }

    /// The listener a new server on `port` gets: a free one with that port, else the first
    /// free one (so each port keeps its server whatever order the app listens in, and a server
    /// closed and opened again gets its listener back).
    fn free_listener(&self, port: i64) -> Option<usize> {
        let free = |i: &usize| !self.servers.iter().any(|s| s.listener == *i);
        let same_port = (0..self.addrs.len())
            .filter(free)
            .find(|&i| self.addrs[i].is_some_and(|a| i64::from(a.port()) == port));
        same_port.or_else(|| (0..self.addrs.len()).find(free))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn query(port: i64, kind: &str, seq: u64) -> QueryServer {
        QueryServer {
            seq,
            address: None,
            port,
            address_type: kind.into(),
            index: 0,
            fd: Value::Null,
            data: Value::Null,
        }
    }

    fn servers() -> Servers {
        let addr = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        Servers::new(vec![addr(8001), addr(8002)])
    }

    fn reply(answer: &Answer) -> Value {
        let line = match answer {
            Answer::Granted { line, .. } | Answer::Refused { line, .. } => line,
        };
        serde_json::from_slice(line.trim_ascii_end()).unwrap()
    }

    #[test]
    fn each_port_keeps_its_listener_whatever_order_the_app_listens_in() {
        let mut s = servers();
        let second = s.answer(&query(8002, "4", 1), false, 10);
        let first = s.answer(&query(8001, "4", 2), false, 11);
        assert_eq!(reply(&second)["sockname"]["port"], 8002);
        assert_eq!(reply(&first)["sockname"]["port"], 8001);
        let key_of = |q: &QueryServer| serde_json::to_string(&q.key()).unwrap();
        assert_eq!(s.key_json(1), Some(key_of(&query(8002, "4", 0)).as_str()));
        assert_eq!(s.key_json(0), Some(key_of(&query(8001, "4", 0)).as_str()));
        // Closed and opened again, on its port: its listener back, not the other one.
        assert!(!s.close(&query(8002, "4", 0).key()));
        s.answer(&query(8002, "4", 3), false, 12);
        assert_eq!(s.key_json(1), Some(key_of(&query(8002, "4", 0)).as_str()));
    }

    #[test]
    fn a_port_we_do_not_have_gets_the_first_free_listener_and_its_address() {
        let mut s = servers();
        let answer = s.answer(&query(3000, "4", 1), false, 10);
        let reply = reply(&answer);
        assert_eq!(
            reply["sockname"]["port"], 3000,
            "Node checks the port it asked for"
        );
        assert_eq!(reply["sockname"]["address"], "127.0.0.1");
        assert_eq!(
            (reply["ack"].as_u64(), reply["seq"].as_u64()),
            (Some(1), Some(10))
        );
        // One server for two listeners: both listeners' connections go to it.
        assert_eq!(s.key_json(0), s.key_json(1));
    }

    #[test]
    fn more_servers_than_listeners_and_udp_are_refused_with_uv_errnos() {
        let mut s = servers();
        assert_eq!(s.key_json(0), None, "no server yet: nothing can be sent");
        for (i, port) in [0, 0].into_iter().enumerate() {
            let answer = s.answer(&query(port, "6", i as u64), false, 10);
            assert!(matches!(answer, Answer::Granted { handle: None, .. }));
        }
        let third = s.answer(&query(8001, "4", 5), false, 12);
        assert_eq!(reply(&third)["errno"], UV_EADDRNOTAVAIL);
        assert!(matches!(&third, Answer::Refused { why, .. } if why.contains("port 8001")));
        let udp = s.answer(&query(53, "udp4", 6), false, 13);
        assert_eq!(reply(&udp)["errno"], UV_ENOTSUP);
        assert!(matches!(&udp, Answer::Refused { why, .. } if why.contains("\"udp4\"")));
    }

    #[test]
    fn shared_mode_hands_the_listener_itself() {
        let mut s = servers();
        let answer = s.answer(&query(8002, "4", 1), true, 10);
        assert!(matches!(
            answer,
            Answer::Granted {
                handle: Some(1),
                ..
            }
        ));
        assert_eq!(reply(&answer)["cmd"], "NODE_HANDLE");
        assert!(s.close(&query(8002, "4", 0).key()), "its only server");
    }
}
