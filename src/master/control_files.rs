//! The files that say where a running master is: its pid file, locked for its lifetime, and
//! the private directory that holds it and the control socket; the staging of both beside
//! their places while an upgrade's new master starts, renamed into place when it takes over;
//! and its entry in the registry of running masters ([`Registration`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::getpid;

use log::{debug, warn};

use crate::config::host;
use crate::wire::registry;

/// Why the master could not set up its control socket or pid file.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("rrbalancer is already running with this configuration (pid {pid}, pid file {path})")]
    AlreadyRunning { pid: String, path: PathBuf },
    #[error("refusing {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error(transparent)]
    Dir(#[from] host::DirError),
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ControlError + '_ {
    move |error| ControlError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Creates the directory that will hold `path`, private to our user (0700), after checking
/// the one that holds it now as `check` did ([`host::check_control_dir`]: the default runtime
/// directory must be ours alone, one named in `[control]` no other user's to change); one we
/// create must then really be ours (someone may have made it first): otherwise another user
/// could plant a link where we write our pid or remove our control socket.
pub fn create_private_dir(path: &Path) -> Result<(), ControlError> {
    let dir = host::parent_dir(path);
    host::check_control_dir(dir)?;
    let existed = dir.symlink_metadata().is_ok();
    make_dir(dir)?;
    if !existed {
        host::check_created_dir(dir)?;
    }
    Ok(())
}

/// Creates `dir` and its parents, the last one private (0700).
fn make_dir(dir: &Path) -> Result<(), ControlError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// [`create_private_dir`] for a master that drops to `uid`:`gid` (`[master] user`), while it
/// still is root: a directory it makes is made that user's, to hold what the master creates
/// after the drop. One that exists is left as it is: the master, as that user, judges it then.
pub fn create_dir_for(path: &Path, uid: u32, gid: u32) -> Result<(), ControlError> {
    let dir = host::parent_dir(path);
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    make_dir(dir)?;
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(io_err(dir))
}

/// The pid file, locked (`flock`) for the master's lifetime: a live master holds the lock, a
/// stale file from a crashed one does not, so it is simply taken over.
///
/// A new master started by an upgrade first holds one at a staged path beside it and renames it
/// into place when it takes over ([`PidFile::install`]); the old master's then no longer sits at
/// the path, which is why each removes the file at exit only if it is still its own.
#[derive(Debug)]
pub struct PidFile {
    place: Staged,
    lock: Flock<File>,
}

/// Where a pid file or control socket is, and — while staged by a new master — where it is to
/// be renamed when it takes over.
#[derive(Debug)]
pub(super) struct Staged {
    pub path: PathBuf,
    pub target: Option<PathBuf>,
}

impl Staged {
    pub(super) fn at(path: &Path) -> Staged {
        Staged {
            path: path.to_owned(),
            target: None,
        }
    }

    /// Renames a staged file into place, atomically: the target path always names a live
    /// master (the old one's until now).
    pub(super) fn install(&mut self) -> Result<(), ControlError> {
        if let Some(target) = self.target.take() {
            fs::rename(&self.path, &target).map_err(io_err(&target))?;
            self.path = target;
        }
        Ok(())
    }
}

/// Where a new master started by an upgrade keeps its pid file or control socket until it takes
/// over: beside `path`, named for its pid (and not ending in `.sock`, so that `status` without
/// `--config` does not list it).
pub fn staged_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{pid}.new"));
    PathBuf::from(name)
}

/// The file at `path` is the one with identity `id` (device, inode).
pub(super) fn same_file(path: &Path, id: Option<(u64, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let now = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    now.is_some() && now == id
}

impl PidFile {
    /// `Err(AlreadyRunning)` when a master holds the pid file at `path` now (its lock is
    /// taken); nothing is created or changed. For `start --daemon`, to refuse before it
    /// detaches (then the error goes to the terminal, not into the running master's log).
    pub fn check_free(path: &Path) -> Result<(), ControlError> {
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        else {
            return Ok(()); // none, or not ours to read: `acquire` says what is wrong
        };
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => Ok(()),
            Err((file, _)) => Err(already_running(file, path)),
        }
    }

    pub fn acquire(path: &Path) -> Result<PidFile, ControlError> {
        create_private_dir(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // Never write our pid through a link someone planted.
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => ControlError::Unsafe {
                    path: path.to_owned(),
                    reason: "it is a symbolic link".into(),
                },
                _ => io_err(path)(e),
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, _)) => return Err(already_running(file, path)),
        };
        lock.set_len(0).map_err(io_err(path))?;
        writeln!(*lock, "{}", getpid()).map_err(io_err(path))?;
        Ok(PidFile {
            place: Staged::at(path),
            lock,
        })
    }

    /// A new master's pid file, at [`staged_path`] until [`PidFile::install`].
    pub fn acquire_staged(path: &Path) -> Result<PidFile, ControlError> {
        let mut staged = PidFile::acquire(&staged_path(path, std::process::id()))?;
        staged.place.target = Some(path.to_owned());
        Ok(staged)
    }

    /// Renames a staged pid file into place.
    pub fn install(&mut self) -> Result<(), ControlError> {
        self.place.install()
    }

    fn id(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        self.lock.metadata().ok().map(|m| (m.dev(), m.ino()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Not if a new master's has replaced it (an upgrade).
        if same_file(&self.place.path, self.id()) {
            let _ = fs::remove_file(&self.place.path);
        }
    }
}

/// The pid file at `path`, locked by another master: which one.
fn already_running(mut file: File, path: &Path) -> ControlError {
    let mut pid = String::new();
    let _ = file.read_to_string(&mut pid);
    ControlError::AlreadyRunning {
        pid: pid.trim().to_owned(),
        path: path.to_owned(),
    }
}

/// This master's entry in the registry of running masters ([`registry`]): a link in the user's
/// default runtime directory, named after our pid, to our control socket wherever `[control]`
/// put it, so that a bare `rrbalancer status` or `stop` finds us and knows when it must ask
/// which master is meant. Removed when dropped (the master exits); a killed master's is
/// dropped by the next reader.
#[derive(Debug)]
pub struct Registration {
    entry: Option<PathBuf>,
}

impl Registration {
    /// No entry (the master of one app of several).
    pub fn none() -> Registration {
        Registration { entry: None }
    }

    /// Registers the control socket at `socket` (its final place, also while an upgrade's new
    /// master still has it staged). A failure costs only discovery: said, and the master runs.
    pub fn make(socket: &Path) -> Registration {
        let dir = host::default_runtime_dir();
        let entry = dir.join(registry::entry_name(std::process::id()));
        match link(&entry, socket) {
            Ok(()) => {
                debug!("registered as {}", entry.display());
                Registration { entry: Some(entry) }
            }
            Err(e) => {
                warn!(
                    "cannot register this master in {} ({e}): a control command without \
                     --config or --control will not find it",
                    dir.display()
                );
                Registration { entry: None }
            }
        }
    }
}

/// `entry`, in its private directory, made a link to `socket` (absolute), replacing a stale
/// one of a pid used before.
fn link(entry: &Path, socket: &Path) -> Result<(), String> {
    let target = std::path::absolute(socket).map_err(|e| e.to_string())?;
    create_private_dir(entry).map_err(|e| e.to_string())?;
    match fs::remove_file(entry) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.to_string()),
        _ => {}
    }
    std::os::unix::fs::symlink(&target, entry).map_err(|e| e.to_string())
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            let _ = fs::remove_file(entry);
        }
    }
}
