//! The process's log lines (env_logger underneath), in text or JSON (`[log] format`).
//!
//! Text: `[time LEVEL pid target] message` — the writer's pid, because during an upgrade two
//! masters (and the demo workers) share one stream. JSON: one object per line, for log
//! shippers: `time`, `level`, `process` (the writer's pid), `target`, `event` (the message's
//! leading words: `worker ready`, `listening on`), `message`, and each `key=value` of the
//! message as a key of its own (`"slot":0,"pid":4215`; numbers as numbers).
//!
//! The format is chosen before the configuration is read (from `RRB_LOG_FORMAT`, which the
//! master passes on to its workers so that the demo worker writes the same), and again once it
//! is read.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::LogFormat;

/// Set when lines are to be JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Installs the logger: level from `RUST_LOG` (default info), format from `RRB_LOG_FORMAT`.
pub fn init() {
    if std::env::var(crate::wire::env::LOG_FORMAT).is_ok_and(|v| v == "json") {
        set_format(LogFormat::Json);
    }
    // The master of one app of several: its lines say which (`app=NAME`).
    let app = std::env::var(crate::wire::env::APP)
        .ok()
        .filter(|a| crate::config::valid_app_name(a));
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            let message = record.args().to_string();
            if JSON.load(Ordering::Relaxed) {
                let mut line = json_line(
                    &buf.timestamp_millis().to_string(),
                    record.level().as_str(),
                    record.target(),
                    &message,
                );
                if let Some(app) = &app {
                    // `{"app":"api",…`: its name has no character JSON escapes.
                    line.insert_str(1, &format!("\"app\":\"{app}\","));
                }
                writeln!(buf, "{line}")
            } else {
                let style = buf.default_level_style(record.level());
                let app = app
                    .as_deref()
                    .map_or(String::new(), |a| format!(" app={a}"));
                writeln!(
                    buf,
                    "[{} {style}{:<5}{style:#} {} {}{app}] {message}",
                    buf.timestamp_millis(),
                    record.level(),
                    std::process::id(),
                    record.target(),
                )
            }
        })
        .init();
}

/// Switches the format from now on.
pub fn set_format(format: LogFormat) {
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// One JSON log line.
fn json_line(time: &str, level: &str, target: &str, message: &str) -> String {
    use serde_json::{Map, Value};
    let mut object = Map::new();
    object.insert("time".into(), Value::from(time));
    object.insert("level".into(), Value::from(level));
    object.insert("process".into(), Value::from(std::process::id()));
    object.insert("target".into(), Value::from(target));
    object.insert("event".into(), Value::from(event(message)));
    object.insert("message".into(), Value::from(message));
    for (key, value) in fields(message) {
        if object.contains_key(key) {
            continue; // never overwrite the line's own keys
        }
        let value = value
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(value));
        object.insert(key.to_owned(), value);
    }
    Value::Object(object).to_string()
}

/// The message's leading words, up to the first that is not a plain word (a number, an
/// address, a `key=value`); a trailing `:`, `;` or `,` ends it too.
fn event(message: &str) -> String {
    let mut words = Vec::new();
    for word in message.split_whitespace() {
        let (word, last) = match word.strip_suffix([':', ';', ',']) {
            Some(w) => (w, true),
            None => (word, false),
        };
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_' || c == '`');
        if !plain {
            break;
        }
        words.push(word.trim_matches('`'));
        if last {
            break;
        }
    }
    words.join(" ")
}

/// The `key=value` pairs of a message (`slot=0`, `pid=4215`): keys of lowercase letters and
/// `_`, values up to the next space, without trailing `,`, `;` or `:`.
fn fields(message: &str) -> impl Iterator<Item = (&str, &str)> {
    message.split_whitespace().filter_map(|word| {
        let (key, value) = word.split_once('=')?;
        let value = value.trim_end_matches([',', ';', ':']);
        let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        (key_ok && !value.is_empty()).then_some((key, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_has_the_event_and_the_messages_fields_as_keys() {
        let line = json_line(
            "2026-11-23T21:00:00.000Z",
            "WARN",
            "rrbalancer::master::supervisor",
            "worker exited unasked slot=1 pid=4215: exit code 3 (up 2s)",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["event"], "worker exited unasked");
        assert_eq!(v["slot"], 1);
        assert_eq!(v["pid"], 4215);
        assert_eq!(v["process"], std::process::id());
        assert!(!line.contains('\n'), "one line");
        // A message cannot overwrite the line's own keys; quotes and newlines are escaped.
        let line = json_line("t", "INFO", "x", "odd level=9 \"quoted\"\nnext");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn events_are_the_leading_plain_words() {
        assert_eq!(event("listening on 127.0.0.1:3000"), "listening on");
        assert_eq!(event("worker ready slot=0 pid=7 after 3ms"), "worker ready");
        assert_eq!(event("upgrade: started pid 42"), "upgrade");
        assert_eq!(event("`listen` 127.0.0.1:0: the socket"), "listen");
        assert_eq!(
            event("all workers have exited; bye"),
            "all workers have exited"
        );
        assert_eq!(event("42"), "");
    }
}
