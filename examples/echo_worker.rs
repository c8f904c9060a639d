//! A standalone rrbalancer worker built on the `rrbalancer::worker` library: a line-echo server
//! with one thread per connection.
//!
//! ```text
//! cargo build --example echo_worker
//! cargo run -- --config config/echo.toml
//! printf 'hello\n' | nc -q1 127.0.0.1 4000     # → "worker 0 (pid …): hello"
//! ```
//!
//! Works in both policies: connections come from the channel in `rr` mode, and from the
//! inherited listeners in `none` mode.

use std::io::{BufRead, BufReader, Write};
use std::thread;

use rrbalancer::worker::{self, Channel, Listener, Stream};

fn serve(stream: Stream) {
    let id = worker::worker_id();
    let pid = std::process::id();
    let (reader, mut writer) = match stream {
        Stream::Tcp(s) => match s.try_clone() {
            Ok(r) => (Box::new(r) as Box<dyn std::io::Read + Send>, Stream::Tcp(s)),
            Err(_) => return,
        },
        Stream::Unix(s) => match s.try_clone() {
            Ok(r) => (
                Box::new(r) as Box<dyn std::io::Read + Send>,
                Stream::Unix(s),
            ),
            Err(_) => return,
        },
    };
    for line in BufReader::new(reader).lines().map_while(Result::ok) {
        if writeln!(writer, "worker {id} (pid {pid}): {line}").is_err() {
            break;
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut channel = Channel::from_env()?;
    // `none` mode: accept on the inherited listeners ourselves.
    for listener in worker::listeners()? {
        thread::spawn(move || match listener {
            Listener::Tcp(l) => {
                for s in l.incoming().map_while(Result::ok) {
                    thread::spawn(move || serve(Stream::Tcp(s)));
                }
            }
            Listener::Unix(l) => {
                for s in l.incoming().map_while(Result::ok) {
                    thread::spawn(move || serve(Stream::Unix(s)));
                }
            }
        });
    }
    channel.ready()?;
    // `rr` mode: connections arrive on the channel, already acked by the iterator. It ends when
    // the master says `stop` (or goes away); then we exit, and the threads with us.
    for conn in channel.incoming() {
        let conn = conn?;
        thread::spawn(move || serve(conn.stream));
    }
    Ok(())
}
