//! Node.js's own IPC, as `child_process.fork()` and the `cluster` primary speak it, so Node
//! workers run under rrbalancer unchanged. Pure encoding and decoding; no I/O.
//!
//! The wire (Node 18–22, `lib/internal/child_process.js`, `serialization.js` "json" mode,
//! `lib/internal/cluster/{child,primary,round_robin_handle,utils}.js`):
//!
//! - A `SOCK_STREAM` Unix socket pair; the child's end is the fd named by `NODE_CHANNEL_FD`,
//!   with `NODE_CHANNEL_SERIALIZATION_MODE=json`. Each message is `JSON.stringify(m) + "\n"`.
//! - Messages whose `cmd` starts with `NODE_` are internal. A handle rides as
//!   `{"cmd":"NODE_HANDLE","type":T,"msg":M}` with the fd attached (`SCM_RIGHTS`) to the
//!   `sendmsg` that carries the line; the receiver pairs the fd with the one `NODE_HANDLE` line of
//!   the read that brought it (the kernel never merges reads across an fd). It answers
//!   `{"cmd":"NODE_HANDLE_ACK"}`, or `{"cmd":"NODE_HANDLE_NACK"}` when the fd did not arrive, and
//!   the sender then sends the same message again. One handle is in flight per channel; later
//!   sends wait for the ACK. The receiver then emits `message` with `(M, handle)`: `net.Socket`
//!   becomes a socket, `net.Server` a listening server, `net.Native` the raw handle.
//! - The cluster protocol rides inside: `{"cmd":"NODE_CLUSTER", …fields, "seq":N}`; a reply
//!   names the request it answers with `"ack":N`. The worker sends `online`, then per
//!   `server.listen()` a `queryServer` (address, port, addressType, fd, index, …) and, once
//!   listening, `listening`; `close` when a server closes; `exitedAfterDisconnect` (expects an
//!   ack) when it disconnects itself. The primary answers `queryServer` with
//!   `{errno, key, ack, data, sockname?}` — without a handle in round-robin (the worker then
//!   gets each connection as `{"act":"newconn","key":K}` on a `net.Native` handle and replies
//!   `{"ack":seq,"accepted":bool}`), or with the shared listening handle. `{"act":"disconnect"}`
//!   asks the worker to close its servers and disconnect.

use serde_json::{Map, Value, json};

/// `NODE_HANDLE_ACK` as Node's `JSON.stringify` writes it.
const HANDLE_ACK_LINE: &[u8] = br#"{"cmd":"NODE_HANDLE_ACK"}"#;

/// Longest line accepted from a worker; a longer one is a protocol violation.
pub const MAX_LINE: usize = 1 << 20;

/// `NODE_HANDLE` types rrbalancer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleType {
    /// A connected socket, delivered as a `net.Socket` (child_process workers).
    Socket,
    /// A listening socket, delivered as a `net.Server` (child_process workers, `none` mode).
    Server,
    /// A raw handle (the cluster protocol: `newconn`, shared listeners).
    Native,
}

impl HandleType {
    fn as_str(self) -> &'static str {
        match self {
            HandleType::Socket => "net.Socket",
            HandleType::Server => "net.Server",
            HandleType::Native => "net.Native",
        }
    }
}

/// Splits a byte stream into JSON lines, bounded in memory.
#[derive(Debug, Default)]
pub struct LineReader {
    partial: Vec<u8>,
}

/// Why the worker's bytes are not Node IPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("a message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed JSON: {0}")]
    Json(String),
}

impl LineReader {
    /// Adds `data` and returns each complete line, parsed and classified. Stops at the first
    /// error.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<FromWorker>) -> Result<(), DecodeError> {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                &data[..end]
            } else {
                self.partial.extend_from_slice(&data[..end]);
                &self.partial[..]
            };
            if line.len() > MAX_LINE {
                return Err(DecodeError::TooLong);
            }
            // The line of every connection, byte for byte as Node writes it: no parsing.
            if line == HANDLE_ACK_LINE {
                out.push(FromWorker::HandleAck);
            } else if !line.iter().all(u8::is_ascii_whitespace) {
                // Node writes no empty lines; tolerate them.
                let value =
                    serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?;
                out.push(classify(value));
            }
            self.partial.clear();
            data = &data[end + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() > MAX_LINE {
            return Err(DecodeError::TooLong);
        }
        Ok(())
    }
}

/// What a worker said, as far as the master cares.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// `NODE_HANDLE_ACK`: the handle in flight arrived.
    HandleAck,
    /// `NODE_HANDLE_NACK`: it did not (its fd was lost); send it again.
    HandleNack,
    /// `NODE_HANDLE` from the worker: it tried to send us a handle.
    Handle,
    /// Another `NODE_*` message that is not the cluster's.
    OtherInternal(String),
    /// `NODE_CLUSTER` `online`.
    Online,
    /// `NODE_CLUSTER` `queryServer`: `server.listen()` in the worker.
    QueryServer(QueryServer),
    /// `NODE_CLUSTER` `listening`.
    Listening,
    /// `NODE_CLUSTER` `close`: a server of the worker closed.
    Close { key: String },
    /// `NODE_CLUSTER` `exitedAfterDisconnect`: the worker disconnects itself; ack it.
    ExitedAfterDisconnect { seq: u64 },
    /// `NODE_CLUSTER` reply to our `newconn` number `ack`.
    Accepted { ack: u64, accepted: bool },
    /// Another `NODE_CLUSTER` message.
    OtherCluster(Value),
    /// A user message (`process.send(m)`).
    User(Value),
}

/// A worker's `server.listen()` request.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryServer {
    pub seq: u64,
    pub address: Option<String>,
    /// The port the app asked for (`-1` for a pipe, `0` for any).
    pub port: i64,
    pub address_type: String,
    pub index: u64,
    pub fd: Value,
    /// The whole message, for the key.
    pub data: Value,
}

impl QueryServer {
    /// The key Node's primary gives this server (`address:port:addressType:fd:index`).
    pub fn key(&self) -> String {
        let fd = match &self.fd {
            Value::Null => "undefined".to_owned(),
            other => other.to_string(),
        };
        format!(
            "{}:{}:{}:{}:{}",
            self.address.as_deref().unwrap_or("null"),
            self.port,
            self.address_type,
            fd,
            self.index
        )
    }
}

/// Classifies one parsed line from a worker.
pub fn classify(value: Value) -> FromWorker {
    let cmd = value.get("cmd").and_then(Value::as_str).map(str::to_owned);
    let Some(cmd) = cmd.filter(|c| c.len() > 5 && c.starts_with("NODE_")) else {
        return FromWorker::User(value);
    };
    match cmd.as_str() {
        "NODE_HANDLE_ACK" => FromWorker::HandleAck,
        "NODE_HANDLE_NACK" => FromWorker::HandleNack,
        "NODE_HANDLE" => FromWorker::Handle,
        "NODE_CLUSTER" => classify_cluster(value),
        _ => FromWorker::OtherInternal(cmd),
    }
}

fn classify_cluster(value: Value) -> FromWorker {
    let seq = value.get("seq").and_then(Value::as_u64);
    if let Some(ack) = value.get("ack").and_then(Value::as_u64) {
        if let Some(accepted) = value.get("accepted").and_then(Value::as_bool) {
            return FromWorker::Accepted { ack, accepted };
        }
    }
    match (value.get("act").and_then(Value::as_str), seq) {
        (Some("online"), _) => FromWorker::Online,
        (Some("listening"), _) => FromWorker::Listening,
        (Some("close"), _) => FromWorker::Close {
            key: value
                .get("key")
                .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned))
                .unwrap_or_default(),
        },
        (Some("exitedAfterDisconnect"), Some(seq)) => FromWorker::ExitedAfterDisconnect { seq },
        (Some("queryServer"), Some(seq)) => FromWorker::QueryServer(QueryServer {
            seq,
            address: value
                .get("address")
                .and_then(Value::as_str)
                .map(str::to_owned),
            port: value.get("port").and_then(Value::as_i64).unwrap_or(0),
            address_type: value
                .get("addressType")
                .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned))
                .unwrap_or_default(),
            index: value.get("index").and_then(Value::as_u64).unwrap_or(0),
            fd: value.get("fd").cloned().unwrap_or(Value::Null),
            data: value,
        }),
        _ => FromWorker::OtherCluster(value),
    }
}

/// Serializes `value` as one line.
fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// `{"cmd":"NODE_HANDLE","type":T,"msg":M}`: send with the fd attached.
pub fn handle(kind: HandleType, msg: &Value) -> Vec<u8> {
    line(&json!({ "cmd": "NODE_HANDLE", "type": kind.as_str(), "msg": msg }))
}

/// A cluster message: `{"cmd":"NODE_CLUSTER", …fields, "seq":seq}`.
pub fn cluster(fields: Map<String, Value>, seq: u64) -> Value {
    let mut message = Map::new();
    message.insert("cmd".into(), "NODE_CLUSTER".into());
    message.extend(fields);
    message.insert("seq".into(), seq.into());
    Value::Object(message)
}

/// `newconn` for a server whose key, already JSON-encoded, is `key_json`, on a `net.Native`
/// handle, written without building a JSON tree (this is the line of every connection).
pub fn newconn_line(key_json: &str, seq: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = writeln!(
        out,
        r#"{{"cmd":"NODE_HANDLE","type":"net.Native","msg":{{"cmd":"NODE_CLUSTER","act":"newconn","key":{key_json},"seq":{seq}}}}}"#
    );
}

/// The answer to `queryServer` number `ack`. `sockname` (round-robin, TCP) is what the worker's
/// `server.address()` will report; in shared mode the handle itself rides along instead.
pub fn query_server_reply(key: &str, ack: u64, sockname: Option<Value>, seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("errno".into(), Value::Null);
    fields.insert("key".into(), key.into());
    fields.insert("ack".into(), ack.into());
    fields.insert("data".into(), Value::Null);
    if let Some(sockname) = sockname {
        fields.insert("sockname".into(), sockname);
    }
    cluster(fields, seq)
}

/// A bare acknowledgement of request `ack` (for `exitedAfterDisconnect`).
pub fn ack(ack: u64, seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("ack".into(), ack.into());
    cluster(fields, seq)
}

/// `{act: 'disconnect'}`: close your servers, finish, disconnect.
pub fn disconnect(seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("act".into(), "disconnect".into());
    cluster(fields, seq)
}

/// A plain line for a value (a cluster message sent without a handle).
pub fn encode(value: &Value) -> Vec<u8> {
    line(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `newconn` as a JSON tree: what `newconn_line` must write, byte for byte.
    fn newconn(key: &str, seq: u64) -> Value {
        let mut fields = Map::new();
        fields.insert("act".into(), "newconn".into());
        fields.insert("key".into(), key.into());
        cluster(fields, seq)
    }

    fn feed(reader: &mut LineReader, data: &[u8]) -> Result<Vec<FromWorker>, DecodeError> {
        let mut out = Vec::new();
        reader.feed(data, &mut out).map(|()| out)
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut r = LineReader::default();
        assert!(feed(&mut r, br#"{"cmd":"NODE_HA"#).unwrap().is_empty());
        let got = feed(&mut r, b"NDLE_ACK\"}\n{\"act\":\"suicide\"}\n{").unwrap();
        assert_eq!(got[0], FromWorker::HandleAck);
        assert_eq!(got[1], FromWorker::User(json!({"act": "suicide"})));
        // The unfinished `{` waits for the rest of its line.
        let rest = feed(&mut r, b"\"cmd\":\"NODE_HANDLE_ACK\"}\n").unwrap();
        assert_eq!(rest, [FromWorker::HandleAck]);
        // Spelled differently, it is still an ACK.
        let spaced = feed(
            &mut LineReader::default(),
            b"{ \"cmd\": \"NODE_HANDLE_ACK\" }\n",
        );
        assert_eq!(spaced.unwrap(), [FromWorker::HandleAck]);
    }

    #[test]
    fn malformed_and_endless_input_are_errors_not_panics() {
        let mut r = LineReader::default();
        assert!(matches!(
            feed(&mut r, b"{not json}\n"),
            Err(DecodeError::Json(_))
        ));
        let mut r = LineReader::default();
        let big = vec![b'x'; MAX_LINE + 1];
        assert_eq!(feed(&mut r, &big), Err(DecodeError::TooLong));
    }

    #[test]
    fn internal_messages_are_told_from_user_messages() {
        assert_eq!(
            classify(json!({"cmd": "NODE_HANDLE_NACK"})),
            FromWorker::HandleNack
        );
        assert_eq!(
            classify(json!({"cmd": "NODE_HANDLE", "type": "net.Socket"})),
            FromWorker::Handle
        );
        // Node's rule: a `cmd` that only starts with NODE_ and is longer than the prefix.
        assert_eq!(
            classify(json!({"cmd": "NODE_"})),
            FromWorker::User(json!({"cmd": "NODE_"}))
        );
        assert_eq!(
            classify(json!({"cmd": "hello"})),
            FromWorker::User(json!({"cmd": "hello"}))
        );
        assert_eq!(classify(json!("ready")), FromWorker::User(json!("ready")));
    }

    #[test]
    fn cluster_messages_as_node_20_sends_them() {
        // Read off the channel of a Node 20.20 cluster worker calling
        // http.createServer().listen(3000).
        let query: Value = serde_json::from_str(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":3000,"addressType":4,"backlog":0,"seq":1}"#,
        )
        .unwrap();
        let FromWorker::QueryServer(q) = classify(query) else {
            panic!("not a queryServer");
        };
        assert_eq!((q.seq, q.port, q.index), (1, 3000, 0));
        assert_eq!(q.key(), "null:3000:4:undefined:0");
        assert_eq!(
            classify(json!({"cmd":"NODE_CLUSTER","ack":7,"accepted":false,"seq":9})),
            FromWorker::Accepted {
                ack: 7,
                accepted: false
            }
        );
        assert_eq!(
            classify(json!({"cmd":"NODE_CLUSTER","act":"online","seq":0})),
            FromWorker::Online
        );
        assert_eq!(
            classify(json!({"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":4})),
            FromWorker::ExitedAfterDisconnect { seq: 4 }
        );
    }

    #[test]
    fn messages_to_workers_have_nodes_shapes() {
        assert_eq!(
            handle(HandleType::Socket, &json!("socket")),
            b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":\"socket\"}\n"
        );
        let conn = newconn("k\"1", 3);
        let mut fast = Vec::new();
        newconn_line(&serde_json::to_string("k\"1").unwrap(), 3, &mut fast);
        assert_eq!(fast, handle(HandleType::Native, &conn));
        let conn = newconn("k", 3);
        assert_eq!(
            String::from_utf8(handle(HandleType::Native, &conn)).unwrap(),
            "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":\"NODE_CLUSTER\",\"act\":\"newconn\",\"key\":\"k\",\"seq\":3}}\n"
        );
        let reply = query_server_reply(
            "k",
            1,
            Some(json!({"address":"127.0.0.1","family":"IPv4","port":3000})),
            2,
        );
        assert_eq!(
            String::from_utf8(encode(&reply)).unwrap(),
            "{\"cmd\":\"NODE_CLUSTER\",\"errno\":null,\"key\":\"k\",\"ack\":1,\"data\":null,\"sockname\":{\"address\":\"127.0.0.1\",\"family\":\"IPv4\",\"port\":3000},\"seq\":2}\n"
        );
    }
}
