//! `org.corral.Supervisor1.Workspace`, one object per workspace that has
//! a process (per owner in system mode), at `api::workspace_path`:
//! totals of its slice, its limits, frozen state, and `SetLimits`,
//! `Freeze`, `Thaw`. [`sync`] adds and removes the objects as processes
//! come and go. Visibility: a workspace is its owner's (the uid its
//! processes run as); others see it only with manage-all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zbus::interface;
use zbus::message::Header;
use zbus::zvariant::{OwnedValue, Value};

use super::process::MethodError;
use super::{gone, Action, Ctx};
use crate::api::{self, Error, Limits, WorkspaceView};
use crate::config::Mode;
use crate::daemon::supervisor::{Access, Command, WorkspaceKey};

const FRESH: Duration = Duration::from_secs(1);

pub struct WorkspaceObject {
    key: WorkspaceKey,
    ctx: Ctx,
    cache: Mutex<Option<(Instant, WorkspaceView)>>,
}

/// The object path of `key` in this agent's mode.
pub fn path(ctx: &Ctx, key: &WorkspaceKey) -> String {
    let owner = (ctx.auth.mode() == Mode::System).then_some(key.owner);
    api::workspace_path(&key.name, owner)
}

fn unknown(path: &str) -> zbus::fdo::Error {
    zbus::fdo::Error::UnknownObject(format!("Unknown object '{path}'"))
}

/// Every property of a view, for GetManagedObjects.
pub fn properties(v: &WorkspaceView) -> HashMap<String, OwnedValue> {
    let limits: HashMap<String, Value<'static>> = v.limits.to_dict();
    let pressure: HashMap<String, f64> = v.pressure.clone().into_iter().collect();
    let values: [(&str, Value<'static>); 11] = [
        ("Name", v.name.clone().into()),
        ("Owner", v.owner.into()),
        ("Processes", v.processes.into()),
        ("Running", v.running.into()),
        ("Unit", v.unit.clone().into()),
        ("MemoryCurrent", v.memory_current.into()),
        ("CPUUsageNSec", v.cpu_usage_nsec.into()),
        ("TasksCurrent", v.tasks_current.into()),
        ("Limits", limits.into()),
        ("Frozen", v.frozen.into()),
        ("Pressure", pressure.into()),
    ];
    values
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.try_to_owned().ok()?)))
        .collect()
}

impl WorkspaceObject {
    fn new(key: WorkspaceKey, ctx: Ctx) -> Self {
        WorkspaceObject {
            key,
            ctx,
            cache: Mutex::new(None),
        }
    }

    async fn visible(&self, hdr: &Header<'_>) -> zbus::fdo::Result<()> {
        let auth = &self.ctx.auth;
        if auth.mode() == Mode::User {
            return Ok(());
        }
        let caller = auth
            .caller(hdr)
            .await
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.message()))?;
        if caller.uid == self.key.owner || auth.check(&caller, Action::ManageAll, false).await {
            Ok(())
        } else {
            Err(unknown(&path(&self.ctx, &self.key)))
        }
    }

    /// As `ProcessObject::access`: another user's workspace does not exist
    /// for the caller without manage-all; one's own needs manage-own.
    async fn access(&self, hdr: &Header<'_>) -> Result<Access, MethodError> {
        let auth = &self.ctx.auth;
        let caller = auth.caller(hdr).await?;
        let Some(access) = auth.access_to(&caller, self.key.owner).await else {
            return Err(MethodError::Hidden(unknown(&path(&self.ctx, &self.key))));
        };
        auth.require(&caller, Action::ManageOwn).await?;
        Ok(access)
    }

    /// The view, re-read when older than [`FRESH`]. No header: the values
    /// go into InterfacesAdded (the name is in the path anyway), read
    /// fresh.
    async fn view(&self, hdr: Option<&Header<'_>>) -> zbus::fdo::Result<WorkspaceView> {
        if let Some(hdr) = hdr {
            self.visible(hdr).await?;
            if let Some((at, v)) = &*self.cache.lock().unwrap_or_else(|p| p.into_inner()) {
                if at.elapsed() < FRESH {
                    return Ok(v.clone());
                }
            }
        }
        let views = self
            .ctx
            .handle
            .ask(|reply| Command::Workspaces {
                access: Access::Owner(self.key.owner),
                totals: true,
                reply,
            })
            .await
            .unwrap_or_default();
        let v = views
            .into_iter()
            .find(|v| v.name == self.key.name)
            .ok_or_else(|| unknown(&path(&self.ctx, &self.key)))?;
        // Only a client's read is cached (for the rest of its GetAll): the
        // view read for InterfacesAdded, as the object appears, is stale
        // as soon as the next process of the workspace starts.
        if hdr.is_some() {
            *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), v.clone()));
        }
        Ok(v)
    }

    async fn set_frozen(&self, hdr: &Header<'_>, freeze: bool) -> Result<(), MethodError> {
        let access = self.access(hdr).await?;
        let workspace = self.key.clone();
        self.ctx
            .handle
            .ask(|reply| Command::Freeze {
                workspace,
                access,
                freeze,
                reply,
            })
            .await
            .ok_or_else(gone)?
            .map_err(Error::from)?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

#[interface(name = "org.corral.Supervisor1.Workspace")]
impl WorkspaceObject {
    /// Changes limits of the workspace's slice at once (README "Live
    /// limits"); keys not given stay.
    async fn set_limits(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        limits: HashMap<String, OwnedValue>,
    ) -> Result<(), MethodError> {
        let limits = Limits::from_dict(limits).map_err(Error::InvalidArgument)?;
        let access = self.access(&hdr).await?;
        let workspace = self.key.clone();
        self.ctx
            .handle
            .ask(|reply| Command::SetWorkspaceLimits {
                workspace,
                access,
                limits,
                reply,
            })
            .await
            .ok_or_else(gone)?
            .map_err(Error::from)?;
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Freezes every process of the workspace (systemd's FreezeUnit on
    /// its slice; cgroup v2 only).
    async fn freeze(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
        self.set_frozen(&hdr, true).await
    }

    /// Resumes a frozen workspace.
    async fn thaw(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), MethodError> {
        self.set_frozen(&hdr, false).await
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        self.key.name.clone()
    }

    #[zbus(property)]
    async fn owner(&self) -> u32 {
        self.key.owner
    }

    /// Processes corral knows in it, in any state.
    #[zbus(property)]
    async fn processes(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref()).await?.processes)
    }

    /// Of those, the ones with a live scope.
    #[zbus(property)]
    async fn running(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<u32> {
        Ok(self.view(hdr.as_ref()).await?.running)
    }

    /// The slice unit.
    #[zbus(property)]
    async fn unit(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<String> {
        Ok(self.view(hdr.as_ref()).await?.unit)
    }

    #[zbus(property, name = "MemoryCurrent")]
    async fn memory_current(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref()).await?.memory_current)
    }

    #[zbus(property, name = "CPUUsageNSec")]
    async fn cpu_usage_nsec(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref()).await?.cpu_usage_nsec)
    }

    #[zbus(property, name = "TasksCurrent")]
    async fn tasks_current(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<u64> {
        Ok(self.view(hdr.as_ref()).await?.tasks_current)
    }

    /// The limits set with SetLimits (the `SetLimits` keys).
    #[zbus(property)]
    async fn limits(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<HashMap<String, OwnedValue>> {
        let d = self.view(hdr.as_ref()).await?.limits.to_dict();
        Ok(d.into_iter()
            .filter_map(|(k, v)| Some((k, v.try_to_owned().ok()?)))
            .collect())
    }

    #[zbus(property)]
    async fn frozen(&self, #[zbus(header)] hdr: Option<Header<'_>>) -> zbus::fdo::Result<bool> {
        Ok(self.view(hdr.as_ref()).await?.frozen)
    }

    /// PSI avg10 by `memory.some` … `io.full`; empty where unknown.
    #[zbus(property)]
    async fn pressure(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
    ) -> zbus::fdo::Result<HashMap<String, f64>> {
        Ok(self
            .view(hdr.as_ref())
            .await?
            .pressure
            .into_iter()
            .collect())
    }
}

/// Makes the workspace objects match the supervisor's workspaces: adds the
/// new ones, removes those without a process. `shown` is what is served.
pub async fn sync(
    conn: &zbus::Connection,
    ctx: &Ctx,
    shown: &mut BTreeSet<WorkspaceKey>,
) -> zbus::Result<()> {
    let views = ctx
        .handle
        .ask(|reply| Command::Workspaces {
            access: Access::All,
            totals: false,
            reply,
        })
        .await
        .unwrap_or_default();
    let now: BTreeSet<WorkspaceKey> = views
        .into_iter()
        .map(|v| WorkspaceKey {
            owner: v.owner,
            name: v.name,
        })
        .collect();
    let server = conn.object_server();
    for key in shown.difference(&now) {
        server
            .remove::<WorkspaceObject, _>(path(ctx, key).as_str())
            .await?;
    }
    for key in now.difference(shown) {
        let obj = WorkspaceObject::new(key.clone(), ctx.clone());
        server.at(path(ctx, key).as_str(), obj).await?;
    }
    *shown = now;
    Ok(())
}
