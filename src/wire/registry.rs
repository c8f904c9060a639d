//! The registry of running masters: one entry per master in the user's default runtime
//! directory, whatever its `[control]` paths, so that a bare control command finds every
//! master and can tell when there is more than one. An entry is a symbolic link named after
//! the master's pid ([`entry_name`]) pointing at its control socket; the master makes it at
//! start and removes it at exit, and a reader drops one whose pid no longer runs (a master
//! killed before it could clean up).

/// The name of the entry of the master `pid`.
pub fn entry_name(pid: u32) -> String {
    format!("master-{pid}.link")
}

/// The pid an entry's name says, if the name is an entry's.
pub fn entry_pid(name: &str) -> Option<u32> {
    let pid = name.strip_prefix("master-")?.strip_suffix(".link")?;
    pid.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())
        .flatten()
        .filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_name_gives_back_its_pid_and_nothing_else_is_an_entry() {
        assert_eq!(entry_pid(&entry_name(4242)), Some(4242));
        for other in [
            "default.sock",
            "default.pid",
            "master-.link",
            "master-0.link",
            "master--1.link",
            "master-+7.link",
            "master-12.link.tmp",
            "master-99999999999.link",
        ] {
            assert_eq!(entry_pid(other), None, "{other}");
        }
    }
}
