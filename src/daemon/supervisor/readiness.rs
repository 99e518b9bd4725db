//! What `Notify` processes say over sd_notify(3): the shim of such a run
//! writes a notify record (`shim::notify`) whenever what the command said
//! changes, the exits watch sees it, and this file takes it into the
//! process as `NotifyState` and `StatusText`. A record belongs to one
//! run, so a new run starts over at `waiting` by itself. The record stays
//! on disk while the run lives, so an agent restarted meanwhile reads it
//! again when it adopts the run.

use super::proc::Proc;
use super::Supervisor;
use crate::api::NotifyState;
use crate::daemon::store::RunId;
use crate::shim::protocol::NotifyPhase;

impl Supervisor {
    /// Reads the notify record of `run` and takes it in if `run` is the
    /// current, live run of a `Notify` process. A change of state is an
    /// event row when `announce` (adopting at agent start is not a
    /// change); any change is announced on the bus.
    pub(super) async fn notify_recorded(&mut self, run: RunId, announce: bool) {
        let Some(id) = self
            .procs
            .values()
            .find(|p| p.run.id == run && p.config.notify && p.state().is_active())
            .map(|p| p.id)
        else {
            return;
        };
        let Some(record) = self.host.launcher.read_notify(run).await else {
            return;
        };
        // The run may have ended while the file was read.
        let Some(p) = self
            .procs
            .get_mut(&id)
            .filter(|p| p.run.id == run && record.run == run.0 && p.state().is_active())
        else {
            return;
        };
        if p.notified.as_ref() == Some(&record) {
            return;
        }
        let old = notify_state(p);
        p.notified = Some(record);
        let (new, state) = (notify_state(p), p.state());
        if old != new && announce {
            tracing::info!(%id, "notify {old} -> {new}");
            let detail = format!("{old} -> {new}");
            let now = self.now_us();
            let r = self
                .store
                .call(move |db| db.add_event(id, Some(run), "notify", &detail, now))
                .await;
            if let Err(e) = r {
                tracing::warn!(%id, "recording readiness: {e}");
            }
        }
        self.changed(id, state);
    }
}

/// `NotifyState` of `p`: `None` unless it is a live `Notify` process;
/// `waiting` until its current run's shim has recorded something else.
pub(super) fn notify_state(p: &Proc) -> NotifyState {
    if !p.config.notify || !p.state().is_active() {
        return NotifyState::None;
    }
    match p.notified.as_ref().filter(|r| r.run == p.run.id.0) {
        None => NotifyState::Waiting,
        Some(r) => match r.phase {
            NotifyPhase::Waiting => NotifyState::Waiting,
            NotifyPhase::Ready => NotifyState::Ready,
            NotifyPhase::Reloading => NotifyState::Reloading,
            NotifyPhase::Stopping => NotifyState::Stopping,
        },
    }
}

/// `StatusText` of `p`: the last `STATUS=` of its live current run.
pub(super) fn status_text(p: &Proc) -> String {
    match p.notified.as_ref() {
        Some(r) if notify_state(p) != NotifyState::None && r.run == p.run.id.0 => r.status.clone(),
        _ => String::new(),
    }
}
