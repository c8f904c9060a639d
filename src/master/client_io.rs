//! Reading and writing the master's own clients (the control socket's, the monitoring
//! listener's) without blocking: what each turn of the loop can, no more.

use std::io::{self, Read, Write};

/// How reading went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// Nothing more now (or `input` passed its bound).
    Open,
    /// The client closed its side.
    Ended,
    /// The connection is broken.
    Broken,
}

/// Appends what `stream` has now to `input`, until it would block, ends, or `input` passes
/// `max` bytes.
pub fn read_available(stream: &mut impl Read, input: &mut Vec<u8>, max: usize) -> Got {
    let mut buf = [0u8; 2048];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Got::Ended,
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Got::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Got::Broken,
        }
        if input.len() > max {
            return Got::Open;
        }
    }
}

/// Reads what `stream` has now and drops it, until it would block, ends, or `budget` bytes
/// are read: how reading went, and how much was dropped.
pub fn discard_available(stream: &mut impl Read, budget: usize) -> (Got, usize) {
    let mut buf = [0u8; 16 * 1024];
    let mut dropped = 0;
    while dropped < budget {
        match stream.read(&mut buf) {
            Ok(0) => return (Got::Ended, dropped),
            Ok(n) => dropped += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (Got::Open, dropped),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (Got::Broken, dropped),
        }
    }
    (Got::Open, dropped)
}

/// How writing went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// `output` is written (and empty).
    All,
    /// The rest waits for the stream to be writable.
    Blocked,
    /// The connection is broken; `output` is dropped.
    Broken,
}

/// Writes as much of `output` as `stream` takes now, removing what was written.
pub fn write_pending(stream: &mut impl Write, output: &mut Vec<u8>) -> Sent {
    while !output.is_empty() {
        match stream.write(output) {
            Ok(n) => {
                output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                output.clear();
                return Sent::Broken;
            }
        }
    }
    Sent::All
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_at_the_bound_and_says_how_it_ended() {
        let mut input = Vec::new();
        assert_eq!(
            read_available(&mut &b"hello"[..], &mut input, 100),
            Got::Ended
        );
        assert_eq!(input, b"hello");
        let long = vec![b'x'; 10_000];
        let mut input = Vec::new();
        assert_eq!(read_available(&mut &long[..], &mut input, 10), Got::Open);
        assert!(input.len() > 10 && input.len() <= 2048 + 10);
    }

    #[test]
    fn discarding_stops_at_the_budget_or_the_end() {
        let long = vec![b'x'; 100_000];
        let (got, n) = discard_available(&mut &long[..], 20_000);
        assert_eq!(got, Got::Open);
        assert!((20_000..20_000 + 16 * 1024).contains(&n), "{n}");
        assert_eq!(
            discard_available(&mut &long[..], 1 << 20),
            (Got::Ended, 100_000)
        );
    }

    #[test]
    fn writing_drains_what_was_written() {
        let mut sink = Vec::new();
        let mut output = b"answer\n".to_vec();
        assert_eq!(write_pending(&mut sink, &mut output), Sent::All);
        assert!(output.is_empty());
        assert_eq!(sink, b"answer\n");
    }
}
