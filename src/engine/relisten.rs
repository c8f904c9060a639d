//! A reload that changes `listen`: which running listener serves each address of the new list
//! — matched as an upgrade matches the sockets it is passed, by the text configured, else by
//! the address bound ([`super::upgrade::carry_over`]) — which addresses are new (to bind),
//! which running listeners go (their queue handed to workers, then closed), and the line the
//! reload's answer gives. Pure: the shell binds, drains and closes.

use crate::config::ListenAddr;
use crate::wire::upgrade::Carried;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relisten {
    /// For each entry of the new `listen`: the running listener that serves it (its place in
    /// the running list), or `None` for an address to bind.
    pub from: Vec<Option<usize>>,
    /// Running listeners no entry takes, by place: they go.
    pub removed: Vec<usize>,
}

impl Relisten {
    /// What it takes to go from the running listeners (`running`, in their order) to `listen`.
    pub fn plan(listen: &[ListenAddr], running: &[Carried]) -> Relisten {
        let from = super::upgrade::carry_over(listen, running);
        let removed = (0..running.len())
            .filter(|i| !from.contains(&Some(*i)))
            .collect();
        Relisten { from, removed }
    }

    /// Nothing to bind, nothing to close, nothing moved.
    pub fn unchanged(&self) -> bool {
        self.removed.is_empty() && (0..).zip(&self.from).all(|(i, f)| *f == Some(i))
    }

    /// The line for the reload's answer and the log: what was added and removed. `listen`
    /// names the new listeners, `running` the old ones (the addresses bound); `workers_accept`:
    /// `none` mode, where the workers take them over. `None` when nothing changed.
    pub fn describe(
        &self,
        listen: &[String],
        running: &[String],
        workers_accept: bool,
    ) -> Option<String> {
        if self.unchanged() {
            return None;
        }
        let added: Vec<&str> = listen
            .iter()
            .zip(&self.from)
            .filter(|(_, f)| f.is_none())
            .map(|(l, _)| l.as_str())
            .collect();
        let removed: Vec<&str> = self.removed.iter().map(|&i| running[i].as_str()).collect();
        let mut parts = Vec::new();
        let (new, gone) = match workers_accept {
            false => (
                "served once every worker is a new one",
                "what its queue held is handed to workers",
            ),
            true => (
                "inherited by every worker started from now on",
                "the old workers accept on it until they leave",
            ),
        };
        if !added.is_empty() {
            parts.push(format!("listening also on {} ({new})", added.join(", ")));
        }
        if !removed.is_empty() {
            parts.push(format!("no longer on {} ({gone})", removed.join(", ")));
        }
        if parts.is_empty() {
            parts.push("the same addresses, in the new order".into());
        }
        Some(format!("`listen`: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ListenAddr {
        ListenAddr::Tcp(s.parse().unwrap())
    }

    fn running(entries: &[(&str, &str)]) -> Vec<Carried> {
        entries
            .iter()
            .map(|(configured, local)| Carried {
                configured: configured.to_string(),
                local: local.to_string(),
                owned: false,
            })
            .collect()
    }

    #[test]
    fn the_same_list_is_unchanged_and_says_nothing() {
        let now = running(&[("127.0.0.1:0", "127.0.0.1:4000"), ("[::1]:80", "[::1]:80")]);
        let plan = Relisten::plan(&[addr("127.0.0.1:0"), addr("[::1]:80")], &now);
        assert!(plan.unchanged());
        assert_eq!(plan.describe(&[], &[], false), None);
    }

    #[test]
    fn an_added_address_is_bound_a_dropped_one_goes_and_a_kept_one_keeps_its_socket() {
        let now = running(&[
            ("127.0.0.1:3000", "127.0.0.1:3000"),
            ("127.0.0.1:3001", "127.0.0.1:3001"),
        ]);
        let plan = Relisten::plan(&[addr("127.0.0.1:3001"), addr("127.0.0.1:3002")], &now);
        assert_eq!(plan.from, vec![Some(1), None]);
        assert_eq!(plan.removed, vec![0]);
        assert!(!plan.unchanged());
        let new = ["127.0.0.1:3001".into(), "127.0.0.1:3002".into()];
        let old = ["127.0.0.1:3000".into(), "127.0.0.1:3001".into()];
        let said = plan.describe(&new, &old, false).unwrap();
        assert!(
            said.contains("also on 127.0.0.1:3002 (served once"),
            "{said}"
        );
        assert!(
            said.contains("no longer on 127.0.0.1:3000 (what its queue"),
            "{said}"
        );
        assert!(!said.contains("3001"), "kept, not named: {said}");
        // `none` mode: the workers take them over.
        let said = plan.describe(&new, &old, true).unwrap();
        assert!(
            said.contains("3002 (inherited by every worker started"),
            "{said}"
        );
        assert!(
            said.contains("3000 (the old workers accept on it"),
            "{said}"
        );
    }

    #[test]
    fn a_port_0_entry_keeps_its_socket_by_its_text_and_a_bound_address_by_its_address() {
        // `127.0.0.1:0` is bound to some port: the same text keeps that socket, not a new
        // port; an entry naming the port it got keeps it too.
        let now = running(&[("127.0.0.1:0", "127.0.0.1:41234")]);
        assert!(Relisten::plan(&[addr("127.0.0.1:0")], &now).unchanged());
        let plan = Relisten::plan(&[addr("127.0.0.1:41234")], &now);
        assert_eq!((plan.from, plan.removed), (vec![Some(0)], vec![]));
    }

    #[test]
    fn a_reordered_list_binds_nothing_and_closes_nothing_but_is_a_change() {
        let now = running(&[
            ("127.0.0.1:1", "127.0.0.1:1"),
            ("127.0.0.1:2", "127.0.0.1:2"),
        ]);
        let plan = Relisten::plan(&[addr("127.0.0.1:2"), addr("127.0.0.1:1")], &now);
        assert_eq!(
            (plan.from.clone(), plan.removed.clone()),
            (vec![Some(1), Some(0)], vec![])
        );
        assert!(!plan.unchanged());
        let said = plan.describe(&[], &[], false).unwrap();
        assert!(
            said.contains("the same addresses, in the new order"),
            "{said}"
        );
    }
}
