//! What a reload may change: the configuration read again, less what only a restart (or
//! `rrbalancer upgrade`) can change — the policy, the control paths, the worker protocol and
//! its window, the metrics listener — each kept, and named in a line that the shell logs and
//! the reload's answer repeats (then an error: not everything asked for was done). Pure: the
//! shell applies the result (new listeners: `relisten`; new log files, the metrics listener's
//! `allow`).

use crate::config::Config;

/// `new`, with what cannot change on a reload taken from `current`; and a line for each
/// change kept, naming it.
pub fn merge(current: &Config, mut new: Config) -> (Config, Vec<String>) {
    let mut warnings = Vec::new();
    if new.sched_policy != current.sched_policy {
        warnings.push(format!(
            "`sched_policy` changed ({} → {}): still {0} (only a restart applies it: an upgrade \
             refuses to switch between rr and none)",
            current.sched_policy.as_str(),
            new.sched_policy.as_str(),
        ));
    }
    if new.control != current.control {
        warnings.push(
            "`[control]` changed: the control socket and pid file stay where they are".into(),
        );
    }
    if new.worker.protocol != current.worker.protocol {
        warnings.push(format!(
            "`worker.protocol` changed ({} → {}): still {0} (`rrbalancer upgrade` applies it)",
            current.worker.protocol.as_str(),
            new.worker.protocol.as_str()
        ));
        // The window goes with the protocol (Node's is one).
        new.worker.max_unacked = current.worker.max_unacked;
    }
    let listen = |c: &Config| c.metrics.as_ref().map(|m| m.listen);
    if listen(&new) != listen(current) {
        let name = |l: Option<std::net::SocketAddr>| l.map_or("none".into(), |a| a.to_string());
        warnings.push(format!(
            "`[metrics] listen` changed ({} → {}): the metrics listener stays as it is \
             (`rrbalancer upgrade` applies it)",
            name(listen(current)),
            name(listen(&new))
        ));
        new.metrics = current.metrics.clone();
    }
    let agent = |c: &Config| c.metrics.as_ref().and_then(|m| m.haproxy_agent);
    if agent(&new) != agent(current) {
        let name = |l: Option<std::net::SocketAddr>| l.map_or("none".into(), |a| a.to_string());
        warnings.push(format!(
            "`[metrics] haproxy_agent` changed ({} → {}): the agent-check listener stays as it \
             is (`rrbalancer upgrade` applies it)",
            name(agent(current)),
            name(agent(&new))
        ));
        if let Some(m) = new.metrics.as_mut() {
            m.haproxy_agent = agent(current);
        }
    }
    if new.master_user != current.master_user {
        let name = |c: &Config| {
            (c.master_user.as_ref())
                .map_or("unset".into(), |id| format!("{}:{}", id.user, id.group))
        };
        warnings.push(format!(
            "`[master] user` changed ({} → {}): the master stays who it is (only a restart \
             applies it)",
            name(current),
            name(&new)
        ));
        new.master_user = current.master_user.clone();
    }
    new.worker.protocol = current.worker.protocol;
    new.sched_policy = current.sched_policy;
    new.policy_source = current.policy_source;
    new.control = current.control.clone();
    new.source = current.source.clone();
    (new, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Protocol, SchedPolicy, parse, validate};

    fn config(text: &str) -> Config {
        let file = parse(text, "cluster.toml").unwrap();
        validate(file, text, "cluster.toml", None, &Overrides::default()).unwrap()
    }

    #[test]
    fn what_only_a_restart_can_change_is_kept_with_a_warning_each() {
        let dir = tempfile::tempdir().unwrap();
        let current = config("listen = [\"127.0.0.1:4000\"]\n");
        let new = config(&format!(
            "listen = [\"127.0.0.1:4001\"]\nsched_policy = \"none\"\nworkers = 7\n\
             [worker]\nexec = \"sh\"\nprotocol = \"node\"\n\
             [control]\nsocket = \"{}/other.sock\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n",
            dir.path().display()
        ));
        let (merged, warnings) = merge(&current, new);
        assert_eq!(merged.listen.len(), 1);
        assert_eq!(
            merged.listen[0].to_string(),
            "127.0.0.1:4001",
            "`listen` is taken: the shell binds it (relisten)"
        );
        assert_eq!(merged.sched_policy, SchedPolicy::Rr);
        assert_eq!(merged.control, current.control);
        assert_eq!(merged.worker.protocol, Protocol::Native);
        assert_eq!(
            merged.worker.max_unacked, current.worker.max_unacked,
            "the window goes with the protocol"
        );
        assert_eq!(merged.metrics, None);
        assert_eq!(merged.workers, 7, "the rest is taken");
        assert_eq!(merged.worker.command.arg0, "sh");
        let said = warnings.join("\n");
        for key in [
            "`sched_policy` changed (rr → none)",
            "`[control]`",
            "`worker.protocol` changed (native → node)",
            "`[metrics] listen` changed (none → 127.0.0.1:9100)",
        ] {
            assert!(said.contains(key), "{key}: {said}");
        }
        assert!(!said.contains("`listen` changed"), "{said}");
        assert_eq!(warnings.len(), 4);
    }

    #[test]
    fn a_reload_that_changes_only_what_it_may_warns_of_nothing() {
        let current = config("[metrics]\nlisten = \"127.0.0.1:9100\"\n");
        let new = config(
            "workers = 3\n[metrics]\nlisten = \"127.0.0.1:9100\"\nallow = [\"10.0.0.0/8\"]\n",
        );
        let (merged, warnings) = merge(&current, new);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(merged.workers, 3);
        assert!(
            merged.metrics.unwrap().allow.is_some(),
            "who may connect changes at once"
        );
    }
}
