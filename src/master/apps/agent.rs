//! `[metrics] haproxy_agent` of the master of several apps: HAProxy's agent-check for every app
//! at once, or for the one named. A backend per app names its app with HAProxy's `agent-send`
//! (`agent-send "api\n"`): the answer is that app's — `up ready N%` (N: the share of its ready
//! workers holding no connection un-acked, at least 1), `drain` while its master drains or
//! stops, `down` while none serves. Without a name (nothing sent within [`NAME_WAIT`]), the
//! host's: the apps that listen summarized (`engine::agent_check::summarize`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use log::warn;

use super::Link;
use super::fan_out::recent_statuses;
use super::seats::Seats;
use crate::config::MetricsConfig;
use crate::engine::agent_check::{HostState, line, summarize};
use crate::wire::apps_control::AppStatus;

/// How long an `agent-send` line may take to come (HAProxy sends it as it connects).
const NAME_WAIT: Duration = Duration::from_millis(100);

/// Serves the agent-check on a thread of its own, a thread per connection.
pub fn serve(listener: TcpListener, config: MetricsConfig, link: Link) {
    let seats = std::sync::Arc::new(Seats::default());
    let mut id = 0u64;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Some(stream) = super::accepted(stream) else {
                continue;
            };
            if !stream.peer_addr().is_ok_and(|a| config.allows(a.ip())) {
                continue; // closed unanswered
            }
            id += 1;
            let Some(admitted) = Seats::take(&seats, &stream, super::MAX_CONNECTIONS, id) else {
                continue;
            };
            let link = link.clone();
            std::thread::spawn(move || {
                answer(stream, &link, &admitted);
            });
        }
        warn!("haproxy agent listener: stopped accepting");
    });
}

fn answer(mut stream: TcpStream, link: &Link, seat: &super::seats::Taken) {
    let _ = stream.set_read_timeout(Some(NAME_WAIT));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < buf.len() && !buf[..got].contains(&b'\n') {
        match stream.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    seat.heard();
    let name = String::from_utf8_lossy(&buf[..got]).trim().to_owned();
    let apps = recent_statuses(link);
    let reply = if name.is_empty() {
        let states: Vec<(HostState, u8)> =
            (apps.iter()).filter(|a| a.listens).map(state_of).collect();
        let (state, percent) = summarize(&states);
        line(state, percent)
    } else {
        match apps.iter().find(|a| a.name == name) {
            Some(app) => {
                let (state, percent) = state_of(app);
                line(state, percent)
            }
            None => "down\n".to_owned(),
        }
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// An app, as the balancer in front sees it.
fn state_of(app: &AppStatus) -> (HostState, u8) {
    let Some(status) = &app.status else {
        return match app.state.as_str() {
            "stopping" => (HostState::Draining, 0),
            _ => (HostState::Down, 0),
        };
    };
    if status.stopping || status.drain_left_ms.is_some() {
        return (HostState::Draining, 0);
    }
    let ready: Vec<_> = status.ready_workers().collect();
    if ready.is_empty() {
        return (HostState::Down, 0);
    }
    let free = ready.iter().filter(|w| w.unacked == 0).count();
    let percent = (free * 100 / ready.len()) as u8;
    (HostState::Serving, percent.max(1))
}
