//! Asking an app's master over its control socket, blocking, within a time: what the control
//! and HTTP threads of the master of all need (never its event loop).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::wire::control::{Reply, Request};

/// Sends `line` to the master at `socket`; its first answer line, within `wait`.
pub fn ask_line(socket: &Path, line: &[u8], wait: Duration) -> Result<Reply, String> {
    let reader = exchange(socket, line, wait)?;
    first_reply(reader)
}

/// [`ask_line`] with a request.
pub fn ask(socket: &Path, request: &Request, wait: Duration) -> Result<Reply, String> {
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    ask_line(socket, &line, wait)
}

fn exchange(socket: &Path, line: &[u8], wait: Duration) -> Result<BufReader<UnixStream>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            "its master does not answer on its control socket (starting, or gone)".to_owned()
        }
        _ => format!("{}: {e}", socket.display()),
    })?;
    let _ = stream.set_read_timeout(Some(wait));
    let _ = stream.set_write_timeout(Some(wait));
    stream.write_all(line).map_err(|e| e.to_string())?;
    Ok(BufReader::new(stream))
}

fn first_reply(mut reader: BufReader<UnixStream>) -> Result<Reply, String> {
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => Err("its master closed the connection without answering".into()),
        Ok(_) => serde_json::from_str(&answer).map_err(|e| format!("a bad answer: {e}")),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!(
                "no answer from its master within {wait:?}",
                wait = reader
                    .get_ref()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Sends `line` to the master at `socket` and copies everything it answers to `client` until
/// it closes (a `logs`, a `reload --wait`, a `stop` answered then closed at exit), within
/// `wait`. `Err`: it could not be asked (nothing was copied).
pub fn forward(
    socket: &Path,
    line: &[u8],
    client: &mut UnixStream,
    wait: Duration,
) -> Result<(), String> {
    let mut reader = exchange(socket, line, wait)?;
    let mut buf = [0u8; 16 * 1024];
    let mut copied = 0usize;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                copied += n;
                if client.write_all(&buf[..n]).is_err() {
                    break; // the client left
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if copied == 0 => return Err(format!("no answer from its master: {e}")),
            Err(_) => break,
        }
    }
    Ok(())
}
