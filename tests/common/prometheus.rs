//! Reading a Prometheus text exposition: our own reading, checked against the Python
//! `prometheus_client` parser's where it can be installed.

use std::io::Write;

/// The samples of a Prometheus text exposition, one a line as `prometheus_client`'s parser
/// prints them: `name [('label', 'value'), …] value`, labels sorted. Parsed here, so the exact
/// counts are checked whatever the machine has; where the Python parser can be installed it
/// must accept the text too and find the same samples (a check of the format itself).
pub fn parsed(text: &str) -> Vec<String> {
    let ours = samples(text);
    match python_parsed(text) {
        Some(theirs) => {
            let key = |l: &String| {
                let (head, value) = l.rsplit_once(' ').unwrap();
                (head.to_owned(), value.parse::<f64>().unwrap().to_bits())
            };
            let mut a: Vec<_> = ours.iter().map(key).collect();
            let mut b: Vec<_> = theirs.iter().map(key).collect();
            a.sort();
            b.sort();
            assert_eq!(a, b, "prometheus_client reads other samples:\n{text}");
        }
        None => eprintln!("(prometheus_client not installable here: format not cross-checked)"),
    }
    ours
}

/// [`parsed`]'s own reading: every sample line, `#` lines and blank ones skipped.
fn samples(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = match line.rfind('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => line.split_once(' ').expect("name value"),
        };
        let value: f64 = match value.split(' ').next().unwrap() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, label_pairs(rest.strip_suffix('}').unwrap())),
            None => (series, Vec::new()),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels: Vec<String> = labels
            .into_iter()
            .map(|(k, v)| format!("('{k}', '{v}')"))
            .collect();
        labels.sort();
        out.push(format!("{name} [{}] {value:?}", labels.join(", ")));
    }
    out
}

/// `a="x",b="y"` as pairs, with the text format's escapes undone.
fn label_pairs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("an escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end + 1..];
    }
    pairs
}

/// The Python Prometheus parser's reading, where it can be installed.
fn python_parsed(text: &str) -> Option<Vec<String>> {
    let bin = super::pypi_venv()?;
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n\
                  \x20   for s in f.samples:\n\
                  \x20       print(s.name, sorted(s.labels.items()), s.value)\n";
    let mut child = std::process::Command::new(bin.join("python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}
