//! Starting: a new process from a Start spec, and a new run of an
//! existing one (restart policy, Restart, persistence). The launch itself
//! runs in its own task; its result comes back as `Fact::Launched`, and
//! only then are the waiting callers answered — after the record is
//! committed.

use std::collections::HashMap;

use tokio::time::Instant;

use super::host::{LaunchRequest, Launched};
use super::proc::{Launching, Proc, Sampled};
use super::{Error, Event, Fact, Msg, Reply, RunAs, Supervisor, WorkspaceKey};
use crate::api::{ExitReason, RestartMode, StartSpec, State};
use crate::daemon::store::{
    Ending, NewProcess, ProcessConfig, ProcessId, ProcessRecord, RestartPolicy, RunChange, RunId,
    RunRecord,
};
use crate::daemon::systemd::{self, ScopeProps};
use crate::shim::{JournalFields, LaunchSpec};

impl Supervisor {
    /// `LimitExceeded` if `owner` has as many processes as it may.
    pub(super) fn check_quota(&self, owner: u32) -> Result<(), Error> {
        let max = self.cfg.max_processes_per_owner;
        let owned = self.procs.values().filter(|p| p.owner == owner).count();
        if owned >= max as usize {
            return Err(Error::LimitExceeded(format!(
                "uid {owner} already has {owned} processes (max_processes_per_owner = {max}); remove ended ones first"
            )));
        }
        Ok(())
    }

    /// A Start: checks the spec, then its working directory off the
    /// actor (a stat may block; 200 concurrent Starts must not wait on
    /// each other's), and comes back as `Fact::StartChecked`.
    pub(super) fn start_new(&mut self, spec: StartSpec, run_as: RunAs, reply: Reply<String>) {
        if let Err(e) = spec.validate() {
            let _ = reply.send(Err(Error::InvalidArgument(e)));
            return;
        }
        let config = match self.process_config(&spec, &run_as) {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            // Root never checks a path for a user: in system mode the
            // child enters the directory after dropping to the user's
            // ids, and a directory it cannot enter is its launch error.
            let problem = if config.credentials.is_some() {
                None
            } else {
                let cwd = config.cwd.clone();
                match tokio::task::spawn_blocking(move || std::fs::metadata(&cwd)).await {
                    Ok(Ok(m)) if m.is_dir() => None,
                    Ok(Ok(_)) => Some("is not a directory".to_string()),
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                }
            };
            if let Some(problem) = problem {
                let _ = reply.send(Err(Error::InvalidArgument(format!(
                    "WorkingDirectory: '{}': {problem}",
                    config.cwd
                ))));
                return;
            }
            let checked = Fact::StartChecked {
                spec: Box::new(spec),
                config: Box::new(config),
                owner: run_as.uid,
                reply,
            };
            let _ = tx.send(Msg::Fact(checked)).await;
        });
    }

    /// The rest of a Start, its directory checked: the owner's cap (here,
    /// so concurrent Starts are counted), the record, the launch.
    pub(super) async fn start_checked(
        &mut self,
        spec: StartSpec,
        config: ProcessConfig,
        owner: u32,
        reply: Reply<String>,
    ) {
        if let Err(e) = self.check_quota(owner) {
            let _ = reply.send(Err(e));
            return;
        }
        if let Some(id) = self.insert_starting(&spec, config, owner, 0, reply).await {
            self.spawn_launch(id);
        }
    }

    /// Records a new process from `spec` (Start, and Track with the
    /// tracked `main_pid`), in state `starting` with `reply` waiting for
    /// its first run, and announces it. None (and `reply` answered) when
    /// the store refused.
    pub(super) async fn insert_starting(
        &mut self,
        spec: &StartSpec,
        config: ProcessConfig,
        owner: u32,
        main_pid: u32,
        reply: Reply<String>,
    ) -> Option<ProcessId> {
        let name = spec.name_or_default().to_string();
        let workspace = spec.workspace.clone().unwrap_or_else(|| "default".into());
        let session = spec.session.clone().unwrap_or_default();
        let now = self.now_us();
        let (n, w, s, c) = (
            name.clone(),
            workspace.clone(),
            session.clone(),
            config.clone(),
        );
        let inserted = self
            .store
            .call(move |db| {
                let new = NewProcess {
                    owner,
                    name: &n,
                    workspace: &w,
                    session: &s,
                    config: &c,
                };
                db.insert_process(&new, |id| systemd::scope_name(&n, &id.to_string()), now)
            })
            .await;
        let (id, run, unit) = match inserted {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return None;
            }
        };
        let record = ProcessRecord {
            id,
            owner,
            name,
            workspace,
            session,
            state: State::Starting,
            restarts: 0,
            created_at: now,
            oom_kills: 0,
            config,
        };
        let run = RunRecord {
            id: run,
            process_id: id,
            unit,
            main_pid,
            started_at: now,
            ..Default::default()
        };
        let mut proc = Proc::new(record, run);
        proc.launching = Some(Launching {
            first: true,
            waiters: vec![reply],
            early_exit: false,
        });
        self.procs.insert(id, proc);
        if let Some(v) = self.view(id) {
            self.publish(Event::Added(v));
        }
        Some(id)
    }

    pub(super) fn process_config(
        &self,
        spec: &StartSpec,
        run_as: &RunAs,
    ) -> Result<ProcessConfig, Error> {
        let c = &self.cfg;
        let policy = match spec.restart.as_deref() {
            None => RestartMode::No,
            Some(s) => RestartMode::parse(s).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "Restart: '{s}' is not one of {}",
                    RestartMode::NAMES.join(", ")
                ))
            })?,
        };
        Ok(ProcessConfig {
            command: spec.command.clone(),
            cwd: spec
                .working_directory
                .clone()
                .or_else(|| run_as.home.clone())
                .unwrap_or_else(|| self.home.clone()),
            env: spec.environment.clone(),
            clean_env: spec.clean_environment == Some(true),
            labels: spec.labels.clone(),
            memory_max: spec.memory_max,
            cpu_quota: spec.cpu_quota,
            tasks_max: spec.tasks_max,
            memory_high: None,
            cpu_weight: None,
            io_weight: None,
            restart: RestartPolicy {
                policy,
                delay_ms: spec.restart_delay_ms.unwrap_or(c.restart_delay_ms),
                delay_max_ms: spec.restart_delay_max_ms.unwrap_or(
                    c.restart_delay_max_ms
                        .max(spec.restart_delay_ms.unwrap_or(0)),
                ),
                reset_sec: spec.restart_reset_sec.unwrap_or(c.restart_reset_sec),
                limit: spec.restart_limit.unwrap_or(c.restart_limit),
                limit_interval_sec: spec
                    .restart_limit_interval_sec
                    .unwrap_or(c.restart_limit_interval_sec),
            },
            persistent: spec.persistent.unwrap_or(false),
            credentials: run_as.credentials.clone(),
            login_env: run_as.login_env.clone(),
            tty: spec.tty == Some(true),
            notify: spec.notify == Some(true),
            tracked: false,
            health: spec.health_check.clone(),
        })
    }

    /// Runs the launch of the current run of `id` in its own task.
    pub(super) fn spawn_launch(&mut self, id: ProcessId) {
        let Some(p) = self.procs.get(&id) else {
            return;
        };
        let env = launch_env(&self.base_env, &p.config);
        let relaunch = !p.launching.as_ref().is_some_and(|l| l.first);
        let run = p.run.id;
        let spec = LaunchSpec {
            id: id.to_string(),
            run: run.0,
            argv: p.config.command.clone(),
            cwd: p.config.cwd.clone().into(),
            env,
            log_dir: self.logs_dir.join(id.to_string()),
            log_max_bytes: self.cfg.log_max_size,
            log_files: self.cfg.log_files,
            exit_file: self.host.launcher.exit_path(run),
            user: p.config.credentials.clone(),
            journal: self.cfg.journal_forward.then(|| JournalFields {
                name: p.name.clone(),
                workspace: p.workspace.clone(),
            }),
            tty: p.config.tty,
            notify: p.config.notify,
        };
        let props = self.scope_props(p);
        let unit = p.run.unit.clone();
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        // The restart that chose the standby's name uses it.
        let standby = p.standby.take_if(|s| s.unit == unit);
        let req = LaunchRequest {
            unit,
            spec,
            props,
            relaunch,
            standby,
        };
        p.launched_at = Instant::now();
        let launching = self.host.launcher.launch(req);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = launching.await;
            let _ = tx.send(Msg::Fact(Fact::Launched { id, run, result })).await;
        });
    }

    /// The systemd properties of `p`'s scopes.
    pub(super) fn scope_props(&self, p: &Proc) -> ScopeProps {
        ScopeProps {
            description: format!("corral {}: {}", p.name, p.config.command.join(" ")),
            slice: match &p.config.credentials {
                Some(user) => systemd::user_slice_name(user.uid, &p.workspace),
                None => systemd::slice_name(&p.workspace),
            },
            limits: p.config.limits(),
            slice_limits: self
                .workspace_limits
                .get(&WorkspaceKey {
                    owner: p.owner,
                    name: p.workspace.clone(),
                })
                .copied(),
            stop_timeout: self.cfg.stop_timeout,
            // An exec health probe joins the running scope.
            delegate: p
                .config
                .health
                .as_ref()
                .is_some_and(|h| h.kind == crate::api::ProbeKind::Exec),
        }
    }

    pub(super) async fn launched(
        &mut self,
        id: ProcessId,
        run: RunId,
        result: Result<Launched, Error>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.run.id != run || p.state() != State::Starting {
            return;
        }
        let launching = p.launching.take().unwrap_or_default();
        match result {
            Ok(l) => {
                p.sampled = Sampled::default();
                p.pidfd = l.pidfd;
                tracing::debug!(%id, shim_pid = l.shim_pid, unit = %p.run.unit, "launched");
                let change = RunChange::Running {
                    main_pid: l.main_pid,
                    control_group: l.control_group,
                };
                let why = format!("pid {}", l.main_pid);
                let now = self.now_us();
                let written = self.transition(id, State::Running, why, change, now).await;
                if self.procs.get(&id).is_some_and(|p| p.config.tracked) {
                    self.watch_tracked(id);
                }
                self.start_probing(id);
                self.prepare_standby(id);
                // The reply goes out only after the record is committed.
                for w in launching.waiters {
                    let _ = w.send(match &written {
                        Ok(_) => Ok(id.to_string()),
                        Err(e) => Err(Error::Storage(e.to_string())),
                    });
                }
                if self.procs.get(&id).is_some_and(|p| p.config.notify) {
                    // It may have spoken before it counted as running.
                    self.notify_recorded(run, true).await;
                }
                if launching.early_exit {
                    self.exit_recorded(run).await;
                }
            }
            Err(e) => {
                tracing::warn!(%id, %run, "launch failed: {e}");
                if launching.first {
                    // A failed Start leaves nothing behind but its history.
                    let msg = format!("start failed: {e}");
                    let now = self.now_us();
                    let _ = self
                        .store
                        .call(move |db| db.delete_process(id, &msg, now))
                        .await;
                    self.procs.remove(&id);
                    self.publish(Event::Removed(id.to_string()));
                } else {
                    let end = Ending {
                        state: State::Failed,
                        exit_code: -1,
                        exit_signal: 0,
                        reason: ExitReason::SpawnFailed,
                        at: self.now_us(),
                    };
                    self.record_ending(id, end).await;
                    // An automatic restart that could not start is one more
                    // failure for the policy (the crash-loop limit ends it);
                    // a client's Restart gets the error instead.
                    if launching.waiters.is_empty() {
                        self.apply_policy(id, std::time::Duration::ZERO).await;
                    }
                }
                let msg = e.to_string();
                for w in launching.waiters {
                    let _ = w.send(Err(match &e {
                        Error::Systemd(_) => Error::Systemd(msg.clone()),
                        _ => Error::SpawnFailed(msg.clone()),
                    }));
                }
            }
        }
    }

    /// Starts a new run of an ended process; `manual` (a client's
    /// Restart) starts the restart counting over. Callers already waiting
    /// for the new run are in `waiters`.
    pub(super) async fn relaunch(
        &mut self,
        id: ProcessId,
        why: &str,
        manual: bool,
        waiters: Vec<Reply<String>>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if manual {
            p.backoff.reset();
        }
        p.pending_restart = None;
        if p.config.tracked {
            // From now on corral launches it: a shim, an exit code, output.
            p.config.tracked = false;
            let config = p.config.clone();
            if let Err(e) = self.store.call(move |db| db.set_config(id, &config)).await {
                tracing::warn!(%id, "recording that it is no longer tracked: {e}");
            }
        }
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        // An automatic restart gets a scope of its own name: the previous
        // run's scope may still be going away (systemd collects an empty
        // scope a few ms after its last process ends; leftovers are being
        // stopped), and a start under the same name then failed with
        // UnitExists and was retried. A client's Restart has waited for
        // the stop, so it keeps the first name.
        let unit = if manual {
            systemd::scope_name(&p.name, &id.to_string())
        } else if let Some(standby) = &p.standby {
            standby.unit.clone()
        } else {
            systemd::scope_name(&p.name, &format!("{id}-r{}", p.restarts + 1))
        };
        let change = RunChange::New {
            unit,
            reset_restarts: manual,
        };
        let now = self.now_us();
        if let Err(e) = self
            .transition(id, State::Starting, why.to_string(), change, now)
            .await
        {
            for w in waiters {
                let _ = w.send(Err(Error::Storage(e.to_string())));
            }
            return;
        }
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.restarts = if manual { 0 } else { p.restarts + 1 };
        p.stop = None;
        p.kill_signal = None;
        p.sampled = Sampled::default();
        p.launching = Some(Launching {
            first: false,
            waiters,
            early_exit: false,
        });
        self.spawn_launch(id);
    }
}

/// The `PATH` a system-mode process starts with (login.defs' `ENV_PATH`).
const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games";

/// The environment of a launch: the agent's own — in system mode the
/// owner's login variables instead — (unless the spec asked for a clean
/// one) with the spec's entries on top, in one pass (a later entry of the
/// same name wins). Computed at each launch rather than stored, so a
/// process costs only its own entries.
pub(super) fn launch_env(agent: &[(String, String)], config: &ProcessConfig) -> Vec<String> {
    let login: Vec<(String, String)>;
    let base = match &config.login_env {
        Some(vars) => {
            login = std::iter::once(("PATH".to_string(), USER_PATH.to_string()))
                .chain(vars.iter().cloned())
                .collect();
            &login[..]
        }
        None => agent,
    };
    let ours: Vec<(&str, &str)> = config
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .collect();
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(ours.len());
    for (i, (k, _)) in ours.iter().enumerate() {
        last.insert(k, i);
    }
    let inherited = base
        .iter()
        .filter(|_| !config.clean_env)
        .filter(|(k, _)| !last.contains_key(k.as_str()))
        .map(|(k, v)| format!("{k}={v}"));
    let own = ours
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| last.get(k) == Some(i))
        .map(|(_, (k, v))| format!("{k}={v}"));
    inherited.chain(own).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_environment_overrides_the_agents_and_the_last_entry_wins() {
        let base = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let mut config: ProcessConfig =
            serde_json::from_str(r#"{"command":["x"],"cwd":"/","env":[],"memory_max":null,"cpu_quota":null,"tasks_max":null,"restart":{"policy":"no","delay_ms":0,"delay_max_ms":0,"reset_sec":0,"limit":0,"limit_interval_sec":0}}"#)
                .unwrap();
        config.env = vec!["HOME=/h".into(), "A=1".into(), "A=2".into(), "bad".into()];
        assert_eq!(launch_env(&base, &config), ["PATH=/bin", "HOME=/h", "A=2"]);
        config.clean_env = true;
        assert_eq!(launch_env(&base, &config), ["HOME=/h", "A=2"]);
    }

    /// A spec at every size bound of `StartSpec::validate`, made of the
    /// bytes JSON escapes the most, with a generous agent environment and
    /// the longest paths, still fits the shim's control line: a spec the
    /// agent accepts is never one the shim drops.
    #[test]
    fn the_largest_valid_spec_fits_the_shim_control_line() {
        use crate::api::{wire_len, MAX_ARGS, MAX_PATH_LEN, MAX_PAYLOAD};
        let control = "\u{1}";
        // Every string as long as the payload allows, split over the most
        // entries (each entry adds its quotes and comma too).
        let per_entry = MAX_PAYLOAD / 6 / (2 * MAX_ARGS);
        let arg = control.repeat(per_entry);
        let cwd = format!("/{}", "d".repeat(MAX_PATH_LEN - 1));
        let mut spec = StartSpec::new(vec![format!("x{arg}"); MAX_ARGS]);
        spec.name = Some("x".into());
        spec.environment = (0..MAX_ARGS).map(|i| format!("K{i}={arg}")).collect();
        spec.working_directory = Some(cwd.clone());
        spec.validate().unwrap();
        // Fill what the payload bound leaves with one more long argument.
        let used: usize = spec
            .command
            .iter()
            .chain(&spec.environment)
            .chain(&spec.working_directory)
            .map(|s| wire_len(s))
            .sum();
        spec.command[1].push_str(&control.repeat((MAX_PAYLOAD - used) / 6));
        spec.validate().unwrap();
        // 256 KiB of agent environment: far more than a session has.
        let base: Vec<(String, String)> = (0..256)
            .map(|i| (format!("AGENT{i}"), "v".repeat(1000)))
            .collect();
        let mut config: ProcessConfig = serde_json::from_str(r#"{"command":["x"],"cwd":"/","env":[],"memory_max":null,"cpu_quota":null,"tasks_max":null,"restart":{"policy":"no","delay_ms":0,"delay_max_ms":0,"reset_sec":0,"limit":0,"limit_interval_sec":0}}"#)
            .unwrap();
        config.env = spec.environment.clone();
        let long_path = std::path::PathBuf::from(&cwd);
        let launch = LaunchSpec {
            id: u64::MAX.to_string(),
            run: u64::MAX,
            argv: spec.command.clone(),
            cwd: long_path.clone(),
            env: launch_env(&base, &config),
            log_dir: long_path.clone(),
            log_max_bytes: u64::MAX,
            log_files: u32::MAX,
            exit_file: long_path,
            user: Some(crate::shim::Credentials {
                uid: u32::MAX,
                gid: u32::MAX,
                groups: vec![u32::MAX; 1024],
            }),
            // Names at their bound, every byte escaped.
            journal: Some(crate::shim::JournalFields {
                name: "\u{1}".repeat(crate::api::MAX_LABEL_LEN),
                workspace: "\u{1}".repeat(crate::api::MAX_LABEL_LEN),
            }),
            tty: true,
            notify: true,
        };
        let line = launch.to_line().unwrap();
        assert!(
            line.len() > MAX_PAYLOAD,
            "the test spec is not at the bound"
        );
    }
}
