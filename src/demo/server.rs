//! The demo worker's event loop: one mio `Poll` over the channel, signals, listeners and
//! clients; `idle` said once it has nothing in hand; a graceful stop by [`Drain`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::worker::{self, Channel, Drain, Event, Listener, Stream, WorkerError};

use super::DemoArgs;
use super::http::{Client, Conn};
use super::slow::SlowWork;

pub(super) const SIGNALS: Token = Token(0);
pub(super) const CHANNEL: Token = Token(1);
pub(super) const LISTENER_BASE: usize = 2;
pub(super) const CONN_BASE: usize = 1 << 16;

pub(super) enum Source {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub(super) struct Server {
    pub(super) poll: Poll,
    pub(super) body: Vec<u8>,
    pub(super) channel: Option<Channel>,
    pub(super) listeners: Vec<Option<Source>>,
    pub(super) clients: Slab<Client>,
    /// Requests answered by this process (with 200), over all connections.
    pub(super) served: u64,
    pub(super) max_requests: u64,
    pub(super) slow: Option<SlowWork>,
    pub(super) stopping: bool,
    /// Keep-alive connections while stopping: closed after their next answer, or once idle
    /// past the grace.
    pub(super) drain: Drain,
    /// The connections left idle were closed at the grace's end.
    pub(super) idle_closed: bool,
    /// Connections arrived since we last told the master we are `idle`.
    pub(super) owe_idle: bool,
    /// Clients whose answers wait until we have said `idle` (see [`Server::run`]).
    pub(super) deferred: Vec<usize>,
    /// Clients handed to us whose first request has not arrived yet, and when the last
    /// connections came: such a client is work about to start, so `idle` waits for it a moment.
    pub(super) awaited: usize,
    pub(super) conns_at: Instant,
    /// A `conn` message came cut (out of file descriptors): no `idle` until one is free.
    pub(super) fd_short: bool,
    /// `accept` failed for want of a file descriptor: accept again once one is free.
    pub(super) accept_blocked: bool,
    /// When quiet connections are next looked at (`--idle-timeout`).
    pub(super) next_sweep: Instant,
}

/// How often connections are looked at for `--idle-timeout` (and a worker short of file
/// descriptors looks whether one is free).
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long `idle` waits for the first request of a connection just handed to us. A client
/// sends it right after connecting; one that does not (a browser's speculative connection) does
/// not keep us from saying `idle` for long.
pub(super) const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(5);

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
    pub(super) fn run(&mut self, signals: &mut Signals) -> Result<(), WorkerError> {
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

    pub(super) fn on_channel(&mut self) -> Result<(), WorkerError> {
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

    pub(super) fn drop_channel(&mut self) {
        if let Some(channel) = self.channel.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&channel.as_raw_fd()));
        }
    }

    pub(super) fn begin_stop(&mut self) {
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

    /// A file descriptor may be free: say `idle` again if a cut `conn` made us stop, accept
    /// again if `accept` had failed for want of one.
    pub(super) fn fd_freed(&mut self) {
        if std::mem::take(&mut self.fd_short) {
            self.owe_idle = true;
        }
        if std::mem::take(&mut self.accept_blocked) {
            for i in 0..self.listeners.len() {
                self.on_listener(i);
            }
        }
    }
}
