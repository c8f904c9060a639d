//! How much memory each worker holds: the resident size of its process group (a worker leads
//! one, so its own children count), read from `/proc`, for `[recycle] max_memory`.

use std::collections::{HashMap, HashSet};

use nix::unistd::Pid;

/// The resident bytes of each process group in `groups` that has a process left: the sum over
/// its processes. One pass over `/proc`.
pub fn resident_by_group(groups: &[Pid]) -> HashMap<Pid, u64> {
    let wanted: HashSet<i32> = groups.iter().map(|p| p.as_raw()).collect();
    let page = page_size();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Gone since the listing, or not ours to read: skipped.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((group, pages)) = parse_stat(&stat).filter(|(g, _)| wanted.contains(g)) {
            *out.entry(Pid::from_raw(group)).or_default() += pages * page;
        }
    }
    out
}

pub fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// (process group, resident pages) from a `/proc/<pid>/stat` line. The command name may hold
/// spaces and parentheses: the fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64)> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the name: state (field 3), ppid (4), pgrp (5), …, rss (24).
    let group = fields.nth(2)?.parse().ok()?;
    let pages = fields.nth(18)?.parse().ok()?;
    Some((group, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (a (weird) name) S 1 4200 4200 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    500 1000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some((4200, 2560)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn our_own_group_is_measured() {
        let me = nix::unistd::getpgrp();
        let rss = resident_by_group(&[me]);
        let bytes = rss.get(&me).copied().unwrap_or(0);
        assert!(
            bytes > 1 << 20,
            "this test process holds more than 1 MiB: {bytes}"
        );
        assert!(
            !resident_by_group(&[Pid::from_raw(i32::MAX)]).contains_key(&Pid::from_raw(i32::MAX))
        );
    }
}
