//! Tracking: `Track` takes over a process corral did not start (its tree
//! moves into a new scope, its command line, directory and environment
//! are recorded so `Restart` launches it as any other), the watch on its
//! pidfd that sees it end (there is no shim and so no exit record: the
//! end is `untracked-exit`, code unknown), and `Untrack`, which forgets a
//! process without stopping it.

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::stopping::busy;
use super::{Error, Fact, Msg, Reply, RunAs, Supervisor};
use crate::api::{StartSpec, State};
use crate::daemon::store::{ProcessId, RunId};
use crate::daemon::systemd::{self, ScopeProps};
use crate::daemon::track::{self, Refusal, Target};

impl Supervisor {
    /// A Track: refuses a PID corral already supervises, reads the
    /// target from `/proc` off the actor, and comes back as
    /// `Fact::TrackChecked`.
    pub(super) fn track(
        &mut self,
        pid: u32,
        options: StartSpec,
        run_as: RunAs,
        reply: Reply<String>,
    ) {
        let owner = run_as.uid;
        if let Some(p) = self.supervising(pid) {
            let _ = reply.send(Err(Error::NotTrackable(format!(
                "PID {pid} is already supervised by corral (process {})",
                p
            ))));
            return;
        }
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let agent = std::process::id();
            let read = tokio::task::spawn_blocking(move || track::inspect(pid, agent)).await;
            let target = match read {
                Ok(Ok(t)) if t.uid == owner => Ok(t),
                Ok(Ok(t)) => Err(Error::NotTrackable(format!(
                    "PID {pid} belongs to uid {}, not {owner}",
                    t.uid
                ))),
                Ok(Err(Refusal::Gone(m))) => Err(Error::NotFound(m)),
                Ok(Err(Refusal::NotTrackable(m))) => Err(Error::NotTrackable(m)),
                Err(e) => Err(Error::NotFound(format!("reading PID {pid}: {e}"))),
            };
            let checked = Fact::TrackChecked {
                options: Box::new(options),
                run_as,
                target,
                reply,
            };
            let _ = tx.send(Msg::Fact(checked)).await;
        });
    }

    /// The process whose live run has `pid` as its main process.
    fn supervising(&self, pid: u32) -> Option<ProcessId> {
        self.procs
            .values()
            .find(|p| p.state().is_active() && p.run.main_pid == pid)
            .map(|p| p.id)
    }

    /// The rest of a Track: the record (state `starting`, main PID known
    /// at once so a second Track of it is refused), then the move into
    /// the scope in its own task, answered through `Fact::Launched`.
    pub(super) async fn track_checked(
        &mut self,
        mut spec: StartSpec,
        run_as: RunAs,
        target: Result<Target, Error>,
        reply: Reply<String>,
    ) {
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (pid, owner) = (target.pid, run_as.uid);
        if let Some(p) = self.supervising(pid) {
            let _ = reply.send(Err(Error::NotTrackable(format!(
                "PID {pid} is already supervised by corral (process {p})"
            ))));
            return;
        }
        if let Err(e) = self.check_quota(owner) {
            let _ = reply.send(Err(e));
            return;
        }
        // What a relaunch runs: exactly what runs now, in its own
        // environment (not the agent's).
        spec.command = target.argv;
        spec.working_directory = Some(target.cwd);
        spec.environment = target.env;
        spec.clean_environment = Some(true);
        if let Err(e) = spec.validate() {
            let _ = reply.send(Err(Error::NotTrackable(format!(
                "PID {pid} cannot be relaunched as recorded: {e}"
            ))));
            return;
        }
        let mut config = match self.process_config(&spec, &run_as) {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        config.tracked = true;
        let Some(id) = self.insert_starting(&spec, config, owner, pid, reply).await else {
            return;
        };
        let Some(p) = self.procs.get(&id) else {
            return;
        };
        let (unit, run) = (p.run.unit.clone(), p.run.id);
        let props = ScopeProps {
            description: format!(
                "corral {} (tracked): {}",
                p.name,
                p.config.command.join(" ")
            ),
            slice: match &p.config.credentials {
                Some(user) => systemd::user_slice_name(user.uid, &p.workspace),
                None => systemd::slice_name(&p.workspace),
            },
            limits: p.config.limits(),
            slice_limits: self
                .workspace_limits
                .get(&super::WorkspaceKey {
                    owner,
                    name: p.workspace.clone(),
                })
                .copied(),
            stop_timeout: self.cfg.stop_timeout,
            // Children forked while the tree moves are attached after.
            delegate: true,
        };
        let moving = self.host.scopes.track(unit, pid, props);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = moving.await;
            let _ = tx.send(Msg::Fact(Fact::Launched { id, run, result })).await;
        });
    }

    /// Watches the pidfd of a tracked run: it polls readable once the
    /// process has ended, reported as `Fact::TrackedExit`. Without a
    /// pidfd the end is seen when the scope goes.
    pub(super) fn watch_tracked(&self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else { return };
        let run = p.run.id;
        let fd = match p.pidfd.as_ref().map(|f| f.try_clone_fd()) {
            Some(Ok(fd)) => fd,
            Some(Err(e)) => {
                tracing::warn!(%id, "no watch on the tracked process: {e}");
                return;
            }
            None => return,
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // SAFETY: the AsyncFd owns the OwnedFd, which stays open and
            // is the same fd until the AsyncFd is dropped.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(watch) => {
                    let _ = watch.readable().await;
                }
                Err(e) => tracing::warn!(%id, "watching the tracked process: {e}"),
            }
            let _ = tx.send(Msg::Fact(Fact::TrackedExit { id, run })).await;
        });
    }

    /// Untrack: the process's scope is handed to a new scope corral does
    /// not own (so neither this agent nor a later one stops it), then the
    /// process is forgotten. An ended process is just forgotten.
    pub(super) async fn untrack(&mut self, id: ProcessId, reply: Reply<()>) {
        let Some(p) = self.procs.get(&id) else { return };
        match p.state() {
            State::Starting | State::Stopping => {
                let _ = reply.send(Err(busy(id, p.state())));
            }
            State::Running => {
                let unit = released_name(&p.name, id);
                let props = ScopeProps {
                    description: format!(
                        "untracked from corral {}: {}",
                        p.name,
                        p.config.command.join(" ")
                    ),
                    slice: parent_slice(&p.run.control_group).unwrap_or_default(),
                    stop_timeout: self.cfg.stop_timeout,
                    ..Default::default()
                };
                let run = p.run.id;
                let moving = self
                    .host
                    .scopes
                    .release(p.run.control_group.clone(), unit, props);
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let result = moving.await;
                    let fact = Fact::Released {
                        id,
                        run,
                        result,
                        reply,
                    };
                    let _ = tx.send(Msg::Fact(fact)).await;
                });
            }
            State::Stopped | State::Exited | State::Failed => {
                self.forget_untracked(id, None, reply).await
            }
        }
    }

    pub(super) async fn released(
        &mut self,
        id: ProcessId,
        run: RunId,
        result: Result<(), String>,
        reply: Reply<()>,
    ) {
        let Some(p) = self.procs.get(&id) else {
            let _ = reply.send(Err(super::not_found(id)));
            return;
        };
        if p.run.id != run {
            let _ = reply.send(Err(Error::Busy(format!(
                "process {id} changed while being untracked; try again"
            ))));
            return;
        }
        match result {
            Ok(()) => {
                let detail = released_name(&p.name, id);
                self.forget_untracked(id, Some(detail), reply).await
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Systemd(format!("untracking {id}: {e}"))));
            }
        }
    }

    /// Records the untrack (an `untracked` event row) and forgets `id`.
    async fn forget_untracked(&mut self, id: ProcessId, unit: Option<String>, reply: Reply<()>) {
        let now = self.now_us();
        let detail = match &unit {
            Some(u) => format!("untracked; left running in {u}"),
            None => "untracked".to_string(),
        };
        let r = self
            .store
            .call(move |db| {
                db.add_event(id, None, "untracked", &detail, now)?;
                db.delete_process(id, "untracked by request", now)
            })
            .await;
        if r.is_ok() {
            self.forget(id);
        }
        let _ = reply.send(r.map_err(Error::from));
    }
}

/// The scope an untracked process is left in: outside corral's
/// `app-corral-*` names, so no corrald adopts or stops it.
fn released_name(name: &str, id: ProcessId) -> String {
    systemd::scope_name(name, &id.to_string()).replacen("app-corral-", "corral-untracked-", 1)
}

/// The slice unit a scope's cgroup path sits in (`…/x.slice/y.scope`).
fn parent_slice(cg: &str) -> Option<String> {
    let (parent, _) = cg.trim_end_matches('/').rsplit_once('/')?;
    parent
        .rsplit('/')
        .next()
        .filter(|s| s.ends_with(".slice"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_scope_is_outside_corrals_names_in_the_same_slice() {
        let u = released_name("web", ProcessId(7));
        assert_eq!(u, "corral-untracked-web-7.scope");
        assert_eq!(
            parent_slice("/user.slice/app.slice/app-corral-w.slice/app-corral-web-7.scope")
                .as_deref(),
            Some("app-corral-w.slice")
        );
        assert_eq!(parent_slice("/x.scope"), None);
    }
}
