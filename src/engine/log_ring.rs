//! The workers' recent output, for `rrbalancer logs`: the last lines the master captured
//! (`[log] stdout`/`stderr`), of every worker and the agent, in the order they came. Bounded as
//! a whole — at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes, a line cut at
//! [`MAX_KEPT_LINE`] — so a thousand workers cost no more than two; a chatty worker pushes the
//! others' older lines out first. Pure: the time of a line is given.

use std::collections::VecDeque;

use super::ids::Place;

/// Lines kept, over all workers.
pub const MAX_LINES: usize = 2_000;
/// Bytes of text kept, over all workers.
pub const MAX_BYTES: usize = 1 << 20;
/// A longer line is kept cut to this many bytes (and says so).
pub const MAX_KEPT_LINE: usize = 4 * 1024;
/// The most lines one `logs` request gets.
pub const MAX_TAIL: usize = 1_000;

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Its number, from 1, over all workers: `logs -f` asks for those after the last it has.
    pub seq: u64,
    pub place: Place,
    pub pid: i32,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    /// When it was read, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub text: String,
}

/// The ring of recent lines.
#[derive(Debug, Default)]
pub struct LogRing {
    lines: VecDeque<Line>,
    bytes: usize,
    seq: u64,
}

impl LogRing {
    /// Keeps `text` (its line ending dropped, invalid UTF-8 replaced, cut at
    /// [`MAX_KEPT_LINE`]), dropping the oldest lines past the bounds.
    pub fn push(
        &mut self,
        place: Place,
        pid: i32,
        stream: &'static str,
        time_ms: u64,
        text: &[u8],
    ) {
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let mut text = String::from_utf8_lossy(&text[..text.len().min(MAX_KEPT_LINE)]).into_owned();
        if text.len() >= MAX_KEPT_LINE {
            text.push_str(" […]");
        }
        self.seq += 1;
        self.bytes += text.len();
        self.lines.push_back(Line {
            seq: self.seq,
            place,
            pid,
            stream,
            time_ms,
            text,
        });
        while self.lines.len() > MAX_LINES || self.bytes > MAX_BYTES {
            let Some(old) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= old.text.len();
        }
    }

    /// The last `n` (at most [`MAX_TAIL`]) lines of the places `wanted` picks, after line
    /// `after` if given, oldest first.
    pub fn tail(&self, wanted: impl Fn(Place) -> bool, after: Option<u64>, n: usize) -> Vec<&Line> {
        let n = n.min(MAX_TAIL);
        let mut picked: Vec<&Line> = (self.lines.iter().rev())
            .take_while(|l| after.is_none_or(|a| l.seq > a))
            .filter(|l| wanted(l.place))
            .take(n)
            .collect();
        picked.reverse();
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_the_last_lines_of_the_places_asked_for_in_order() {
        let mut r = LogRing::default();
        for i in 0..10u64 {
            let place = if i % 2 == 0 {
                Place::Slot(0)
            } else {
                Place::Slot(1)
            };
            r.push(place, 7, "stdout", i, format!("line {i}\n").as_bytes());
        }
        r.push(Place::Agent, 9, "stderr", 10, b"agent says\r\n");
        let texts = |v: Vec<&Line>| v.iter().map(|l| l.text.clone()).collect::<Vec<_>>();
        assert_eq!(
            texts(r.tail(|p| p == Place::Slot(1), None, 2)),
            ["line 7", "line 9"]
        );
        assert_eq!(
            texts(r.tail(|_| true, None, 3)),
            ["line 8", "line 9", "agent says"]
        );
        assert_eq!(
            texts(r.tail(|_| true, Some(9), 100)),
            ["line 9", "agent says"],
            "after 9"
        );
        assert!(r.tail(|_| true, Some(r.seq), 100).is_empty(), "nothing new");
        assert_eq!(r.tail(|_| true, None, 5000).len(), 11);
    }

    #[test]
    fn it_stays_within_its_bounds_dropping_the_oldest() {
        let mut r = LogRing::default();
        for i in 0..(MAX_LINES + 10) {
            r.push(Place::Slot(0), 1, "stdout", 0, format!("{i}").as_bytes());
        }
        assert_eq!(r.lines.len(), MAX_LINES);
        assert_eq!(r.lines.front().unwrap().text, "10", "the oldest went first");
        let mut r = LogRing::default();
        let big = vec![b'x'; 100_000];
        for _ in 0..(MAX_BYTES / MAX_KEPT_LINE + 50) {
            r.push(Place::Slot(0), 1, "stdout", 0, &big);
        }
        assert!(r.bytes <= MAX_BYTES, "{}", r.bytes);
        assert_eq!(r.bytes, r.lines.iter().map(|l| l.text.len()).sum::<usize>());
        assert!(
            r.lines.back().unwrap().text.ends_with(" […]"),
            "a cut line says so"
        );
        assert!(r.lines.back().unwrap().text.len() < MAX_KEPT_LINE + 10);
    }

    #[test]
    fn the_bounds_are_met_exactly() {
        // A long line keeps its first 4 KiB, and says it was cut.
        let mut r = LogRing::default();
        r.push(Place::Slot(0), 1, "stdout", 0, &[b'y'; 5_000]);
        let kept = &r.lines[0].text;
        assert_eq!(kept.len(), 4096 + " […]".len());
        assert!(kept.starts_with(&"y".repeat(4096)) && kept.ends_with(" […]"));
        // Exactly 1 MiB of text is kept whole; one byte more drops the oldest line.
        let mut r = LogRing::default();
        for _ in 0..1024 {
            r.push(Place::Slot(0), 1, "stdout", 0, &[b'z'; 1024]);
        }
        assert_eq!((r.lines.len(), r.bytes), (1024, 1 << 20));
        r.push(Place::Slot(0), 1, "stdout", 0, b"!");
        assert_eq!(r.lines.len(), 1024, "the oldest went");
    }
}
