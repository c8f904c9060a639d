//! What `/proc/<pid>/stat` says of a process — its group, CPU time, resident memory — read in
//! one place: for `[recycle] max_memory` (the resident size of a worker's process group: a
//! worker leads one, so its own children count), `/metrics` and `status` (which `rrbalancer top`
//! shows).

use std::collections::{HashMap, HashSet};

use nix::unistd::Pid;

use crate::engine::metrics::Process;

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
        if let Some(stat) = parse_stat(&stat).filter(|s| wanted.contains(&s.group)) {
            *out.entry(Pid::from_raw(stat.group)).or_default() += stat.rss_pages * page;
        }
    }
    out
}

fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// What one process's stat line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    group: i32,
    /// User and system CPU time, in clock ticks.
    cpu_ticks: u64,
    rss_pages: u64,
}

/// A `/proc/<pid>/stat` line's fields. The command name may hold spaces and parentheses: the
/// fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Numbered as in proc(5): state is field 3, the first after the name.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        group: fields.get(5 - 3)?.parse().ok()?,
        cpu_ticks: field(14)? + field(15)?,
        rss_pages: field(24)?,
    })
}

/// CPU seconds and resident bytes of a process (`which`: a pid, or `self`), if it can be read.
pub fn cpu_and_resident(which: &str) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
    let stat = parse_stat(&stat)?;
    let ticks = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    };
    Some((stat.cpu_ticks as f64 / ticks, stat.rss_pages * page_size()))
}

/// The master's own memory, CPU and open fds, from `/proc/self` (zeros where unreadable).
pub fn own_process() -> Process {
    let (cpu_seconds, rss_bytes) = cpu_and_resident("self").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    Process {
        rss_bytes,
        cpu_seconds,
        open_fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (a (weird) name) S 1 4200 4200 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    500 1000000 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                group: 4200,
                cpu_ticks: 3,
                rss_pages: 2560
            })
        );
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

    #[test]
    fn our_own_process_is_measured() {
        let p = own_process();
        assert!(p.rss_bytes > 1 << 20 && p.open_fds >= 3, "{p:?}");
    }
}
