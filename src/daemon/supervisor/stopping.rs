//! Stopping: Stop, Remove and Restart of one process (a stop, then
//! nothing / forget it / a new run), Kill, and the `*Matching` calls that
//! stop or remove a whole workspace or session. A stop completes when
//! its scope is gone (`Fact::StopDone`); its callers are answered then.

use tokio::sync::oneshot;

use super::proc::{AfterStop, StopRequest};
use super::{Access, Command, Error, Event, Fact, Handle, Msg, Reply, Supervisor};
use crate::api::{Filter, State};
use crate::daemon::store::{ProcessId, RunChange, RunId};

impl Supervisor {
    pub(super) async fn begin_stop(
        &mut self,
        id: ProcessId,
        then: AfterStop,
        reply: Option<Reply<()>>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if then != AfterStop::Recover {
            // No automatic restart follows: its scope made ahead goes.
            p.standby = None;
        }
        match p.state() {
            State::Starting => {
                // Let the launch finish (its scope must exist to be
                // stopped), then ask again: Stop and Remove of a process
                // between two runs of a restart loop just work.
                let (ltx, lrx) = oneshot::channel::<Result<String, Error>>();
                if let Some(l) = p.launching.as_mut() {
                    l.waiters.push(ltx);
                }
                let h = Handle {
                    tx: self.tx.clone(),
                };
                let id = id.to_string();
                // The caller was allowed when it asked.
                let access = Access::All;
                tokio::spawn(async move {
                    let _ = lrx.await;
                    let r = match then {
                        AfterStop::Remove => {
                            h.ask(|reply| Command::Remove { id, access, reply }).await
                        }
                        AfterStop::Relaunch | AfterStop::Recover => {
                            h.ask(|reply| Command::Restart { id, access, reply }).await
                        }
                        AfterStop::Nothing => {
                            h.ask(|reply| Command::Stop { id, access, reply }).await
                        }
                    };
                    if let Some(reply) = reply {
                        let _ = reply.send(r.unwrap_or_else(|| {
                            Err(Error::Busy("the agent is shutting down".into()))
                        }));
                    }
                });
            }
            State::Stopping => {
                // Already on its way: join it; a Remove or Restart asked
                // meanwhile decides what follows.
                if let Some(stop) = p.stop.as_mut() {
                    if then != AfterStop::Nothing {
                        stop.then = then;
                    }
                    stop.waiters.extend(reply);
                }
            }
            State::Running => {
                p.stop = Some(StopRequest {
                    then,
                    waiters: reply.into_iter().collect(),
                });
                let (run, unit) = (p.run.id, p.run.unit.clone());
                let now = self.now_us();
                let _ = self
                    .transition(
                        id,
                        State::Stopping,
                        "requested".into(),
                        RunChange::None,
                        now,
                    )
                    .await;
                self.spawn_stop(id, run, unit);
            }
            State::Stopped | State::Exited | State::Failed => {
                // Already ended: a pending automatic restart is cancelled.
                let (cancelled, state) = (p.pending_restart.take().is_some(), p.state());
                if cancelled {
                    self.changed(id, state);
                }
                self.finish_stop(id, then, reply.into_iter().collect())
                    .await;
            }
        }
    }

    /// Stops `unit` in its own task and reports `StopDone` for `run`.
    pub(super) fn spawn_stop(&self, id: ProcessId, run: RunId, unit: String) {
        let stopping = self.host.scopes.stop(unit, self.cfg.stop_timeout);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = stopping.await;
            let _ = tx.send(Msg::Fact(Fact::StopDone { id, run, result })).await;
        });
    }

    pub(super) async fn stop_done(
        &mut self,
        id: ProcessId,
        run: RunId,
        result: Result<(), String>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.run.id != run {
            return;
        }
        if let Err(e) = result {
            // The request stays (the process is still stopping); its
            // callers hear why this attempt failed.
            for w in p
                .stop
                .as_mut()
                .map(|s| std::mem::take(&mut s.waiters))
                .unwrap_or_default()
            {
                let _ = w.send(Err(Error::Systemd(e.clone())));
            }
            return;
        }
        // The scope is gone, so the shim has written its record (or was
        // killed): settle the run now rather than wait for inotify.
        self.settle_run(id, run).await;
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(stop) = p.stop.take() else {
            return;
        };
        self.finish_stop(id, stop.then, stop.waiters).await;
    }

    async fn finish_stop(&mut self, id: ProcessId, then: AfterStop, waiters: Vec<Reply<()>>) {
        match then {
            AfterStop::Nothing => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            AfterStop::Remove => {
                let now = self.now_us();
                let r = self
                    .store
                    .call(move |db| db.delete_process(id, "removed by request", now))
                    .await;
                if r.is_ok() {
                    self.forget(id);
                }
                for w in waiters {
                    let _ = w.send(
                        r.as_ref()
                            .map(|_| ())
                            .map_err(|e| Error::Storage(e.to_string())),
                    );
                }
            }
            AfterStop::Recover => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
                self.relaunch(id, "unhealthy", false, vec![]).await;
            }
            AfterStop::Relaunch => {
                // Restart answers once the new run is up.
                let launch_waiters = waiters
                    .into_iter()
                    .map(|w| {
                        let (tx, rx) = oneshot::channel::<Result<String, Error>>();
                        tokio::spawn(async move {
                            let r = rx.await.unwrap_or_else(|_| {
                                Err(Error::Busy("agent is shutting down".into()))
                            });
                            let _ = w.send(r.map(|_| ()));
                        });
                        tx
                    })
                    .collect();
                self.relaunch(id, "restart requested", true, launch_waiters)
                    .await;
            }
        }
    }

    /// Drops a process whose record is deleted, with its logs.
    pub(super) fn forget(&mut self, id: ProcessId) {
        if self.procs.remove(&id).is_some() {
            let dir = self.logs_dir.join(id.to_string());
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_dir_all(dir);
            });
            self.publish(Event::Removed(id.to_string()));
        }
    }

    pub(super) async fn restart(&mut self, id: ProcessId, reply: Reply<()>) {
        let Some(p) = self.procs.get(&id) else { return };
        match p.state() {
            State::Starting | State::Stopping => {
                let _ = reply.send(Err(busy(id, p.state())));
            }
            _ => self.begin_stop(id, AfterStop::Relaunch, Some(reply)).await,
        }
    }

    pub(super) fn kill(&mut self, id: ProcessId, signal: i32) -> Result<(), Error> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidArgument(format!(
                "signal {signal} is not between 1 and 64"
            )));
        }
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| super::not_found(id))?;
        if !matches!(p.state(), State::Running | State::Stopping) {
            return Err(Error::Busy(format!(
                "process {id} is not running (state {})",
                p.state()
            )));
        }
        p.kill_signal = Some(signal);
        // Through the run's pidfd, never by PID: a PID is reused once its
        // process is reaped. The command leads its own process group (the
        // shim sets it up), so the signal reaches it and the children it
        // did not detach, as Ctrl-C in a terminal would; Stop covers the
        // whole scope.
        let Some(pidfd) = p.pidfd.as_ref() else {
            return Err(Error::Busy(format!(
                "process {id} has no handle on its main process; use Stop"
            )));
        };
        match pidfd.signal_job(signal) {
            // Gone already: its exit record is on its way.
            Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(Error::Busy(format!(
                "signal {signal} to pid {}: {e}",
                pidfd.pid()
            ))),
            _ => Ok(()),
        }
    }

    /// StopMatching (`then` = Nothing: active ones) and RemoveMatching
    /// (`then` = Remove: all of them); answers with the ids once every
    /// one is done, or with the first error.
    pub(super) async fn matching(
        &mut self,
        filter: Filter,
        access: Access,
        then: AfterStop,
        reply: Reply<Vec<String>>,
    ) {
        if filter.workspace.is_none() && filter.session.is_none() {
            let _ = reply.send(Err(Error::InvalidArgument(
                "filter: Workspace or Session is required (refusing to act on every process)"
                    .into(),
            )));
            return;
        }
        let ids: Vec<ProcessId> = self
            .procs
            .values()
            .filter(|p| access.allows(p.owner))
            .filter(|p| filter.matches(&p.workspace, &p.session, p.state()))
            .filter(|p| then == AfterStop::Remove || p.state().is_active())
            .map(|p| p.id)
            .collect();
        let mut pending = Vec::new();
        for &id in &ids {
            let (tx, rx) = oneshot::channel();
            self.begin_stop(id, then, Some(tx)).await;
            pending.push(rx);
        }
        tokio::spawn(async move {
            let mut first_err = None;
            for rx in pending {
                if let Ok(Err(e)) = rx.await {
                    first_err.get_or_insert(e);
                }
            }
            let _ = reply.send(match first_err {
                Some(e) => Err(e),
                None => Ok(ids.iter().map(|i| i.to_string()).collect()),
            });
        });
    }
}

/// The refusal of a request that must wait for `state` (starting or
/// stopping) to end.
pub(super) fn busy(id: ProcessId, state: State) -> Error {
    Error::Busy(format!("process {id} is {state}; try again"))
}
