//! Tidy: the layering rules of the source tree, checked on the text of `src/` so that they
//! cannot drift (TigerBeetle's `tidy.zig` is the model). No process is started.
//!
//! 1. The sans-I/O core (the files in [`CORE`]) does no I/O and reads no clock outside its
//!    tests: no mio, socket2, libc, `std::fs`/`process`/`env`/`net` sockets, no `crate::sys`,
//!    no `Instant::now`/`SystemTime`; of nix only the value types `Pid` and `Signal`. `now` and
//!    seeds are arguments.
//! 2. The core imports nothing of the shell (the other files of `src/master/`).
//! 3. No import cycle between the modules of `src/master/` (a folder counts as one module; the
//!    master's root, `mod.rs`, which declares them all, is left out).
//! 4. `src/wire/` (byte formats and environment names, used by both sides of a boundary)
//!    imports nothing of the crate but `text`, and does no I/O of its own.
//! 5. Files at most [`MAX_FILE_LINES`] lines, functions at most [`MAX_FN_LINES`]: today's
//!    exceptions are listed with their size now, which they may not outgrow; an exception that
//!    got under the limit must leave the list (the ratchet only turns one way).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 120;

/// The decision code: facts in, effects out, `now` an argument (paths under `src/master/`).
const CORE: &[&str] = &[
    "ids.rs",
    "effect.rs",
    "ledger.rs",
    "dispatch.rs",
    "fleet.rs",
    "restart.rs",
    "lifecycle.rs",
    "limits.rs",
    "recycle.rs",
    "reload.rs",
    "relay.rs",
    "upgrade.rs",
    "client_limits.rs",
    "stats.rs",
    "mix.rs",
    "projection.rs",
    "reconfigure.rs",
    "stop_signal.rs",
    "metrics/mod.rs",
    "metrics/counters.rs",
    "metrics/families.rs",
    "metrics/render.rs",
    "supervisor/mod.rs",
    "supervisor/reloading.rs",
    "supervisor/recycling.rs",
    "supervisor/deadline.rs",
];

/// What the core may not name outside its tests, and why.
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

/// Of nix, the core may name these value types (a pid, a signal number), nothing that acts.
const NIX_VALUES: &[&str] = &["nix::unistd::Pid", "nix::sys::signal::Signal"];

/// Files over [`MAX_FILE_LINES`] today, with their size now: they may shrink, not grow.
const FILE_EXCEPTIONS: &[(&str, usize)] = &[
    ("src/config/tests.rs", 751),
    ("src/demo_worker.rs", 838),
    ("src/sys.rs", 568),
    ("src/worker.rs", 781),
    ("src/master/channel.rs", 518),
    ("src/master/control_socket.rs", 570),
    ("src/master/ledger.rs", 538),
    ("src/master/mod.rs", 606),
    ("src/master/monitor.rs", 633),
    ("src/master/node.rs", 546),
    ("src/master/supervisor_io.rs", 525),
    ("src/master/supervisor/mod.rs", 630),
    ("src/master/sim/handoff.rs", 596),
    ("src/master/sim/supervision.rs", 657),
];

/// Functions over [`MAX_FN_LINES`] today (file, name), with their length now.
const FN_EXCEPTIONS: &[(&str, &str, usize)] = &[
    ("src/master/sim/handoff.rs", "step", 260),
    ("src/master/sim/supervision.rs", "step", 180),
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

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let mut found = Vec::new();
    for file in CORE {
        let path = Path::new("src/master").join(file);
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
                        "{}:{n}: `{}`: of nix the core names only {NIX_VALUES:?}",
                        path.display(),
                        tail.split([';', ' ', ',']).next().unwrap_or(tail)
                    ));
                }
                rest = &tail[5..];
            }
        }
    }
    assert!(found.is_empty(), "I/O in the core:\n{}", found.join("\n"));
}

#[test]
fn the_wire_layer_is_a_leaf() {
    let mut found = Vec::new();
    for path in sources(Path::new("src/wire")) {
        let text = read(&path);
        for (n, line) in code_before_tests(&text) {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                if !rest.starts_with("text::") && !rest.starts_with("wire::") {
                    found.push(format!("{}:{n}: {line}", path.display()));
                }
            }
            for what in [
                "super::super::",
                "mio::",
                "socket2",
                "libc::",
                "std::fs",
                "Instant::now",
            ] {
                if line.contains(what) {
                    found.push(format!("{}:{n}: `{what}`", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "wire/ names only byte formats and environment names (and `text`):\n{}",
        found.join("\n")
    );
}

/// The modules of `src/master/` a file names (`super::x`, `super::{x, y::z}`,
/// `crate::master::x`), seen from the file's own module: for a file in a folder `f/`,
/// `super::x` is `f` itself (one module) and `super::super::x` is `x`.
fn master_imports(path: &Path, text: &str) -> BTreeSet<String> {
    let rel = path.strip_prefix("src/master").unwrap();
    let folder = rel
        .parent()
        .and_then(|p| p.iter().next())
        .map(|f| f.to_string_lossy().into_owned());
    let mut out = BTreeSet::new();
    for (_, line) in code_before_tests(text) {
        for (prefix, own) in [
            ("super::super::", None),
            ("crate::master::", None),
            ("super::", folder.clone()),
        ] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let before = &rest[..at];
                rest = &rest[at + prefix.len()..];
                if before.ends_with("super::") || before.ends_with("master::") {
                    continue; // part of a longer prefix, handled by it
                }
                if let Some(own) = &own {
                    out.insert(own.clone());
                    continue;
                }
                for name in first_names(rest) {
                    out.insert(name);
                }
            }
        }
    }
    out
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

/// The module a file of `src/master/` belongs to: its folder, or its own name.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix("src/master").unwrap();
    let first = rel.iter().next().unwrap().to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// Module → the modules it imports, over the non-test code of `src/master/` (test files —
/// `tests.rs`, `*_tests.rs`, under a `tests/` folder — and the simulators left out; `mod.rs` is
/// the root and left out too).
fn master_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let modules: BTreeSet<String> = sources(Path::new("src/master"))
        .iter()
        .map(|p| module_of(p))
        .collect();
    for path in sources(Path::new("src/master")) {
        let module = module_of(&path);
        let test_only = path.iter().any(|c| c == "tests") || path.ends_with("tests.rs");
        if module == "mod" || module == "sim" || test_only {
            continue;
        }
        let text = read(&path);
        let edges = graph.entry(module.clone()).or_default();
        for name in master_imports(&path, &text) {
            if name != module && name != "mod" && modules.contains(&name) {
                edges.insert(name);
            }
        }
    }
    graph
}

#[test]
fn the_core_imports_nothing_of_the_shell() {
    let core: BTreeSet<String> = CORE
        .iter()
        .map(|f| module_of(&Path::new("src/master").join(f)))
        .collect();
    let graph = master_graph();
    let mut found = Vec::new();
    for module in &core {
        for to in graph.get(module).into_iter().flatten() {
            if !core.contains(to) {
                found.push(format!("{module} → {to}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core imports the shell:\n{}",
        found.join("\n")
    );
    let mod_rs = read(Path::new("src/master/mod.rs"));
    for module in &core {
        assert!(
            !graph.get(module).is_some_and(|e| e.contains("mod"))
                && !code_before_tests(&read(&core_path(module)))
                    .iter()
                    .any(|(_, l)| l.contains("Master")),
            "{module} names the shell's Master"
        );
        assert!(
            mod_rs.contains(&format!("mod {module};")),
            "{module} is not a module of master"
        );
    }
}

fn core_path(module: &str) -> PathBuf {
    let folder = Path::new("src/master").join(module).join("mod.rs");
    if root().join(&folder).exists() {
        folder
    } else {
        Path::new("src/master").join(format!("{module}.rs"))
    }
}

#[test]
fn no_import_cycle_in_the_master() {
    let graph = master_graph();
    // Depth-first search; a grey node met again closes a cycle.
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
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut marks, &mut Vec::new()) {
            panic!("import cycle in src/master: {}", cycle.join(" → "));
        }
    }
    // The graph is read at all: the supervisor imports the fleet.
    assert!(graph["supervisor"].contains("fleet"), "{graph:?}");
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
