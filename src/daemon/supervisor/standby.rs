//! Standby scopes: a process whose restart is immediate (`RestartDelayMs`
//! 0, a policy that restarts) keeps the scope of its next run made ahead,
//! with a shim waiting in it, so a crash is replaced without waiting for
//! systemd's job and the kernel's move of a process into a new cgroup
//! (which waits for an RCU grace period: most of a restart before). Made
//! once a run is running; used by the next automatic restart; dropped —
//! its shim exits, systemd collects the scope — when a client stops the
//! process, its policy stops restarting it, or its limits change (a
//! scope's properties are set when it is made).

use super::host::Standby;
use super::proc::Proc;
use super::{Error, Fact, Msg, Supervisor};
use crate::api::{Limits, RestartMode, State};
use crate::daemon::store::ProcessId;
use crate::daemon::systemd;

/// Whether `p`'s next automatic restart would start at once.
fn restarts_at_once(p: &Proc) -> bool {
    let r = &p.config.restart;
    r.policy != RestartMode::No && r.delay_ms == 0 && !p.config.tracked
}

impl Supervisor {
    /// Makes `id`'s standby scope in the background if it should have one
    /// and has none.
    pub(super) fn prepare_standby(&mut self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else {
            return;
        };
        if !restarts_at_once(p)
            || p.standby.is_some()
            || p.standby_coming
            || p.state() != State::Running
        {
            return;
        }
        // Named after the run it was made during: unique, and never the
        // name of a scope still going away.
        let unit = systemd::scope_name(&p.name, &format!("{id}-s{}", p.run.id));
        let props = self.scope_props(p);
        let limits = props.limits;
        let making = self.host.launcher.standby(unit, props);
        if let Some(p) = self.procs.get_mut(&id) {
            p.standby_coming = true;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = making.await;
            let _ = tx
                .send(Msg::Fact(Fact::StandbyMade { id, limits, result }))
                .await;
        });
    }

    /// A standby scope for `id` is ready (or could not be made): kept if
    /// the process still restarts at once, else dropped.
    pub(super) fn standby_made(
        &mut self,
        id: ProcessId,
        limits: Limits,
        result: Result<Standby, Error>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.standby_coming = false;
        match result {
            Ok(standby) => {
                let wanted = restarts_at_once(p)
                    && p.standby.is_none()
                    && p.config.limits() == limits
                    && ((p.state().is_active() && !p.stop_requested())
                        || p.pending_restart.is_some());
                if wanted {
                    tracing::debug!(%id, unit = standby.unit, "standby scope ready");
                    p.standby = Some(standby);
                }
            }
            // Not fatal: the next restart starts its scope as usual.
            Err(e) => tracing::info!(%id, "no standby scope for the next restart: {e}"),
        }
    }
}
