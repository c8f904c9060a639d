//! Tidy: the layering rules of the source tree, checked on the text of `src/` so that they
//! cannot drift (TigerBeetle's `tidy.zig` is the model). No process is started.
//!
//! 1. Each top-level module of `src/` is one layer, and imports only the layers [`LAYERS`]
//!    lists for it: `cli → master → engine → wire → text`, with `config` and `sys` beside
//!    (README's "Source layout" draws it). Nothing imports `cli`; the engine never the master.
//! 2. The engine (`src/engine/`, the sans-I/O core) does no I/O and reads no clock outside its
//!    tests: no mio, socket2, libc, `std::fs`/`process`/`env`/`net` sockets, no `crate::sys`,
//!    no `Instant::now`/`SystemTime`; of nix only the value types `Pid` and `Signal`. `now` and
//!    seeds are arguments.
//! 3. No import cycle between the modules of `src/master/`, nor of `src/engine/` (a folder
//!    counts as one module; a folder's root, `mod.rs`, which declares them all, is left out).
//! 4. `src/wire/` (byte formats and environment names, used by both sides of a boundary)
//!    imports nothing of the crate but `text`, and does no I/O of its own.
//! 5. Files at most [`MAX_FILE_LINES`] lines, functions at most [`MAX_FN_LINES`]: today's
//!    exceptions are listed with their size now, which they may not outgrow; one that shrank
//!    must have its entry lowered, and one under the limit must leave the list (the ratchet
//!    only turns one way).
//! 6. Every `unsafe` is in `src/sys/`, each with a `SAFETY` comment just above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 120;

/// Each layer (a top-level module of `src/`) and the layers it may import.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "lib",
        &[
            "cli", "config", "demo", "engine", "logging", "master", "sys", "text", "wire", "worker",
        ],
    ),
    ("main", &[]),
    (
        "cli",
        &["config", "demo", "logging", "master", "sys", "text", "wire"],
    ),
    (
        "master",
        &["config", "engine", "logging", "sys", "text", "wire"],
    ),
    ("engine", &["config", "text", "wire"]),
    ("config", &["text", "wire"]),
    ("logging", &["config", "wire"]),
    ("worker", &["sys", "text", "wire"]),
    ("demo", &["text", "wire", "worker"]),
    ("wire", &["text"]),
    ("sys", &[]),
    ("text", &[]),
];

/// What the engine may not name outside its tests, and why.
const CORE_FORBIDDEN: &[(&str, &str)] = &[
    ("mio::", "the event loop is the shell's"),
    ("socket2", "sockets are the shell's"),
    ("libc::", "system calls are the shell's (sys)"),
    ("crate::sys", "system calls are the shell's"),
    ("std::fs", "files are the shell's"),
    ("std::process", "processes are the shell's"),
    ("std::env", "the environment is the shell's"),
    ("std::net::Tcp", "sockets are the shell's"),
    ("std::os::", "fds are the shell's"),
    ("Instant::now", "`now` is an argument"),
    ("SystemTime", "`now` and seeds are arguments"),
    ("thread::sleep", "the core never waits"),
];

/// Of nix, the engine may name these value types (a pid, a signal number), nothing that acts.
const NIX_VALUES: &[&str] = &["nix::unistd::Pid", "nix::sys::signal::Signal"];

/// Files over [`MAX_FILE_LINES`] today, with their size now: they may shrink, not grow.
const FILE_EXCEPTIONS: &[(&str, usize)] = &[
    ("src/master/control_socket.rs", 562),
    ("src/master/node.rs", 537),
    ("src/engine/sim/handoff.rs", 540),
    ("src/engine/sim/supervision.rs", 649),
];

/// Functions over [`MAX_FN_LINES`] today (file, name), with their length now.
const FN_EXCEPTIONS: &[(&str, &str, usize)] = &[
    ("src/engine/sim/handoff.rs", "step", 206),
    ("src/engine/sim/supervision.rs", "step", 179),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, relative to the crate root, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(root()).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The lines of a file before its tests (`#[cfg(test)]` at the start of a line: the test
/// module, or test-only items, which by our habit come last), comments dropped.
fn code_before_tests(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| !l.starts_with("#[cfg(test)]"))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
        .collect()
}

/// A file that only tests compile: `tests.rs`, `*_tests.rs`, under a `tests/` folder, or a
/// simulator's.
fn test_only(path: &Path) -> bool {
    path.iter().any(|c| c == "tests" || c == "sim")
        || path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().ends_with("tests.rs"))
}

/// The module path of a file: `src/master/upgrade_link/old_master.rs` →
/// `[master, upgrade_link, old_master]`; a `mod.rs` is its folder; `lib.rs` the root, `[]`.
fn module_path(path: &Path) -> Vec<String> {
    let rel = path.strip_prefix("src").unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// Every crate path a file's non-test code names, resolved to an absolute module path and
/// cut after its first name past the prefix: `super::super::x::Y` in `[master, a, b]` →
/// `[master, x]`; `crate::{a, b::c}` → `[a]` and `[b]`.
fn imports(path: &Path, text: &str) -> BTreeSet<Vec<String>> {
    let own = module_path(path);
    let mut out = BTreeSet::new();
    for (_, line) in code_before_tests(text) {
        let mut rest = line;
        while let Some(at) = [rest.find("crate::"), rest.find("super::")]
            .into_iter()
            .flatten()
            .min()
        {
            let longer = rest[..at].ends_with("::") || rest[..at].ends_with('$');
            let mut base = Vec::new();
            if let Some(r) = rest[at..].strip_prefix("crate::") {
                rest = r;
            } else {
                base = own.clone();
                rest = &rest[at..];
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
            }
            if longer {
                continue; // inside a longer path (`$crate::`, `x::super::`): not a path of ours
            }
            for name in first_names(rest) {
                if !name.is_empty() {
                    let mut p = base.clone();
                    p.push(name);
                    out.insert(p);
                }
            }
        }
    }
    out
}

/// The layer of a module path: its first name (`lib` for the crate root).
fn layer(module: &[String]) -> String {
    module.first().cloned().unwrap_or_else(|| "lib".into())
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut found = Vec::new();
    let mut edges = BTreeSet::new();
    for path in sources(Path::new("src")) {
        if test_only(&path) {
            continue;
        }
        let from = layer(&module_path(&path));
        let Some(allowed) = layers.get(from.as_str()) else {
            found.push(format!(
                "{}: layer `{from}` is not in LAYERS",
                path.display()
            ));
            continue;
        };
        for to in imports(&path, &read(&path)) {
            let to = layer(&to);
            if to != from && layers.contains_key(to.as_str()) {
                edges.insert((from.clone(), to.clone()));
                if !allowed.contains(&to.as_str()) {
                    found.push(format!("{}: {from} → {to}", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "an arrow against the layers:\n{}",
        found.join("\n")
    );
    // The graph is read at all: the master drives the engine.
    assert!(
        edges.contains(&("master".into(), "engine".into())),
        "{edges:?}"
    );
}

#[test]
fn the_engine_does_no_io_and_reads_no_clock() {
    let mut found = Vec::new();
    let files: Vec<PathBuf> = sources(Path::new("src/engine"))
        .into_iter()
        .filter(|p| !test_only(p))
        .collect();
    assert!(files.len() > 20, "{files:?}");
    for path in files {
        let text = read(&path);
        for (n, line) in code_before_tests(&text) {
            for (what, why) in CORE_FORBIDDEN {
                if line.contains(what) {
                    found.push(format!("{}:{n}: `{what}`: {why}", path.display()));
                }
            }
            let mut rest = line;
            while let Some(at) = rest.find("nix::") {
                let tail = &rest[at..];
                if !NIX_VALUES.iter().any(|v| tail.starts_with(v)) {
                    found.push(format!(
                        "{}:{n}: `{}`: of nix the engine names only {NIX_VALUES:?}",
                        path.display(),
                        tail.split([';', ' ', ',']).next().unwrap_or(tail)
                    ));
                }
                rest = &tail[5..];
            }
        }
    }
    assert!(found.is_empty(), "I/O in the engine:\n{}", found.join("\n"));
}

#[test]
fn the_wire_layer_is_a_leaf() {
    let mut found = Vec::new();
    for path in sources(Path::new("src/wire")) {
        let text = read(&path);
        for (n, line) in code_before_tests(&text) {
            for what in ["mio::", "socket2", "libc::", "std::fs", "Instant::now"] {
                if line.contains(what) {
                    found.push(format!("{}:{n}: `{what}`", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "wire/ holds byte formats and environment names, no I/O:\n{}",
        found.join("\n")
    );
}

#[test]
fn unsafe_lives_in_sys_each_with_its_safety_comment() {
    let mut found = Vec::new();
    let mut seen = 0;
    for path in sources(Path::new("src")) {
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let Some(at) = code.find("unsafe ").or_else(|| code.find("unsafe{")) else {
                continue;
            };
            if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // a longer name
            }
            let n = i + 1;
            if !path.starts_with("src/sys") {
                found.push(format!("{}:{n}: `unsafe` outside src/sys/", path.display()));
                continue;
            }
            seen += 1;
            // Its SAFETY comment: on one of the few lines above (or the doc of an `unsafe fn`).
            let above = lines[i.saturating_sub(8)..i].iter().rev();
            let said = above
                .take_while(|l| !l.trim().is_empty() || l.trim_start().starts_with("//"))
                .any(|l| l.contains("SAFETY") || l.contains("# Safety"));
            if !said {
                found.push(format!(
                    "{}:{n}: `unsafe` without a SAFETY comment",
                    path.display()
                ));
            }
        }
    }
    assert!(seen > 5, "the scan finds sys's unsafe blocks ({seen})");
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// `x::…` → [x]; `{x, y::{…}, z}` → [x, y, z].
fn first_names(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(inner) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let (mut depth, mut names, mut start) = (0, Vec::new(), 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&inner[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&inner[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names
}

/// Module → the modules it imports, over the non-test code of one folder of `src/` (each
/// file or sub-folder one module; the folder's `mod.rs`, its root, left out).
fn folder_graph(folder: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files: Vec<PathBuf> = sources(&Path::new("src").join(folder))
        .into_iter()
        .filter(|p| !test_only(p))
        .collect();
    let module_of = |path: &Path| module_path(path).get(1).cloned();
    let modules: BTreeSet<String> = files.iter().filter_map(|p| module_of(p)).collect();
    for path in &files {
        let Some(module) = module_of(path) else {
            continue; // the root
        };
        let edges = graph.entry(module.clone()).or_default();
        for to in imports(path, &read(path)) {
            if to.first().map(String::as_str) == Some(folder) {
                if let Some(to) = to.get(1).filter(|t| **t != module && modules.contains(*t)) {
                    edges.insert(to.clone());
                }
            }
        }
    }
    graph
}

/// The first import cycle of a graph, if any (depth-first; a grey node met again closes one).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Grey,
        Black,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Black) => return None,
            Some(Mark::Grey) => {
                let from = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[from..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Grey);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Black);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn no_import_cycle_in_the_master_or_the_engine() {
    for folder in ["master", "engine"] {
        let graph = folder_graph(folder);
        if let Some(cycle) = cycle(&graph) {
            panic!("import cycle in src/{folder}: {}", cycle.join(" → "));
        }
    }
    // The graphs are read at all: the supervisor imports the fleet; the process table the
    // processes' output pipes.
    assert!(folder_graph("engine")["supervisor"].contains("fleet"));
    let master = folder_graph("master");
    assert!(master.values().any(|e| e.contains("output")), "{master:?}");
    let looped = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(cycle(&looped).unwrap(), ["a", "b", "a"]);
}

/// Every function's length in lines, from its `fn` line to its closing brace (rustfmt's
/// layout: the brace at the `fn`'s indentation).
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let sig = [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ]
        .iter()
        .fold(trimmed, |s, p| s.strip_prefix(p).unwrap_or(s));
        let Some(name) = sig.strip_prefix("fn ") else {
            continue;
        };
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue; // a declaration
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            out.push((name, end - i + 1));
        }
    }
    out
}

#[test]
fn files_and_functions_stay_within_their_limits() {
    let mut found = Vec::new();
    let mut files_seen = BTreeSet::new();
    let mut fns_seen = BTreeSet::new();
    for path in sources(Path::new("src")) {
        let name = path.to_string_lossy().into_owned();
        let text = read(&path);
        let lines = text.lines().count();
        let limit = FILE_EXCEPTIONS
            .iter()
            .find(|(f, _)| *f == name)
            .map(|&(_, n)| n);
        match limit {
            Some(n) if lines > n => found.push(format!("{name}: {lines} lines, grown past {n}")),
            Some(n) if lines < n && lines > MAX_FILE_LINES => found.push(format!(
                "{name}: {lines} lines, shrunk from {n}: lower its FILE_EXCEPTIONS entry to {lines}"
            )),
            Some(_) if lines <= MAX_FILE_LINES => found.push(format!(
                "{name}: {lines} lines, within {MAX_FILE_LINES} now: take it off FILE_EXCEPTIONS"
            )),
            Some(_) => {
                files_seen.insert(name.clone());
            }
            None if lines > MAX_FILE_LINES => {
                found.push(format!("{name}: {lines} lines (at most {MAX_FILE_LINES})"))
            }
            None => {}
        }
        for (func, len) in functions(&text) {
            let limit = FN_EXCEPTIONS
                .iter()
                .find(|(f, n, _)| *f == name && *n == func)
                .map(|&(_, _, n)| n);
            match limit {
                Some(n) if len > n => {
                    found.push(format!("{name}: fn {func}: {len} lines, grown past {n}"))
                }
                Some(n) if len < n && len > MAX_FN_LINES => found.push(format!(
                    "{name}: fn {func}: {len} lines, shrunk from {n}: lower its FN_EXCEPTIONS \
                     entry to {len}"
                )),
                Some(_) if len <= MAX_FN_LINES => found.push(format!(
                    "{name}: fn {func}: {len} lines, within {MAX_FN_LINES} now: take it off \
                     FN_EXCEPTIONS"
                )),
                Some(_) => {
                    fns_seen.insert((name.clone(), func));
                }
                None if len > MAX_FN_LINES => found.push(format!(
                    "{name}: fn {func}: {len} lines (at most {MAX_FN_LINES})"
                )),
                None => {}
            }
        }
    }
    for (file, _) in FILE_EXCEPTIONS {
        if !files_seen.contains(*file) && !found.iter().any(|f| f.starts_with(file)) {
            found.push(format!("{file}: listed in FILE_EXCEPTIONS but gone"));
        }
    }
    for (file, func, _) in FN_EXCEPTIONS {
        let seen = fns_seen.contains(&(file.to_string(), func.to_string()));
        if !seen
            && !found
                .iter()
                .any(|f| f.starts_with(&format!("{file}: fn {func}:")))
        {
            found.push(format!(
                "{file}: fn {func}: listed in FN_EXCEPTIONS but gone"
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_function_measure_sees_what_rustfmt_writes() {
    let text = "fn a() {\n    x;\n}\n\n    pub(super) fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 3), ("b".to_string(), 5)]
    );
    assert_eq!(
        first_names("{fleet, ids::{Place, Role}, process};"),
        ["fleet", "ids", "process"]
    );
    assert_eq!(first_names("fleet::State;"), ["fleet"]);
}
