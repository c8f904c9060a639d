//! Watch mode's I/O (`[watch]`, `--watch`): inotify on every directory under the watched paths
//! (and on new ones as they appear; the ignored names left out), its fd in the master's poll.
//! What changed goes to the engine's [`Watch`], which says when a burst is over; then the
//! rolling reload is requested, as `rrbalancer reload` would.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use log::{debug, info, warn};

use mio::Interest;
use mio::unix::SourceFd;

use super::Master;
use super::sources::Source;
use crate::config::WatchConfig;
use crate::engine::lifecycle::Phase;
use crate::engine::watch::{Watch, ignored};

/// What counts as a change: contents, a file made, removed, moved in or out, touched.
const CHANGES: WatchMask = WatchMask::MODIFY
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB);

/// The inotify instance and what each of its watches is.
pub struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    ignore: Vec<String>,
    /// The master's own files (its log, the captured output, the pid file and control socket,
    /// what stdout and stderr write to): written by every reload, so never a change.
    own: Vec<PathBuf>,
    state: Watch,
    buffer: Vec<u8>,
    /// The watch limit was met (`fs.inotify.max_user_watches`): said once.
    full: bool,
}

impl Watcher {
    /// Watches every path of `config` (directories with all under them).
    pub fn new(config: &WatchConfig, own: Vec<PathBuf>) -> io::Result<Watcher> {
        let mut watcher = Watcher {
            inotify: Inotify::init()?,
            dirs: HashMap::new(),
            ignore: config.ignore.clone(),
            own: own.iter().map(|p| canonical(p)).collect(),
            state: Watch::new(config.debounce),
            buffer: vec![0; 16 * 1024],
            full: false,
        };
        for path in &config.paths {
            watcher.add_tree(path);
        }
        let shown: Vec<String> = config
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        info!(
            "watching {} ({} watch(es)): a change reloads the workers {:?} after the last of a \
             burst",
            shown.join(", "),
            watcher.dirs.len(),
            config.debounce
        );
        Ok(watcher)
    }

    pub fn raw_fd(&self) -> i32 {
        self.inotify.as_raw_fd()
    }

    /// When the pending burst is due, if one is.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.deadline()
    }

    /// Watches `path`, and every directory under it but the ignored.
    fn add_tree(&mut self, path: &Path) {
        match self.inotify.watches().add(path, CHANGES) {
            Ok(wd) => {
                self.dirs.insert(wd, path.to_path_buf());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                if !std::mem::replace(&mut self.full, true) {
                    warn!(
                        "watch: the inotify watch limit is reached at {} \
                         (fs.inotify.max_user_watches): what is under it is not watched",
                        path.display()
                    );
                }
                return;
            }
            Err(e) => {
                warn!("watch: cannot watch {}: {e}", path.display());
                return;
            }
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return; // a file
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && !ignored(&name.to_string_lossy(), &self.ignore) {
                self.add_tree(&entry.path());
            }
        }
    }

    /// Reads what inotify has; notes each change not ignored at `now`, and watches new
    /// directories.
    fn read(&mut self, now: Instant) {
        let mut new_dirs = Vec::new();
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("watch: cannot read inotify events: {e}");
                    break;
                }
            };
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    self.state.changed(now);
                    continue;
                }
                let Some(name) = event.name.map(|n| n.to_string_lossy().into_owned()) else {
                    self.state.changed(now); // the watched file itself
                    continue;
                };
                if ignored(&name, &self.ignore) {
                    continue;
                }
                let dir = self.dirs.get(&event.wd).cloned();
                if dir
                    .as_ref()
                    .is_some_and(|d| self.own.contains(&canonical(&d.join(&name))))
                {
                    continue; // the master's own writing
                }
                if event.mask.contains(EventMask::ISDIR)
                    && event
                        .mask
                        .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                {
                    new_dirs.extend(dir.as_ref().map(|d| d.join(&name)));
                }
                debug!(
                    "watch: {:?} {}",
                    event.mask,
                    dir.map_or(name.clone(), |d| d.join(&name).display().to_string())
                );
                self.state.changed(now);
            }
            if !any {
                break;
            }
        }
        for dir in new_dirs {
            self.add_tree(&dir);
        }
    }
}

/// `path` with its directory resolved (the file itself may not exist yet).
fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or(path.to_path_buf(), |d| d.join(name)),
        _ => path.to_path_buf(),
    }
}

impl Master {
    /// The files this master writes itself, which its watch leaves out: the `[log]` files, the
    /// pid file and control socket, and the files its stdout and stderr are (a shell's `2>
    /// master.err` inside a watched directory would otherwise reload it forever).
    fn own_files(&self) -> Vec<PathBuf> {
        let log = &self.config.log;
        let mut own: Vec<PathBuf> = [&log.stdout, &log.stderr, &log.master_log]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        own.push(self.config.control.pid_file.clone());
        own.push(self.config.control.socket.clone());
        for fd in [1, 2] {
            own.extend(std::fs::read_link(format!("/proc/self/fd/{fd}")).ok());
        }
        own
    }

    /// Watches what the configuration's `[watch]` says (again, after a reload changed it):
    /// the old watcher, if any, is dropped. A watcher that cannot be set up is said, and the
    /// master runs without.
    pub(super) fn set_watch(&mut self) {
        if let Some(old) = self.ops.watcher.take() {
            let _ = (self.io.poll.registry()).deregister(&mut SourceFd(&old.raw_fd()));
            if let Some(token) = self.ops.watch_token.take() {
                self.io.sources.remove(token);
            }
        }
        let Some(config) = self.config.watch.clone() else {
            return;
        };
        let watcher = match Watcher::new(&config, self.own_files()) {
            Ok(watcher) => watcher,
            Err(e) => {
                warn!("watch: cannot watch ({e}); running without watch mode");
                return;
            }
        };
        let token = self.io.sources.add(Source::Watch);
        let fd = watcher.raw_fd();
        match (self.io.poll.registry()).register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Ok(()) => {
                self.ops.watcher = Some(watcher);
                self.ops.watch_token = Some(token);
            }
            Err(e) => {
                warn!("watch: cannot poll inotify ({e}); running without watch mode");
                self.io.sources.remove(token);
            }
        }
    }

    /// The inotify fd is readable.
    pub(super) fn on_watch(&mut self) {
        if let Some(watcher) = self.ops.watcher.as_mut() {
            watcher.read(Instant::now());
        }
    }

    /// A burst of changes is over: the rolling reload, unless one runs (then after it) or the
    /// master stops.
    pub(super) fn watch_turn(&mut self, now: Instant) {
        let busy = self.core.reloading() || self.core.phase() != Phase::Running;
        let Some(changes) = self
            .ops
            .watcher
            .as_mut()
            .and_then(|w| w.state.take_due(now, busy))
        else {
            return;
        };
        info!("watch: {changes} change(s); reloading");
        if let Err(e) = self.request_reload(None, false) {
            warn!("watch: reload refused: {e}");
        }
    }
}
