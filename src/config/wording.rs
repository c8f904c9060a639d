//! serde's and toml's words for a bad value, put in the file's terms: no Rust type names
//! (`struct FileWorker`, `u32`, "a sequence"), and for a key that does not exist, the one
//! meant. Pure: a message in, a message out.

/// `message` (what the deserializer said about `key`) as a person reads it.
pub(super) fn for_people(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((unknown, expected)) = rest.split_once('`') {
            return unknown_key(unknown, &names_in(expected));
        }
    }
    if let Some((got, _)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected struct "))
    {
        let section = key.rsplit('.').next().unwrap_or(key);
        let mut said = format!(
            "`{key}` is a section, written `[{key}]` on a line of its own with its keys \
             below, not {got}"
        );
        if let Some(meant) = closest(section, TOP_LEVEL_VALUES) {
            said.push_str(&format!("; did you mean `{meant}`?"));
        }
        return said;
    }
    for (rust, plain) in [
        (
            "expected a sequence",
            "expected a list, such as [\"a\", \"b\"]",
        ),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected a map", "expected a table"),
        (
            "wanted string or table",
            "expected a quoted word (see README for the values)",
        ),
    ] {
        if let Some(at) = message.find(rust) {
            return format!("{}{plain}{}", &message[..at], &message[at + rust.len()..]);
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((got, expected)) = rest.split_once('`') {
            let allowed: Vec<String> = names_in(expected)
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            return format!("\"{got}\" is not one of {}", allowed.join(", "));
        }
    }
    message.to_owned()
}

/// The top-level keys that take a value (not a section), for "did you mean".
const TOP_LEVEL_VALUES: &[&str] = &["listen", "workers", "sched_policy", "backlog"];

/// "unknown key `x`; did you mean `y`?", with the keys allowed where it stands.
fn unknown_key(unknown: &str, allowed: &[String]) -> String {
    let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let mut said = format!("unknown key `{unknown}`");
    if let Some(meant) = closest(unknown, &names) {
        said.push_str(&format!("; did you mean `{meant}`?"));
    }
    if !names.is_empty() {
        said.push_str(&format!(" (allowed here: {})", names.join(", ")));
    }
    said
}

/// The backticked names in serde's "expected one of `a`, `b`" (or "expected `a`").
fn names_in(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The name in `names` nearest to `word`: within two edits (one for a short word), or one that
/// `word` is the start of (or starts with). `None` when nothing is near or `word` is a name.
fn closest<'a>(word: &str, names: &[&'a str]) -> Option<&'a str> {
    let limit = if word.len() <= 4 { 1 } else { 2 };
    names
        .iter()
        .filter(|n| **n != word)
        .map(|n| (edits(word, n), *n))
        .filter(|&(d, n)| {
            d <= limit || (word.len() >= 3 && (n.starts_with(word) || word.starts_with(n)))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Edits from `a` to `b`, by characters: insertions, deletions, substitutions, and swaps of
/// two neighbours (`exce` is one edit from `exec`).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rust_type_reaches_the_reader_and_a_typo_gets_its_key() {
        let said = for_people(
            "worker",
            "invalid type: integer `2`, expected struct FileWorker",
        );
        assert!(
            !said.contains("FileWorker") && !said.contains("struct"),
            "{said}"
        );
        assert!(
            said.contains("[worker]") && said.contains("did you mean `workers`?"),
            "{said}"
        );
        let said = for_people(
            "wokers",
            "unknown field `wokers`, expected one of `listen`, `workers`, `sched_policy`",
        );
        assert!(
            said.starts_with("unknown key `wokers`; did you mean `workers`?"),
            "{said}"
        );
        assert!(
            said.contains("allowed here: listen, workers, sched_policy"),
            "{said}"
        );
        let said = for_people(
            "worker.exce",
            "unknown field `exce`, expected one of `exec`, `args`",
        );
        assert!(said.contains("did you mean `exec`?"), "{said}");
        let said = for_people(
            "x",
            "unknown field `zzzzzz`, expected one of `exec`, `args`",
        );
        assert!(!said.contains("did you mean"), "nothing near: {said}");
        let said = for_people(
            "restart.max_restarts",
            "invalid value: integer `-1`, expected u32",
        );
        assert_eq!(
            said,
            "invalid value: integer `-1`, expected a whole number, 0 or more"
        );
        let said = for_people("sched_policy", "wanted string or table");
        assert!(!said.contains("table"), "{said}");
        let said = for_people(
            "sched_policy",
            "unknown variant `rrr`, expected `rr` or `none`",
        );
        assert_eq!(said, "\"rrr\" is not one of \"rr\", \"none\"");
        let plain = "expected a duration string such as \"5s\"";
        assert_eq!(for_people("k", plain), plain, "already plain: unchanged");
    }

    #[test]
    fn nearness_is_edits_or_a_common_start() {
        assert_eq!(edits("kitten", "sitting"), 3);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(
            (edits("ab", "abc"), edits("abc", "ab"), edits("abc", "abd")),
            (1, 1, 1)
        );
        // Two edits reach a long word, one a short one (a short word two edits away is
        // another word).
        assert_eq!(closest("bocklug", TOP_LEVEL_VALUES), Some("backlog"));
        assert_eq!(closest("lstn", TOP_LEVEL_VALUES), None);
        assert_eq!(edits("exce", "exec"), 1, "a swap is one edit");
        for (a, b) in [
            ("bacdef", "abcdef"),
            ("abcdfe", "abcdef"),
            ("abdcef", "abcdef"),
        ] {
            assert_eq!(edits(a, b), 1, "a swap anywhere is one edit: {a}");
        }
        assert_eq!(closest("worker", TOP_LEVEL_VALUES), Some("workers"));
        assert_eq!(closest("sched", TOP_LEVEL_VALUES), Some("sched_policy"));
        assert_eq!(closest("lisen", TOP_LEVEL_VALUES), Some("listen"));
        assert_eq!(
            closest("workers", TOP_LEVEL_VALUES),
            None,
            "a name is not near itself"
        );
        assert_eq!(closest("ab", &["abcdef"]), None, "too short to be a start");
    }
}
