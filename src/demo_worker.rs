//! `rrbalancer demo-worker`: the built-in HTTP/1.1 worker of the default configuration.
//!
//! It answers every request with `handled by worker <id>, pid <pid>\n`, honours keep-alive and
//! `Connection: close`, and shows how an event-loop worker uses [`crate::worker`]: the channel is
//! one more fd in its mio `Poll`. It gets connections from the channel (`rr`), accepts on
//! inherited listeners (`none`), or — outside rrbalancer, as the benchmark's reference — binds
//! its own `SO_REUSEPORT` listener (`--standalone ADDR`). It stops gracefully on `stop` or SIGTERM
//! ([`worker::Drain`]): no new connections, finish each request in progress, answer the next
//! request on each keep-alive connection with `Connection: close`, and close those still idle
//! after `--drain-grace` (2s) — never one whose client may be sending its next request.
//!
//! Load never makes it exit. A connection that sends nothing for `--idle-timeout` (5s) while it
//! is owed no answer — an idle keep-alive client, one that stopped in its request — is closed,
//! and a request not whole within `--request-timeout` (10s) of its first byte is answered 408
//! and closed, so idle and slow clients cannot hold its file descriptors forever. At its open-file limit (a
//! `conn` message cut short by the kernel) it gives the connections back to the master
//! (`full N`), which hands them to other workers, and says `idle` again once a connection of
//! its own has closed; in `none` mode it stops accepting until then.
//!
//! For the benchmark's uneven-work scenario, `--slow-every N --slow-ms M` makes every Nth
//! request this process answers hold its only thread for M ms of CPU before the answer — a
//! blocking `JSON.parse` or synchronous call in an event-loop worker, during which the worker
//! accepts, reads and answers nothing else.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::worker::{self, Channel, Drain, Event, Listener, Stream, WorkerError};

/// Options of `rrbalancer demo-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Exit (after saying `leaving`) once this many requests have been served, like
    /// gunicorn's `max_requests`. 0: never.
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,
    /// Standalone mode, outside rrbalancer: bind this address itself with SO_REUSEPORT, so
    /// several copies share the port (the benchmark's no-balancer reference).
    #[arg(long, value_name = "ADDR")]
    pub standalone: Option<SocketAddr>,
    /// Wait this long before saying `ready` (to show readiness at work).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub ready_delay: Option<Duration>,
    /// Uneven work: every Nth request this process answers (the Nth, 2Nth, …) first keeps its
    /// event loop busy for --slow-ms of CPU, like a blocking JSON.parse. 0: never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub slow_every: u64,
    /// With --slow-every: how many milliseconds each slow request burns (a busy loop, not a
    /// sleep: the worker does nothing else meanwhile).
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub slow_ms: u64,
    /// After `stop`: how long a keep-alive connection may stay idle before it is closed (each
    /// one's next request is answered with `Connection: close` meanwhile).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "2s")]
    pub drain_grace: Duration,
    /// Close a connection that has sent nothing for this long while it is owed no answer: an
    /// idle keep-alive connection, or a client that stopped in the middle of its request
    /// (Node's `keepAliveTimeout` is 5s too). Idle clients cannot pin the worker's file
    /// descriptors. 0: never.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "5s")]
    pub idle_timeout: Duration,
    /// A request must arrive whole (head and body) within this long of its first byte; else it
    /// is answered 408 and the connection closed, so a client that trickles its headers cannot
    /// hold a descriptor for good (slowloris). 0: never.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub request_timeout: Duration,
}

/// The uneven-work setting: which requests are slow and for how long.
#[derive(Debug, Clone, Copy)]
struct SlowWork {
    every: u64,
    burn: Duration,
}

impl SlowWork {
    fn from_args(args: &DemoArgs) -> Option<SlowWork> {
        (args.slow_every > 0).then(|| SlowWork {
            every: args.slow_every,
            burn: Duration::from_millis(args.slow_ms),
        })
    }

    /// Whether the `nth` request answered by this process (counting from 1) is a slow one.
    fn is_slow(&self, nth: u64) -> bool {
        nth % self.every == 0
    }
}

/// Keeps this thread busy for `burn`: spinning, not sleeping, so that the event loop is
/// occupied exactly as by a long synchronous computation.
fn burn_cpu(burn: Duration) {
    let start = Instant::now();
    while start.elapsed() < burn {
        std::hint::spin_loop();
    }
}

const SIGNALS: Token = Token(0);
const CHANNEL: Token = Token(1);
const LISTENER_BASE: usize = 2;
const CONN_BASE: usize = 1 << 16;

const READ_CHUNK: usize = 4096;
/// A request head larger than this is refused (400) rather than buffered without bound.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

enum Source {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }
    fn io_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
    fn io_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

struct Client {
    conn: Conn,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Close once the output is written.
    close_after_write: bool,
    /// Requests answered on this connection.
    answered: u64,
    /// The client closed its side.
    eof: bool,
    /// Handed to us by the master, its first request not here yet.
    awaited: bool,
    /// When it last sent us something, or we wrote to it.
    last_active: Instant,
    /// When the first byte of the request it is sending came (`None` between requests).
    request_since: Option<Instant>,
}

impl Client {
    /// Between two requests of a keep-alive connection. A connection that has not sent its
    /// first request yet is *not* idle: a client is waiting for its answer.
    fn is_idle(&self) -> bool {
        self.answered > 0 && self.input.is_empty() && self.output.is_empty()
    }

    /// Owed no answer: what it sent so far (nothing, or part of a request) asks for none yet.
    fn is_quiet(&self) -> bool {
        self.output.is_empty()
    }
}

struct Server {
    poll: Poll,
    body: Vec<u8>,
    channel: Option<Channel>,
    listeners: Vec<Option<Source>>,
    clients: Slab<Client>,
    /// Requests answered by this process (with 200), over all connections.
    served: u64,
    max_requests: u64,
    slow: Option<SlowWork>,
    stopping: bool,
    /// Keep-alive connections while stopping: closed after their next answer, or once idle
    /// past the grace.
    drain: Drain,
    /// The connections left idle were closed at the grace's end.
    idle_closed: bool,
    /// Connections arrived since we last told the master we are `idle`.
    owe_idle: bool,
    /// Clients whose answers wait until we have said `idle` (see [`Server::run`]).
    deferred: Vec<usize>,
    /// Clients handed to us whose first request has not arrived yet, and when the last
    /// connections came: such a client is work about to start, so `idle` waits for it a moment.
    awaited: usize,
    conns_at: Instant,
    /// A `conn` message came cut (out of file descriptors): no `idle` until one is free.
    fd_short: bool,
    /// `accept` failed for want of a file descriptor: accept again once one is free.
    accept_blocked: bool,
    /// When quiet connections are next looked at (`--idle-timeout`).
    next_sweep: Instant,
}

/// How often connections are looked at for `--idle-timeout` (and a worker short of file
/// descriptors looks whether one is free).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long `idle` waits for the first request of a connection just handed to us. A client
/// sends it right after connecting; one that does not (a browser's speculative connection) does
/// not keep us from saying `idle` for long.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(5);

/// Runs the demo worker until it is stopped.
pub fn run(args: DemoArgs) -> Result<(), WorkerError> {
    let poll = Poll::new()?;
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;

    let channel = match Channel::from_env() {
        Ok(channel) => Some(channel),
        Err(WorkerError::NotUnderRrbalancer) if args.standalone.is_some() => None,
        Err(e) => return Err(e),
    };
    let mut listeners: Vec<Option<Source>> = Vec::new();
    if let Some(addr) = args.standalone {
        listeners.push(Some(Source::Tcp(reuseport_listener(addr)?)));
    }
    for l in worker::listeners()? {
        listeners.push(Some(match l {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Source::Tcp(TcpListener::from_std(l))
            }
            Listener::Unix(l) => {
                l.set_nonblocking(true)?;
                Source::Unix(UnixListener::from_std(l))
            }
        }));
    }
    for (i, l) in listeners.iter_mut().enumerate() {
        let token = Token(LISTENER_BASE + i);
        match l {
            Some(Source::Tcp(l)) => poll.registry().register(l, token, Interest::READABLE)?,
            Some(Source::Unix(l)) => poll.registry().register(l, token, Interest::READABLE)?,
            None => {}
        }
    }

    let id = worker::worker_id();
    let body = format!("handled by worker {id}, pid {}\n", std::process::id()).into_bytes();
    let mut server = Server {
        poll,
        body,
        channel,
        listeners,
        clients: Slab::with_capacity(1024),
        served: 0,
        max_requests: args.max_requests,
        slow: SlowWork::from_args(&args),
        stopping: false,
        drain: Drain::new(args.drain_grace)
            .with_idle_timeout(args.idle_timeout)
            .with_request_timeout(args.request_timeout),
        idle_closed: false,
        owe_idle: false,
        deferred: Vec::new(),
        awaited: 0,
        conns_at: Instant::now(),
        fd_short: false,
        accept_blocked: false,
        next_sweep: Instant::now() + SWEEP_EVERY,
    };
    if let Some(delay) = args.ready_delay {
        std::thread::sleep(delay);
    }
    if let Some(channel) = server.channel.as_mut() {
        channel.set_nonblocking(true)?;
        server.poll.registry().register(
            &mut SourceFd(&channel.as_raw_fd()),
            CHANNEL,
            Interest::READABLE,
        )?;
        // `idle` first: the master knows we are pulled before it routes anything to us.
        channel.idle()?;
        channel.ready()?;
    }
    debug!("demo worker {id} serving");
    server.run(&mut signals)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

impl Server {
    fn run(&mut self, signals: &mut Signals) -> Result<(), WorkerError> {
        let mut events = Events::with_capacity(256);
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if self.stopping && self.clients.is_empty() {
                return Ok(());
            }
            // Everything this turn brought is served: about to wait, we are idle. The master
            // hands connections only to idle workers, so none waits behind a slow request.
            // The answers of this turn go out only now, after `idle`: a client that connects
            // again as soon as it has its answer finds us idle already.
            // A connection whose request has not arrived yet is work about to start: wait for it
            // a moment (`FIRST_REQUEST_GRACE`) before saying idle.
            let now = Instant::now();
            if self.drain.close_idle(now) && !std::mem::replace(&mut self.idle_closed, true) {
                self.close_idle_clients();
                continue;
            }
            if now >= self.next_sweep {
                self.sweep(now);
            }
            let wake = [
                stop_deadline,
                self.drain.deadline().filter(|_| !self.idle_closed),
                Some(self.next_sweep),
            ];
            let mut timeout = wake
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now));
            if self.owe_idle && !self.stopping && !self.fd_short {
                let since = self.conns_at.elapsed();
                if self.awaited > 0 && since < FIRST_REQUEST_GRACE {
                    let rest = FIRST_REQUEST_GRACE - since;
                    timeout = Some(timeout.map_or(rest, |t| t.min(rest)));
                } else {
                    self.owe_idle = false;
                    if let Some(channel) = self.channel.as_mut() {
                        if let Err(e) = channel.idle() {
                            debug!("cannot say idle: {e}");
                        }
                    }
                }
            }
            let mut deferred = std::mem::take(&mut self.deferred);
            for key in deferred.drain(..) {
                self.settle(key);
            }
            self.deferred = deferred;
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                warn!(
                    "stop: {} connection(s) still open; closing",
                    self.clients.len()
                );
                return Ok(());
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS if signals.pending().next().is_some() => self.begin_stop(),
                    CHANNEL => self.on_channel()?,
                    Token(t) if (LISTENER_BASE..CONN_BASE).contains(&t) => {
                        self.on_listener(t - LISTENER_BASE)
                    }
                    Token(t) if t >= CONN_BASE => self.on_client(t - CONN_BASE),
                    _ => {}
                }
            }
            if self.stopping && stop_deadline.is_none() {
                // Our own bound on a graceful stop, under the master's kill_timeout.
                stop_deadline = Some(Instant::now() + Duration::from_secs(30));
            }
        }
    }

    fn on_channel(&mut self) -> Result<(), WorkerError> {
        loop {
            let Some(channel) = self.channel.as_mut() else {
                return Ok(());
            };
            match channel.recv()? {
                Event::Conns(conns) => {
                    self.owe_idle = true;
                    self.conns_at = Instant::now();
                    for conn in conns {
                        let stream = match conn.stream {
                            Stream::Tcp(s) => {
                                s.set_nonblocking(true)?;
                                let _ = s.set_nodelay(true);
                                Conn::Tcp(TcpStream::from_std(s))
                            }
                            Stream::Unix(s) => {
                                s.set_nonblocking(true)?;
                                Conn::Unix(UnixStream::from_std(s))
                            }
                        };
                        self.add_client(stream, true);
                    }
                }
                Event::Full { refused } => {
                    // The kernel cut a `conn` message: the channel gave it back (`full`).
                    // `idle` again only once a connection of ours has closed.
                    if !self.fd_short {
                        warn!(
                            "at the open-file limit with {} connection(s): {refused} given back \
                             to the master until one closes",
                            self.clients.len()
                        );
                    }
                    self.fd_short = true;
                }
                Event::Stop => {
                    info!("stop received");
                    self.begin_stop();
                }
                Event::Closed => {
                    // The master is gone: nobody will send more. Finish and exit.
                    self.drop_channel();
                    self.begin_stop();
                    return Ok(());
                }
                Event::WouldBlock => return Ok(()),
                // It never subscribes: the channel refuses messages before they get here.
                Event::Message { .. } | Event::Subscribed => {}
            }
        }
    }

    fn drop_channel(&mut self) {
        if let Some(channel) = self.channel.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&channel.as_raw_fd()));
        }
    }

    fn on_listener(&mut self, i: usize) {
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

    fn add_client(&mut self, mut conn: Conn, awaited: bool) {
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

    fn on_client(&mut self, key: usize) {
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
    fn settle(&mut self, key: usize) {
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

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for l in self.listeners.iter_mut() {
            // Dropping closes our copy; in `none` mode the master and the others keep theirs.
            *l = None;
        }
        // Idle keep-alive connections stay open for the grace: a client's next request may be
        // on its way already, and is answered (with `Connection: close`) rather than refused.
        self.drain.begin(Instant::now());
    }

    /// The grace is over: connections still idle are closed.
    fn close_idle_clients(&mut self) {
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
    fn close_client(&mut self, key: usize) {
        let Some(mut client) = self.clients.try_remove(key) else {
            return;
        };
        self.awaited -= usize::from(client.awaited);
        let _ = self.poll.registry().deregister(client.conn.source());
        client.conn.shutdown();
        drop(client);
        self.fd_freed();
    }

    /// A file descriptor may be free: say `idle` again if a cut `conn` made us stop, accept
    /// again if `accept` had failed for want of one.
    fn fd_freed(&mut self) {
        if std::mem::take(&mut self.fd_short) {
            self.owe_idle = true;
        }
        if std::mem::take(&mut self.accept_blocked) {
            for i in 0..self.listeners.len() {
                self.on_listener(i);
            }
        }
    }

    /// Every [`SWEEP_EVERY`]: closes connections quiet past `--idle-timeout`, answers 408 to
    /// those whose request takes longer than `--request-timeout`; short of file descriptors
    /// with none of ours closing, looks whether one is free anyway.
    fn sweep(&mut self, now: Instant) {
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

/// Answers every complete request in `client.input`. Returns how many. `served` is how many
/// this process answered before, so that `slow` picks every Nth over all connections.
fn answer_requests(
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

fn respond(client: &mut Client, status: &[u8], body: &[u8], keep_alive: bool) {
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
fn write_out(client: &mut Client) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_nth_request_is_slow_counting_from_one() {
        let slow = SlowWork {
            every: 50,
            burn: Duration::from_millis(20),
        };
        let slow_ones: Vec<u64> = (1..=150).filter(|&n| slow.is_slow(n)).collect();
        assert_eq!(slow_ones, vec![50, 100, 150]);
    }

    #[test]
    fn slow_work_is_off_unless_slow_every_is_given() {
        let args = |every| DemoArgs {
            max_requests: 0,
            standalone: None,
            ready_delay: None,
            slow_every: every,
            slow_ms: 20,
            drain_grace: Drain::DEFAULT_GRACE,
            idle_timeout: Drain::DEFAULT_IDLE_TIMEOUT,
            request_timeout: Drain::DEFAULT_REQUEST_TIMEOUT,
        };
        assert!(SlowWork::from_args(&args(0)).is_none());
        let slow = SlowWork::from_args(&args(3)).expect("on with --slow-every 3");
        assert_eq!(slow.burn, Duration::from_millis(20));
    }

    #[test]
    fn burning_cpu_takes_at_least_the_time_asked() {
        let start = Instant::now();
        burn_cpu(Duration::from_millis(5));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }
}
