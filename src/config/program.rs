//! The worker named on the command line (`rrbalancer -- node app.js`) in place of a file's
//! `[worker]` command: PM2's `pm2 start app.js -i 4` without a file. `--protocol auto` (the
//! default there) picks `node-cluster` for a Node program — `node`/`nodejs`, or a `.js`,
//! `.mjs`, `.cjs` script, then run with `node` — so an unchanged `listen()` app runs
//! clustered; any other program speaks the native protocol. With no file, the control paths
//! are named after the program (two such masters never share a pid file).

use super::*;

/// Puts `program` (argv, at least the program) and `protocol` (`None`: auto) into `worker`.
pub(super) fn apply(worker: &mut FileWorker, program: &[String], protocol: Option<Protocol>) {
    let Some((first, rest)) = program.split_first() else {
        return;
    };
    let (exec, args) = if is_script(first) {
        ("node".to_owned(), program.to_vec())
    } else {
        (first.clone(), rest.to_vec())
    };
    let node = is_script(first) || is_node(first);
    worker.protocol = protocol.unwrap_or(if node {
        Protocol::NodeCluster
    } else {
        Protocol::Native
    });
    worker.exec = Some(Spanned::new(0..0, exec));
    worker.args = args;
    // What the file said of another program does not apply to this one.
    worker.ready = None;
    worker.max_unacked = None;
}

/// The stem the control paths of a master running `program` without a file are named after:
/// its script's (`app` for `node app.js`), else its program's, and a key naming it whole
/// (directory and argv) for their hash.
pub(super) fn control_name(program: &[String]) -> Option<(String, String)> {
    let first = program.first()?;
    let named = program.iter().find(|a| is_script(a)).unwrap_or(first);
    let stem = Path::new(named)
        .file_stem()
        .map_or("rrbalancer".into(), |s| s.to_string_lossy().into_owned());
    let here = std::env::current_dir().unwrap_or_default();
    Some((stem, format!("{}\0{}", here.display(), program.join("\0"))))
}

/// The directory of the script `program` runs (`node srv/app.js` → `srv`, made absolute), if
/// it names one: what `--watch` watches when nothing else says.
pub(super) fn script_dir(program: &[String]) -> Option<PathBuf> {
    let script = program.iter().find(|a| is_script(a))?;
    let dir = Path::new(script).parent()?;
    std::path::absolute(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()
}

fn is_script(arg: &str) -> bool {
    [".js", ".mjs", ".cjs"].iter().any(|ext| arg.ends_with(ext))
}

fn is_node(program: &str) -> bool {
    let name = Path::new(program).file_name().and_then(|n| n.to_str());
    matches!(name, Some("node" | "nodejs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(argv: &[&str], protocol: Option<Protocol>) -> FileWorker {
        let mut worker = FileWorker::default();
        let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
        apply(&mut worker, &argv, protocol);
        worker
    }

    #[test]
    fn node_is_recognised_and_a_script_runs_with_node() {
        let w = applied(&["node", "app.js", "--port", "1"], None);
        assert_eq!(w.exec.unwrap().into_inner(), "node");
        assert_eq!(w.args, ["app.js", "--port", "1"]);
        assert_eq!(w.protocol, Protocol::NodeCluster);
        let w = applied(&["server.mjs"], None);
        assert_eq!(
            (w.exec.unwrap().into_inner(), w.args),
            ("node".into(), vec!["server.mjs".to_string()])
        );
        assert_eq!(w.protocol, Protocol::NodeCluster);
        let w = applied(&["/usr/bin/nodejs", "x.js"], None);
        assert_eq!(w.protocol, Protocol::NodeCluster);
        let w = applied(&["python3", "worker.py"], None);
        assert_eq!(w.protocol, Protocol::Native);
        let w = applied(&["node", "worker.js"], Some(Protocol::Node));
        assert_eq!(w.protocol, Protocol::Node, "said outright");
        let w = applied(&[], None);
        assert!(
            w.exec.is_none() && w.protocol == Protocol::Native,
            "no program: the file's"
        );
    }

    #[test]
    fn the_control_name_is_the_script_or_the_program() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            control_name(&argv(&["node", "srv/app.js"])).unwrap().0,
            "app"
        );
        assert_eq!(
            control_name(&argv(&["/usr/bin/python3", "-m", "x"]))
                .unwrap()
                .0,
            "python3"
        );
        let (_, a) = control_name(&argv(&["node", "a.js"])).unwrap();
        let (_, b) = control_name(&argv(&["node", "b.js"])).unwrap();
        assert_ne!(a, b, "two programs, two masters");
        assert!(control_name(&[]).is_none());
    }
}
