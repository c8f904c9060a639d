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
}
