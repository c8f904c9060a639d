//! The demo worker's connections (TCP or Unix) and its HTTP/1.1: requests parsed from what a
//! client sent, answered with keep-alive or `Connection: close`, written as the socket takes it.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::{TcpStream, UnixStream};

use super::slow::{SlowWork, burn_cpu};

pub(super) const READ_CHUNK: usize = 4096;
/// A request head larger than this is refused (400) rather than buffered without bound.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

pub(super) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub(super) fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }
    pub(super) fn io_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
    pub(super) fn io_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

pub(super) struct Client {
    pub(super) conn: Conn,
    pub(super) input: Vec<u8>,
    pub(super) output: Vec<u8>,
    pub(super) written: usize,
    /// Close once the output is written.
    pub(super) close_after_write: bool,
    /// Requests answered on this connection.
    pub(super) answered: u64,
    /// The client closed its side.
    pub(super) eof: bool,
    /// Handed to us by the master, its first request not here yet.
    pub(super) awaited: bool,
    /// When it last sent us something, or we wrote to it.
    pub(super) last_active: Instant,
    /// When the first byte of the request it is sending came (`None` between requests).
    pub(super) request_since: Option<Instant>,
}

impl Client {
    /// Between two requests of a keep-alive connection. A connection that has not sent its
    /// first request yet is *not* idle: a client is waiting for its answer.
    pub(super) fn is_idle(&self) -> bool {
        self.answered > 0 && self.input.is_empty() && self.output.is_empty()
    }

    /// Owed no answer: what it sent so far (nothing, or part of a request) asks for none yet.
    pub(super) fn is_quiet(&self) -> bool {
        self.output.is_empty()
    }
}

/// Answers every complete request in `client.input`. Returns how many. `served` is how many
/// this process answered before, so that `slow` picks every Nth over all connections.
pub(super) fn answer_requests(
    client: &mut Client,
    body: &[u8],
    stopping: bool,
    served: u64,
    slow: Option<SlowWork>,
) -> u64 {
    let mut answered = 0;
    while !client.close_after_write {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let (head_len, keep_alive, content_length) = match request.parse(&client.input) {
            Ok(httparse::Status::Complete(n)) => {
                let http10 = request.version == Some(0);
                let mut keep_alive = !http10;
                let mut content_length = 0usize;
                for h in request.headers.iter() {
                    if h.name.eq_ignore_ascii_case("connection") {
                        let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                        if v.contains("close") {
                            keep_alive = false;
                        } else if v.contains("keep-alive") {
                            keep_alive = true;
                        }
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    }
                }
                (n, keep_alive, content_length)
            }
            Ok(httparse::Status::Partial) => {
                if client.input.len() > MAX_HEAD {
                    respond(
                        client,
                        b"400 Bad Request",
                        b"request head too large\n",
                        false,
                    );
                }
                return answered;
            }
            Err(_) => {
                respond(client, b"400 Bad Request", b"bad request\n", false);
                return answered;
            }
        };
        if client.input.len() < head_len + content_length {
            return answered; // the body is still coming
        }
        client.input.drain(..head_len + content_length);
        if let Some(slow) = slow.filter(|s| s.is_slow(served + answered + 1)) {
            burn_cpu(slow.burn);
        }
        respond(client, b"200 OK", body, keep_alive && !stopping);
        answered += 1;
    }
    answered
}

pub(super) fn respond(client: &mut Client, status: &[u8], body: &[u8], keep_alive: bool) {
    let out = &mut client.output;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    if keep_alive {
        out.extend_from_slice(b"\r\n\r\n");
    } else {
        out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
        client.close_after_write = true;
        client.input.clear();
    }
    out.extend_from_slice(body);
}

/// Writes pending output. `Ok(true)` when all of it is out.
pub(super) fn write_out(client: &mut Client) -> io::Result<bool> {
    while client.written < client.output.len() {
        match client.conn.io_write(&client.output[client.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                client.written += n;
                client.last_active = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    client.output.clear();
    client.written = 0;
    Ok(true)
}
