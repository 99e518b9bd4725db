//! Live controls: `SetLimits` on a process (its scope) and on a workspace
//! (its slice), the workspaces as clients see them (totals from the
//! slice's cgroup), and `Freeze`/`Thaw`. A limit is checked against the
//! cgroup's controllers first (one this host cannot enforce is refused
//! with `NotSupported`), applied by systemd off the actor, and recorded
//! (the process's config, the store's `workspaces` table) only once
//! systemd has taken it, in `Fact::LimitsApplied`.

use std::collections::BTreeMap;

use super::messages::LimitTarget;
use super::{Access, Command, Error, Fact, Msg, Reply, Supervisor, WorkspaceKey};
use crate::api::live::LimitKey;
use crate::api::{Limits, State, WorkspaceView, UNSET};
use crate::daemon::systemd;

/// A workspace as the actor finds it among its processes.
#[derive(Default)]
struct Found {
    processes: u32,
    running: u32,
    /// Any process runs as its owner through credentials (system mode):
    /// the slice is the owner's `user-<uid>-corral-…`.
    per_user: bool,
    /// The slice's cgroup, the parent of a run's scope cgroup.
    cgroup: String,
    /// `cgroup` is a live run's (they all share the slice's).
    cgroup_live: bool,
}

/// The cgroup of the slice a scope's cgroup is in.
fn parent_cgroup(scope_cg: &str) -> Option<String> {
    let (parent, _) = scope_cg.rsplit_once('/')?;
    (!parent.is_empty()).then(|| parent.to_string())
}

fn not_supported(what: &str, missing: &[&'static LimitKey]) -> Error {
    let names: Vec<String> = missing
        .iter()
        .map(|k| format!("{} (controller '{}')", k.name, k.controller))
        .collect();
    Error::NotSupported(format!(
        "{what}: cannot be enforced on this host: {} not available to this manager's cgroup",
        names.join(", ")
    ))
}

impl Supervisor {
    pub(super) async fn live_command(&mut self, c: Command) {
        match c {
            Command::SetLimits {
                id,
                access,
                limits,
                reply,
            } => match self.find(&id, access) {
                Ok(id) => self.set_process_limits(id, limits, reply),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Workspaces {
                access,
                totals,
                reply,
            } => {
                let _ = reply.send(self.workspaces(access, totals).await);
            }
            Command::SetWorkspaceLimits {
                workspace,
                access,
                limits,
                reply,
            } => match self.find_workspace(&workspace, access) {
                Ok(found) => self.set_workspace_limits(workspace, found, limits, reply),
                Err(e) => drop(reply.send(Err(e))),
            },
            Command::Freeze {
                workspace,
                access,
                freeze,
                reply,
            } => match self.find_workspace(&workspace, access) {
                Ok(found) => self.freeze(workspace, found, freeze, reply),
                Err(e) => drop(reply.send(Err(e))),
            },
            _ => {}
        }
    }

    /// The workspaces of the processes `access` sees, by owner and name.
    fn found(&self, access: Access) -> BTreeMap<WorkspaceKey, Found> {
        // Keyed by borrowed names while counting, and a cgroup path made
        // once per workspace: the bus asks for this whenever processes were
        // added or removed, so per-process clones made `up` of n processes
        // cost n² allocations.
        let mut by_name: BTreeMap<(u32, &str), Found> = BTreeMap::new();
        for p in self.procs.values().filter(|p| access.allows(p.owner)) {
            let f = by_name.entry((p.owner, p.workspace.as_str())).or_default();
            f.processes += 1;
            f.per_user |= p.config.credentials.is_some();
            let active = p.state().is_active();
            if active {
                f.running += 1;
            }
            // A live run's cgroup wins over an ended one's.
            if f.cgroup.is_empty() || (active && !f.cgroup_live) {
                if let Some(cg) = parent_cgroup(&p.run.control_group) {
                    f.cgroup = cg;
                    f.cgroup_live = active;
                }
            }
        }
        by_name
            .into_iter()
            .map(|((owner, name), f)| {
                let name = name.to_string();
                (WorkspaceKey { owner, name }, f)
            })
            .collect()
    }

    fn find_workspace(&self, key: &WorkspaceKey, access: Access) -> Result<Found, Error> {
        let mut all = self.found(access);
        all.remove(key).ok_or_else(|| {
            Error::NotFound(format!("no workspace '{}' with a process in it", key.name))
        })
    }

    fn slice_unit(key: &WorkspaceKey, found: &Found) -> String {
        if found.per_user {
            systemd::user_slice_name(key.owner, &key.name)
        } else {
            systemd::slice_name(&key.name)
        }
    }

    async fn workspaces(&self, access: Access, totals: bool) -> Vec<WorkspaceView> {
        let found = self.found(access);
        let mut views: Vec<WorkspaceView> = found
            .iter()
            .map(|(key, f)| WorkspaceView {
                name: key.name.clone(),
                owner: key.owner,
                processes: f.processes,
                running: f.running,
                unit: Self::slice_unit(key, f),
                memory_current: UNSET,
                cpu_usage_nsec: UNSET,
                tasks_current: UNSET,
                limits: self.workspace_limits.get(key).copied().unwrap_or_default(),
                frozen: false,
                pressure: Default::default(),
            })
            .collect();
        if !totals {
            return views;
        }
        // Only slices something runs in have a cgroup worth reading.
        let live: Vec<(usize, String)> = found
            .values()
            .enumerate()
            .filter(|(_, f)| f.running > 0 && !f.cgroup.is_empty())
            .map(|(i, f)| (i, f.cgroup.clone()))
            .collect();
        let cgs: Vec<String> = live.iter().map(|(_, cg)| cg.clone()).collect();
        let usage = self.host.cgroups.usage(cgs.clone()).await;
        let pressure = self.host.cgroups.pressure(cgs).await;
        for (((i, cg), u), psi) in live.into_iter().zip(usage).zip(pressure) {
            let v = &mut views[i];
            if let Some(u) = u {
                v.memory_current = u.memory_current.unwrap_or(UNSET);
                v.cpu_usage_nsec = u.cpu_usage_nsec.unwrap_or(UNSET);
                v.tasks_current = u.tasks_current.unwrap_or(UNSET);
            }
            v.pressure = psi;
            v.frozen = self.host.cgroups.frozen(cg).await.unwrap_or(false);
        }
        views
    }

    /// Checks `limits` against `cg` (when known), has systemd apply them to
    /// `unit` (when it has one), then records them through
    /// `Fact::LimitsApplied`. Runs off the actor: systemd may take time.
    fn apply_limits(
        &self,
        what: String,
        cg: String,
        unit: Option<String>,
        target: LimitTarget,
        limits: Limits,
        reply: Reply<()>,
    ) {
        let (scopes, cgroups, tx) = (
            self.host.scopes.clone(),
            self.host.cgroups.clone(),
            self.tx.clone(),
        );
        tokio::spawn(async move {
            if !cg.is_empty() {
                let missing = cgroups.unenforceable(cg, limits.set_keys()).await;
                if !missing.is_empty() {
                    let _ = reply.send(Err(not_supported(&what, &missing)));
                    return;
                }
            }
            if let Some(unit) = unit {
                if let Err(e) = scopes.set_limits(unit, limits).await {
                    let _ = reply.send(Err(Error::Systemd(e)));
                    return;
                }
            }
            let fact = Fact::LimitsApplied {
                target,
                limits,
                reply,
            };
            let _ = tx.send(Msg::Fact(fact)).await;
        });
    }

    fn set_process_limits(&mut self, id: super::ProcessId, limits: Limits, reply: Reply<()>) {
        let Some(p) = self.procs.get(&id) else {
            let _ = reply.send(Err(super::not_found(id)));
            return;
        };
        // A process that is not running keeps the limits for its next
        // run; its last cgroup's slice still tells what the host enforces.
        let running = p.state() == State::Running && !p.run.control_group.is_empty();
        let cg = p.run.control_group.clone();
        let unit = running.then(|| p.run.unit.clone());
        let what = format!("process {id}");
        self.apply_limits(what, cg, unit, LimitTarget::Process(id), limits, reply);
    }

    fn set_workspace_limits(
        &mut self,
        key: WorkspaceKey,
        found: Found,
        limits: Limits,
        reply: Reply<()>,
    ) {
        let unit = Self::slice_unit(&key, &found);
        let what = format!("workspace '{}'", key.name);
        let cg = found.cgroup;
        let target = LimitTarget::Workspace(key);
        self.apply_limits(what, cg, Some(unit), target, limits, reply);
    }

    /// Records limits systemd took and answers the caller.
    pub(super) async fn limits_applied(
        &mut self,
        target: LimitTarget,
        limits: Limits,
        reply: Reply<()>,
    ) {
        let r = match target {
            LimitTarget::Process(id) => {
                let Some(p) = self.procs.get_mut(&id) else {
                    let _ = reply.send(Err(super::not_found(id)));
                    return;
                };
                let merged = p.config.limits().merged(limits);
                let mut config = p.config.clone();
                config.set_limits(merged);
                let stored = config.clone();
                let r = self.store.call(move |db| db.set_config(id, &stored)).await;
                if r.is_ok() {
                    if let Some(p) = self.procs.get_mut(&id) {
                        p.config = config;
                        // Made with the old limits: make it again.
                        p.standby = None;
                    }
                    self.prepare_standby(id);
                }
                r
            }
            LimitTarget::Workspace(key) => {
                let merged = self
                    .workspace_limits
                    .get(&key)
                    .copied()
                    .unwrap_or_default()
                    .merged(limits);
                let (owner, name) = (key.owner, key.name.clone());
                let r = self
                    .store
                    .call(move |db| db.set_workspace_limits(owner, &name, &merged))
                    .await;
                if r.is_ok() {
                    self.workspace_limits.insert(key, merged);
                }
                r
            }
        };
        let _ = reply.send(r.map_err(Error::from));
    }

    fn freeze(&mut self, key: WorkspaceKey, found: Found, freeze: bool, reply: Reply<()>) {
        let unit = Self::slice_unit(&key, &found);
        if found.running == 0 || found.cgroup.is_empty() {
            let _ = reply.send(Err(Error::Busy(format!(
                "workspace '{}': nothing runs in it",
                key.name
            ))));
            return;
        }
        let (scopes, cgroups) = (self.host.scopes.clone(), self.host.cgroups.clone());
        tokio::spawn(async move {
            let r = match cgroups.frozen(found.cgroup).await {
                None => Err(Error::NotSupported(format!(
                    "workspace '{}': this host has no cgroup v2 freezer (systemd freezes units on pure cgroup v2 only)",
                    key.name
                ))),
                Some(_) => scopes.freeze(unit, freeze).await.map_err(Error::Systemd),
            };
            let _ = reply.send(r);
        });
    }

    /// At start: loads the workspaces' limits. They reach a slice with
    /// each launch into it (`ScopeProps::slice_limits`); a slice that
    /// lived on while the agent was down kept them in systemd.
    pub(super) async fn load_workspace_limits(&mut self) -> Result<(), Error> {
        let rows = self.store.call(|db| db.workspace_limits()).await?;
        for (owner, name, limits) in rows {
            self.workspace_limits
                .insert(WorkspaceKey { owner, name }, limits);
        }
        Ok(())
    }
}
