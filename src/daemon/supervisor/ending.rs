//! Ending: a run's exit (its shim's exit record, or its scope vanishing
//! with none), the state and reason it ends in, and the restart policy
//! applied after it — including the restart timer and its firing.

use std::time::Duration;

use tokio::time::Instant;

use super::policy::{self, Verdict};
use super::proc::PendingRestart;
use super::{Fact, Msg, Supervisor};
use crate::api::{ExitReason, State};
use crate::daemon::store::{Ending, ProcessId, RunChange, RunId};
use crate::shim::ExitRecord;

impl Supervisor {
    /// An exit record for `run` exists (or may exist): settle it.
    pub(super) async fn exit_recorded(&mut self, run: RunId) {
        let Some(p) = self.procs.values_mut().find(|p| p.run.id == run) else {
            // A run we no longer track (removed process, old run): done.
            self.host.launcher.remove_exit(run).await;
            return;
        };
        match p.state() {
            State::Starting => {
                // The launch reply has not been processed yet; keep the
                // order starting -> running -> ended.
                if let Some(l) = p.launching.as_mut() {
                    l.early_exit = true;
                }
            }
            State::Running | State::Stopping => {
                let id = p.id;
                self.settle_run(id, run).await;
            }
            State::Stopped | State::Exited | State::Failed => {
                self.host.launcher.remove_exit(run).await
            }
        }
    }

    /// systemd unloaded one of our scopes.
    pub(super) async fn scope_gone(&mut self, unit: String) {
        let hit = self
            .procs
            .values()
            .find(|p| p.run.unit == unit && matches!(p.state(), State::Running | State::Stopping));
        let Some((id, run, cg)) = hit.map(|p| (p.id, p.run.id, p.run.control_group.clone())) else {
            return;
        };
        // systemd also sends UnitRemoved for every unit it unloads during
        // daemon-reload/reexec, and loads them right back: only a cgroup
        // with no process left means the scope is gone.
        if !cg.is_empty() && self.host.cgroups.populated(cg).await {
            tracing::debug!(%id, unit, "UnitRemoved for a populated scope (manager reload): ignored");
            return;
        }
        self.settle_run(id, run).await;
    }

    /// Records the end of the current run of `id` from its exit record, or
    /// as `lost` when the shim left none (it was SIGKILLed with its scope).
    pub(super) async fn settle_run(&mut self, id: ProcessId, run: RunId) {
        let Some(p) = self.procs.get(&id) else { return };
        if p.run.id != run || !matches!(p.state(), State::Running | State::Stopping) {
            return;
        }
        let cg = p.run.control_group.clone();
        let known_oom = p.sampled.usage.oom_kills.unwrap_or(0) > 0;
        let rec = self.host.launcher.read_exit(run).await;
        let recorded_oom = rec.as_ref().and_then(|r| r.oom_kills).unwrap_or(0) > 0;
        let oom = known_oom || recorded_oom || self.read_oom(cg.clone()).await;
        let Some(p) = self.procs.get(&id) else { return };
        let now = self.now_us();
        let tracked = p.config.tracked;
        let end = ending(
            p.stop_requested(),
            p.kill_signal,
            rec.as_ref(),
            oom,
            tracked,
            now,
        );
        let uptime = p.launched_at.elapsed();
        let unit = p.run.unit.clone();
        // The record stays until its content is committed: if the store
        // is failing, the next start (or the resync) still finds it.
        if self.record_ending(id, end).await && rec.is_some() {
            self.host.launcher.remove_exit(run).await;
        }
        let Some(p) = self.procs.get(&id) else { return };
        if p.stop_requested() {
            return; // the stop's completion takes it from here
        }
        // Ended by itself: leftovers in the scope (daemonized children)
        // must not outlive it, or they keep holding ports.
        if !cg.is_empty() && self.host.cgroups.populated(cg).await {
            let stopping = self.host.scopes.stop(unit.clone(), self.cfg.stop_timeout);
            tokio::spawn(async move {
                if let Err(e) = stopping.await {
                    tracing::warn!("cleaning up {unit}: {e}");
                }
            });
        }
        self.apply_policy(id, uptime).await;
    }

    async fn read_oom(&self, cg: String) -> bool {
        if cg.is_empty() {
            return false;
        }
        let usage = self.host.cgroups.usage(vec![cg]).await;
        usage
            .first()
            .copied()
            .flatten()
            .and_then(|u| u.oom_kills)
            .unwrap_or(0)
            > 0
    }

    /// Writes the ending of the current run and publishes the new state.
    /// Returns whether it was committed.
    pub(super) async fn record_ending(&mut self, id: ProcessId, end: Ending) -> bool {
        if let Some(p) = self.procs.get_mut(&id) {
            p.pending_restart = None;
            // Counted before the transition publishes the new view; the
            // store counts the run's reason at the next start.
            if end.reason == ExitReason::OomKill {
                p.oom_kills += 1;
            }
        }
        let why = format!(
            "{}, code {}, signal {}",
            end.reason, end.exit_code, end.exit_signal
        );
        let change = RunChange::Ended {
            exit_code: end.exit_code,
            exit_signal: end.exit_signal,
            reason: end.reason,
        };
        self.transition(id, end.state, why, change, end.at)
            .await
            .is_ok()
    }

    /// After a run ended by itself: restart later, stay ended, or give
    /// up on a crash loop.
    pub(super) async fn apply_policy(&mut self, id: ProcessId, uptime: Duration) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let now = Instant::now().into_std();
        let verdict = policy::decide(&p.config.restart, p.state(), uptime, now, &mut p.backoff);
        let run = p.run.id;
        if !matches!(verdict, Verdict::RestartAfter(_)) {
            p.standby = None;
        }
        match verdict {
            Verdict::Stay => {}
            Verdict::RestartAfter(delay) => {
                let detail = format!("restart in {} ms", delay.as_millis());
                let now = self.now_us();
                let _ = self
                    .store
                    .call(move |db| db.add_event(id, Some(run), "restart-scheduled", &detail, now))
                    .await;
                if delay.is_zero() {
                    // No timer for an immediate restart: its message
                    // round trip would be on the replacement's path.
                    self.relaunch(id, "restart policy", false, vec![]).await;
                    return;
                }
                let at_us = self
                    .now_us()
                    .saturating_add(delay.as_micros().try_into().unwrap_or(u64::MAX));
                let tx = self.tx.clone();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::Fact(Fact::RestartDue { id, run })).await;
                })
                .abort_handle();
                let Some(p) = self.procs.get_mut(&id) else {
                    return;
                };
                p.pending_restart = Some(PendingRestart { at_us, timer });
                let state = p.state();
                self.changed(id, state);
            }
            Verdict::CrashLoop => {
                let limit = (p.config.restart.limit, p.config.restart.limit_interval_sec);
                let why = format!("crash-loop: {} restarts within {}s", limit.0, limit.1);
                tracing::warn!(%id, "{why}");
                let change = RunChange::Reason(ExitReason::CrashLoop);
                let now = self.now_us();
                let _ = self.transition(id, State::Failed, why, change, now).await;
            }
        }
    }

    /// The restart timer of `run` fired.
    pub(super) async fn restart_due(&mut self, id: ProcessId, run: RunId) {
        let due = self.procs.get(&id).is_some_and(|p| {
            p.run.id == run && !p.state().is_active() && p.pending_restart.is_some()
        });
        if due {
            self.relaunch(id, "restart policy", false, vec![]).await;
        }
    }
}

/// The state a run ends in, from what the shim recorded and who asked.
/// A `tracked` run has no shim and so never a record: ended by itself,
/// it is `untracked-exit` with its code unknown.
pub(super) fn ending(
    stop_requested: bool,
    kill_signal: Option<i32>,
    rec: Option<&ExitRecord>,
    oom: bool,
    tracked: bool,
    now_us: u64,
) -> Ending {
    let at = rec.map(|r| r.exited_at_us).unwrap_or(now_us);
    let (code, signal) = rec.map(|r| (r.code, r.signal)).unwrap_or((-1, 0));
    let (state, reason) = if stop_requested {
        (State::Stopped, ExitReason::Stopped)
    } else if rec.is_none() && tracked {
        (State::Exited, ExitReason::UntrackedExit)
    } else if rec.is_none() {
        (State::Failed, ExitReason::Lost)
    } else if signal != 0 && Some(signal) == kill_signal {
        (State::Stopped, ExitReason::Killed)
    } else if signal == libc::SIGKILL && oom {
        (State::Failed, ExitReason::OomKill)
    } else if signal != 0 {
        (State::Failed, ExitReason::Signal)
    } else if code == 0 {
        (State::Exited, ExitReason::Exit)
    } else {
        (State::Failed, ExitReason::Exit)
    };
    Ending {
        state,
        exit_code: code,
        exit_signal: signal,
        reason,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(code: i32, signal: i32) -> ExitRecord {
        ExitRecord {
            run: 1,
            pid: 2,
            code,
            signal,
            core_dumped: false,
            exited_at_us: 5,
            oom_kills: None,
        }
    }

    #[test]
    fn endings_follow_the_state_rules() {
        // (stop requested, Kill signal sent, record (code, signal), OOM) -> (state, reason)
        let cases = [
            (false, None, Some((0, 0)), false, "exited", "exit"),
            (false, None, Some((3, 0)), false, "failed", "exit"),
            (false, None, Some((-1, 9)), false, "failed", "signal"),
            (false, None, Some((-1, 9)), true, "failed", "oom-kill"),
            (false, Some(15), Some((-1, 15)), false, "stopped", "killed"),
            (false, Some(1), Some((-1, 15)), false, "failed", "signal"),
            (true, None, Some((-1, 15)), false, "stopped", "stopped"),
            (true, None, None, false, "stopped", "stopped"),
            (false, None, None, false, "failed", "lost"),
        ];
        for (stop, kill, r, oom, state, reason) in cases {
            let record = r.map(|(c, s)| rec(c, s));
            let e = ending(stop, kill, record.as_ref(), oom, false, 9);
            assert_eq!(
                (e.state.as_str(), e.reason.as_str()),
                (state, reason),
                "{stop} {kill:?} {r:?} {oom}"
            );
        }
        assert_eq!(ending(false, None, Some(&rec(3, 0)), false, false, 9).at, 5);
        assert_eq!(ending(false, None, None, false, false, 9).at, 9);
        // A tracked run: no code is ever invented.
        let t = ending(false, None, None, false, true, 9);
        assert_eq!(
            (t.state, t.reason, t.exit_code),
            (State::Exited, ExitReason::UntrackedExit, -1)
        );
        let t = ending(true, None, None, false, true, 9);
        assert_eq!((t.state, t.reason), (State::Stopped, ExitReason::Stopped));
    }
}
