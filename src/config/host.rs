//! What the host says about the paths the master will create or bind: the one place the
//! configuration asks the file system what is at a path, who owns a directory and who may write
//! in it. The rules that judge those facts are pure functions ([`private_dir_problem`],
//! [`shared_dir_problem`], [`socket_path_problem`]), tested with made-up facts; the few
//! functions that probe feed them.
//!
//! `check` and the master ask the same questions here, so that a configuration `check` accepts
//! starts: [`check_control_dir`] is what validation asks of each pid file and control socket,
//! and what the master asks again when it creates them (the directory may have changed since).
//! Where the answer depends on the user asking (a directory one may not read), `check` gives no
//! verdict and the master reports what it meets.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Directory,
    Socket,
    Symlink,
    /// A regular file, a device, a pipe.
    Other,
}

/// The facts a directory is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    pub uid: u32,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// A directory that may not hold what rrbalancer creates, or could not be looked at.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("refusing {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

/// The user the master runs as, whose files these are.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// What is at `path`; with `follow`, a final symbolic link is followed (as `stat`), else it is
/// what is found (as `lstat`).
pub fn facts(path: &Path, follow: bool) -> io::Result<Facts> {
    let meta = if follow {
        path.metadata()
    } else {
        path.symlink_metadata()
    };
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Facts {
                kind: Kind::Missing,
                uid: 0,
                mode: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        Kind::Symlink
    } else if file_type.is_dir() {
        Kind::Directory
    } else if file_type.is_socket() {
        Kind::Socket
    } else {
        Kind::Other
    };
    Ok(Facts {
        kind,
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
    })
}

/// The directory that holds `path`: its parent, `.` for a bare file name.
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The directory rrbalancer keeps its pid file and control socket in when `[control]` names
/// none: `$XDG_RUNTIME_DIR/rrbalancer`, else `/tmp/rrbalancer-<uid>`.
pub fn default_runtime_dir() -> PathBuf {
    match xdg_runtime_dir() {
        Some(dir) => dir.join("rrbalancer"),
        None => PathBuf::from(format!("/tmp/rrbalancer-{}", nix::unistd::getuid())),
    }
}

/// The runtime directory of a master that drops to `uid` (`[master] user`): one that user can
/// write, whoever started the master and whatever its `XDG_RUNTIME_DIR` (root's is no place
/// for the user's files), so that the paths are the same before and after the drop, for an
/// upgrade's new master, and for a control command of root's or the user's.
pub fn runtime_dir_of(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/rrbalancer-{uid}"))
}

/// A default control path (in [`default_runtime_dir`]) moved to [`runtime_dir_of`] `uid`.
pub fn for_owner(path: &Path, uid: u32) -> PathBuf {
    match path.file_name() {
        Some(name) => runtime_dir_of(uid).join(name),
        None => path.to_path_buf(),
    }
}

/// `XDG_RUNTIME_DIR`, unless unset or empty (an empty one would make the runtime directory a
/// relative path, wherever the master happened to start).
fn xdg_runtime_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Rule for a directory that is rrbalancer's own (the default runtime directory, one the master
/// made): a real directory, not a link to one, of our user, with no access for group or
/// others — otherwise another user could plant a link where we write our pid or remove our
/// control socket (tmux checks its socket directory the same way).
pub fn private_dir_problem(dir: Facts, me: u32) -> Option<String> {
    let reason = match dir.kind {
        Kind::Missing => return None,
        Kind::Symlink => "it is a symbolic link, not a directory of ours".to_owned(),
        Kind::Directory if dir.uid != me => {
            format!("it belongs to uid {}, not to us (uid {me})", dir.uid)
        }
        Kind::Directory if dir.mode & 0o077 != 0 => format!(
            "its mode is {:04o}: group and others must have no access (chmod 700 it)",
            dir.mode
        ),
        Kind::Directory => return None,
        Kind::Socket | Kind::Other => "it is not a directory".to_owned(),
    };
    Some(reason)
}

/// Rule for a directory someone else chose to hold rrbalancer's files (one named in
/// `[control]` that exists, `$XDG_RUNTIME_DIR`): no other user may change what is in it. So it
/// is ours or root's (root can do anything to our files anyway), and not writable by anyone (a
/// sticky bit, as on `/tmp`, keeps others from removing our files, not from planting a link or a
/// file at the name we are about to create). Reading it is harmless: `/run/rrbalancer` may be
/// 0755.
pub fn shared_dir_problem(dir: Facts, me: u32) -> Option<String> {
    match dir.kind {
        Kind::Missing => None,
        Kind::Directory if dir.uid != me && dir.uid != 0 => Some(format!(
            "it belongs to uid {}, neither to us (uid {me}) nor to root: its owner could replace \
             or remove what rrbalancer keeps there",
            dir.uid
        )),
        Kind::Directory if dir.mode & 0o002 != 0 => Some(format!(
            "anyone may write in it (mode {:04o}): another user could plant a link or a file \
             where rrbalancer creates one",
            dir.mode
        )),
        Kind::Directory => None,
        _ => Some("it is not a directory".to_owned()),
    }
}

/// Rule for a listening Unix socket, given what is at its directory (links followed) and at its
/// path (not followed): the master creates no directory for it, and replaces only a socket file
/// (a dead master's; one in use is found at start).
pub fn socket_path_problem(dir: Kind, at: Kind) -> Option<String> {
    match (dir, at) {
        (Kind::Missing, _) => Some(
            "its directory does not exist (the master creates none for a listening socket)"
                .to_owned(),
        ),
        (Kind::Directory, Kind::Missing | Kind::Socket) => None,
        (Kind::Directory, Kind::Directory) => Some("it is a directory; name a file".to_owned()),
        (Kind::Directory, _) => Some(
            "the path exists and is not a socket (the master replaces only a socket file)"
                .to_owned(),
        ),
        _ => Some("its directory is not a directory".to_owned()),
    }
}

/// The nearest existing ancestor of `path`, if it is not a directory: no file can be created
/// there, by anyone (`/dev/null/x.log`). Whether one may write there depends on the user the
/// master runs as, which `check` may not be: that is the master's to report.
pub fn not_a_directory_above(path: &Path) -> Option<PathBuf> {
    let existing = path
        .ancestors()
        .skip(1)
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .find(|a| a.exists())?;
    (!existing.is_dir()).then(|| existing.to_path_buf())
}

/// Whether `path` names a directory rather than a file: it ends with `/`, or is one already.
pub fn names_a_directory(path: &Path) -> bool {
    path.as_os_str().as_encoded_bytes().ends_with(b"/") || path.is_dir()
}

/// Why a listening Unix socket cannot be bound at `path`, if it cannot (as the master would find
/// at start). Facts that cannot be read (no permission) give no verdict.
pub fn unix_listen_problem(path: &Path) -> Option<String> {
    if let Some(blocker) = not_a_directory_above(path) {
        return Some(format!(
            "{} cannot be created: {} is not a directory",
            crate::text::quoted(&path.display().to_string()),
            blocker.display()
        ));
    }
    let dir = facts(parent_dir(path), true).ok()?;
    let at = facts(path, false).ok()?;
    let problem = if names_a_directory(path) {
        "it names a directory; name a file".to_owned()
    } else {
        socket_path_problem(dir.kind, at.kind)?
    };
    Some(format!(
        "{}: {problem}",
        crate::text::quoted(&path.display().to_string())
    ))
}

/// Whether the directory `dir`, meant to hold a pid file or control socket, may: the default
/// runtime directory is rrbalancer's own ([`private_dir_problem`]), and when it is under
/// `$XDG_RUNTIME_DIR` that one may not be open to others ([`shared_dir_problem`]); another
/// directory that exists was named in `[control]` ([`shared_dir_problem`], links followed). One
/// that does not exist yet is the master's to create, private ([`check_created_dir`]).
pub fn check_control_dir(dir: &Path) -> Result<(), DirError> {
    check_control_dir_of(dir, euid())
}

/// [`check_control_dir`] for a master running as uid `me`.
pub fn check_control_dir_of(dir: &Path, me: u32) -> Result<(), DirError> {
    let judge = |path: &Path, follow: bool, rule: fn(Facts, u32) -> Option<String>| {
        let found = facts(path, follow).map_err(|error| DirError::Io {
            path: path.to_owned(),
            error,
        })?;
        match rule(found, me) {
            Some(reason) => Err(DirError::Unsafe {
                path: path.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    };
    let advise = |advice: fn(&str) -> String| {
        move |e| match e {
            DirError::Unsafe { path, reason } => DirError::Unsafe {
                path,
                reason: advice(&reason),
            },
            io => io,
        }
    };
    if dir == default_runtime_dir() {
        if let Some(xdg) = xdg_runtime_dir() {
            judge(&xdg, true, shared_dir_problem).map_err(advise(|reason| {
                format!(
                    "it is XDG_RUNTIME_DIR, and {reason}; point XDG_RUNTIME_DIR at a directory \
                     of yours, or name the paths in [control]"
                )
            }))?;
        }
        judge(dir, false, private_dir_problem)
    } else {
        judge(dir, true, shared_dir_problem).map_err(advise(|reason| {
            format!("{reason}; name a directory of yours")
        }))
    }
}

/// Whether the directory the master has just created for its pid file or control socket is
/// really its own ([`private_dir_problem`]): someone may have made it first.
pub fn check_created_dir(dir: &Path) -> Result<(), DirError> {
    let found = facts(dir, false).map_err(|error| DirError::Io {
        path: dir.to_owned(),
        error,
    })?;
    match private_dir_problem(found, euid()) {
        Some(reason) => Err(DirError::Unsafe {
            path: dir.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn dir(uid: u32, mode: u32) -> Facts {
        Facts {
            kind: Kind::Directory,
            uid,
            mode,
        }
    }

    fn of(kind: Kind) -> Facts {
        Facts {
            kind,
            uid: ME,
            mode: 0o700,
        }
    }

    #[test]
    fn our_own_directory_is_ours_alone_and_no_link() {
        assert_eq!(private_dir_problem(dir(ME, 0o700), ME), None);
        assert_eq!(private_dir_problem(of(Kind::Missing), ME), None);
        let e = private_dir_problem(dir(65534, 0o700), ME).unwrap();
        assert!(e.contains("uid 65534"), "{e}");
        // Root's is not ours either: it is made by and for our user.
        assert!(private_dir_problem(dir(0, 0o700), ME).is_some());
        for mode in [0o750, 0o705, 0o1777, 0o710] {
            let e = private_dir_problem(dir(ME, mode), ME).unwrap();
            assert!(e.contains(&format!("{mode:04o}")), "{e}");
        }
        assert!(private_dir_problem(of(Kind::Symlink), ME).is_some());
        assert!(private_dir_problem(of(Kind::Other), ME).is_some());
    }

    #[test]
    fn a_directory_the_operator_named_is_ours_or_roots_and_not_open_to_writes() {
        assert_eq!(shared_dir_problem(dir(ME, 0o700), ME), None);
        assert_eq!(shared_dir_problem(dir(ME, 0o755), ME), None);
        assert_eq!(shared_dir_problem(dir(0, 0o755), ME), None);
        assert_eq!(shared_dir_problem(of(Kind::Missing), ME), None);
        let e = shared_dir_problem(dir(65534, 0o700), ME).unwrap();
        assert!(e.contains("belongs to uid 65534"), "{e}");
        for mode in [0o777, 0o1777, 0o703] {
            let e = shared_dir_problem(dir(ME, mode), ME).unwrap();
            assert!(e.contains("anyone may write"), "{e}");
            assert!(shared_dir_problem(dir(0, mode), ME).is_some());
        }
        // As root, another user's directory is still another user's.
        assert!(shared_dir_problem(dir(ME, 0o700), 0).is_some());
        assert!(shared_dir_problem(of(Kind::Other), ME).is_some());
    }

    #[test]
    fn a_listening_socket_needs_its_directory_and_replaces_only_a_socket() {
        use Kind::*;
        assert_eq!(socket_path_problem(Directory, Missing), None);
        assert_eq!(socket_path_problem(Directory, Socket), None);
        let e = socket_path_problem(Missing, Missing).unwrap();
        assert!(e.contains("does not exist"), "{e}");
        for at in [Other, Symlink] {
            let e = socket_path_problem(Directory, at).unwrap();
            assert!(e.contains("not a socket"), "{e}");
        }
        assert!(socket_path_problem(Directory, Directory).is_some());
        assert!(socket_path_problem(Other, Missing).is_some());
    }

    #[test]
    fn a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(parent_dir(Path::new("x.pid")), Path::new("."));
        assert_eq!(parent_dir(Path::new("run/x.pid")), Path::new("run"));
        assert_eq!(parent_dir(Path::new("/x.pid")), Path::new("/"));
    }
}
