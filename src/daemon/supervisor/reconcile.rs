//! Start-up reconciliation. SQLite is the record, systemd and the kernel
//! are the truth: adopt live scopes, record what ended while the agent was
//! away (from the shims' exit records), relaunch what must run, stop
//! scopes nobody owns.

use std::collections::{HashMap, HashSet};

use super::proc::{AfterStop, Proc, StopRequest};
use super::{Error, Supervisor};
use crate::api::{ExitReason, State};
use crate::daemon::store::{Ending, ProcessId, RunChange};

impl Supervisor {
    pub(super) async fn reconcile(&mut self) -> Result<(), Error> {
        let records = self.store.call(|db| db.load_all()).await?;
        let live: HashMap<String, String> = self
            .host
            .scopes
            .list()
            .await
            .map_err(Error::Systemd)?
            .into_iter()
            .collect();
        let pending: HashSet<_> = self
            .host
            .launcher
            .pending_exits()
            .await
            .into_iter()
            .collect();
        let mut owned = HashSet::new();
        let mut to_relaunch = Vec::new();
        let mut to_settle = Vec::new();
        for (rec, run) in records {
            let id = rec.id;
            let run = run.unwrap_or_default();
            owned.insert(run.unit.clone());
            let mut p = Proc::new(rec, run);
            let state = p.state();
            if state == State::Stopping {
                // The stop was in flight when the agent died: it is still
                // what the client asked for.
                p.stop = Some(StopRequest {
                    then: AfterStop::Nothing,
                    waiters: vec![],
                });
            }
            let (run, unit) = (p.run.id, p.run.unit.clone());
            self.procs.insert(id, p);
            if !state.is_active() {
                continue;
            }
            let has_record = pending.contains(&run);
            let alive = live
                .get(&unit)
                .is_some_and(|s| s == "active" || s == "stopping");
            if has_record && state != State::Starting {
                to_settle.push((id, run));
            } else if alive && !has_record {
                self.adopt(id).await;
            } else {
                // Scope gone and no record: never started (agent died
                // mid-launch) or lost with its scope (reboot, logout).
                let tracked = self.procs.get(&id).is_some_and(|p| p.config.tracked);
                let (end_state, reason) = match state {
                    State::Starting => (State::Failed, ExitReason::SpawnFailed),
                    // Never corral's child: how it ended is not known.
                    _ if tracked => (State::Exited, ExitReason::UntrackedExit),
                    _ => (State::Failed, ExitReason::Lost),
                };
                let end = Ending {
                    state: end_state,
                    exit_code: -1,
                    exit_signal: 0,
                    reason,
                    at: self.now_us(),
                };
                if !self.record_ending(id, end).await {
                    return Err(Error::Storage(format!("recording the end of {id}")));
                }
                if self.procs.get(&id).is_some_and(|p| p.config.persistent) {
                    to_relaunch.push(id);
                }
            }
        }
        for (unit, state) in &live {
            if !owned.contains(unit) && state != "inactive" {
                tracing::warn!("stopping scope {unit}: no process in the database owns it");
                let stopping = self.host.scopes.stop(unit.clone(), self.cfg.stop_timeout);
                tokio::spawn(async move {
                    let _ = stopping.await;
                });
            }
        }
        for (id, run) in to_settle {
            self.settle_run(id, run).await;
            if let Some(stop) = self.procs.get_mut(&id).and_then(|p| p.stop.take()) {
                drop(stop); // nobody is waiting for a stop from before the restart
            }
            // Persistent means "running whenever the agent runs": whatever
            // ended it while the agent was away (a logout's SIGTERM leaves an
            // exit record too), it comes back unless its policy already
            // scheduled a restart.
            let relaunch = self.procs.get(&id).is_some_and(|p| {
                p.config.persistent && !p.state().is_active() && p.pending_restart.is_none()
            });
            if relaunch {
                to_relaunch.push(id);
            }
        }
        for id in to_relaunch {
            let now = self.now_us();
            let _ = self
                .store
                .call(move |db| {
                    db.add_event(
                        id,
                        None,
                        "persistent",
                        "not running at agent start: relaunching",
                        now,
                    )
                })
                .await;
            self.relaunch(id, "persistent", false, vec![]).await;
        }
        // Records of runs nobody tracks any more.
        let known: HashSet<_> = self.procs.values().map(|p| p.run.id).collect();
        for run in pending {
            if !known.contains(&run) {
                self.host.launcher.remove_exit(run).await;
            }
        }
        for p in self.procs.values() {
            tracing::debug!(id = %p.id, state = %p.state(), "known at start");
        }
        Ok(())
    }

    /// Takes over a live scope recorded as active.
    async fn adopt(&mut self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else { return };
        let (unit, mut cg, state, run) = (
            p.run.unit.clone(),
            p.run.control_group.clone(),
            p.state(),
            p.run.id,
        );
        if cg.is_empty() {
            // The agent died between scope creation and recording it.
            match self.host.scopes.control_group(unit.clone()).await {
                Ok(c) => cg = c,
                Err(e) => tracing::warn!(%id, "cgroup of {unit}: {e}"),
            }
        }
        let main = if cg.is_empty() {
            None
        } else {
            self.host.cgroups.main_pid(cg.clone()).await
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.run.control_group = cg.clone();
        if p.run.main_pid == 0 {
            p.run.main_pid = main.unwrap_or(0);
        }
        let pid = p.run.main_pid;
        let pidfd = if pid > 1 && !cg.is_empty() {
            self.host.cgroups.open_pidfd(pid, cg.clone()).await
        } else {
            None
        };
        if let Some(p) = self.procs.get_mut(&id) {
            p.pidfd = pidfd;
        }
        let now = self.now_us();
        match state {
            State::Starting => {
                let change = RunChange::Running {
                    main_pid: pid,
                    control_group: cg,
                };
                let why = format!("pid {pid}, adopted at agent start");
                if let Err(e) = self.transition(id, State::Running, why, change, now).await {
                    tracing::error!("recording adoption of {id}: {e}");
                }
            }
            _ => {
                let detail = format!("re-adopted at agent start (pid {pid})");
                let r = self
                    .store
                    .call(move |db| db.add_event(id, Some(run), "adopted", &detail, now))
                    .await;
                if let Err(e) = r {
                    tracing::error!("recording adoption of {id}: {e}");
                }
                if state == State::Stopping {
                    // The stop was in flight when the agent died: finish it.
                    self.spawn_stop(id, run, unit);
                }
                if state == State::Running {
                    self.start_probing(id);
                }
                if self.procs.get(&id).is_some_and(|p| p.config.tracked) {
                    // No shim, no exit record: the pidfd is the only way
                    // to see it end; gone already, it ended while we were.
                    if self.procs.get(&id).is_some_and(|p| p.pidfd.is_some()) {
                        self.watch_tracked(id);
                    } else {
                        self.settle_run(id, run).await;
                    }
                }
            }
        }
        // What it said while the agent was away is on disk.
        self.notify_recorded(run, false).await;
        // The last agent's standby scope ended with it (its shim's socket
        // closed); this agent makes its own.
        self.prepare_standby(id);
    }
}
