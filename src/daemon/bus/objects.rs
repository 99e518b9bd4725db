//! `org.freedesktop.DBus.ObjectManager` at `/org/corral/Supervisor1`,
//! served by the agent itself: `GetManagedObjects` answers each caller
//! with the processes it may see (in system mode its own; everyone's for
//! root or a holder of manage-all) and the workspaces of those processes,
//! which zbus's generic one cannot.
//! `InterfacesAdded`/`InterfacesRemoved` are still emitted by zbus when a
//! process object comes or goes (it finds this interface by its name).

use std::collections::HashMap;

use zbus::interface;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};

use super::Ctx;
use crate::api;
use crate::daemon::supervisor::Command;

type Managed = HashMap<OwnedObjectPath, HashMap<String, HashMap<String, OwnedValue>>>;

pub struct Objects {
    ctx: Ctx,
}

impl Objects {
    pub fn new(ctx: Ctx) -> Self {
        Objects { ctx }
    }
}

#[interface(name = "org.freedesktop.DBus.ObjectManager")]
impl Objects {
    async fn get_managed_objects(
        &self,
        #[zbus(header)] hdr: Header<'_>,
    ) -> zbus::fdo::Result<Managed> {
        let caller = self
            .ctx
            .auth
            .caller(&hdr)
            .await
            .map_err(|e| zbus::fdo::Error::AccessDenied(e.message()))?;
        let access = self.ctx.auth.access(&caller).await;
        let views = self
            .ctx
            .handle
            .ask(|reply| Command::List {
                filter: api::Filter::default(),
                access,
                reply,
            })
            .await
            .ok_or_else(|| zbus::fdo::Error::Failed("the agent is shutting down".into()))?;
        let mut out = Managed::new();
        // The same bound as List: a reply must fit a D-Bus message.
        for v in super::manager::fit_list(views) {
            let path = OwnedObjectPath::try_from(api::process_path(&v.id))
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
            let props = api::PROPERTIES
                .iter()
                .filter_map(|p| Some((p.name.to_string(), (p.get)(&v).try_to_owned().ok()?)))
                .collect();
            out.insert(
                path,
                [(api::PROCESS_INTERFACE.to_string(), props)]
                    .into_iter()
                    .collect(),
            );
        }
        // A workspace is visible to whoever sees its processes: the
        // supervisor groups exactly those by owner and name.
        let workspaces = self
            .ctx
            .handle
            .ask(|reply| Command::Workspaces {
                access,
                totals: true,
                reply,
            })
            .await
            .unwrap_or_default();
        for w in workspaces {
            let key = crate::daemon::supervisor::WorkspaceKey {
                owner: w.owner,
                name: w.name.clone(),
            };
            let path = OwnedObjectPath::try_from(super::workspace::path(&self.ctx, &key))
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
            out.insert(
                path,
                [(
                    api::WORKSPACE_INTERFACE.to_string(),
                    super::workspace::properties(&w),
                )]
                .into_iter()
                .collect(),
            );
        }
        Ok(out)
    }

    /// A process object appeared (emitted by zbus's object server).
    #[zbus(signal)]
    async fn interfaces_added(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces_and_properties: HashMap<String, HashMap<String, OwnedValue>>,
    ) -> zbus::Result<()>;

    /// A process object went away (emitted by zbus's object server).
    #[zbus(signal)]
    async fn interfaces_removed(
        emitter: &SignalEmitter<'_>,
        object_path: ObjectPath<'_>,
        interfaces: Vec<String>,
    ) -> zbus::Result<()>;
}
