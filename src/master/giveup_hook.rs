//! `on_giveup`: the command run when a slot (or the agent) is given up, so someone gets paged;
//! started like a worker (the same base environment and directory) and reaped like one.

use log::{error, info};
use nix::unistd::Pid;

use super::Master;
use crate::engine::ids::Place;
use crate::wire::env;

impl Master {
    /// Runs `on_giveup` (if set) so someone gets paged: `sh -c` with the slot (`agent` for the
    /// agent), pid and reason in its environment, its output where the workers' goes. Reaped
    /// like a worker.
    pub(super) fn run_giveup_hook(&mut self, place: Place, pid: Pid, reason: &str) {
        let Some(command) = self.config.on_giveup.clone() else {
            return;
        };
        let mut env = self.workers.base_env.clone();
        let slot = place.slot().map_or("agent".to_owned(), |s| s.to_string());
        env.push((env::GIVEUP_SLOT.into(), slot.into()));
        env.push((env::GIVEUP_PID.into(), pid.to_string().into()));
        env.push((env::GIVEUP_REASON.into(), reason.into()));
        let spawned = crate::sys::spawn(crate::sys::SpawnSpec {
            program: std::path::Path::new("/bin/sh"),
            arg0: "sh".as_ref(),
            args: &["-c".to_owned(), command.clone()],
            env: &env,
            cwd: self.config.worker.command.cwd.as_deref(),
            inherit: &[],
            listen_pid: false,
            new_master: false,
            identity: None,
            stdout: std::process::Stdio::inherit(),
            stderr: std::process::Stdio::inherit(),
        });
        match spawned {
            Ok(child) => {
                let hook = Pid::from_raw(child.id() as i32);
                info!("on_giveup command started pid={hook}: {command}");
                self.workers.hooks.push(hook);
            }
            Err(e) => error!("cannot run on_giveup command {command:?}: {e}"),
        }
    }
}
