//! The connections a TCP listener of the master of several apps serves at once (its threads),
//! bounded: a newcomer past the bound takes the seat of the client that has been silent the
//! longest without sending its whole request, whose connection is shut — so a crowd of silent
//! clients keeps no one out for long (the one-app master's monitor gives way the same way).

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Every seat taken.
#[derive(Debug, Default)]
pub struct Seats {
    taken: Mutex<Vec<Seat>>,
}

#[derive(Debug)]
struct Seat {
    id: u64,
    since: Instant,
    /// Its whole request has come: it is being answered, and keeps its seat.
    heard: bool,
    /// A handle on its connection, to shut it when its seat is given to a newcomer.
    stream: TcpStream,
}

/// A seat taken by one connection; given back on drop.
pub struct Taken {
    seats: Arc<Seats>,
    id: u64,
}

impl Seats {
    /// A seat for `stream` (at most `max` taken), or `None` when every seat's client has sent
    /// its request (all are being answered).
    pub fn take(seats: &Arc<Seats>, stream: &TcpStream, max: usize, id: u64) -> Option<Taken> {
        let handle = stream.try_clone().ok()?;
        let mut taken = seats.taken.lock().ok()?;
        if taken.len() >= max {
            let silent = (taken.iter().enumerate())
                .filter(|(_, s)| !s.heard)
                .min_by_key(|(_, s)| s.since)
                .map(|(i, _)| i)?;
            let seat = taken.swap_remove(silent);
            let _ = seat.stream.shutdown(Shutdown::Both);
        }
        taken.push(Seat {
            id,
            since: Instant::now(),
            heard: false,
            stream: handle,
        });
        Some(Taken {
            seats: seats.clone(),
            id,
        })
    }
}

impl Taken {
    /// Its client has sent its whole request.
    pub fn heard(&self) {
        if let Ok(mut taken) = self.seats.taken.lock() {
            if let Some(seat) = taken.iter_mut().find(|s| s.id == self.id) {
                seat.heard = true;
            }
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Ok(mut taken) = self.seats.taken.lock() {
            taken.retain(|s| s.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_takes_the_longest_silent_seat_and_never_a_heard_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = || {
            clients.push(TcpStream::connect(addr).unwrap());
            listener.accept().unwrap().0
        };
        let seats = Arc::new(Seats::default());
        let (a, b, c) = (accepted(), accepted(), accepted());
        let first = Seats::take(&seats, &a, 2, 1).unwrap();
        let second = Seats::take(&seats, &b, 2, 2).unwrap();
        second.heard();
        // Full: c takes a's seat (silent, the oldest), whose connection is shut.
        let third = Seats::take(&seats, &c, 2, 3).expect("a silent seat to take");
        let mut buf = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &a, &mut buf).unwrap(),
            0,
            "a's connection shut"
        );
        third.heard();
        let d = accepted();
        assert!(
            Seats::take(&seats, &d, 2, 4).is_none(),
            "every seat is being answered"
        );
        drop(second);
        assert!(Seats::take(&seats, &d, 2, 4).is_some(), "a seat given back");
        drop(first);
    }
}
