//! The one function that changes a process's state, as systemd's
//! `scope_set_state()`: it checks the change is allowed, logs
//! `old -> new`, updates the record in memory, writes the state and its
//! event row to the store in one transaction, and publishes the new
//! properties. No other code assigns a state.

use super::{Error, Supervisor};
use crate::api::State;
use crate::daemon::store::{Change, ProcessId, RunChange, RunId, RunRecord};

impl Supervisor {
    /// Moves `id` to `new`, recording `run_change` with it at time `at`.
    /// Returns the run the change belongs to (the new one for
    /// `RunChange::New`). Memory changes first — it is the truth while
    /// storage fails (a later resync rewrites the store from it) — except
    /// for a new run, whose id only the store can give.
    pub(super) async fn transition(
        &mut self,
        id: ProcessId,
        new: State,
        why: String,
        run_change: RunChange,
        at: u64,
    ) -> Result<RunId, Error> {
        let p = self.procs.get(&id).ok_or_else(|| super::not_found(id))?;
        let (old, run) = (p.state(), p.run.id);
        if !super::proc::allowed(old, new) {
            tracing::error!(%id, "refused state change {old} -> {new} ({why})");
            return Err(Error::Busy(format!(
                "process {id} cannot go from {old} to {new}"
            )));
        }
        let change = Change {
            process: id,
            run,
            old,
            new,
            why: why.clone(),
            at,
            run_change: run_change.clone(),
        };
        let written = if let RunChange::New { .. } = run_change {
            let run = self.store.call(move |db| db.change_state(&change)).await?;
            self.enter(id, new, run, &run_change, at);
            Ok(run)
        } else {
            self.enter(id, new, run, &run_change, at);
            self.store
                .call(move |db| db.change_state(&change))
                .await
                .map_err(Error::from)
        };
        tracing::info!(%id, %run, "{old} -> {new} ({why})");
        self.changed(id, old);
        written
    }

    /// The in-memory half of a transition.
    fn enter(&mut self, id: ProcessId, new: State, run: RunId, change: &RunChange, at: u64) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.enter(new).is_err() {
            return; // checked by the caller
        }
        match change {
            RunChange::None => {}
            RunChange::Running {
                main_pid,
                control_group,
            } => {
                p.run.main_pid = *main_pid;
                p.run.control_group = control_group.clone();
                p.run.started_at = at;
            }
            RunChange::Ended {
                exit_code,
                exit_signal,
                reason,
            } => {
                p.pidfd = None;
                p.health = None;
                p.run.exited_at = Some(at);
                p.run.exit_code = Some(*exit_code);
                p.run.exit_signal = Some(*exit_signal);
                p.run.reason = Some(*reason);
            }
            RunChange::Reason(reason) => p.run.reason = Some(*reason),
            RunChange::New { unit, .. } => {
                p.pidfd = None;
                p.health = None;
                p.run = RunRecord {
                    id: run,
                    process_id: id,
                    unit: unit.clone(),
                    started_at: at,
                    ..Default::default()
                };
            }
        }
    }
}
