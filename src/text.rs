//! How untrusted text appears in errors and logs.

/// Characters of a bad value shown before it is cut.
const SHOWN: usize = 100;

/// A value as an error message or log line shows it: quoted (so control characters and
/// trailing spaces are visible), and cut after 100 characters with its full size — a config
/// may hold a megabyte where one word was expected, and a worker may send one.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// A message that may embed untrusted text (a key, a value), cut after `max` characters with its
/// full size: one line stays readable whatever a file holds.
pub fn cut(message: &str, max: usize) -> String {
    match message.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes in all)", &message[..at], message.len()),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_cut_with_their_size() {
        assert_eq!(quoted("a\tb"), "\"a\\tb\"");
        let long = "é".repeat(1000);
        let shown = quoted(&long);
        assert!(
            shown.starts_with(&format!("\"{}\"…", "é".repeat(100))),
            "{shown}"
        );
        assert!(shown.ends_with("(2000 bytes)"), "{shown}");
    }

    #[test]
    fn long_messages_are_cut_with_their_size() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 3), "abc… (6 bytes in all)");
    }
}
