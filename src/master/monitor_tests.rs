//! The monitor's tests: health, request heads, and who makes room.

use super::*;

#[test]
fn health_follows_readiness_and_stop() {
    assert_eq!(
        health(0, false, false),
        Health {
            healthy: false,
            ready: false
        }
    );
    // Not ready until the initial workers all were.
    assert_eq!(
        health(1, false, false),
        Health {
            healthy: true,
            ready: false
        }
    );
    assert_eq!(
        health(2, true, false),
        Health {
            healthy: true,
            ready: true
        }
    );
    // Every slot given up, or stopping.
    assert_eq!(
        health(0, true, false),
        Health {
            healthy: false,
            ready: false
        }
    );
    assert_eq!(
        health(2, true, true),
        Health {
            healthy: true,
            ready: false
        }
    );
}

#[test]
fn request_lines_parse_and_others_do_not() {
    assert_eq!(
        request_target(b"GET /metrics HTTP/1.1"),
        Some("/metrics".into())
    );
    assert_eq!(
        request_target(b"GET /readyz?x=1 HTTP/1.0\r\nHost: a"),
        Some("/readyz".into())
    );
    assert_eq!(request_target(b"POST /metrics HTTP/1.1"), None);
    assert_eq!(request_target(b"\xff\xfe"), None);
    assert_eq!(request_target(b"GET"), None);
}

#[test]
fn an_answered_connection_makes_room_first_then_the_oldest_still_reading() {
    let t = Instant::now();
    let at = |ms| t + std::time::Duration::from_millis(ms);
    let lingering = Stage::Lingering { discarded: 0 };
    let conns = [
        (1, Stage::Writing, at(0)),
        (2, Stage::Reading, at(2)),
        (3, lingering, at(5)),
        (4, Stage::Reading, at(1)),
        (5, lingering, at(3)),
    ];
    assert_eq!(make_room(conns), Some(5));
    assert_eq!(make_room(conns.into_iter().filter(|c| c.0 < 3)), Some(2));
    assert_eq!(make_room(conns.into_iter().filter(|c| c.0 == 1)), Some(1));
    assert_eq!(make_room(Vec::<(usize, Stage, Instant)>::new()), None);
}

#[test]
fn input_is_judged_as_soon_as_it_can_be() {
    use Head::*;
    let get = |t: &str| Get(t.to_owned());
    for (input, head) in [
        (&b""[..], Incomplete),
        (b"GE", Incomplete),
        (b"GET /metr", Incomplete),
        (b"HEAD /healthz HTTP/1.1\r", Incomplete),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Incomplete),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", get("/metrics")),
        (b"GET /readyz?x=1 HTTP/1.0\n\n", get("/readyz")),
        // Not HTTP: no need to wait for a line's end.
        (b"hello", Bad),
        (b"\x16\x03\x01\x02\x00", Bad),
        (b"GET\x00", Bad),
        (b"POST", Bad),
        // A whole line that is not a request line.
        (b"GET /metrics\r\n", Bad),
        (b"GET / SMTP/1.0\r\n\r\n", Bad),
        (b"POST /metrics HTTP/1.1\r\n\r\n", Bad),
    ] {
        assert_eq!(judge(input), head, "{:?}", String::from_utf8_lossy(input));
    }
    let long = [b"GET /".as_slice(), &[b'x'; MAX_REQUEST]].concat();
    assert_eq!(judge(&long), Bad, "too long");
}
