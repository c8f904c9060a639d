//! [`Drain`]: stopping a keep-alive server without a race its clients can lose, and the idle
//! and request timeouts that keep a slow client from holding a worker's fds.

use std::time::{Duration, Instant};

/// Stopping a keep-alive server without a race its clients can lose.
///
/// Closing an idle keep-alive connection the moment `stop` arrives races the client's next
/// request: already on its way, it meets a closed socket, and the client sees an error (a
/// reload under `wrk` made about 55 such errors each). A `Drain` says what to do instead, from
/// [`Drain::begin`] on: finish the requests in progress; answer the next request on each
/// connection with `Connection: close` ([`Drain::keep_alive`] is then false) and close it once
/// that answer is written; close a connection that stays idle only once [`Drain::grace`] has
/// passed ([`Drain::close_idle`]), which a client that is still using it will not reach.
///
/// ```
/// use std::time::{Duration, Instant};
/// use rrbalancer::worker::Drain;
///
/// let mut drain = Drain::new(Duration::from_secs(2));
/// let t0 = Instant::now();
/// assert!(drain.keep_alive());
/// drain.begin(t0); // `stop` received, or SIGTERM
/// assert!(!drain.keep_alive(), "every answer from now on says `Connection: close`");
/// assert!(!drain.close_idle(t0 + Duration::from_secs(1)), "idle ones wait for their grace");
/// assert!(drain.close_idle(t0 + Duration::from_secs(2)));
/// assert_eq!(drain.deadline(), Some(t0 + Duration::from_secs(2)), "when to wake up for it");
/// ```
///
/// It also bounds how long a keep-alive connection may stay idle while serving
/// ([`Drain::idle_timeout`], 5 s by default as in Node's `http` server) and how long a request
/// may take to arrive ([`Drain::request_timeout`], 10 s): a client that keeps a connection open
/// and sends nothing, or trickles a header line now and then, holds one of the worker's file
/// descriptors, and enough of them would leave none for new clients.
///
/// ```
/// use std::time::{Duration, Instant};
/// use rrbalancer::worker::Drain;
///
/// let drain = Drain::default().with_idle_timeout(Duration::from_secs(5));
/// let last_request = Instant::now();
/// assert!(!drain.close_idle_since(last_request, last_request + Duration::from_secs(4)));
/// assert!(drain.close_idle_since(last_request, last_request + Duration::from_secs(5)));
/// // A request trickled in: 408 once it has taken longer than the request timeout (10 s).
/// let first_byte = last_request;
/// assert!(drain.request_expired(first_byte, first_byte + Duration::from_secs(10)));
/// // Zero: no limit.
/// let patient = drain.with_idle_timeout(Duration::ZERO);
/// assert!(!patient.close_idle_since(last_request, last_request + Duration::from_secs(3600)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    grace: Duration,
    since: Option<Instant>,
    idle_timeout: Duration,
    request_timeout: Duration,
}

impl Drain {
    /// How long an idle keep-alive connection is left open after `stop` by default: longer
    /// than a busy client waits between two requests, shorter than the master's default
    /// `kill_timeout` (5s).
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

    /// How long a keep-alive connection may stay idle by default (Node's `keepAliveTimeout`).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

    /// How long a request may take to arrive whole, from its first byte, by default.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(grace: Duration) -> Drain {
        Drain {
            grace,
            since: None,
            idle_timeout: Drain::DEFAULT_IDLE_TIMEOUT,
            request_timeout: Drain::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The longest a connection may stay idle (between requests, or before its first one)
    /// while serving; zero: no limit.
    pub fn with_idle_timeout(self, idle_timeout: Duration) -> Drain {
        Drain {
            idle_timeout,
            ..self
        }
    }

    /// The longest a request may take to arrive whole, from its first byte (a client that
    /// trickles its headers, slowloris); zero: no limit.
    pub fn with_request_timeout(self, request_timeout: Duration) -> Drain {
        Drain {
            request_timeout,
            ..self
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether a connection quiet since `since` (it sent nothing since, and is owed no answer)
    /// has passed the idle timeout at `now`.
    pub fn idle_expired(&self, since: Instant, now: Instant) -> bool {
        expired(self.idle_timeout, since, now)
    }

    /// Whether a request whose first byte came at `first_byte` and is not whole yet has
    /// passed the request timeout at `now` (answer 408 and close).
    pub fn request_expired(&self, first_byte: Instant, now: Instant) -> bool {
        expired(self.request_timeout, first_byte, now)
    }

    /// Whether a connection idle since `idle_since` (no request in progress, no answer owed)
    /// is to be closed at `now`: past the idle timeout, or, once draining, past the grace.
    pub fn close_idle_since(&self, idle_since: Instant, now: Instant) -> bool {
        self.idle_expired(idle_since, now) || self.close_idle(now)
    }

    /// The stop began at `now` (a second call changes nothing).
    pub fn begin(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// Whether the stop began.
    pub fn draining(&self) -> bool {
        self.since.is_some()
    }

    /// Whether an answer may keep its connection open; once draining, it says
    /// `Connection: close` and the connection closes after it.
    pub fn keep_alive(&self) -> bool {
        self.since.is_none()
    }

    /// The idle-connection grace.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When connections still idle are to be closed, once draining.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.grace)
    }

    /// Whether a connection idle between two requests is to be closed at `now`.
    pub fn close_idle(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now >= deadline)
    }
}

/// `timeout` has passed since `since` at `now`; a zero timeout never passes.
fn expired(timeout: Duration, since: Instant, now: Instant) -> bool {
    !timeout.is_zero() && now.saturating_duration_since(since) >= timeout
}

impl Default for Drain {
    fn default() -> Self {
        Drain::new(Drain::DEFAULT_GRACE)
    }
}
