//! What the machine says, asked while validating: a program found on `PATH` and executable, the
//! size of an exec against `ARG_MAX`, the default control paths under the runtime directory,
//! whether a path the master will create can be created.

use super::*;

/// The longest single argument or environment string `execve` takes on Linux (its NUL
/// included).
pub(super) const MAX_ARG_STRLEN: usize = 128 * 1024;

/// Whether a worker's arguments and environment (with the master's own, which it inherits) fit
/// in what `execve` accepts: the system's `ARG_MAX` in all, and [`MAX_ARG_STRLEN`] per string.
pub(super) fn check_exec_size(
    section: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    // Linux always says; the fallback is its usual value.
    let arg_max = nix::unistd::sysconf(nix::unistd::SysconfVar::ARG_MAX)
        .ok()
        .flatten()
        .map_or(2 * 1024 * 1024, |n| n as usize);
    let inherited: usize = std::env::vars_os()
        .map(|(k, v)| env_entry_size(k.len(), v.len()))
        .sum();
    exec_size_problem(section, args, env, inherited, arg_max)
}

/// What one `KEY=value` costs `execve`: its bytes, `=` and NUL, and its pointer.
fn env_entry_size(key: usize, value: usize) -> usize {
    key + value + 2 + std::mem::size_of::<usize>()
}

/// [`check_exec_size`]'s rule, given the bytes the inherited environment takes and `ARG_MAX`.
pub(super) fn exec_size_problem(
    section: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    inherited: usize,
    arg_max: usize,
) -> Result<(), String> {
    let pointer = std::mem::size_of::<usize>();
    if let Some(long) = args.iter().find(|a| a.len() >= MAX_ARG_STRLEN) {
        return Err(format!(
            "key `{section}.args`: an argument of {} bytes ({}) is longer than one argument may be \
             ({MAX_ARG_STRLEN} bytes)",
            long.len(),
            quoted(long)
        ));
    }
    if let Some((k, v)) = env
        .iter()
        .find(|(k, v)| k.len() + v.len() + 1 >= MAX_ARG_STRLEN)
    {
        return Err(format!(
            "key `{section}.env`: {} is {} bytes, longer than one variable may be ({MAX_ARG_STRLEN} \
             bytes)",
            quoted(k),
            k.len() + v.len() + 1
        ));
    }
    let ours: usize = args.iter().map(|a| a.len() + 1 + pointer).sum::<usize>()
        + env
            .iter()
            .map(|(k, v)| env_entry_size(k.len(), v.len()))
            .sum::<usize>();
    if inherited + ours > arg_max {
        return Err(format!(
            "keys `{section}.args` and `{section}.env`: {} arguments and {} variables take {} bytes \
             with rrbalancer's own environment ({inherited} bytes); the system starts no program \
             with more than {arg_max} (ARG_MAX)",
            args.len(),
            env.len(),
            inherited + ours
        ));
    }
    Ok(())
}

/// A file the master creates, for the rules it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Created {
    /// Opened without following a link, in a directory no other user controls.
    PidFile,
    /// In a directory no other user controls.
    Socket,
    /// Appended to, links followed; its directories made as needed.
    Log,
}

/// Why the master could not create the file at `path`, as it will meet it at start: a name that
/// is a directory, or under something that is not one; a pid file or control socket in a
/// directory another user controls ([`host::check_control_dir`]); a pid file that is a symbolic
/// link. What depends on the user `check` runs as (a directory it may not read) is the master's
/// to report. `owner`: the user the master drops to before it creates them (`[master] user`),
/// whose directory it must be.
pub(super) fn created_path_problem(
    path: &Path,
    what: Created,
    owner: Option<u32>,
) -> Option<String> {
    let shown = || quoted(&path.display().to_string());
    if host::names_a_directory(path) {
        return Some(format!("{} is a directory; name a file", shown()));
    }
    if let Some(blocker) = host::not_a_directory_above(path) {
        return Some(format!(
            "{} cannot be created: {} is not a directory",
            shown(),
            blocker.display()
        ));
    }
    if what == Created::Log {
        return None;
    }
    let me = owner.unwrap_or_else(host::euid);
    if let Err(unsafe_dir @ host::DirError::Unsafe { .. }) =
        host::check_control_dir_of(host::parent_dir(path), me)
    {
        return Some(format!("{}: {unsafe_dir}", shown()));
    }
    let is_link = host::facts(path, false).is_ok_and(|f| f.kind == host::Kind::Symlink);
    (what == Created::PidFile && is_link).then(|| {
        format!(
            "refusing {}: it is a symbolic link (the pid file is never written through one)",
            shown()
        )
    })
}

/// The default pid file and control socket: in the user's runtime directory, named after the
/// config file and a hash of its full path (`cluster-1a2b3c4d.sock`), or `default` for the
/// embedded one. They depend on nothing else (not on `--listen` or `--workers`): the file names
/// the master, so two files never collide, one file runs one master, and `rrbalancer status
/// --config F` finds it whatever flags started it.
pub fn default_control_paths(file: Option<&str>) -> (PathBuf, PathBuf) {
    match file {
        Some(name) => {
            let path = Path::new(name);
            let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            let stem = path
                .file_stem()
                .map_or("rrbalancer".into(), |s| s.to_string_lossy().into_owned());
            control_paths_named(&stem, full.as_os_str().as_encoded_bytes())
        }
        None => {
            let base = default_runtime_dir();
            (base.join("default.pid"), base.join("default.sock"))
        }
    }
}

/// The default pid file and control socket named `<stem>-<hash of key>` in the runtime
/// directory.
pub(super) fn control_paths_named(stem: &str, key: &[u8]) -> (PathBuf, PathBuf) {
    // FNV-1a: stable across runs and builds (std's hasher is not).
    let hash = key.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    let name = format!("{stem}-{:08x}", hash as u32);
    let base = default_runtime_dir();
    (
        base.join(format!("{name}.pid")),
        base.join(format!("{name}.sock")),
    )
}

/// A regular file (links followed) with an execute bit: what `execvp` would try.
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds the program the way `execvp` would, so a typo fails at start with the file's line
/// rather than as a restart storm. A relative path with a `/` is taken from `base` (the worker's
/// `cwd`, else the config file's directory), so a config file works from anywhere.
pub(super) fn resolve_program(exec: &str, base: Option<&Path>) -> Result<PathBuf, String> {
    if exec.is_empty() {
        return Err("is empty: name a program".into());
    }
    if exec.contains('/') {
        let path = Path::new(exec);
        // `join` keeps an absolute path as it is.
        let path = match base {
            Some(base) => base.join(path),
            None => std::env::current_dir().unwrap_or_default().join(path),
        };
        return if is_executable_file(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!(
                "{} is not an executable file",
                quoted(&path.to_string_lossy())
            ))
        } else {
            Err(format!(
                "{} does not exist",
                quoted(&path.to_string_lossy())
            ))
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(exec))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| format!("program {} not found on PATH", quoted(exec)))
}

/// `[section] user` and `group`, looked up in the system's user and group databases: the ids a
/// process of that section is started as. Unset both: `None` (the master's own). `group` unset:
/// the user's primary group. Refused when the master could not take them (not root, and not
/// its own ids already), naming the key and its line.
pub(super) fn identity(
    c: &Checker<'_>,
    section: &str,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
) -> Result<Option<Identity>, ConfigError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let (user_key, group_key) = (format!("{section}.user"), format!("{section}.group"));
    // The user's entry in the user database (none for a bare uid without one): its primary
    // group, its name and home for the environment.
    let (user, uid, entry, span) = match user {
        Some(u) => {
            let span = u.span();
            let name = u.into_inner();
            let (uid, entry) =
                lookup_user(&name).map_err(|m| c.invalid(span.clone(), &user_key, m))?;
            (name, uid, entry, span)
        }
        None => {
            let uid = nix::unistd::geteuid().as_raw();
            let entry = nix::unistd::User::from_uid(uid.into()).ok().flatten();
            let name = entry.as_ref().map_or(uid.to_string(), |e| e.name.clone());
            let span = group.as_ref().map(|g| g.span()).unwrap_or_default();
            (name, uid, entry, span)
        }
    };
    let primary = entry.as_ref().map(|e| e.gid.as_raw());
    let (group, gid, key, span) = match group {
        Some(g) => {
            let span = g.span();
            let name = g.into_inner();
            let gid = lookup_group(&name).map_err(|m| c.invalid(span.clone(), &group_key, m))?;
            (name, gid, &group_key, span)
        }
        None => {
            let Some(gid) = primary else {
                let why = format!(
                    "uid {uid} has no entry in the user database, so it has no primary group: \
                     set `{group_key}` too"
                );
                return Err(c.invalid(span, &user_key, why));
            };
            let name = nix::unistd::Group::from_gid(gid.into())
                .ok()
                .flatten()
                .map_or(gid.to_string(), |g| g.name);
            (name, gid, &user_key, span)
        }
    };
    let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let root_for = match section {
        "master" => "it binds its listeners as root, then drops root for good",
        _ => "it keeps root only to start and signal its workers",
    };
    if let Some(why) = privilege_problem(euid.as_raw(), egid.as_raw(), uid, gid, root_for) {
        return Err(c.invalid(span, key, why));
    }
    let login = entry.map(|e| (e.name, e.dir));
    Ok(Some(Identity {
        user,
        uid,
        group,
        gid,
        login,
    }))
}

/// The uid of `name` (a name or a number), if the system knows it.
pub(super) fn uid_of(name: &str) -> Option<u32> {
    lookup_user(name).ok().map(|(uid, _)| uid)
}

/// A user by name or number: its uid, and its entry in the user database (a number may have
/// none).
fn lookup_user(name: &str) -> Result<(u32, Option<nix::unistd::User>), String> {
    if is_number(name) {
        let uid: u32 = name.parse().map_err(|_| format!("{name} is not a uid"))?;
        return Ok((uid, nix::unistd::User::from_uid(uid.into()).ok().flatten()));
    }
    let user = (nix::unistd::User::from_name(name).ok().flatten())
        .ok_or_else(|| format!("there is no user {} on this system", quoted(name)))?;
    Ok((user.uid.as_raw(), Some(user)))
}

/// A group by name or number: its gid.
fn lookup_group(name: &str) -> Result<u32, String> {
    if is_number(name) {
        return name.parse().map_err(|_| format!("{name} is not a gid"));
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| format!("there is no group {} on this system", quoted(name)))
}

/// A uid or gid written as a number, not a name.
fn is_number(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// Why a master running as `euid`:`egid` cannot start a process as `uid`:`gid`, if it cannot:
/// only root changes a process's user or group.
/// `root_for`: what the master does with root, said in the advice.
pub(super) fn privilege_problem(
    euid: u32,
    egid: u32,
    uid: u32,
    gid: u32,
    root_for: &str,
) -> Option<String> {
    if euid == 0 || (uid == euid && gid == egid) {
        return None;
    }
    Some(format!(
        "running as {uid}:{gid} needs root, and rrbalancer runs as uid {euid} (gid {egid}): \
         start it as root ({root_for}), or remove the key"
    ))
}

/// One `listen` entry as addresses: itself when it is one (`IP:PORT`, `unix:PATH`); for
/// `HOST:PORT`, every address the name resolves to now (logged: what is bound is what the log
/// says), in the resolver's order, each once.
pub(super) fn resolve_listen(entry: &str) -> Result<Vec<ListenAddr>, String> {
    let invalid = match entry.parse::<ListenAddr>() {
        Ok(addr) => return Ok(vec![addr]),
        Err(why) => why,
    };
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(invalid);
    };
    let looks_like_a_name = !host.is_empty()
        && !host.contains(['[', ']', '/', ' '])
        && host.parse::<std::net::IpAddr>().is_err();
    let Ok(port) = port.parse::<u16>() else {
        return Err(invalid);
    };
    if !looks_like_a_name {
        return Err(invalid);
    }
    use std::net::ToSocketAddrs;
    let found = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host name in {}: {e}", quoted(entry)))?;
    let mut addrs: Vec<ListenAddr> = Vec::new();
    for addr in found.map(ListenAddr::Tcp) {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{} resolves to no address", quoted(entry)));
    }
    let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    log::info!(
        "listen {}: {} (resolved now)",
        quoted(entry),
        shown.join(", ")
    );
    Ok(addrs)
}
