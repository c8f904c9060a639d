//! The demo worker's clients: accepted or handed over, read, answered, settled (said `idle`
//! for, or closed), and swept for `--idle-timeout`.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use log::{debug, info, warn};
use mio::{Interest, Token};

use crate::worker;

use super::http::{Client, Conn, READ_CHUNK, answer_requests, respond, write_out};

use super::server::{CONN_BASE, SWEEP_EVERY, Server, Source};

impl Server {
    pub(super) fn on_listener(&mut self, i: usize) {
        loop {
            let accepted = match self.listeners.get(i) {
                Some(Some(Source::Tcp(l))) => l.accept().map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Conn::Tcp(s)
                }),
                Some(Some(Source::Unix(l))) => l.accept().map(|(s, _)| Conn::Unix(s)),
                _ => return,
            };
            match accepted {
                Ok(conn) => self.add_client(conn, false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // The client waits in the backlog until one of ours closes.
                    if !std::mem::replace(&mut self.accept_blocked, true) {
                        warn!("accept: {e}; accepting again once a connection closes");
                    }
                    return;
                }
                Err(e) => {
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn add_client(&mut self, mut conn: Conn, awaited: bool) {
        let entry = self.clients.vacant_entry();
        let token = Token(CONN_BASE + entry.key());
        if let Err(e) = self.poll.registry().register(
            conn.source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("register: {e}");
            return;
        }
        let key = entry.key();
        entry.insert(Client {
            conn,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::with_capacity(256),
            written: 0,
            close_after_write: false,
            answered: 0,
            eof: false,
            awaited,
            last_active: Instant::now(),
            request_since: None,
        });
        self.awaited += usize::from(awaited);
        // A request may already be waiting: edge-triggered registration will not tell us.
        self.on_client(key);
    }

    pub(super) fn on_client(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut closed = false;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match client.conn.io_read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    client.input.extend_from_slice(&chunk[..n]);
                    client.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let answered = answer_requests(client, &self.body, self.stopping, self.served, self.slow);
        if client.input.is_empty() || client.close_after_write {
            client.request_since = None;
        } else if answered > 0 || client.request_since.is_none() {
            // What is left is the start of the next request.
            client.request_since = Some(client.last_active);
        }
        client.answered += answered;
        client.eof |= closed;
        if client.awaited && (client.answered > 0 || closed || !client.output.is_empty()) {
            client.awaited = false;
            self.awaited -= 1;
        }
        self.served += answered;
        if self.owe_idle && !client.output.is_empty() {
            self.deferred.push(key); // answered once we have said `idle`
        } else {
            self.settle(key);
        }
    }

    /// Writes what `key` is owed and closes it when it is done.
    pub(super) fn settle(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let closed = client.eof;
        let done = write_out(client);
        let finished = match done {
            Err(_) => true,
            Ok(all_written) => {
                all_written && (client.close_after_write || (closed && client.output.is_empty()))
            }
        };
        // While stopping, an idle keep-alive connection is closed once the grace is over.
        if finished || closed || (self.idle_closed && client.is_idle()) {
            self.close_client(key);
        }
        if self.max_requests > 0 && self.served >= self.max_requests && !self.stopping {
            info!("served {} requests; leaving", self.served);
            if let Some(channel) = self.channel.as_mut() {
                if let Err(e) = channel.leaving() {
                    warn!("cannot tell the master we are leaving: {e}");
                }
            }
            self.begin_stop();
        }
    }

    /// The grace is over: connections still idle are closed.
    pub(super) fn close_idle_clients(&mut self) {
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.is_idle())
            .map(|(k, _)| k)
            .collect();
        if !idle.is_empty() {
            debug!("stop: closing {} idle keep-alive connection(s)", idle.len());
        }
        for key in idle {
            self.close_client(key);
        }
    }

    /// Closes the connection of `key`. A descriptor is free again: if we were short of them,
    /// we may take connections again.
    pub(super) fn close_client(&mut self, key: usize) {
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        self.awaited -= usize::from(client.awaited);
        let _ = self.poll.registry().deregister(client.conn.source());
        client.conn.shutdown();
        drop(client);
        self.fd_freed();
    }

    /// Every [`SWEEP_EVERY`]: closes connections quiet past `--idle-timeout`, answers 408 to
    /// those whose request takes longer than `--request-timeout`; short of file descriptors
    /// with none of ours closing, looks whether one is free anyway.
    pub(super) fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_EVERY;
        // Quiet past the timeout: between requests, or in the middle of one (a client that
        // stopped sending). While stopping, idle ones go at the grace's end already
        // (`close_idle_clients`); one still sending its request is given the timeout.
        let drain = self.drain;
        let mut idle = Vec::new();
        let mut slow = Vec::new();
        for (key, c) in self.clients.iter().filter(|(_, c)| c.is_quiet()) {
            if drain.idle_expired(c.last_active, now) {
                idle.push(key);
            } else if c
                .request_since
                .is_some_and(|t| drain.request_expired(t, now))
            {
                slow.push(key);
            }
        }
        if !idle.is_empty() || !slow.is_empty() {
            debug!(
                "closing {} connection(s) idle past the timeout, {} whose request is too slow",
                idle.len(),
                slow.len()
            );
        }
        for key in idle {
            self.close_client(key);
        }
        for key in slow {
            if let Some(client) = self.clients.get_mut(key) {
                client.request_since = None;
                respond(client, b"408 Request Timeout", b"request timeout\n", false);
            }
            self.settle(key);
        }
        if (self.fd_short || self.accept_blocked)
            && worker::may_open_a_file(std::io::stdin().as_fd())
        {
            self.fd_freed();
        }
    }
}
